"""Operator categories defined by example utterances in the YAML, fitted at config load in seconds.

Fitting = embedding each example once with the shared encoder; predicting = the cosine similarity to the
nearest example (a 1-nearest-neighbour head). With a handful of examples per category there is nothing to
train a boundary on, and the nearest-example similarity is an interpretable confidence an operator can set a
threshold on. Reload builds a new head from the new YAML; the old one stays valid for in-flight requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from router.classifier.encoder import DIM, Encoder


@dataclass(frozen=True)
class ExampleHead:
    categories: tuple[str, ...]
    embeddings: np.ndarray  # [N, 384], L2-normalised example embeddings
    owners: np.ndarray  # [N] index into categories

    def predict(self, embedding: np.ndarray) -> tuple[str | None, float]:
        """(nearest example's category, its cosine similarity); (None, 0.0) when no category has examples."""
        if not len(self.owners):
            return None, 0.0
        similarities = self.embeddings @ embedding
        best = int(similarities.argmax())
        return self.categories[int(self.owners[best])], float(similarities[best])


NO_EXAMPLES = ExampleHead((), np.zeros((0, DIM), dtype=np.float32), np.zeros(0, dtype=np.int64))


def fit_example_head(categories: Mapping[str, list[str]], encoder: Encoder) -> ExampleHead:
    """Embed every example utterance (empty lists are skipped); one encoder run per example."""
    names = tuple(name for name, examples in categories.items() if examples)
    rows: list[np.ndarray] = []
    owners: list[int] = []
    for index, name in enumerate(names):
        for text in categories[name]:
            rows.append(encoder.encode(text).embedding)
            owners.append(index)
    embeddings = np.stack(rows) if rows else np.zeros((0, DIM), dtype=np.float32)
    return ExampleHead(names, embeddings, np.array(owners, dtype=np.int64))
