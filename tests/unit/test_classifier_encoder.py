"""The real int8 ONNX encoder: outputs, token offsets, long-input windows, run counting, thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from router.classifier.encoder import (
    DIM,
    MIDDLE_WINDOWS,
    SIDE_CHARS,
    WINDOW_TOKENS,
    Encoder,
    ModelMissingError,
)

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "minilm"


@pytest.fixture(scope="module")
def encoder(require_model: None) -> Encoder:
    return Encoder(MODEL_DIR)


def test_embedding_is_unit_float32_and_token_rows_match_offsets(encoder: Encoder) -> None:
    text = "Reset my password, please."
    encoded = encoder.encode(text)
    assert encoded.embedding.shape == (DIM,) and encoded.embedding.dtype == np.float32
    assert np.linalg.norm(encoded.embedding) == pytest.approx(1.0, abs=1e-4)
    assert encoded.token_states.shape == (len(encoded.offsets), DIM)
    pieces = [text[start:end].lower() for start, end in encoded.offsets]
    assert pieces[:3] == ["reset", "my", "password"]
    assert encoded.windows == 1


def test_similar_meaning_is_closer_than_unrelated(encoder: Encoder) -> None:
    a = encoder.encode("How do I reset my password?").embedding
    b = encoder.encode("I forgot my login password, how can I change it?").embedding
    c = encoder.encode("What is the boiling point of nitrogen at sea level?").embedding
    assert float(a @ b) > float(a @ c) + 0.3


def test_same_text_gives_the_same_embedding(encoder: Encoder) -> None:
    first = encoder.encode("determinism matters for cache keys").embedding
    assert np.array_equal(first, encoder.encode("determinism matters for cache keys").embedding)


def test_each_encode_is_exactly_one_session_run(encoder: Encoder) -> None:
    before = encoder.runs
    encoder.encode("short")
    encoder.encode("long " * 2000)  # two windows, still one batched run
    assert encoder.runs - before == 2


@pytest.mark.parametrize("middle", [
    "the middle part " * 200,  # 600 tokens: three windows, the last reaching back into the second
    "mid " * 100,  # 100 tokens: one short window
    "mid " * 100 + "a" * 3_000 + " x",  # a run without whitespace
])
def test_read_middle_adds_every_token_between_head_and_tail_once(encoder: Encoder, middle: str) -> None:
    text = "alpha " * 300 + middle + "omega " * 300
    encoded = encoder.encode(text)
    before = encoder.runs
    read = encoder.read_middle(text, encoded)
    assert encoder.runs - before == 1 and read is not None
    whole = encoder.tokenize(text).offsets
    assert [tuple(span) for span in read.offsets.tolist()] == whole  # in text order, each token once
    assert read.token_states.shape == (len(whole), DIM)
    tail = len(encoded.offsets) - WINDOW_TOKENS
    assert np.array_equal(read.token_states[:WINDOW_TOKENS], encoded.token_states[:WINDOW_TOKENS])
    assert np.array_equal(read.token_states[-tail:], encoded.token_states[-tail:])


def test_read_middle_costs_nothing_when_encode_read_it_all_and_refuses_past_its_bound(encoder: Encoder) -> None:
    before = encoder.runs
    for text in ("short", "word " * 400, "alpha " * 256 + "omega " * 256):  # one window; two overlapping; two adjacent
        encoded = encoder.encode(text)
        read = encoder.read_middle(text, encoded)
        assert read is not None and np.array_equal(read.token_states, encoded.token_states)
    assert encoder.runs - before == 3
    text = "alpha " * 300 + "mid " * (MIDDLE_WINDOWS * WINDOW_TOKENS + 1) + "omega " * 300
    encoded = encoder.encode(text)
    assert encoder.read_middle(text, encoded) is None
    assert encoder.read_middle(text, encoded, MIDDLE_WINDOWS + 1) is not None
    assert encoder.runs - before == 5


def test_read_around_reads_a_window_around_each_point_in_the_middle_and_nothing_without_one(encoder: Encoder) -> None:
    """Past read_middle's bound the PII head reads the middle around the points it is given (where an address may
    stand), one run for all; points outside the middle, or inside a window already read, cost nothing."""
    text = "alpha " * 300 + "mid " * (MIDDLE_WINDOWS * WINDOW_TOKENS + 1) + "omega " * 300
    encoded = encoder.encode(text)
    start, end = encoder.middle(encoded)
    before = encoder.runs
    same = encoder.read_around(text, encoded, [0, len(text) - 1])
    assert encoder.runs == before and same is not None and np.array_equal(same.token_states, encoded.token_states)
    point = (start + end) // 2
    read = encoder.read_around(text, encoded, [point, point + 40])
    assert encoder.runs - before == 1 and read is not None
    assert len(read.offsets) == len(encoded.offsets) + WINDOW_TOKENS  # the window's rows, each token once
    assert np.all(np.diff(read.offsets[:, 0]) > 0)
    assert read.offsets[:, 0].min() < point - 400 and read.offsets[:, 1].max() > point + 400  # the point's context
    far_apart = range(start, end, (end - start) // (MIDDLE_WINDOWS + 1))
    assert encoder.read_around(text, encoded, far_apart) is None  # more windows than the bound: nothing is run
    assert encoder.runs - before == 1


def test_long_input_uses_head_and_tail_windows(encoder: Encoder) -> None:
    text = "alpha " * 300 + "the middle part " * 200 + "omega " * 300
    encoded = encoder.encode(text)
    assert encoded.windows == 2
    assert text[slice(*encoded.offsets[0])] == "alpha"
    assert text[slice(*encoded.offsets[-1])] == "omega"
    starts = encoded.offsets[:, 0]
    assert np.all(np.diff(starts) > 0), "token rows must be in text order without duplicates"
    assert len(encoded.token_states) == 2 * WINDOW_TOKENS


@pytest.mark.parametrize("text", [
    " ".join(f"Ligne {i}: naïve café, x={i * 37}; (voir §{i})" for i in range(600)),  # 20k chars, accents, punctuation
    "def f(x):\n    return x ** 2  # comment\n" * 400 + "终" * 3000,  # code, then a tail with no whitespace
])
def test_a_long_text_gets_the_windows_of_its_whole_tokenisation(encoder: Encoder, text: str) -> None:
    """Over 4k characters only the ends are tokenised (cut at whitespace): the head and tail windows must be the ones
    tokenising the whole text gives, ids and character offsets."""
    whole = encoder._tokenizer.encode(text, add_special_tokens=False)
    windows = encoder._windows(text)
    assert windows[0].ids == whole.ids[:WINDOW_TOKENS] and windows[0].offsets == whole.offsets[:WINDOW_TOKENS]
    assert windows[-1].ids == whole.ids[-WINDOW_TOKENS:] and windows[-1].offsets == whole.offsets[-WINDOW_TOKENS:]


def test_a_huge_text_with_one_giant_word_at_one_end_is_encoded(encoder: Encoder) -> None:
    """Over 64k characters only the ends are read; when one end is a single giant word (one [UNK]) its window was
    shorter than the other's and the unpadded batch raised ValueError: the request failed classification."""
    text = "a" * 40_000 + " " + "hello world " * 4_000
    encoded = encoder.encode(text)
    assert encoded.windows == 1 and len(encoded.token_states) == WINDOW_TOKENS
    assert text[slice(*encoded.offsets[-1])] in ("hello", "world")


def test_overlapping_windows_do_not_duplicate_tokens(encoder: Encoder) -> None:
    text = " ".join(f"w{i}" for i in range(150))  # 300 tokens: head and tail windows overlap
    encoded = encoder.encode(text)
    assert encoded.windows == 2
    assert np.all(np.diff(encoded.offsets[:, 0]) > 0)
    assert len(encoded.token_states) == encoder.count_tokens(text)


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01", "🙂" * 50, "x" * (3 * SIDE_CHARS), "é" * 100_000])
def test_odd_and_huge_inputs_never_crash(encoder: Encoder, text: str) -> None:
    encoded = encoder.encode(text)
    assert np.isfinite(encoded.embedding).all()
    assert len(encoded.token_states) == len(encoded.offsets) <= 2 * WINDOW_TOKENS


def test_concurrent_encodes_match_sequential_ones(encoder: Encoder) -> None:
    texts = [f"question number {i} about thermodynamics and entropy" for i in range(16)]
    expected = [encoder.encode(t).embedding for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda t: encoder.encode(t).embedding, texts))
    for a, b in zip(expected, got, strict=True):
        assert np.array_equal(a, b)


def test_missing_model_names_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="python -m offline build"):
        Encoder(tmp_path)
