"""Embedder backends for tests, selected with the EMBEDDER setting like any other backend."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.embedders import Embedder


class BreaksOnSecondBatchEmbedder(Embedder):
    """Random unit vectors for the first batch, then a crash: an ingestion dying half-way."""

    dimensions = 384
    calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        type(self).calls += 1
        if type(self).calls >= 2:
            raise RuntimeError("embedding backend went away")
        vectors = np.random.default_rng(0).normal(size=(len(texts), self.dimensions))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
