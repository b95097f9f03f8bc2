"""Precision guard: reject a semantic candidate whose prompt differs in what embeddings blur.

Sentence embeddings put "turn on the lights" next to "turn off the lights", and "what is 17*3"
next to "what is 17*4". A candidate is rejected when the two prompts differ in numbers, in units
of measure (minutes/seconds, miles/kilometers, GB/TB, per month/per week), in negation count, in named entities (capitalised or mixed-case tokens, acronyms, non-ASCII words)
or their order, in the side of an antonym pair (on/off, increase/decrease, he/she, ...) or of a negating prefix
(dependent/independent, rational/irrational), in ordinals (first/second), in the
audience (child vs expert) or in the question word (where/when/who/why); and in what the sentence's
structure says (`structure.py`): a reversed direction, other dates, a verb that negates ("stop ... from
going"), one vs all of a thing, two things that changed places ("a PS4 controller on a PS5" / "a PS5 controller on
a PS4"). Pure regex and set work, ~80 us per check uncached (bench/cache_eval.py measures it and its cost in recall).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from router.cache import structure

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)*")
_SENTENCE_END = frozenset(".?!:;\n")
_PHRASE_END = frozenset(".,;:?!()[]{}\"\n\u2014")  # punctuation that ends a direction's end or a quantified phrase
_ARROWS = ("->", "\u2192", "=>", "\u21d2")
_NUMBER_WORDS = {
    w: str(i) for i, w in enumerate(
        ["zero", "_", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]) if w != "_"
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
     "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9",
     "second": "2", "third": "3", "fourth": "4", "fifth": "5", "twice": "2", "double": "2",
     "triple": "3", "half": "0.5", "dozen": "12", "twenties": "20s", "thirties": "30s", "forties": "40s",
     "fifties": "50s", "sixties": "60s", "seventies": "70s", "eighties": "80s", "nineties": "90s"}
_NEGATIONS = frozenset(
    ["not", "no", "non", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "cannot", "without", "excluding", "dont", "doesnt", "didnt", "cant", "couldnt", "wont", "wouldnt", "shouldnt", "isnt", "arent", "wasnt", "werent", "havent", "hasnt", "hadnt", "aint"])
# "every file except those matching *.py": "except" negates before these; Python's `except ValueError` / "an except
# block" does not.
_EXCEPT_BEFORE = frozenset(["for", "those", "that", "the", "ones", "when", "if", "where", "what", "a", "an", "my",
                            "your", "our", "their", "his", "her", "its", "this", "these", "any", "one"])
ANTONYMS = tuple(tuple(p.split("/")) for p in ["on/off", "enable/disable", "enabled/disabled", "activate/deactivate", "start/stop", "open/close", "increase/decrease", "raise/lower", "up/down", "add/remove", "lock/unlock", "before/after", "more/less", "most/least", "max/min", "maximum/minimum", "buy/sell", "import/export", "upload/download", "install/uninstall", "connect/disconnect", "encrypt/decrypt", "include/exclude", "allow/deny", "accept/reject", "win/lose", "gain/lose", "positive/negative", "true/false", "hot/cold", "fast/slow", "cheap/expensive", "cheapest/expensive", "best/worst", "better/worse", "advantages/disadvantages", "north/south", "east/west", "left/right", "male/female", "men/women", "boy/girl", "above/below", "inside/outside", "input/output", "push/pull", "send/receive", "show/hide", "mute/unmute", "subscribe/unsubscribe", "follow/unfollow", "block/unblock", "login/logout", "legal/illegal", "possible/impossible", "higher/lower", "bigger/smaller", "larger/smaller", "faster/slower", "old/new", "first/last", "he/she", "him/her", "his/her", "husband/wife", "boyfriend/girlfriend", "man/woman", "son/daughter", "father/mother", "brother/sister", "like/hate", "love/hate", "like/dislike", "rural/urban", "rich/poor", "good/bad", "right/wrong", "strong/weak", "happy/sad", "early/late", "success/failure", "agree/disagree", "pro/anti", "cause/cure"])


def _one_name(groups: list[str]) -> dict[str, str]:
    """Each word of each space-separated group -> the group's first word."""
    return {word: group.split()[0] for group in groups for word in group.split()}


# Units of measure, plural, abbreviation and "per" adjective -> one name: "10 minutes" and "10 seconds" are different
# questions; "every day" and "daily" are not.
_UNITS = _one_name([
    "seconds sec secs", "minute minutes min mins", "hour hours hr hrs hourly", "day days daily",
    "week weeks weekly", "month months monthly", "year years yearly annually annual",
    "millimeter millimeters mm", "centimeter centimeters cm", "meter meters metre metres",
    "kilometer kilometers kilometre kilometres km", "mile miles", "foot feet ft",
    "inch inches", "yard yards", "gram grams", "kilogram kilograms kg kgs kilo kilos", "pound pounds lb lbs",
    "ounce ounces oz", "ton tons tonne tonnes", "celsius centigrade", "fahrenheit", "kelvin",
    "byte bytes", "kb kilobyte kilobytes", "mb megabyte megabytes", "gb gigabyte gigabytes",
    "tb terabyte terabytes", "kbps", "mbps", "gbps", "liter liters litre litres", "milliliter milliliters ml",
    "gallon gallons", "cup cups", "tablespoon tablespoons tbsp", "teaspoon teaspoons tsp", "dollar dollars usd",
    "euro euros eur", "yen", "rupee rupees", "peso pesos", "watt watts", "volt volts", "amp amps ampere amperes",
])
# word -> (pair index, side); one dict lookup per token instead of a scan over every pair.
_ANTONYM_INDEX: dict[str, list[tuple[int, int]]] = {}
for _i, _pair in enumerate(ANTONYMS):
    for _side, _word in enumerate(_pair):
        _ANTONYM_INDEX.setdefault(_word, []).append((_i, _side))
# Question words whose answers differ in kind (where vs how); what/how/which paraphrase each other freely.
_WH = frozenset(["who", "whom", "whose", "where", "when", "why"])
# Audience words -> one name per audience: "kids" / "children", "grandpa" / "grandfather" and a plural are one.
_AUDIENCE = _one_name([
    "child children kid kids", "toddler toddlers", "teenager teenagers teen teens", "student students",
    "beginner beginners novice novices newbie newbies", "expert experts", "professional professionals",
    "developer developers programmer programmers", "engineer engineers", "doctor doctors", "nurse nurses",
    "lawyer lawyers", "manager managers", "executive executives ceo", "investor investors", "parent parents",
    "senior seniors elderly", "grandmother grandma", "grandfather grandpa", "adult adults",
    "layperson layman laymen", "scientist scientists", "phd", "professor", "teacher teachers"])
# Prefixes that negate the word they are glued to ("independent" / "dependent", "irrational" / "rational", "unsafe" /
# "safe"), with the shortest rest each may negate; apart only non- and un- ("non-metal", "non refundable"): "in-memory",
# "in-depth", "a-list" negate nothing. "a-" needs a longer rest ("asymmetric"), else "asleep" / "sleep", "aside" /
# "side" would read as negations.
_NEGATING_PREFIXES = (("non", 4), ("dis", 4), ("un", 4), ("in", 4), ("im", 4), ("il", 4), ("ir", 4), ("a", 6))
_PREFIX_STARTS = tuple(p for p, _ in _NEGATING_PREFIXES)  # one str.startswith for the words no prefix opens
_JOINED_PREFIXES = {"non": " -", "un": "-"}  # the gaps after which the prefix joins the next word ("UN-backed": no)
# Words whose prefix negates nothing though the rest is a word: "invaluable" is very valuable, "inflammable" flammable,
# "display a video" is "play" it.
_NOT_NEGATED = frozenset(["invaluable", "inflammable", "unravel", "display"])
_ORDINALS = {w: str(i) for i, w in enumerate(
    ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"], 1)}
_STOP = frozenset(["i", "a", "an", "the", "is", "are", "was", "were", "be", "of", "to", "in", "on", "for", "and", "or", "what", "how", "why", "who", "which", "when"])


@dataclass(frozen=True, slots=True)
class Features:
    # Every number with its count (sorted): as a set, "2 cats and 2 dogs" equalled "2 cats and dogs", and a number
    # changed into one the prompt already held went unseen ("seat 1, row 2, car 2" vs "seat 1, row 1, car 2").
    numbers: tuple[str, ...]
    units: frozenset[str]
    negations: int
    entities: frozenset[str]
    entity_order: tuple[str, ...]
    words: frozenset[str]
    antonym_sides: dict[int, frozenset[int]]
    audience: frozenset[str]
    wh: frozenset[str]
    tokens: tuple[str, ...]  # lower-cased words and numbers in text order (the verifier's word features)
    directions: tuple[structure.Direction, ...]
    dates: tuple[str, ...]
    negated: frozenset[str]  # forms of the verbs a negating verb turns around ("stop it from going": go, goes...)
    quantities: dict[str, frozenset[str]]  # word of a quantified noun phrase -> 'one' / 'many'
    parties: tuple[str, ...] | None  # content words in order, pronouns by person (structure.parties)
    glued: frozenset[str]  # the words with "non-" / "un-" joined to the next ("non-metal": "nonmetal", no "metal")
    # The ordinal words' numbers, "first" as 1: in `numbers` "first" is none ("first" / "then" adds no number).
    ordinals: frozenset[str]



def _number(token: str) -> str:
    plain = token.replace(",", "")
    try:
        return repr(float(plain)) if "." in plain else str(int(plain))
    except ValueError:
        return token


def _entities(tokens: list[tuple[str, bool]]) -> tuple[str, ...]:
    """Capitalised tokens not opening a sentence, acronyms and mixed case (iPhone), every occurrence
    in order (consecutive repeats merged); capitalisation is ignored in title-cased text."""
    capitalised = sum(1 for t, _ in tokens if t[:1].isupper())
    title_case = len(tokens) >= 4 and capitalised / len(tokens) > 0.85
    out: list[str] = []
    for token, sentence_start in tokens:
        lower = token.lower()
        acronym = len(token) > 1 and token.isupper()
        mixed = any(c.isupper() for c in token[1:]) and not token.isupper()
        proper = token[:1].isupper() and not sentence_start and not title_case
        foreign = not token.isascii()  # CJK and other scripts: the encoder maps much of it to [UNK]
        if (acronym or mixed or proper or foreign) and lower not in _STOP and (not out or out[-1] != lower):
            out.append(lower)
    return tuple(out)


def _order(sequence: tuple[str, ...], keep: frozenset[str]) -> tuple[str, ...]:
    out: list[str] = []
    for item in sequence:
        if item in keep and (not out or out[-1] != item):
            out.append(item)
    return tuple(out)


def _glued(text: str, spans: list[tuple[str, bool, int, int]], words: frozenset[str]) -> frozenset[str]:
    """The lower-cased words, "non" / "un" joined to the word after them ("non-metal", "non metal": "nonmetal")."""
    if not words & _JOINED_PREFIXES.keys():
        return words
    out: set[str] = set()
    i = 0
    while i < len(spans):
        token, _, _, end = spans[i]
        word = token.lower()
        if i + 1 < len(spans) and spans[i + 1][2] == end + 1 and text[end] in _JOINED_PREFIXES.get(word, "") \
                and not token.isupper():
            i += 1
            word += spans[i][0].lower()
        out.add(word)
        i += 1
    return frozenset(out)


def _negated_rests(word: str) -> list[str]:
    """The words `word` negates by a prefix: "irrational" -> ["rational"] (and any other split the prefixes allow)."""
    if not word.startswith(_PREFIX_STARTS) or word in _NOT_NEGATED:
        return []
    return [word[len(p):] for p, rest in _NEGATING_PREFIXES if word.startswith(p) and len(word) - len(p) >= rest]


def negated_word(a: Features, b: Features) -> bool:
    """Does `a` hold a word that negates by its prefix a word only `b` holds ("independent" / "dependent")? Not when a
    negation word says it too ("unpaid" / "hasn't paid", "without unfollowing" / "keep following")."""
    if b.negations or a.negations > a.tokens.count("non"):
        return False
    return any(rest in b.glued and not any(w.startswith(rest) for w in a.glued)
               for word in a.glued - b.glued for rest in _negated_rests(word))


def other_ordinal(a: Features, b: Features) -> bool:
    """Do both name an ordinal and differ in them, "first" read as 1 ("First" / "Second Crusade")? A difference the
    numbers already show ("third column" / "column 3") is left to the `numbers` check."""
    return bool(a.ordinals and b.ordinals) and a.ordinals != b.ordinals \
        and a.ordinals.union(a.numbers) != b.ordinals.union(b.numbers)


def _stream(text: str, tokens: list[tuple[str, bool, int, int]]) -> tuple[list[str], list[bool]]:
    """The tokens lower-cased with "|" where punctuation ends a phrase and "->" for an arrow (structure.py), and
    per entry whether it is title-cased inside a sentence."""
    stream: list[str] = []
    proper: list[bool] = []
    prev_end = 0
    for token, sentence_start, start, end in tokens:
        gap = text[prev_end:start]
        if any(arrow in gap for arrow in _ARROWS):
            stream.append(structure.ARROW)
            proper.append(False)
        elif any(c in _PHRASE_END for c in gap):
            stream.append(structure.BOUNDARY)
            proper.append(False)
        lower = token.lower().replace("’", "'")
        if stream and start == prev_end:  # "i3", "9x13", "mp3": one name, not the pronoun "i" and a number
            stream[-1] += lower
        else:
            stream.append(lower)
            proper.append(not sentence_start and token[:1].isupper() and token[1:].islower())
        prev_end = end
    return stream, proper


@lru_cache(maxsize=4096)
def features(text: str) -> Features:
    spans: list[tuple[str, bool, int, int]] = []
    prev_end = 0
    for m in _TOKEN.finditer(text):
        opens_sentence = not spans or any(c in _SENTENCE_END for c in text[prev_end:m.start()])
        spans.append((m.group(), opens_sentence, m.start(), m.end()))
        prev_end = m.end()
    tokens = [(t, start) for t, start, _, _ in spans]
    lower = [t.lower().replace("’", "'") for t, _ in tokens]
    numbers = sorted([_number(t) for t in lower if t[0].isdigit()] + [_NUMBER_WORDS[t] for t in lower if t in _NUMBER_WORDS])
    negations = sum(1 for i, t in enumerate(lower) if t in _NEGATIONS or t.endswith("n't")
                    or (t == "except" and lower[i + 1:i + 2] and lower[i + 1] in _EXCEPT_BEFORE))
    words = frozenset(lower)
    sides: dict[int, set[int]] = {}
    for word in words:
        for pair, side in _ANTONYM_INDEX.get(word, ()):
            sides.setdefault(pair, set()).add(side)
    order = _entities(tokens)
    stream, proper = _stream(text, spans)
    return Features(tuple(numbers), frozenset(_UNITS[t] for t in lower if t in _UNITS), negations, frozenset(order), order, words,
                    {k: frozenset(v) for k, v in sides.items()}, frozenset(_AUDIENCE[w] for w in words if w in _AUDIENCE), words & _WH, tuple(lower),
                    structure.directions(stream), structure.dates(stream, proper), structure.negated_verbs(stream),
                    structure.quantities(stream), structure.parties(stream), _glued(text, spans, words),
                    frozenset(_ORDINALS[t] for t in lower if t in _ORDINALS))


# The checks in the order `reject_reason` reports them; the verifier takes each one as a feature.
CHECKS = ("numbers", "units", "negation", "entities", "entity_order", "antonym", "audience", "question_word")
# Checks that only veto (the verifier scores 0 when one differs) and are no verifier input. Measured on dev
# (`python -m offline.train_cache_verifier --measure-vetoes`, router/cache/README.md): none flags a paraphrase of
# the tuning set, the rule dev pairs or the written dev pairs. `negated_word`: a word one side negates by a prefix
# ("independent" / "dependent"); `ordinal`: other ordinals, "first" included ("First" / "Second Crusade").
VETO_CHECKS = ("direction", "dates", "negating_verb", "quantity", "exchange", "negated_word", "ordinal")


def differences(query: str, candidate: str) -> tuple[bool, ...]:
    """Per check in CHECKS: do the two prompts differ in it (the answer for one may be wrong for the other)?"""
    a, b = features(query), features(candidate)
    common = a.entities & b.entities
    return (
        a.numbers != b.numbers,
        a.units != b.units,
        a.negations != b.negations,
        not (a.entities <= b.words and b.entities <= a.words),
        # "Is Messi better than Ronaldo" vs "Is Ronaldo better than Messi"
        len(common) > 1 and _order(a.entity_order, common) != _order(b.entity_order, common),
        any(b.antonym_sides.get(pair, sides) != sides for pair, sides in a.antonym_sides.items()),
        a.audience != b.audience,
        a.wh != b.wh,
    )


# Checks whose difference may be an added detail rather than a changed one: "how long to learn the violin" / "how many
# years till I'm decent at violin" (a unit on one side only), "how to start knitting" / "total beginner, how do I learn
# to knit" (an audience on one side only), "undo my last commit but keep the changes" / "roll back the commit without
# losing my edits" (a negation on one side only). When only one prompt has any of it, the verifier's veto gives way to
# the pair model at its own, stricter threshold (pair.OperatingPoint.addition_threshold); both sides having different
# ones ("in 3 days" / "in 5 days", "not" / "never ... not") still vetoes.
ADDITION_CHECKS = ("numbers", "units", "audience", "negation")


def one_sided(query: str, candidate: str) -> tuple[bool, ...]:
    """Per check in ADDITION_CHECKS: does exactly one of the two prompts have any of it?"""
    a, b = features(query), features(candidate)
    return tuple(bool(x) != bool(y) for x, y in zip(_additions(a), _additions(b), strict=True))


def _additions(f: Features) -> tuple[object, ...]:
    """What each of ADDITION_CHECKS reads of one prompt, in that order."""
    return f.numbers, f.units, f.audience, f.negations


def veto_differences(query: str, candidate: str) -> tuple[bool, ...]:
    """Per check in VETO_CHECKS: do the two prompts differ in it?"""
    a, b = features(query), features(candidate)
    return (
        structure.reversed_direction(a.directions, b.directions),
        a.dates != b.dates,
        structure.negated_by_verb(a.negated, b.words, b.negations)
        or structure.negated_by_verb(b.negated, a.words, a.negations),
        structure.other_quantity(a.quantities, b.quantities),
        structure.exchanged(a.parties, b.parties),
        negated_word(a, b) or negated_word(b, a),
        other_ordinal(a, b),
    )


def reject_reason(query: str, candidate: str) -> str | None:
    """Why the candidate's answer would be wrong for the query, or None when it may be served."""
    differs = (*differences(query, candidate), *veto_differences(query, candidate))
    return next((name for name, d in zip(CHECKS + VETO_CHECKS, differs, strict=True) if d), None)
