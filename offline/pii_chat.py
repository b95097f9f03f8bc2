"""PII on real chat: PII-free training negatives for the token head, and the chat evaluation sets.

What counts as PII here (see the classifier README): a private person's name, a street address, and the structured
types (cards, IBANs, SSNs, e-mail, phone, IP). Not PII: a city or country on its own ("flights to Paris"), public
figures, products, tools and companies ("Docker", "Excel", "Elon Musk"). The token head still learns LOCATION
(so places are not confused with names) but LOCATION findings are not emitted.

Sets (ShareGPT split by conversation as in chat_data; hand-labelled conversations never trained on):
  train negatives     ShareGPT train rows <= 400 chars in which no capitalised word is a first or last name
                      from Faker's name lists (NAME_LOCALES) and no structured validator fires: teaches that
                      "Docker", "React", "Paris" are O in real prompts (MMLU negatives had no capitals at all)
  negative_read       offline/data/pii_chat_negative_test.jsonl: ShareGPT test rows read by hand, no personal
                      data (tools, products, places, public figures included)
  negative_rule       ShareGPT test rows selected by the same rule as the train negatives (larger, but biased
                      towards what the rule keeps)
  public figures      10 chitchat messages naming public figures (Stan Lee, Betty White): flags reported apart
  homework            offline/data/pii_homework_test.jsonl: 54 homework questions naming public figures ("What did
                      Mendel's pea experiments show?") or famous places ("What happened at Pearl Harbor?"), written
                      from general knowledge before any detector ran; the dev half, pii_homework_dev.jsonl, shaped
                      router/classifier/pii_public.py (issue 10)
  products            offline/data/pii_products_test.jsonl: 62 questions naming drugs ("Is Valtrex safe while
                      pregnant?"), brands named after people ("my Ted Baker tote") and reported cases ("Terry v.
                      Ohio"), and 20 look-alikes naming private people in the same frames, written before any
                      detector ran; the dev half, pii_products_dev.jsonl, shaped pii_public.product_or_case (trials 17-19)
  names               offline/data/pii_chat_names_test.jsonl: 34 chitchat messages naming private people
                      ("Hi Naomi!", "My name is Kate."), hand-labelled PERSON spans
  non-English         offline/data/pii_chat_non_english_test.jsonl: 85 ShareGPT user turns (any turn) of TEST
                      conversations read to be in another language and to hold no personal data
                      (non_english_candidates)

Dev sets (train_pii picks min_score on them; never trained on; chitchat's dev half, ShareGPT's dev split):
  dev names           offline/data/pii_chat_dev.jsonl group "names": the 31 chitchat dev messages in which a greeting
                      or introduction ("hey X", "I'm X", "this is X") precedes a Faker first name, spans checked by
                      reading (biased towards greetings: an optimistic recall)
  dev public figures  same file, group "public_figure": 16 chitchat dev messages naming public figures, picked by
                      reading the "modern day hero" answers (Jeff Bezos, Frida Kahlo); of them only Elon Musk (one
                      message, beside Demi Lovato) is in offline/public_figures.txt, the training-only list
  dev negatives       1,500 rule-selected ShareGPT dev rows and 1,000 name-free chitchat dev messages, less the 16 that
                      reading showed to name a private person or give a street address (group "negative_personal":
                      "hi claire!!!", "my daughter Linoy"); only texts some candidate head flagged were read, so a
                      few names the rule let through may remain (false alarms are, if anything, overstated)
  dev non-English     offline/data/pii_chat_non_english_dev.jsonl: 105 ShareGPT user turns of DEV conversations, picked
                      as the test set was; the PII language gate (router/classifier/pii_language.py) was chosen on them
"""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from offline import pii_data
from offline.chat_data import (
    DATA,
    DEV,
    JAILBREAK_LIKE,
    TEST,
    TRAIN,
    chitchat,
    conversation,
    excluded_ids,
    jsonl_rows,
    sharegpt,
    sharegpt_records,
    sharegpt_split,
)
from router.classifier.encoder import Encoder
from router.classifier.pii_rules import find_structured
from router.signals import PIIFinding

NAME_LOCALES = ("en_US", "en_GB", "en_IN", "de_DE", "fr_FR", "es_ES", "pt_PT", "nl_NL", "it_IT", "pl_PL")
MAX_CHARS = 400
PII_CACHE = Path("var/pii")  # where pii_data fetches the presidio-evaluator wheel
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
Detector = Callable[[str], Sequence[PIIFinding]]


@cache
def name_gazetteer() -> frozenset[str]:
    """First and last names of Faker's person providers in NAME_LOCALES (a filter, not a detector)."""
    names: set[str] = set()
    for locale in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attribute in ("first_names", "last_names", "first_names_male", "first_names_female"):
            names.update(str(n) for n in getattr(provider, attribute, ()))
    return frozenset(n for n in names if n.isalpha())


def name_free(text: str) -> bool:
    """No capitalised word is a known name and no structured PII validates."""
    names = name_gazetteer()
    return not any(word in names for word in _CAPITALISED.findall(text)) and not find_structured(text)


def chat_negatives(split: str, count: int, seed: int) -> list[pii_data.Sample]:
    """Up to `count` name-free ShareGPT rows of `split` (training: hand-labelled conversations left out)."""
    excluded = excluded_ids() if split == TRAIN else frozenset()
    rows = [
        p.text for p in sharegpt()
        if p.split == split and p.source == "sharegpt" and len(p.text) <= MAX_CHARS
        and conversation(p.id) not in excluded and name_free(p.text)
    ]  # fmt: skip
    random.Random(seed).shuffle(rows)
    return [pii_data.Sample(text, (), -1) for text in rows[:count]]


def _jsonl(name: str) -> list[dict]:
    return jsonl_rows(DATA / name)


def read_negatives(group: str) -> list[str]:
    """Hand-read PII-free prompts of one group: 'sharegpt' (real requests) or 'public_figure' (chitchat)."""
    return [row["text"] for row in _jsonl("pii_chat_negative_test.jsonl") if row["group"] == group]


_ENGLISH_FUNCTION_WORDS = frozenset((
    "the", "a", "an", "and", "or", "of", "to", "in", "is", "are", "was", "were", "be", "been", "it", "this", "that", "for", "on", "with", "as", "at", "by", "from", "you",
    "your", "i", "my", "me", "we", "our", "what", "how", "why", "can", "could", "would", "should", "do", "does", "did",
    "not", "no", "have", "has", "had", "will", "if", "which", "who", "when", "where", "there", "their", "they", "he",
    "she", "his", "her", "them", "about", "into", "than", "then", "so", "but", "just", "also", "please", "write",
    "make", "give", "explain",
))  # fmt: skip
_LETTERS = re.compile(r"[^\W\d_]+")


def non_english_candidates(split: str) -> list[tuple[str, str]]:
    """(id, text) of the ShareGPT user turns the non-English sets were read from: any turn of the split's
    conversations, 10-600 characters, not JAILBREAK_LIKE, 8+ letters, and 30%+ of the letters non-ASCII or under 15% of
    the words English function words (3+ words). Independent of the runtime gate's word lists (pii_language), so the
    test set also measures what that gate misses. All were read (505 dev, 563 test); kept: those mostly in another
    language (a Korean request with code, a Swedish text to translate) naming no private person and giving no address
    or contact detail. Ids: sharegpt:<part>:<k>, user turn k (0-based)."""
    seen: set[str] = set()
    out = []
    for record in sharegpt_records():
        if sharegpt_split(str(record["id"]).rsplit("_", 1)[0]) != split:
            continue
        turns = [t.get("value") for t in record.get("conversations", []) if t.get("from") == "human"]
        for k, text in enumerate(t.strip() if isinstance(t, str) else "" for t in turns):
            key = " ".join(text.lower().split())
            letters = [c for c in text if c.isalpha()]
            words = [w.lower() for w in _LETTERS.findall(text)]
            english = sum(w in _ENGLISH_FUNCTION_WORDS for w in words) / max(len(words), 1)
            foreign = len(letters) >= 8 and (
                sum(not c.isascii() for c in letters) >= 0.3 * len(letters) or (english < 0.15 and len(words) >= 3)
            )
            if key not in seen and 10 <= len(text) <= 600 and not JAILBREAK_LIKE.search(text) and foreign:
                seen.add(key)
                out.append((f"sharegpt:{record['id']}:{k}", text))
    return out


def read_non_english(split: str) -> list[str]:
    """Hand-read non-English ShareGPT prompts without personal data, of one split (non_english_candidates)."""
    return [row["text"] for row in _jsonl(f"pii_chat_non_english_{split}.jsonl")]


def _person_samples(rows: Sequence[dict]) -> list[pii_data.Sample]:
    return [
        pii_data.Sample(
            row["text"], tuple(pii_data.Span(pii_data.PERSON, a, b) for a, b in row["person_spans"]), -1
        )
        for row in rows
    ]


def read_homework(split: str) -> list[str]:
    """Homework questions naming public figures or famous places, none personal data (pii_homework_{split}.jsonl)."""
    return [row["text"] for row in _jsonl(f"pii_homework_{split}.jsonl")]


def read_products(split: str) -> tuple[list[str], list[pii_data.Sample]]:
    """Questions naming drugs, brands named after people and reported cases, none personal data, and look-alikes that
    name a private person in the same frames ("Can I take Sarah to school", "Jessica's bag"), each name a PERSON span
    (pii_products_{split}.jsonl)."""
    rows = _jsonl(f"pii_products_{split}.jsonl")
    private = [row for row in rows if row["group"] == "private"]
    for row in private:
        at = row["text"].index(row["name"])
        row["person_spans"] = [(at, at + len(row["name"]))]
    return [row["text"] for row in rows if row["group"] != "private"], _person_samples(private)


def read_names() -> list[pii_data.Sample]:
    """Hand-labelled chitchat messages naming private people, each name a PERSON span."""
    return _person_samples(_jsonl("pii_chat_names_test.jsonl"))


def read_dev() -> tuple[list[pii_data.Sample], list[str]]:
    """The hand-checked dev messages: (private names with PERSON spans, public-figure mentions)."""
    rows = _jsonl("pii_chat_dev.jsonl")
    names = _person_samples([row for row in rows if row["group"] == "names"])
    return names, [row["text"] for row in rows if row["group"] == "public_figure"]


def dev_negatives(count: int = 1500, chitchat_count: int = 1000) -> list[str]:
    """Rule-selected PII-free dev texts: ShareGPT dev rows and chitchat dev messages with no known name, minus the
    ones found by reading to hold personal data after all (pii_chat_dev.jsonl group "negative_personal")."""
    texts = [s.text for s in chat_negatives(DEV, count, 1)]
    texts += [p.text for p in chitchat() if p.split == DEV and name_free(p.text)][:chitchat_count]
    personal = {row["text"] for row in _jsonl("pii_chat_dev.jsonl") if row["group"] == "negative_personal"}
    return [text for text in texts if text not in personal]


def false_alarms(texts: Sequence[str], detect: Detector) -> dict[str, object]:
    """Share of PII-free texts with any finding, per type, and the first few flagged texts (to read, not to tune)."""
    flagged = [(text, sorted({f.type for f in detect(text)})) for text in texts]
    hits = [(text, types) for text, types in flagged if types]
    per_type: dict[str, int] = {}
    for _, types in hits:
        for kind in types:
            per_type[kind] = per_type.get(kind, 0) + 1
    return {
        "n": len(texts),
        "false_alarm_rate": round(len(hits) / max(len(texts), 1), 4),
        "per_type": {k: round(v / max(len(texts), 1), 4) for k, v in sorted(per_type.items())},
        "examples": [{"text": text[:160], "types": types} for text, types in hits[:10]],
    }


def evaluate_chat(detect: Detector, rule_count: int = 1500) -> dict[str, object]:
    """PII false alarms on real chat (hand-read and rule-selected negatives) and PERSON recall on chitchat names."""
    from offline.pii_eval import score

    names = read_names()
    return {
        "negative_read": false_alarms(read_negatives("sharegpt"), detect),
        "negative_public_figures": false_alarms(read_negatives("public_figure"), detect),
        "negative_rule": false_alarms([s.text for s in chat_negatives(TEST, rule_count, 1)], detect),
        "negative_non_english": false_alarms(read_non_english(TEST), detect),
        "negative_homework": false_alarms(read_homework(TEST), detect),
        "negative_products": false_alarms(read_products(TEST)[0], detect),
        "chitchat_names": score(names, detect, [pii_data.PERSON])[pii_data.PERSON] | {"messages": len(names)},
    }


MIN_SCORES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


def min_score_curve(encoder: Encoder, per_template: int = 10) -> list[dict[str, float]]:
    """Per token-head min_score: false alarms on PII-free chat, PERSON recall on chat names and held-out templates.

    Each text is encoded once; only the head's decoding changes. For the README's trade-off table.
    """
    from offline.pii_eval import EVAL_SEED, HELDOUT_FRACTION, TRAIN_SEED, score
    from router.classifier.pii import DEFAULT_HEAD, TokenHead, detect_pii

    templates = pii_data.load_templates(pii_data.templates_path(PII_CACHE))
    _, heldout = pii_data.split_templates(len(templates), TRAIN_SEED, HELDOUT_FRACTION)
    held = pii_data.generate(templates, heldout, per_template, EVAL_SEED)
    negatives = read_negatives("sharegpt") + [s.text for s in chat_negatives(TEST, 1500, 1)]
    names = read_names()
    encoded = {t: encoder.encode(t) for t in {*negatives, *(s.text for s in names), *(s.text for s in held)}}
    with np.load(DEFAULT_HEAD, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    rows = []
    for min_score in MIN_SCORES:
        head = TokenHead.from_arrays(arrays, min_score)

        def detect(text: str, head: TokenHead = head) -> tuple[PIIFinding, ...]:
            return detect_pii(text, encoded[text], head)

        types = [pii_data.PERSON, pii_data.STREET_ADDRESS]
        rows.append({
            "min_score": min_score,
            "chat_false_alarms": false_alarms(negatives, detect)["false_alarm_rate"],
            "chat_names_recall": round(score(names, detect, types[:1])[pii_data.PERSON]["recall"], 4),
            **{f"template_{t.lower()}_recall": round(v["recall"], 4) for t, v in score(held, detect, types).items()},
        })  # fmt: skip
    return rows


def plot_min_score_curve(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    x = [r["min_score"] for r in rows]
    for key in rows[0]:
        if key != "min_score":
            axes.plot(x, [r[key] for r in rows], "o-", label=key)
    axes.set_xlabel("token head min_score")
    axes.set_title("PII token head: chat false alarms vs recall")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
