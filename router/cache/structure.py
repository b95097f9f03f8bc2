"""What a prompt says through its structure, which word overlap and sentence embeddings blur.

Five readings the guard compares between a query and a stored prompt (`guard.py`):
- **direction**: the (source, target) ends of "from X to/into/onto Y", "to Y from X", "X to Y", "X -> Y":
  "from my iPhone to my PC" and "to my iphone from my pc" share every word and differ in the answer;
- **dates**: month and weekday names and abbreviations, as a multiset ("in March" vs "in May");
- **negating verbs**: "stop / prevent / keep ... from V-ing", "avoid V-ing" turn their complement around
  ("go to sleep" vs "stop it from going to sleep") without a "not";
- **quantities**: the quantifier of a noun, one (one / a / single) or many (all / every / each / both / several /
  multiple): "delete one contact" vs "delete all my contacts";
- **exchange**: two things that change places, everything else said the same: who does what to whom ("how can a
  manager motivate the team" vs "how can the team motivate a manager", "what should I ask the interviewer" vs "what
  will the interviewer ask me"), which goes where ("a PS4 controller on a PS5" vs "a PS5 controller on a PS4").
Each reading works on the guard's token stream: lower-cased words and numbers, "|" where punctuation ended a
phrase, "->" for an arrow. Pure list and set work: a few microseconds per text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

BOUNDARY = "|"
ARROW = "->"
# Words that end a direction's end: verbs of the frame, prepositions, conjunctions, question words, pronouns.
_END_STOP = frozenset(
    ["is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "can", "could", "should", "would", "will",
     "shall", "might", "must", "have", "has", "had", "how", "what", "which", "who", "whom", "where", "when", "why",
     "and", "or", "but", "so", "if", "then", "than", "because", "while", "whereas", "although", "though", "that",
     "in", "on", "at", "for", "with", "without", "by", "via", "using", "through", "of", "about", "as", "like", "vs",
     "versus", "between", "after", "before", "during", "over", "under", "per", "within", "across", "i", "you", "we",
     "it", "they", "he", "she", "me", "please", "not", "no", "there", "here", "back", "again", "way", "ways"])
# Words inside an end that do not name it ("from my iPhone" = "from the iphone").
_END_SKIP = frozenset(["a", "an", "the", "my", "your", "our", "his", "her", "their", "its", "this", "that", "these",
                       "those", "some", "one", "own", "new", "existing", "another", "other", "current"])
_CONNECTORS = frozenset(["to", "into", "onto", "until", "till", ARROW])
_SOURCES = frozenset(["from", "off"])
_END_WORDS = 4  # an end names at most this many words


def _stem(word: str) -> str:
    """'iPhones' ~ 'iphone', 'contacts' ~ 'contact': enough to match the ends of two phrasings."""
    word = word.removesuffix("'s")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


_PARTS = re.compile(r"\d+|[^\W\d_]+")


def _names(token: str) -> set[str]:
    """A token's stem, and for "9x13" or "i3" its parts too, so "9 x 13" and "9x13" still share a word."""
    parts = _PARTS.findall(token)
    return {_stem(token), *parts} if len(parts) > 1 else {_stem(token)}


def _end(stream: Sequence[str], start: int, step: int) -> tuple[frozenset[str], int]:
    """The named words of the phrase from `start` walking by `step` (+1 right, -1 left), and where it stopped."""
    words: set[str] = set()
    i, named = start, 0
    while 0 <= i < len(stream) and named < _END_WORDS:
        token = stream[i]
        if token == BOUNDARY or token in _END_STOP or token in _CONNECTORS or token in _SOURCES:
            break
        if token not in _END_SKIP:
            words |= _names(token)
            named += 1
        i += step
    while 0 <= i < len(stream) and stream[i] in _END_SKIP:  # "from a 9-inch round pan": reach the "from"
        i += step
    return frozenset(words), i


# (source end, target end, whether the wording marks a direction for sure), each end's distinctive words
Direction = tuple[frozenset[str], frozenset[str], bool]


# "X to Y" without "from" is a direction after one of these ("convert miles to km"); else "to" is mostly an
# infinitive ("alter a table to add a column") or a comparison ("compared to").
_CONVERSION = frozenset(f"{stem}{suffix}" for stem in ["convert", "translate", "chang", "switch", "migrat", "mov",
                                                        "transfer", "port", "turn", "upgrad", "downgrad", "cast", "map"]
                        for suffix in ("", "e", "s", "es", "ed", "ing"))


def directions(stream: Sequence[str]) -> tuple[Direction, ...]:
    """Every (source, target) the text names. The target follows a connector; the source is the phrase after a
    "from"/"off" just before it ("from X to Y") or just after the target ("to Y from X"), else the phrase before
    it ("X into Y", "X -> Y"). "X to Y" is marked sure only after a conversion verb ("convert X to Y") or as a
    whole short phrase ("hex to rgb?"): "to" is mostly an infinitive ("alter a table to add a column"). Words
    both ends share are dropped ("9-inch pan" to "9x13 pan": the ends are "9-inch" and "9x13"); a pair left with
    an empty end says nothing."""
    out: list[Direction] = []
    for i, token in enumerate(stream):
        if token not in _CONNECTORS:
            continue
        target, after = _end(stream, i + 1, 1)
        source, before = _end(stream, i - 1, -1)
        sure = True
        if after < len(stream) and stream[after] in _SOURCES:
            source, _ = _end(stream, after + 1, 1)
        elif before < 0 or stream[before] not in _SOURCES:
            verb = source & _CONVERSION
            phrase = (before < 0 or stream[before] == BOUNDARY) and i - before <= 3
            source, sure = source - verb, token != "to" or bool(verb) or phrase
        source, target = source - target, target - source
        if source and target:
            out.append((source, target, sure))
    return tuple(out)


def reversed_direction(a: tuple[Direction, ...], b: tuple[Direction, ...]) -> bool:
    """Does one text name a direction the other names only the other way round (one of the two surely a direction)?"""
    def runs(p: Direction, q: Direction, swapped: bool) -> bool:
        qs, qt = (q[1], q[0]) if swapped else q[:2]
        return bool(p[0] & qs) and bool(p[1] & qt)

    return any(any(runs(p, q, True) and (p[2] or q[2]) for q in other) and not any(runs(p, q, False) for q in other)
               for mine, other in ((a, b), (b, a)) for p in mine)


_MONTHS = ["january jan", "february feb", "march mar", "april apr", "may", "june jun", "july jul", "august aug",
           "september sep sept", "october oct", "november nov", "december dec"]
_WEEKDAYS = ["monday mon", "tuesday tue tues", "wednesday wed", "thursday thu thur thurs", "friday fri",
             "saturday sat", "sunday sun"]
_DATE = {w: f"m{i}" for i, g in enumerate(_MONTHS, 1) for w in g.split()} | \
    {w: f"d{i}" for i, g in enumerate(_WEEKDAYS, 1) for w in g.split()} | \
    {f"{w}s": f"d{i}" for i, g in enumerate(_WEEKDAYS, 1) for w in g.split()[:1]}  # "on mondays"
# Names that are also ordinary words count only in a date's context: "may I", "march on", "Jan" (a name), "the sun".
_WORDLIKE = frozenset(["may", "march", "august"])  # ... or capitalised inside a sentence ("in early May")
_ABBREVIATIONS = frozenset(["mar", "jan", "dec", "aug", "sun", "sat", "wed", "mon"])  # "SAT", "Sun" are names too
_DATE_CONTEXT = frozenset(["in", "of", "on", "since", "until", "till", "by", "before", "after", "from", "early", "late",
                           "mid", "next", "last", "this", "every", "through", "during", "between"])
_DATE_LINK = frozenset(["to", "and", "or", "through", "until", "till"])  # "from March to May"


def dates(stream: Sequence[str], proper: Sequence[bool]) -> tuple[str, ...]:
    """Months ('m3') and weekdays ('d1') named, sorted with repeats. A name that is also a word counts next to a
    number ("May 5", "5 may 2024"), after a date preposition ("in may") or another date ("March to May"), and
    for may / march / august also when title-cased inside a sentence (`proper`)."""
    out: list[str] = []
    for i, token in enumerate(stream):
        if token not in _DATE:
            continue
        if token in _WORDLIKE or token in _ABBREVIATIONS:
            before = stream[i - 1] if i else ""
            after = stream[i + 1] if i + 1 < len(stream) else ""
            linked = before in _DATE_LINK and i >= 2 and stream[i - 2] in _DATE
            if not (before[:1].isdigit() or after[:1].isdigit() or before in _DATE_CONTEXT or linked
                    or (proper[i] and token in _WORDLIKE)):
                continue
        out.append(_DATE[token])
    return tuple(sorted(out))


_NEGATING_VERBS = frozenset(
    f"{stem}{suffix}" for stem in ["stop", "prevent", "keep", "avoid", "block", "prohibit", "forbid", "ban", "deter",
                                   "discourage", "restrain", "refrain", "quit", "cease", "resist"]
    for suffix in ("", "s", "ed", "ing", "ped", "ping", "ned", "ning")) | {"kept", "forbade", "forbidden"}
# These negate a gerund right after them too ("stop smoking"); "keep" then means "continue".
_NEGATING_GERUND = frozenset(w for w in _NEGATING_VERBS if w.startswith(("stop", "avoid", "quit", "cease", "resist")))
# A text with one of these says "not" in its own words ("turn off updates" = "stop it from updating").
_NEGATIVE_WORDS = _NEGATING_VERBS | frozenset(
    ["off", "disable", "disabled", "disabling", "cancel", "halt", "pause", "suppress", "ignore", "kill", "end", "less",
     "unable"])


def _verb_forms(gerund: str) -> frozenset[str]:
    """'going' -> go, goes, gone...; 'updating' -> update, updates, updated: the other text naming that verb."""
    base = gerund[:-3]
    bases = {base, base + "e"} | ({base[:-1]} if len(base) > 2 and base[-1] == base[-2] else set())
    return frozenset(f"{b}{suffix}" for b in bases for suffix in ("", "s", "es", "ed", "d", "ing", "er", "ers"))


def negated_verbs(stream: Sequence[str]) -> frozenset[str]:
    """Forms of every verb a negating verb turns around: "stop X from going", "keep X from V-ing", "avoid V-ing"."""
    out: set[str] = set()
    for i, token in enumerate(stream):
        if token not in _NEGATING_VERBS:
            continue
        if i + 1 < len(stream) and token in _NEGATING_GERUND and stream[i + 1].endswith("ing"):
            out |= _verb_forms(stream[i + 1])
            continue
        window = stream[i + 1:i + 7]
        j = next((k for k, w in enumerate(window) if w == "from" or w == BOUNDARY), None)
        if j is not None and window[j] == "from" and j + 1 < len(window) and window[j + 1].endswith("ing"):
            out |= _verb_forms(window[j + 1])
    return frozenset(out)


def negated_by_verb(negated: frozenset[str], other: frozenset[str], other_negations: int) -> bool:
    """Does the other text (its words) name a verb this one negates with a verb, with no negation ("not", "won't":
    the guard's count) or negative word of its own? ("go to sleep" vs "stop my laptop from going to sleep")."""
    return bool(negated & other) and not other & _NEGATIVE_WORDS and other_negations == 0


# One thing vs several: "delete one contact" / "delete all my contacts". "any" goes with either ("is there a/any
# app"), "no"/"none" is the negation check's.
_QUANTIFIERS = {w: kind for kind, words in [("one", "one single a an"),
                                            ("many", "all every each both entire whole several multiple many few")]
                for w in words.split()}
_TIME_UNITS = frozenset(["second", "minute", "hour", "day", "night", "week", "month", "year", "time", "morning",
                         "evening", "weekend", "lot", "bit", "little", "while"])
_NOT_QUANTIFIED = frozenset(["other", "another", "one", "at", "of"])  # "each other", "all at once"
_NOT_QUANTIFYING_AFTER = _CONNECTORS | {"at", "how", "so", "too"}  # "into one", "at all", "how many", "too many"


def quantities(stream: Sequence[str]) -> dict[str, frozenset[str]]:
    """Per word of a quantified noun phrase, the kinds ('one', 'many') it is quantified with: "all of my contacts"
    -> {'contact': {'many'}}. "a few" / "a couple of" are 'many'; "a day", "a lot", "each other", "how many", "at
    all" and the target of a connector ("merge them into one pdf") quantify nothing."""
    out: dict[str, set[str]] = {}
    for i, token in enumerate(stream):
        kind = _QUANTIFIERS.get(token)
        if kind is None or (i and stream[i - 1] in _NOT_QUANTIFYING_AFTER):
            continue
        start = i + 1
        if token in ("a", "an") and start < len(stream) and stream[start] in ("few", "couple"):
            kind, start = "many", start + 1
        while start < len(stream) and stream[start] in ("of", "the", "my", "your", "our", "their", "these", "those"):
            start += 1
        if start >= len(stream) or stream[start] in _NOT_QUANTIFIED or \
                (token in ("a", "an") and _stem(stream[start]) in _TIME_UNITS):
            continue
        for word in _end(stream, start, 1)[0].difference(_QUANTIFIERS):
            out.setdefault(word, set()).add(kind)
    return {word: frozenset(kinds) for word, kinds in out.items()}


def other_quantity(a: dict[str, frozenset[str]], b: dict[str, frozenset[str]]) -> bool:
    """Is a word quantified in both texts, never the same way ('one' in one, 'many' in the other)?"""
    return any(not kinds & b[word] for word, kinds in a.items() if word in b)


# Pronouns stand for their person, so "I ask the interviewer" and "the interviewer asks me" name the same two parties.
_PERSON = {w: p for p, words in [("i", "i me"), ("we", "we us"), ("you", "you"), ("he", "he him"), ("she", "she"),
                                 ("they", "they them")] for w in words.split()}
# A text that compares or lists things may name them in any order ("tcp vs udp" / "udp and tcp"), and a passive one
# names its parties the other way round ("someone blocked me" / "I was blocked by someone"): no exchange is read.
_SYMMETRIC = frozenset(["and", "or", "vs", "versus", "between", "compare", "compared", "comparing", "comparison",
                         "difference", "differences", "than", "both", "either", "neither", "nor", "same", "similar",
                         "by"])
_PARTY_SKIP = (_END_STOP | _END_SKIP | _CONNECTORS | _SOURCES).difference(_PERSON)


def parties(stream: Sequence[str]) -> tuple[str, ...] | None:
    """The text's content words in order (stemmed, pronouns by person, numbers left out); None when it compares,
    lists or is passive."""
    if any(token in _SYMMETRIC for token in stream):
        return None
    return tuple(_PERSON.get(token) or _stem(token) for token in stream
                 if token in _PERSON or (token not in _PARTY_SKIP and token not in (BOUNDARY, ARROW)
                                         and not token[:1].isdigit()))


def exchanged(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    """Do two texts name the same content words in the same order except two, not side by side, that changed places?
    "can I put my dog's flea treatment on my cat" / "... my cat's flea treatment on my dog". Neighbours are left
    out: "what does each letter stand for in RSVP" / "... each letter in RSVP stand for" is a rewording."""
    if a is None or b is None or len(a) != len(b):
        return False
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return len(differ) == 2 and differ[1] - differ[0] > 1 and (a[differ[0]], a[differ[1]]) == (b[differ[1]],
                                                                                                b[differ[0]])
