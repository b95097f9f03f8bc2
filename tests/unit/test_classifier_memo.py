"""The request path's classification memo: a repeat costs no classifier call, the memory stays bounded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from router.classifier.memo import MemoizedClassifier
from router.signals import Classification


class CountingClassifier:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def classify(self, text: str) -> Classification:
        self.calls.append(text)
        return Classification(category=f"cat:{text}", confidence=0.9)


def test_a_repeated_text_is_classified_once_and_gets_the_same_result() -> None:
    inner = CountingClassifier()
    memo = MemoizedClassifier(inner)
    first = memo.classify("How do I reset my password?")
    again = memo.classify("How do I reset my password?")
    other = memo.classify("How do I reset my password ?")
    assert again is first
    assert other.category == "cat:How do I reset my password ?"
    assert inner.calls == ["How do I reset my password?", "How do I reset my password ?"]


def test_the_least_recently_used_text_is_forgotten_beyond_the_bound() -> None:
    inner = CountingClassifier()
    memo = MemoizedClassifier(inner, entries=2)
    memo.classify("a")
    memo.classify("b")
    memo.classify("a")  # a is now the most recent
    memo.classify("c")  # evicts b
    memo.classify("a")
    memo.classify("b")
    assert inner.calls == ["a", "b", "c", "b"]


def test_concurrent_callers_all_get_a_result() -> None:
    memo = MemoizedClassifier(CountingClassifier(), entries=8)
    texts = [f"question {i % 20}" for i in range(400)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(memo.classify, texts))
    assert [r.category for r in results] == [f"cat:{t}" for t in texts]


def test_a_text_is_remembered_per_scope() -> None:
    inner = CountingClassifier()
    memo = MemoizedClassifier(inner)
    memo.classify("same words", scope="tenant-a")
    assert memo.cached("same words", scope="tenant-b") is None
    assert memo.cached("same words", scope="tenant-a") is not None
    memo.classify("same words", scope="tenant-b")
    assert len(inner.calls) == 2
