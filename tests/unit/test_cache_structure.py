"""The guard's structural checks: each vetoes its class and lets a look-alike paraphrase through."""

from __future__ import annotations

import numpy as np
import pytest

from router.cache.guard import VETO_CHECKS, reject_reason, veto_differences
from router.cache.verifier import COLUMNS, VETOED, Verifier, pair_features

VERIFIER = Verifier.load()


@pytest.mark.parametrize(("a", "b", "check"), [
    # direction: prepositions reworded, "to Y from X", arrows, conversions, ends that share a word
    ("How do I copy photos from my iPhone to my PC?", "how do i copy photos from my pc onto my iphone", "direction"),
    ("Cheapest train from Paris to Brussels", "cheapest train to paris from brussels", "direction"),
    ("Convert 5 miles to kilometers", "convert 5 kilometers into miles", "direction"),
    ("hex -> rgb in python", "rgb to hex in python", "direction"),
    ("Adjust baking time from a 9-inch round pan to a 9x13 pan", "adjust baking time from a 9x13 pan to a 9-inch round pan",
     "direction"),
    ("Can I upgrade from an i3 to an i5?", "can i upgrade from an i5 to an i3?", "direction"),
    ("Convert a recipe from a 9-inch round pan to a 9x13 pan", "adapt a recipe for a 9 x 13 pan to a 9 inch round pan",
     "direction"),  # one side surely a direction, the other "X to Y"
    ("How do I move photos from my iPhone to my PC?", "move pictures off my iphone onto my pc", None),
    ("Cheapest train from Paris to Brussels", "paris to brussels, cheapest train?", None),
    ("How do I add a column to an existing table in PostgreSQL?", "postgres: alter a table to add one more column", None),
    ("How does X compare to Y?", "How does Y compare to X?", None),  # a comparison, not a direction
    # dates: months and weekdays as a multiset; "may" the verb is no month
    ("Best time to visit Portugal in march?", "best time to visit portugal in may?", "dates"),
    ("is the museum open on mondays?", "is the museum open on tuesdays?", "dates"),
    ("Flights from March 3 to March 10", "flights from march 3 to may 10", "dates"),
    ("May I use a Mac for this?", "Can I use a Mac for this?", None),
    ("How do I march in a parade?", "how to march in a parade", None),
    # negating verbs: "stop / keep / prevent ... from V-ing" against the plain verb
    ("How do I get my laptop to go to sleep?", "How do I stop my laptop from going to sleep?", "negating_verb"),
    ("How do I make my dog bark at strangers?", "how do i keep my dog from barking at strangers", "negating_verb"),
    ("How do I stop Windows from updating itself?", "how do i turn off windows updates", None),
    ("How do I stop my laptop from going to sleep?", "keep my laptop awake, don't let it go to sleep", None),
    ("How do I stop my cat from scratching the sofa?", "cat scratches the sofa, how do i make it stop", None),
    # quantity: one of a thing vs all / several of it
    ("How do I delete one contact on my iPhone?", "how do i delete all my contacts on my iphone", "quantity"),
    ("How do I restart a pod in Kubernetes?", "how do i restart every pod in kubernetes", "quantity"),
    ("How do I merge multiple PDFs into one?", "combine several pdf files into a single pdf", None),
    ("Is there a way to undo a commit?", "is there any way to undo a commit", None),
    ("How much water should I drink a day?", "how much water should i drink every day", None),
    # exchange: two things change places, everything else the same; not neighbours, not a comparison or a passive
    ("How can a manager motivate the team?", "how can the team motivate a manager", "exchange"),
    ("What questions should I ask the interviewer?", "what questions will the interviewer ask me", "exchange"),
    ("Will an Xbox controller work on a PC?", "will a pc controller work on an xbox", "exchange"),
    ("How can a manager motivate the team?", "ways for managers to motivate their team", None),
    ("How often should I change the oil in my car?", "car oil change interval, how often?", None),  # keywords reordered
    ("What does each letter stand for in RSVP?", "what does each letter in rsvp stand for", None),  # neighbours
    ("How do I know if someone blocked me?", "how do i know if i was blocked by someone", None),  # passive
    ("What is the difference between a virus and a bacterium?", "a bacterium vs a virus: the difference?", None),
    # negated word: a negating prefix glued to a word the other side has (trial 16)
    ("Explain the light-dependent reactions of photosynthesis.",
     "Explain the light-independent reactions of photosynthesis.", "negated_word"),
    ("What is a rational number?", "What is an irrational number?", "negated_word"),
    ("What is a dependent variable?", "What is an independent variable?", "negated_word"),
    ("Is it safe to eat raw cookie dough?", "Is it unsafe to eat raw cookie dough?", "negated_word"),
    ("Is a diamond valuable?", "Is a diamond invaluable?", None),  # "invaluable" is very valuable
    ("Can I cancel a non-refundable hotel booking?", "booked a non refundable hotel room, can i still cancel?", None),
    ("My boss owes me two months of unpaid wages", "my employer hasn't paid my wages for two months", None),
])
def test_structural_check(a: str, b: str, check: str | None) -> None:
    flagged = {name for name, differs in zip(VETO_CHECKS, veto_differences(a, b), strict=True) if differs}
    assert flagged == ({check} if check else set())
    assert flagged == {name for name, differs in zip(VETO_CHECKS, veto_differences(b, a), strict=True) if differs}
    if check:
        assert reject_reason(a, b) == check  # no other guard check sees these: today's guard served them


@pytest.mark.parametrize("check", VETO_CHECKS)
def test_a_structural_check_vetoes_whatever_the_score(check: str) -> None:
    """The verifier scores 0 on a pair one of them flags, even at cosine 1 with every other feature equal."""
    x = pair_features("How do I reset my password?", "How do I reset my password?", 1.0)[None, :].copy()
    assert VERIFIER.scores(x)[0] > 0
    x[0, COLUMNS.index(f"differs_{check}")] = 1.0
    assert VERIFIER.scores(x)[0] == 0.0


@pytest.mark.parametrize(("stored", "query", "vetoed"), [
    # trial 16: served as each other's answer
    ("Explain the light-dependent reactions of photosynthesis.",
     "Explain the light-independent reactions of photosynthesis.", True),
    ("What is a rational number?", "What is an irrational number?", True),
    ("What is a dependent variable?", "What is an independent variable?", True),
    ("Describe the First Crusade.", "Describe the Second Crusade.", True),  # was a number added ({} / {2})
    ("What caused the First World War?", "What caused the Second World War?", True),
    ("Is a metal a good conductor of heat?", "Is a non-metal a good conductor of heat?", True),  # was a negation added
    # controls: a rewording, "first" with no other ordinal, "first" said as a number or beside one
    ("What are the stages of meiosis?", "Explain the stages of meiosis.", False),
    ("What caused World War 1?", "why did the first world war start", False),
    ("I just got my first credit card, how do I build credit with it", "build credit with first credit card", False),
    ("awk print the third column where the first column equals ERROR",
     "with awk, output field 3 for lines whose first field is ERROR", False),
])
def test_a_negated_word_or_another_ordinal_is_vetoed(stored: str, query: str, vetoed: bool) -> None:
    for a, b in ((query, stored), (stored, query)):
        states = VERIFIER.judge(a, [(b, 0.9)])[1]
        assert (states[0] == VETOED) == vetoed, (a, b)


def test_the_verifier_rejects_the_structural_negatives_it_scored_high() -> None:
    """Pairs whose every other feature looks like a paraphrase: high MLP score, vetoed all the same."""
    query, stored = "how do i copy photos from my pc onto my iphone", "How do I copy photos from my iPhone to my PC?"
    x = pair_features(query, stored, 0.97)[None, :]
    scores, states = VERIFIER.judge(query, [(stored, 0.97)])
    assert x[0, [COLUMNS.index(f"differs_{c}") for c in VETO_CHECKS]].any() and scores[0] == 0.0 and states[0] == VETOED
    assert np.isfinite(x).all()
