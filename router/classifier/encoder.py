"""The one MiniLM encoder pass every request pays for: onnxruntime + tokenizers + numpy, nothing else.

One `Encoder.encode()` is exactly one ONNX session run; it yields the sentence embedding (cache key, domain,
jailbreak and example heads) and the per-token states with character offsets (PII tagging).

Long input: all-MiniLM-L6-v2 was trained on 256-token windows, so a window holds 256 content tokens (plus
[CLS] and [SEP]). A text with more tokens is encoded as two windows in the same run (a batch of two): its
first 256 tokens (head) and its last 256 tokens (tail). The embedding is the re-normalised mean of the two
window embeddings; the token states cover the head and the tail without duplicates, so anything between
them (texts over 512 tokens) is not seen by the token-level heads, except the PII head: `read_middle` encodes that
middle in up to MIDDLE_WINDOWS more windows, one more run, for it alone. Texts over 64k characters are tokenised
only on their first and last 32k characters, which bounds tokenisation time for multi-megabyte bodies; 32k
characters always hold > 256 tokens. A text over 2 x END_CHARS characters gets the same windows from its ends
alone whenever they hold enough tokens (`Encoder._ends`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

DIM = 384
WINDOW_TOKENS = 256  # content tokens per window, [CLS] and [SEP] not counted
SIDE_CHARS = 32_768
# Windows `read_middle` encodes between a long text's head and tail for the PII token head. One costs ~16-20 ms on a
# quiet core and 25-50 ms at load 4 on 2 cores (bench/pii_middle.py, 2026-12-02): 6 add ~120 ms, or up to ~300 ms
# under that load, which leaves the head and tail pass and its queueing room within classifier.timeout_ms (600 ms);
# 12 took a 16k-character prompt's pass to 770 ms, 7 a 12k one's to 440 ms under that load. With head and tail,
# 2,048 tokens (~8-10k characters of English prose) are read whole; past that the middle is not read at all (the
# caller treats it as unscreened).
MIDDLE_WINDOWS = 6
# Characters a token spans at most in text `read_middle` still tokenises (prose ~4.5, code ~3): a middle longer than
# MIDDLE_WINDOWS windows of such tokens is not worth tokenising to find that it holds too many.
MAX_TOKEN_CHARS = 8
# The slices of a long text's ends that `Encoder._ends` tokenises: 2048 characters of prose or code hold ~400-600
# tokens, enough for a window. Tokenising a 16k-character prompt whole took 15 ms to keep 512 of its 4,500 tokens.
END_CHARS = 2048
CLS_ID, SEP_ID = 101, 102
# onnxruntime's load-time fusions that are slower than the unfused ops on CPU (measured in export_onnx._fusions).
SLOW_FUSIONS = ["SkipLayerNormFusion", "AttentionFusion"]


_onnx_runner = threading.local()  # per thread: where its encoder runs go (run_onnx_on)


def run_onnx_on(executor: Executor | None) -> None:
    """This thread's encoder runs go to `executor` (None: run here). The encoder queue's long lane runs its ONNX work on
    a thread of lower OS priority this way: only the run, which holds no Python lock, is deprioritised; the
    tokenising, heads and rules, which hold the GIL, keep the caller's priority, so a descheduled low-priority thread
    never keeps the GIL from the event loop and the short lane."""
    _onnx_runner.executor = executor


class ModelMissingError(FileNotFoundError):
    """The exported encoder is not there; `make models` (python -m offline build) creates it."""


class ModelUnreadableError(ModelMissingError):
    """The files are there but cannot be loaded (a truncated copy, a corrupt download). Handled as missing: the
    first start ends with one line and exit 1 (it waited unready forever, /readyz 503), a reload keeps the old one."""


def load_model(model_path: Path, tokenizer_path: Path, threads: int) -> tuple[ort.InferenceSession, Tokenizer, str]:
    """An onnxruntime session (sequential, `threads` intra-op threads), the tokenizer, without fixed padding or
    truncation (the shipped tokenizer.json pads and cuts at 128: callers cut their own windows), and the graph's
    hash (16 hex digits) from the same bytes the session was built from, so that a file replaced meanwhile cannot
    give the running model another model's hash (the cache keys entries by it). A graph with external weight files
    (over 2 GB) is not loadable this way; the shipped ones are single files."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        graph = model_path.read_bytes()
        session = ort.InferenceSession(
            graph, options, providers=["CPUExecutionProvider"], disabled_optimizers=SLOW_FUSIONS
        )
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types, tokenizers a bare Exception
        raise ModelUnreadableError(
            f"{model_path.parent} cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}): "
            "run `make models` (python -m offline build)") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return session, tokenizer, hashlib.sha256(graph).hexdigest()[:16]


def model_files(model_dir: str | Path, precision: str = "int8") -> tuple[Path, Path]:
    """The exported graph and the tokenizer the encoder loads from model_dir."""
    return Path(model_dir) / f"model_{precision}.onnx", Path(model_dir) / "tokenizer.json"


def missing_model(model_dir: str | Path, precision: str = "int8") -> str | None:
    """Why the encoder cannot load from model_dir, or None; `semantic-router validate` asks it too, so that a
    file it passes is not then refused by a reload for a model_dir that does not exist."""
    model_path, tokenizer_path = model_files(model_dir, precision)
    if model_path.is_file() and tokenizer_path.is_file():
        return None
    fp32 = " --fp32" if precision == "fp32" else ""
    return f"{model_path} or {tokenizer_path} is missing: run `make models` (python -m offline build{fp32})"


@dataclass(frozen=True, slots=True)
class EncodedText:
    """Everything the heads need from one encoder run over one text."""

    embedding: np.ndarray  # float32[384], L2-normalised
    token_states: np.ndarray  # float32[T, 384], content tokens only (no [CLS]/[SEP]), in text order
    offsets: np.ndarray  # int64[T, 2], character span of each row of token_states in the original text
    windows: int  # 1, or 2 for head+tail
    ids: np.ndarray  # int64[T], the wordpiece id of each row of token_states (the lexical guard scores read them)


@dataclass(frozen=True, slots=True)
class TokenStates:
    """Token states and the character span of each, in text order: what the PII token head reads."""

    token_states: np.ndarray  # float32[T, 384]
    offsets: np.ndarray  # int64[T, 2]


@dataclass(frozen=True, slots=True)
class _Window:
    ids: list[int]
    offsets: list[tuple[int, int]]


class Encoder:
    """Thread-safe: onnxruntime sessions and tokenizers may be shared by executor threads."""

    def __init__(
        self, model_dir: str | Path, threads: int = 1, precision: str = "int8", window: int = WINDOW_TOKENS
    ):
        missing = missing_model(model_dir, precision)
        if missing:
            raise ModelMissingError(missing)
        model_path, tokenizer_path = model_files(model_dir, precision)
        # The hash identifies the embedding space: the cache keeps entries of different encoders apart.
        self._session, self._tokenizer, self.model_hash = load_model(model_path, tokenizer_path, threads)
        self._budget = window  # windows are cut here, not by the tokenizer
        self._runs = 0
        self._lock = threading.Lock()
        self.model_path = model_path

    @property
    def runs(self) -> int:
        """How many ONNX session runs this encoder has made (tests prove one per request)."""
        return self._runs

    def tokenize(self, text: str) -> Encoding:
        """Content tokens of text (no specials, no window cut), without running the model; for benchmarks."""
        return self._tokenizer.encode(text, add_special_tokens=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text).ids)

    def content_ids(self, text: str) -> np.ndarray:
        """EncodedText.ids of `text` without running the model: training scores the lexical guards on exactly the
        tokens serving sees."""
        windows = self._windows(text)
        return _content_ids(windows, _tail_keep(windows))

    def encode(self, text: str) -> EncodedText:
        windows = self._windows(text)
        # Unpadded by construction (head and tail windows have the same length): the graph takes no mask.
        ids = np.array([[CLS_ID, *w.ids, SEP_ID] for w in windows], dtype=np.int64)
        with self._lock:
            self._runs += 1
        embeddings, states = self._run(ids)
        keep = _tail_keep(windows)
        if keep is None:
            return EncodedText(embeddings[0], states[0, 1:-1], _offsets(windows[0].offsets), 1, _content_ids(windows, None))
        mean = embeddings.mean(axis=0)
        embedding = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        head, tail = windows
        token_states = np.concatenate([states[0, 1:-1], states[1, 1 + keep : -1]])
        offsets = _offsets(head.offsets + tail.offsets[keep:])
        return EncodedText(embedding, token_states, offsets, 2, _content_ids(windows, keep))

    def read_middle(self, text: str, encoded: EncodedText, max_windows: int = MIDDLE_WINDOWS) -> TokenStates | None:
        """`encoded`'s token states (of `encode(text)`) with those of the text between its head and tail windows,
        which nothing else reads, or None when that middle holds more than `max_windows` windows of tokens.

        The middle costs one more run, a batch of windows of WINDOW_TOKENS (the last one reaches back into the one
        before it, so that all have one length: the graph takes no mask); the embedding and every head but the PII
        head keep reading `encoded` alone. A text read whole by `encode` costs nothing more.
        """
        budget, states, offsets = self._budget, encoded.token_states, encoded.offsets
        if encoded.windows == 1 or len(offsets) <= budget:
            return TokenStates(states, offsets)
        head_end, tail_start = self.middle(encoded)
        if tail_start - head_end > max_windows * budget * MAX_TOKEN_CHARS:
            return None
        middle = self._between(text, head_end, tail_start)
        if len(middle.ids) > max_windows * budget:
            return None
        if not middle.ids:
            return TokenStates(states, offsets)
        n = -(-len(middle.ids) // budget)
        starts = [*range(0, (n - 1) * budget, budget), max(len(middle.ids) - budget, 0)]
        ids = np.array([[CLS_ID, *middle.ids[s : s + budget], SEP_ID] for s in starts], dtype=np.int64)
        with self._lock:
            self._runs += 1
        _, out = self._run(ids)
        skip = (n - 1) * budget - starts[-1]  # rows of the last window that the one before it already holds
        read = [states[:budget], *out[:-1, 1:-1], out[-1, 1 + skip : -1], states[budget:]]
        spans = np.concatenate([offsets[:budget], _offsets(middle.offsets), offsets[budget:]])
        return TokenStates(np.concatenate(read), spans)

    def read_around(self, text: str, encoded: EncodedText, points: Sequence[int],
                    max_windows: int = MIDDLE_WINDOWS) -> TokenStates | None:
        """`encoded`'s token states (of a text `read_middle` refused) with those of a window of WINDOW_TOKENS around
        each of `points` (character offsets) that lies in the unread middle, or None when they need more than
        `max_windows` windows (or a window's slice holds too few tokens). A point inside an earlier window (past its
        first quarter, before its last) needs none of its own. One run for all; none without a point in the middle."""
        budget, states, offsets = self._budget, encoded.token_states, encoded.offsets
        head_end, tail_start = self.middle(encoded)
        reach = budget * MAX_TOKEN_CHARS // 2  # characters on each side of a point: half a window of tokens or more
        windows: list[_Window] = []
        inner_end = -1
        for point in points:
            if not head_end <= point < tail_start or point < inner_end:
                continue
            if len(windows) == max_windows:
                return None
            start = max(head_end, min(point - reach, tail_start - 2 * reach))
            region = self._between(text, start, min(tail_start, start + 2 * reach))
            if len(region.ids) < budget:
                return None
            first = next((i for i, (b, _) in enumerate(region.offsets) if b >= point), len(region.ids) - 1)
            first = min(max(first - budget // 2, 0), len(region.ids) - budget)
            windows.append(_Window(region.ids[first : first + budget], region.offsets[first : first + budget]))
            inner_end = windows[-1].offsets[budget * 3 // 4][0]
        if not windows:
            return TokenStates(states, offsets)
        with self._lock:
            self._runs += 1
        _, out = self._run(np.array([[CLS_ID, *w.ids, SEP_ID] for w in windows]))
        spans = np.concatenate([offsets, *(_offsets(w.offsets) for w in windows)])
        rows = np.concatenate([states, *out[:, 1:-1]])
        _, first_seen = np.unique(spans[:, 0], return_index=True)  # sorted by start; the head and tail rows first
        return TokenStates(rows[first_seen], spans[first_seen])

    def _run(self, ids: np.ndarray) -> list[np.ndarray]:
        """One session run on `ids`, where this thread's runs go (run_onnx_on); waiting for it releases the GIL."""
        executor: Executor | None = getattr(_onnx_runner, "executor", None)
        if executor is None:
            return self._session.run(None, {"input_ids": ids})  # type: ignore[no-any-return]
        return executor.submit(self._session.run, None, {"input_ids": ids}).result()  # type: ignore[no-any-return]

    def middle(self, encoded: EncodedText) -> tuple[int, int]:
        """The characters between a two-window text's head and tail windows: what `encode` does not read."""
        budget, offsets = self._budget, encoded.offsets
        return int(offsets[budget - 1, 1]), int(offsets[budget, 0])

    def _between(self, text: str, start: int, end: int) -> _Window:
        """The tokens of `text` that lie within [start, end), as tokenising all of it gives them: the slice tokenised
        is cut at a space or newline on each side, where the tokenizer splits words before anything else."""
        before = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
        after = [i for i in (text.find(" ", end), text.find("\n", end)) if i >= 0]
        cut = min(after, default=len(text))
        encoding = self._tokenizer.encode(text[before:cut], add_special_tokens=False)
        kept = [(i, (b + before, e + before)) for i, (b, e) in zip(encoding.ids, encoding.offsets, strict=True)
                if b + before >= start and e + before <= end]
        return _Window([i for i, _ in kept], [span for _, span in kept])

    def _windows(self, text: str) -> list[_Window]:
        budget = self._budget
        ends = self._ends(text) if len(text) > 2 * END_CHARS else None
        if ends is not None:
            return ends
        if len(text) <= 2 * SIDE_CHARS:
            encoding = self._tokenizer.encode(text, add_special_tokens=False)
            whole = _Window(encoding.ids, encoding.offsets)
            return [whole] if len(whole.ids) <= budget else _head_and_tail(whole, whole, budget)
        head, tail = self._sides(text, SIDE_CHARS, len(text) - SIDE_CHARS)
        if min(len(head.ids), len(tail.ids)) < budget:  # a side that is one giant word: the two windows could not
            # be batched unpadded (ValueError, a 503 under on_failure: closed); one window of both sides' tokens
            return [_Window((head.ids + tail.ids)[:budget], (head.offsets + tail.offsets)[:budget])]
        return _head_and_tail(head, tail, budget)

    def _ends(self, text: str) -> list[_Window] | None:
        """The head and tail windows of a long text from its first and last END_CHARS characters, or None.

        Each slice is cut at a space or newline, where the tokenizer splits words before anything else, so a slice's
        tokens and offsets are the whole text's there; when each slice holds more than a window, its window is the
        text's. None when a slice has no such cut or holds no more than a window (runs without whitespace, CJK):
        the caller then tokenises as before.
        """
        cut = max(text.rfind(" ", 0, END_CHARS), text.rfind("\n", 0, END_CHARS))
        after = [i for i in (text.find(" ", len(text) - END_CHARS), text.find("\n", len(text) - END_CHARS)) if i >= 0]
        if cut <= 0 or not after:
            return None
        head, tail = self._sides(text, cut, min(after) + 1)
        if len(head.ids) <= self._budget or len(tail.ids) <= self._budget:
            return None
        return _head_and_tail(head, tail, self._budget)

    def _sides(self, text: str, head_end: int, tail_start: int) -> tuple[_Window, _Window]:
        """All tokens of text[:head_end] and of text[tail_start:], offsets in `text`'s characters."""
        head = self._tokenizer.encode(text[:head_end], add_special_tokens=False)
        tail = self._tokenizer.encode(text[tail_start:], add_special_tokens=False)
        return (_Window(head.ids, head.offsets),
                _Window(tail.ids, [(begin + tail_start, end + tail_start) for begin, end in tail.offsets]))


def _head_and_tail(head: _Window, tail: _Window, budget: int) -> list[_Window]:
    """A long text's two windows: the first `budget` tokens of `head`, the last of `tail`."""
    return [_Window(head.ids[:budget], head.offsets[:budget]), _Window(tail.ids[-budget:], tail.offsets[-budget:])]


def _tail_keep(windows: list[_Window]) -> int | None:
    """First row of the tail window not already covered by the head window's characters (None: one window)."""
    if len(windows) == 1:
        return None
    head_end = windows[0].offsets[-1][1]
    tail = windows[1].offsets
    return next((i for i, (start, _) in enumerate(tail) if start >= head_end), len(tail))


def _content_ids(windows: list[_Window], keep: int | None) -> np.ndarray:
    """The wordpiece ids of the rows of EncodedText.token_states: the head window, then the tail's new rows."""
    tail = windows[-1].ids[keep:] if keep is not None else []
    return np.array([*windows[0].ids, *tail], dtype=np.int64)


def _offsets(pairs: list[tuple[int, int]]) -> np.ndarray:
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)
