"""Where the text itself says a person's name stands: "Name: X", "my name is X", "Dear X,", "X's address".

The token head sees uncased word pieces and one token either side, so a first name opening a form line or before
"'s address" often reaches only P(O) 0.1-0.5, or is typed as an address. These cues are what a human reads there.
They only propose words: pii.TokenHead.decode still asks the head whether each word is an entity at all (so "Hi
there", "Dear Sir" and "Name: TBD" stay O), and the cue, not the head, then decides the type: PERSON.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_NAME_WORDS = 4
# Words in a name's place after a cue that are not names ("Dear Sir", "Hi all", "Name: TBD", "Hey Siri", "my name
# is anna and"): never proposed, and a name ends before them.
NOT_NAMES = frozenset((
    "sir", "madam", "madame", "maam", "there", "all", "everyone", "everybody", "team", "guys", "folks", "friend",
    "friends", "world", "tbd", "tba", "n/a", "none", "unknown", "anonymous", "me", "you", "us", "him", "her", "them",
    "it", "this", "that", "customer", "user", "admin", "assistant", "bot", "chatbot", "gpt", "chatgpt", "ai",
    "google", "siri", "alexa", "cortana", "bixby",
    "hi", "hello", "hey", "hola", "hallo", "bonjour", "ciao", "yo", "sup", "howdy", "hiya", "aloha", "greetings",
    "and", "or", "but", "so", "the", "a", "an", "i", "is", "was", "from", "in", "at", "on", "to", "for", "with", "by",
    "of", "not", "just", "also", "here", "again", "too", "i'm", "im", "i’m",
))  # fmt: skip
# A word: letters, inner apostrophes or hyphens ("O'Neil", "Hanne-Lore"); or an initial with its dot ("C.").
_WORD = re.compile(r"[^\W\d_]\.|[^\W\d_](?:[\w'’-]*[^\W_])?")
# Lowercase words inside a capitalised name ("Linn van den Broek", "José da Silva").
_PARTICLES = frozenset((
    "de", "da", "das", "do", "dos", "del", "della", "der", "den", "van", "von", "la", "le", "du", "di", "bin", "al",
    "ter", "ten",
))  # fmt: skip
# Form labels a name follows on its own line ("Name:", "Patient:", "Directed by:"). Role labels ("Customer:",
# "From:") are left out: in real prompts they head transcripts and e-mails and are followed by places as often.
_FORM = (
    r"(?:full |first |last |legal |contact |patient |customer |client |account |employee |student )?name|"
    r"patient|attn|attention|signed|author|(?:\w+ )?by|guardian|beneficiary|insured|card ?holder"
)


@dataclass(frozen=True, slots=True)
class Cue:
    """Words a cue says may be a name, nearest to the cue first ("Robert Smith's address" lists Smith, Robert):
    the name is the leading words the head also sees as an entity. `explicit`: the text states that a name follows
    ("Name:", "my name is"), so lowercase words are proposed too; after a greeting or a title only capitalised ones."""

    words: tuple[tuple[int, int], ...]
    explicit: bool


@dataclass(frozen=True, slots=True)
class _Trigger:
    """A cue pattern. `keys`: literal strings one of which any match contains, checked first with `in` (on the
    lowercased text when `fold`): most prompts hold none, and a substring test costs far less than a regex scan.
    `follows`: the name follows the match ("Dear X"), else it precedes it ("X's address")."""

    pattern: re.Pattern[str]
    keys: tuple[str, ...]
    explicit: bool
    fold: bool = True
    follows: bool = True


_TRIGGERS = (
    # A capitalised label starts a form line ("Name: anna"); a lowercase one is a YAML or JSON key ("name: web").
    _Trigger(re.compile(rf"(?:^|\n)[ \t]*(?=[A-Z])(?i:{_FORM})[ \t]*:[ \t]*"), (":",), True),
    _Trigger(re.compile(rf"(?:^|\n)[ \t]*(?=[a-z])(?i:{_FORM})[ \t]*:[ \t]*"), (":",), False),
    _Trigger(re.compile(r"\bmy name(?: is|'s|’s)[ \t]+", re.IGNORECASE), ("my name",), True),
    _Trigger(re.compile(r"\b(?:I'm|I’m|I am|this is)[ \t]+", re.IGNORECASE), ("i'm", "i’m", "i am", "this is"), False),
    _Trigger(
        re.compile(r"\b(?:dear|hi|hello|hey|hiya|howdy)(?:[ \t]+there)?,?[ \t]+", re.IGNORECASE),
        ("dear", "hi ", "hi,", "hi\t", "hello", "hey", "hiya", "howdy"), False,
    ),
    _Trigger(re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?[ \t]+"), ("Mr", "Ms", "Miss", "Mx", "Dr", "Prof"), False,
             fold=False),
    _Trigger(re.compile(r"\bcontact[ \t]+", re.IGNORECASE), ("contact",), False),
    # A signature: a sign-off line, then the name on the next line.
    _Trigger(
        re.compile(
            r"(?:^|\n)[ \t]*(?:thanks|thank you|best|best regards|kind regards|regards|cheers|sincerely|"
            r"yours(?: truly)?|love|warmly)[,.!]?[ \t]*\n[ \t]*", re.IGNORECASE
        ),
        ("thank", "best", "regards", "cheers", "sincerely", "yours", "love", "warmly"), False,
    ),
    # The name precedes: "X's address", "X’s phone number".
    _Trigger(
        re.compile(
            r"['’]s[ \t]+(?:home |new |old |work |mobile |cell |e-?mail |postal |mailing |street )?"
            r"(?:address|phone|number|e-?mail|birthday|date of birth|contact details|mobile)\b", re.IGNORECASE
        ),
        ("'s", "’s"), True, follows=False,
    ),
)  # fmt: skip


def find_cues(text: str, regions: Sequence[tuple[int, int]] = ()) -> list[Cue]:
    """Every cue in `text` with the words it proposes; with `regions` ((start, end) character ranges, in order, apart),
    only the cues whose pattern matches inside one of them (anchors and word boundaries still read the whole text)."""
    cues = []
    for start, end in regions or ((0, len(text)),):
        part = text[start:end]
        folded = part.lower()
        for trigger in _TRIGGERS:
            if not any(key in (folded if trigger.fold else part) for key in trigger.keys):
                continue
            for m in trigger.pattern.finditer(text, start, end):
                words = _words_after(text, m.end()) if trigger.follows else _words_before(text, m.start())
                named = _name_words(text, words, trigger.explicit)
                if named:
                    cues.append(Cue(named, trigger.explicit))
    return cues


def _words_after(text: str, pos: int) -> list[tuple[int, int]]:
    """Up to MAX_NAME_WORDS words from `pos` on, one space or tab apart (a line end, comma or "!" ends a name)."""
    words: list[tuple[int, int]] = []
    while len(words) < MAX_NAME_WORDS and (m := _WORD.match(text, pos)) is not None:
        words.append(m.span())
        if text[m.end() : m.end() + 1] not in (" ", "\t"):
            break
        pos = m.end() + 1
    return words


def _words_before(text: str, pos: int) -> list[tuple[int, int]]:
    """Up to MAX_NAME_WORDS words ending at `pos`, one space or tab apart, nearest first."""
    words: list[tuple[int, int]] = []
    line_start = text.rfind("\n", 0, pos) + 1
    for m in reversed(list(_WORD.finditer(text, line_start, pos))):
        if len(words) == MAX_NAME_WORDS or m.end() != (words[-1][0] - 1 if words else pos):
            break
        if words and text[m.end()] not in " \t":
            break
        words.append(m.span())
    return words


def _name_words(text: str, words: list[tuple[int, int]], explicit: bool) -> tuple[tuple[int, int], ...]:
    """The leading `words` shaped like a name: capitalised (particles allowed inside), or all lowercase after an
    explicit cue; none when the first is a known non-name."""
    if not words or text[slice(*words[0])].lower() in NOT_NAMES:
        return ()
    lowercase = text[slice(*words[0])].islower()
    if lowercase and not explicit:
        return ()
    kept: list[tuple[int, int]] = []
    for word in (text[slice(*w)] for w in words):
        shaped = word.islower() if lowercase else word[0].isupper() or word in _PARTICLES
        if not shaped or word.lower() in NOT_NAMES:
            break
        kept.append(words[len(kept)])
    while kept and not lowercase and text[slice(*kept[-1])] in _PARTICLES:
        kept.pop()  # a particle ends no capitalised name ("Anna de")
    return tuple(kept)
