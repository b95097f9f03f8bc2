"""Where the text itself says a name or a place is a public one: "Newton's laws", "What did Marie Curie discover?",
"Why was the Manhattan Project based at Los Alamos?".

The token head sees uncased word pieces and one token either side; it reads a famous scientist as it reads a
coworker, and a famous street or site as a street address. Homework and general-knowledge questions are full of
both, and each such finding moved a request off a model whose pii_policy refuses the type and turned its cache off
(issue 10). A human tells them apart by the framing, which these patterns read: they only ever drop a head finding.
"""

from __future__ import annotations

import re

# A name's eponymous result or its place in history: "Ohm's law", "Mendel's pea experiments", "Schrödinger's cat
# thought experiment", "Rosalind Franklin's contribution", "Alan Turing's role in". "number" is left out: "X's
# number" asks for a person's phone (pii_cues).
_EPONYM = re.compile(
    r"(?:'s|’s|'|’)\s+(?:[^\W\d_][\w-]*\s+){0,3}?"
    r"(?:laws?|theor(?:y|ies|em|ems)|principles?|equations?|constant|formula|experiments?|effect|paradox|conjecture|"
    r"hypothesis|lemma|razor|postulates?|contributions?|discover(?:y|ies)|inventions?|role\s+in|legacy|reign)\b",
    re.IGNORECASE,
)
# What a public figure is asked about: "What did Marie Curie discover", "How did Mendeleev predict". The verbs are
# those of discoveries, works and history; "say", "write" and "do" are asked about coworkers as often.
_DID_BEFORE = re.compile(r"\b(?:did|does|do)\s+$", re.IGNORECASE)
_FEAT_AFTER = re.compile(
    r"\s+(?:discover|invent|prove|propose|formulate|predict|theori[sz]e|observe|contribute|paint|compose|pioneer|"
    r"conquer|found|establish|publish)\b",
    re.IGNORECASE,
)
# "Who was Srinivasa Ramanujan?": a question about a person's whole life, in the past tense.
_WHO_WAS_BEFORE = re.compile(r"(?:^|[.!?\n]\s*)who\s+(?:was|were)\s+$", re.IGNORECASE)
# "Marie Curie discovered ...", "X is best known for"; "Why is X important / remembered".
_FAME_AFTER = re.compile(
    r"\s+(?:discovered|invented|proved|formulated|theori[sz]ed|pioneered|"
    r"(?:is|was)\s+(?:best\s+|most\s+|widely\s+)?(?:known|famous|remembered|credited))\b",
    re.IGNORECASE,
)
_WHY_BEFORE = re.compile(r"\bwhy\s+(?:is|was)\s+$", re.IGNORECASE)
_NOTABLE_AFTER = re.compile(r"\s+(?:important|famous|remembered|significant|considered|called)\b", re.IGNORECASE)


def public_figure(text: str, start: int, end: int) -> bool:
    """Whether the name text[start:end] is framed as a public figure's: an eponym, a discovery or work asked about,
    "who was X", "X is best known for", "why is X important"."""
    before, after = text[max(0, start - 40) : start], text[end : end + 80]
    return bool(
        _EPONYM.match(after)
        or (_DID_BEFORE.search(before) and _FEAT_AFTER.match(after))
        or _WHO_WAS_BEFORE.search(before)
        or _FAME_AFTER.match(after)
        or (_WHY_BEFORE.search(before) and _NOTABLE_AFTER.match(after))
    )


# What puts a person at a street: living, moving, staying there, a delivery, a possessive home ("my address"); or
# someone's details filled in ("fill out the form with the information of X": a name the head typed as a street).
_PERSONAL = re.compile(
    r"\b(?:li(?:ve|ves|ved|ving)|mov(?:e|ed|ing)\s+to|stay(?:s|ed|ing)?\s+(?:at|on)|home|house|apartment|flat|"
    r"address|ship|shipp(?:ed|ing)|deliver\w*|send|sent|mail|post|pick\s+(?:me|us|him|her|them)\s+up|meet\w*|"
    r"form|information|details|contact|my|our)\b",
    re.IGNORECASE,
)
_ASK = re.compile(r"(?:describe|explain|summari[sz]e|discuss|tell\s+me\s+about)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?\n]")


def public_place(text: str, start: int, end: int) -> bool:
    """Whether the address text[start:end] is a place asked about rather than where a person is: it holds no number
    (no house, unit or postcode), it stands in a question or an ask ("Describe ..."), and nothing in the text puts a
    person there ("I live on", "send it to", "my address")."""
    if any(c.isdigit() for c in text[start:end]) or _PERSONAL.search(text):
        return False
    opening = max((m.end() for m in _SENTENCE_END.finditer(text, 0, start)), default=0)
    closing = _SENTENCE_END.search(text, end)
    question = closing is not None and closing.group() == "?"
    return question or bool(_ASK.match(text[opening:start].lstrip()))
