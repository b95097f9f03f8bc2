"""The precision guard rejects what embeddings blur and lets plain paraphrases through."""

from __future__ import annotations

import pytest

from router.cache.guard import reject_reason


@pytest.mark.parametrize(("a", "b", "reason"), [
    ("What is 17 * 3?", "What is 17 * 4?", "numbers"),
    ("Summarise it in three bullet points", "Summarise it in 3 bullet points", None),
    ("Summarise it in three bullet points", "Summarise it in five bullet points", "numbers"),
    ("Population of 1,000,000 people", "Population of 1000000 people", None),
    ("I have 2 cats and 2 dogs: how much food?", "I have 2 cats and dogs: how much food?", "numbers"),
    ("Is seat 1 in row 2 of car 2 free?", "Is seat 1 in row 1 of car 2 free?", "numbers"),  # the same set of numbers
    ("What is 7 times 8?", "What's 8 times 7?", None),
    ("Is coffee bad for you?", "Is coffee not bad for you?", "negation"),
    ("copy every file that matches *.py", "copy every file except those matching *.py", "negation"),
    ("list all columns excluding the id column", "list all columns with the id column", "negation"),
    ("Why doesn't my code compile?", "Why does not my code compile?", None),
    ("How do I catch two exceptions in one except block?", "catch 2 exceptions with one except clause", None),
    ("How do I turn on dark mode?", "How do I turn off dark mode?", "antonym"),
    ("How to enable two-factor authentication", "How to disable two-factor authentication", "antonym"),
    ("Who is the CEO of Apple?", "Who is the CEO of Microsoft?", "entities"),
    ("What is the capital of France?", "What's the capital city of France?", None),
    ("How do I learn Python?", "What is the best way to learn python?", None),
    ("Explain black holes to a child", "Explain black holes to a physicist", "audience"),
    ("Explain black holes", "Explain black holes for beginners", "audience"),
    ("How Do I Reset My Password Quickly", "how can i quickly reset my password", None),
    # the same unit or audience in other words: "monthly" is "every month", "grandpa" is "grandfather"
    ("How much of my salary should I save every month?", "what percent of income should i save monthly", None),
    ("How much should I save every week?", "how much should i save monthly", "units"),
    ("How do I write a eulogy for my grandfather?", "help me write a eulogy for grandpa", None),
    ("Fun rainy day activities for kids", "rainy day activity ideas for children", None),
    ("Fun rainy day activities for kids", "rainy day activity ideas for teenagers", "audience"),
])
def test_reject_reason(a: str, b: str, reason: str | None) -> None:
    assert reject_reason(a, b) == reason
    assert reject_reason(b, a) == reason  # symmetric
