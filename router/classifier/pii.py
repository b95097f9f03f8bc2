"""PII detection on the shared encoder pass: exact validators plus a token head for names and places.

Structured types (cards, IBANs, SSNs, e-mail, phone, IP; dates of birth and IDs a cue word names) have checksums,
grammars or cues, so rules in pii_rules decide them exactly. Names and addresses have none: a two-layer MLP over the encoder's
token states (plus four casing/shape bits the uncased tokenizer throws away) tags each token, and
runs of entity tokens become character spans. Where the text itself says a name stands ("Name: X",
"Dear X,"), pii_cues lets a word the head only doubts count, typed PERSON; where it frames a name or a street as a
public one ("Newton's laws", "What happened at Pearl Harbor?") or a name as a drug, a brand or a case ("take
Sudafed with Wellbutrin", "my Louis Vuitton bag", "Hadley v. Baxendale"), pii_public drops the finding. The head is numpy
only: two small matmuls per request, no second model run. Weights come from train_pii.py (committed .npz,
reproducible by seed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from router.classifier.address_shapes import LABELLED_NUMBER, full_addresses
from router.classifier.pii_cues import find_cues
from router.classifier.pii_language import is_english
from router.classifier.pii_public import product_or_case, public_figure, public_place
from router.classifier.pii_rules import STRUCTURED_TYPES, find_structured
from router.signals import PIIFinding

DEFAULT_HEAD = Path(__file__).with_name("heads") / "pii_token_head.npz"
OUTSIDE = "O"
N_SHAPE_FEATURES = 4
EXTEND_MAX_O = 0.5  # a span's edge tokens need only be more likely entity than O (see TokenHead.decode)
# A run of two or more capitalised words ("Daniel Thompson", "Neil C. Stevens") typed PERSON is found at this looser
# P(O): chosen on the dev sets (train_pii), where it bought 3 points of template PERSON recall and no chat false
# alarm; single words, where real chat's brands and characters sit, keep min_score.
FULL_NAME_MAX_O = 0.5
PERSON = "PERSON"
STREET_ADDRESS = "STREET_ADDRESS"
# Every type a finding can carry: the token head's emitted labels and the exact validators' (config checks
# `pii_types_allowed` against it, so a typo cannot silently refuse a type the operator meant to allow).
PII_TYPES = (PERSON, STREET_ADDRESS, *STRUCTURED_TYPES)
# A word a cue (pii_cues) proposes is a name when one of its tokens has P(O) below this: chosen on dev
# (`python -m offline.train_pii --cue-table`, classifier README), the loosest value at which no dev chat false alarm
# was added.
CUE_MAX_O = 0.9
# Characters of unread text kept on each side of the encoder's windows for the cue patterns: a cue's trigger, its
# spaces and its up to four words ("Name:\tAnna Maria van Dijk") fit with room to spare.
CUE_MARGIN = 256
# Characters before an address span where the word naming its number may stand ("reservations no. " is 17).
_LABEL_REACH = 24


class EncodedTokens(Protocol):
    """The part of the encoder's EncodedText this module reads."""

    @property
    def token_states(self) -> np.ndarray: ...
    @property
    def offsets(self) -> np.ndarray | Sequence[tuple[int, int]]: ...


def shape_features(text: str, offsets: Sequence[tuple[int, int]] | np.ndarray) -> np.ndarray:
    """Per token: starts with a capital, is all caps (2+ chars), continues a word, has a digit.

    MiniLM is uncased, so "Bill" and "bill" get the same ids; the capital is the cue a name model
    misses most. Computed on code-point arrays (no per-token Python), since it runs on every request.
    Empty offsets (special tokens) get zeros.
    """
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    feats = np.zeros((len(spans), N_SHAPE_FEATURES), dtype=np.float32)
    lowered, uppered = text.lower(), text.upper()
    if not text or len(spans) == 0 or len(lowered) != len(text) or len(uppered) != len(text):
        return feats  # case mapping changed the length (rare ligatures): no shape cues rather than wrong ones
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    upper = codes != np.frombuffer(lowered.encode("utf-32-le"), dtype=np.uint32)
    lower = codes != np.frombuffer(uppered.encode("utf-32-le"), dtype=np.uint32)
    digit = (codes >= 48) & (codes <= 57)
    word = upper | lower | digit
    start, end = spans[:, 0], spans[:, 1]
    real = end > start
    first = np.minimum(start, len(text) - 1)

    def count(flags: np.ndarray) -> np.ndarray:
        cum = np.concatenate([[0], np.cumsum(flags)])
        counted: np.ndarray = cum[end] - cum[start]
        return counted

    feats[:, 0] = real & upper[first]
    feats[:, 1] = real & (end - start > 1) & (count(upper) > 0) & (count(lower) == 0)
    feats[:, 2] = real & (start > 0) & word[np.maximum(start - 1, 0)]
    feats[:, 3] = real & (count(digit) > 0)
    return feats


def token_features(text: str, encoded: EncodedTokens) -> np.ndarray:
    """The head's input, shared by training and runtime: [T, 3 * hidden + shape] float32.

    Each token sees its own state and its two neighbours' (a name's context is mostly the next or
    previous word, which the sentence-embedding model's last layer only weakly keeps), plus shape bits.
    """
    states = np.asarray(encoded.token_states, dtype=np.float32)
    pad = np.zeros((1, states.shape[1]), dtype=np.float32)
    prev = np.concatenate([pad, states[:-1]])
    nxt = np.concatenate([states[1:], pad])
    return np.concatenate([states, prev, nxt, shape_features(text, encoded.offsets)], axis=1)


@dataclass(frozen=True, slots=True)
class TokenHead:
    """One ReLU layer, softmax over labels; labels[0] is "O", only `emit` labels become findings."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    labels: tuple[str, ...]
    emit: frozenset[str]
    min_score: float
    cue_max_o: float = CUE_MAX_O  # 0 turns the name cues off (train_pii's dev comparison)

    @classmethod
    def load(cls, path: Path = DEFAULT_HEAD) -> TokenHead:
        with np.load(path, allow_pickle=False) as z:
            return cls.from_arrays({k: z[k] for k in z.files})

    @classmethod
    def from_arrays(cls, z: Mapping[str, np.ndarray], min_score: float | None = None) -> TokenHead:
        """From train_pii's arrays; the input standardisation is folded into the first layer once.

        Subnormal weights (weight decay drives a few thousand there) are flushed to zero: they change no output,
        but CPUs multiply them in microcode, which made the head ten times slower.
        """
        mean, scale, w1 = (np.asarray(z[k], dtype=np.float32) for k in ("mean", "scale", "w1"))
        folded = w1 / scale[:, None]
        folded[np.abs(folded) < np.finfo(np.float32).tiny] = 0.0
        return cls(
            w1=folded,
            b1=np.asarray(z["b1"], dtype=np.float32) - mean @ folded,
            w2=np.asarray(z["w2"], dtype=np.float32),
            b2=np.asarray(z["b2"], dtype=np.float32),
            labels=tuple(str(x) for x in z["labels"]),
            emit=frozenset(str(x) for x in z["emit"]),
            min_score=float(z["min_score"]) if min_score is None else min_score,
        )

    def probabilities(self, feats: np.ndarray) -> np.ndarray:
        """[T, n_labels] softmax probabilities."""
        logits = np.maximum(feats @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probs: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return probs

    def spans(self, text: str, encoded: EncodedTokens) -> list[PIIFinding]:
        """Runs of consecutive entity tokens (P(O) below 1 - min_score), typed by their summed probabilities.

        Typing the whole run at once keeps "Sancho Pintor" one PERSON instead of two spans of
        alternating types; runs typed as a label outside `emit` (ORGANIZATION) are dropped.
        """
        offsets = np.asarray(encoded.offsets).reshape(-1, 2)
        if len(offsets) == 0:
            return []
        return self.decode(text, token_features(text, encoded), offsets)

    def decode(self, text: str, feats: np.ndarray, offsets: np.ndarray) -> list[PIIFinding]:
        """`spans` on precomputed features (training scores its dev split without re-encoding).

        Runs of tokens with P(O) < 1 - min_score decide what is found (and so the false-alarm rate); a found span
        then widens over the neighbouring tokens that are merely more likely entity than O and lean to the same
        label, so "Margaret" (P(O) 0.10) joins "Thompson" at min_score 0.9. Widening never creates a finding:
        letting the loose run decide flagged more chat ("Park" grew into a three-word "address").
        """
        probs = self.probabilities(feats)
        real = offsets[:, 1] > offsets[:, 0]
        found = (probs[:, 0] < 1.0 - self.min_score) & real
        for i, stop in _runs((probs[:, 0] < FULL_NAME_MAX_O) & real):
            if self.labels[_run_label(probs[i:stop])] == PERSON:
                start, end = _word_bounds(text, int(offsets[i, 0]), int(offsets[stop - 1, 1]))
                found[i:stop] |= _FULL_NAME.match(_casing(text[start:end])) is not None
        # Per token outside the found runs: the entity label it would widen a span of, or 0.
        widens = np.where((probs[:, 0] < EXTEND_MAX_O) & real & ~found, probs[:, 1:].argmax(axis=1) + 1, 0)
        out: list[PIIFinding] = []
        for i, stop in _runs(found):
            run = probs[i:stop]
            label = _run_label(run)
            finding = self._finding(text, int(offsets[i, 0]), int(offsets[stop - 1, 1]), label, run[:, label])
            if finding is None:
                continue
            lo, hi = i, stop
            while lo > 0 and widens[lo - 1] == label:
                lo -= 1
            while hi < len(widens) and widens[hi] == label:
                hi += 1
            # Whole tokens only: completing a widened edge's word could reach into a neighbouring finding.
            start, end = min(int(offsets[lo, 0]), finding.start), max(int(offsets[hi - 1, 1]), finding.end)
            if out and out[-1].type == finding.type and out[-1].end >= start:
                start = min(start, out.pop().start)  # two found runs inside one widened span: one finding
            out.append(replace(finding, start=start, end=end))
        if PERSON in self.emit and self.cue_max_o > 0.0:
            out = _with_cued_names(text, probs, offsets, out, self.cue_max_o)
        return [f for f in out if not _public(text, f)]

    def _finding(
        self, text: str, start: int, end: int, label: int, token_probs: np.ndarray
    ) -> PIIFinding | None:
        if self.labels[label] not in self.emit:
            return None
        start, end = _word_bounds(text, start, end)
        # Single letters and bare numbers ("Z", "G", "102") are maths, not names or addresses.
        score = float(token_probs.mean())
        span = _without_labelled_numbers(text, start, end) if self.labels[label] == STREET_ADDRESS else text[start:end]
        if sum(c.isalpha() for c in text[start:end]) < 2 or not _plausible(self.labels[label], span, score):
            return None
        if self.labels[label] == STREET_ADDRESS and _in_code(text, start, end):
            return None
        return PIIFinding(self.labels[label], start, end, round(score, 4))


def _without_labelled_numbers(text: str, start: int, end: int) -> str:
    """text[start:end] with each number a word names as a part of a document or an order blanked, the word too
    (address_shapes.LABELLED_NUMBER): "order 48213" is no house number, nor "21." in "Section 21. HOLDOVER", where the
    word may stand before the span the head found."""
    chars = list(text[start:end])
    for m in LABELLED_NUMBER.finditer(text, max(0, start - _LABEL_REACH), end):
        first, stop = max(m.start(), start), min(m.end(), end)
        if first < stop:
            chars[first - start : stop - start] = " " * (stop - first)
    return "".join(chars)


def _with_cued_names(
    text: str, probs: np.ndarray, offsets: np.ndarray, found: list[PIIFinding], max_o: float
) -> list[PIIFinding]:
    """`found` plus the names cues propose (pii_cues) that the head sees as entities (a token with P(O) < max_o),
    typed PERSON whatever label the head gave them ("Name: Clara Nogueira" read as a street)."""
    starts, ends = offsets[:, 0], offsets[:, 1]  # in text order, as the encoder and train_pii give them
    cues = find_cues(text, _read_regions(starts, ends, len(text)))
    if not cues:
        return found
    for cue in cues:
        # P(O) of the tokens overlapping each word: those ending after its start and starting before its end.
        p_o = [
            probs[np.searchsorted(ends, start, "right") : np.searchsorted(starts, end, "left"), 0]
            for start, end in cue.words
        ]
        sure = [len(p) > 0 and float(p.min()) < max_o for p in p_o]
        # A lowercase name ends at the first word the head sees as O ("my name is anna and"); a capitalised one
        # runs to the last word the head sees as an entity ("Directed by: Linda Jones", Linda at P(O) 0.93).
        if text[slice(*cue.words[0])].islower():
            n = next((i for i, ok in enumerate(sure) if not ok), len(sure))
        else:
            n = max((i + 1 for i, ok in enumerate(sure) if ok), default=0)
        if n == 0:
            continue
        start, end = min(w[0] for w in cue.words[:n]), max(w[1] for w in cue.words[:n])
        # A cued name passes the same shape checks as the head's ("GPT", "I" do not); an explicit cue vouches
        # for a lowercase one as a very sure head would.
        if _plausible(PERSON, text[start:end], 1.0 if cue.explicit else 0.0):
            score = round(1.0 - float(np.concatenate(p_o[:n]).mean()), 4)
            found = _claim(text, found, PIIFinding(PERSON, start, end, score))
    return sorted(found, key=lambda f: f.start)


def _public(text: str, finding: PIIFinding) -> bool:
    """Whether the text frames a name or address finding as a public figure or place, or a name as a drug, brand or
    case (pii_public): "Newton's laws", "Why was the Manhattan Project based at Los Alamos?", "can I take Sudafed with
    Wellbutrin" name no private person (issue 10, trials 17-19)."""
    if finding.type == PERSON:
        return public_figure(text, finding.start, finding.end) or product_or_case(text, finding.start, finding.end)
    return finding.type == STREET_ADDRESS and public_place(text, finding.start, finding.end)


def _read_regions(starts: np.ndarray, ends: np.ndarray, length: int) -> list[tuple[int, int]]:
    """Where a cue can name a word the encoder read: the text without the widest gap between its tokens (a long
    text's unread middle, between the head and tail windows), less CUE_MARGIN characters on each side of it. A cue's
    words count only where they overlap a token (`_with_cued_names`), so scanning the middle (~60 ms of regex at
    131k characters, on the encoder thread) found nothing that could be used; a cue whose pattern and words span more
    than CUE_MARGIN characters of the gap is the one change."""
    if len(starts) < 2:
        return [(0, length)]
    gaps = starts[1:] - ends[:-1]
    widest = int(gaps.argmax())
    if gaps[widest] <= 2 * CUE_MARGIN:
        return [(0, length)]
    return [(0, int(ends[widest]) + CUE_MARGIN), (int(starts[widest + 1]) - CUE_MARGIN, length)]


def _claim(text: str, found: list[PIIFinding], name: PIIFinding) -> list[PIIFinding]:
    """`found` with `name` added: a PERSON finding it overlaps merges into it; a finding of another type keeps only
    its longer side outside the name, if that still holds two letters (the address after "Robert's address:")."""
    kept = []
    for f in found:
        if f.end <= name.start or name.end <= f.start:
            kept.append(f)
        elif f.type == PERSON:
            name = replace(name, start=min(f.start, name.start), end=max(f.end, name.end))
        else:
            start, end = max((f.start, name.start), (name.end, f.end), key=lambda side: side[1] - side[0])
            while start < end and not text[start].isalnum():
                start += 1
            while end > start and not text[end - 1].isalnum():
                end -= 1
            if sum(c.isalpha() for c in text[start:end]) >= 2:
                kept.append(replace(f, start=start, end=end))
    return [*kept, name]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) token indices of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _run_label(run: np.ndarray) -> int:
    """The entity label of a run of tokens: the one with the most probability summed over the run (never O)."""
    return int(run[:, 1:].sum(axis=0).argmax()) + 1


def _word_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """A name tagged on its first word-piece only still covers the whole word."""
    while end < len(text) and text[end].isalnum():
        end += 1
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    return start, end


# Both are matched against _casing(span), so accented capitals count ("Élise", "Jörg", "Łukasz").
_NAME_WORD = re.compile(r"\b[A-Z][a-z]")
_FULL_NAME = re.compile(r"[A-Z][\w'-]+(?:\s+(?:[A-Z]\.|[A-Z][\w'-]+))+$")
# One-word street names are German or Dutch compounds ("Sontagring", "Kyanlaan", "Wilmsenstr.").
_COMPOUND_STREET = re.compile(
    r"(?:ring|allee|stra(?:ß|ss)e|str\.?|weg|gasse|platz|damm|ufer|laan|baan|pad|dreef|hof|gracht|straat|kade|"
    r"plein|singel|boulevard|steeg)$",
    re.IGNORECASE,
)
# A German "-stadt" word is a city or a part of one ("Hauptstadt", "Altstadt", "Darmstadt"), never a street: the head
# read "die Hauptstadt von Frankreich" as a street address (trial 15: 6 of 8 German "-stadt" questions uncached, and
# moved off gpt-oss-120b), so without a house number a span holding one is a place.
_CITY_WORD = re.compile(r"stadt\b", re.IGNORECASE)
# Code identifiers with two or more inner capitals ("NotImplementedError", "YantraInfoSoft") are not names;
# one inner capital still is ("McGregor", "LeBron").
_IDENTIFIER = re.compile(r"^\S*[a-z]\S*[A-Z]\S*[A-Z]\S*$")
# Letters and digits fused in one token ("ERC1155", "6LoWPAN", "2c3c0c58eca7", "m3760/hisq"): codes, not addresses.
_CODE_TOKEN = re.compile(r"[A-Za-z]\d|\d[A-Za-z]")
# An all-lowercase name ("tell anna") is kept only this sure: chosen on the chat dev sets (train_pii), where it
# bought about 2 points of template PERSON recall for 0.1-0.3 points of chat false alarms.
LOWERCASE_NAME_MIN = 0.95


def _plausible(label: str, span: str, score: float) -> bool:
    """Shape checks the head cannot learn from uncased tokens, measured on real chat (offline/pii_chat.py).

    A name has a capitalised word ("Naomi", not "vinaigrette", "ops", "ALCOA") unless the head is very sure:
    real chat is full of lowercase words and acronyms the head tags, while a private person's name is almost
    always capitalised; one CamelCase word with two inner capitals is code. A street address has a number, two
    words or a compound street ending: single words tagged as addresses in chat were product names and foreign
    words ("Google", "ALCOA", "Alpacas"); without a house number it also needs a capitalised word and no
    letter-digit code ("ERC1155") or "-stadt" word ("die Hauptstadt von Frankreich" names a city). A number a word
    names as a section or an order ("order 48213", address_shapes.LABELLED_NUMBER) is no house number. (Requiring a
    number cut recall on the templates' bare street names, "Hilary Stravenue", to 0.60.)
    """
    if label == PERSON:
        if " " not in span and _IDENTIFIER.match(span):
            return False
        return _NAME_WORD.search(_casing(span)) is not None or (span.islower() and score >= LOWERCASE_NAME_MIN)
    if label == STREET_ADDRESS:
        words = span.split()
        if not any(w.strip(",.").isdigit() for w in words) and (
            _NAME_WORD.search(span) is None or (len(words) == 1 and _CODE_TOKEN.search(span)) or _CITY_WORD.search(span)
        ):
            return False  # no house number, and no capitalised street word, or code, a path, foreign text, a city
        return len(words) > 1 or any(c.isdigit() for c in span) or bool(_COMPOUND_STREET.search(span))
    return True


# Code, not a street (TRAIN code prompts): a lowerCamelCase identifier ("ringRadius: 2.5, pipeRadius"), a path (a
# backslash, or a slash beside a letter: "OneDrive - Church of Jesus Christ\\Documents"; "39/150, Bal Nagar" is a
# house number), a `//` comment ("new Coordinate(19.82, -155.47), // Mauna Kea Summit"; a URL's "://" is none). A
# string's escaped line break is no path: '"address": "742 Evergreen Terrace\\nSpringfield"' is pasted data ("\\new"
# is a folder); nor is a slash before the address's unit ("742 Evergreen Terrace/Apt 5").
_CAMEL_WORD = re.compile(r"\b[a-z]+[A-Z]")
_PATH_BEFORE = re.compile(r"(?:\\|[^\W\d]/)$")
_PATH_AFTER = re.compile(r"\\(?![nrt](?![a-z]))|/[^\W\d]")
_LINE_COMMENT = re.compile(r"(?<!:)//[^\n]*$")
_UNIT_AFTER = re.compile(r"/\s*(?:apt|apartment|unit|flat|suite|ste|floor|fl|room|rm|bldg|building)\b", re.IGNORECASE)


def _in_code(text: str, start: int, end: int) -> bool:
    """Whether the span text[start:end] is part of code rather than prose or a form."""
    if _CAMEL_WORD.search(text, start, end) or _PATH_BEFORE.search(text, max(0, start - 2), start):
        return True
    path_after = _PATH_AFTER.match(text, end) and not _UNIT_AFTER.match(text, end)
    return bool(path_after or _LINE_COMMENT.search(text, text.rfind("\n", 0, start) + 1, start))


def _casing(span: str) -> str:
    """`span` with every upper-case letter as "A" and every lower-case one as "a": the shape regexes above are ASCII,
    names are not (on the dev templates, capitalised "Júlia" and "Émile L. Duval" failed them)."""
    return "".join("A" if c.isupper() else "a" if c.islower() else c for c in span)


_HEAD: TokenHead | None = None


def default_head() -> TokenHead:
    """The committed head, loaded once per process."""
    global _HEAD
    if _HEAD is None:
        _HEAD = TokenHead.load()
    return _HEAD


def detect_pii(text: str, encoded: EncodedTokens, head: TokenHead | None = None) -> tuple[PIIFinding, ...]:
    """All PII in `text`: validated structured findings and complete postal addresses first, head spans that do not
    overlap them.

    The head (names, addresses) runs on English text only (pii_language): in other languages it mistook capitalised
    nouns and opening words for names; the validated types and complete addresses (address_shapes.full_addresses)
    are found in every language.
    """
    found = find_structured(text)
    found += [PIIFinding(STREET_ADDRESS, start, end, 1.0) for start, end in full_addresses(text)
              if not any(start < f.end and f.start < end for f in found)]
    if not is_english(text):
        return tuple(found)
    for span in (head or default_head()).spans(text, encoded):
        if not any(span.start < f.end and f.start < span.end for f in found):
            found.append(span)
    return tuple(sorted(found, key=lambda f: f.start))
