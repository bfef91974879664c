"""Knowledge documents and their chunks (pgvector embedding + full-text vector)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import F, Func
from django.db.models.functions import Cast
from pgvector.django import HalfVectorField, HnswIndex, VectorField


class KnowledgeDocument(models.Model):
    """One uploaded or loaded document; only READY documents are searched."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        PARSING = "parsing"
        EMBEDDING = "embedding"
        READY = "ready"
        FAILED = "failed"

    title = models.CharField(max_length=300)
    source_name = models.CharField(
        max_length=300, unique=True, help_text="File name or other stable source key."
    )
    source_type = models.CharField(
        max_length=8, blank=True, help_text="md, txt, html, pdf or docx (from the file name)."
    )
    # The uploaded bytes live in the database so any worker machine can parse them.
    raw = models.BinaryField(blank=True, editable=False)
    size_bytes = models.PositiveIntegerField(default=0)
    content = models.TextField(blank=True, help_text="Extracted text (markdown-like).")
    content_hash = models.CharField(max_length=64, blank=True)
    language = models.CharField(
        max_length=8, blank=True, help_text="Detected ISO 639-1 code ('' when not sure)."
    )
    version = models.PositiveIntegerField(default=1)
    # The version whose chunks search serves (None: none yet). A new version is indexed beside
    # it and switched to in one transaction, so a broken replacement never empties the topic.
    served_version = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Ingestion attempts for the current version (the reaper retries)."
    )
    task_id = models.CharField(max_length=64, blank=True, help_text="The queued ingestion task.")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of a running ingestion."
    )
    # A page of a web source (retrieval.web_tasks): the document goes when the page or its source
    # is deleted (the delete signal then retires the cached answers that cited it).
    web_page = models.OneToOneField(
        "WebPage",
        null=True,
        blank=True,
        editable=False,
        on_delete=models.CASCADE,
        related_name="document",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    """A passage of a document: what retrieval finds and answers cite."""

    document = models.ForeignKey(KnowledgeDocument, on_delete=models.CASCADE, related_name="chunks")
    version = models.PositiveIntegerField(default=1, help_text="The document version it is of.")
    ordinal = models.PositiveIntegerField()
    heading = models.CharField(max_length=300, blank=True)
    page = models.PositiveIntegerField(
        null=True, blank=True, help_text="1-based page of a paged source (PDF, slides)."
    )
    text = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    content_hash = models.CharField(max_length=64)
    # sha256 of what the embedder was given (retrieval.embedders.embedding_input): the next
    # version of the document reuses this passage's vector when it gives the same ("" before
    # it was recorded: such a passage is embedded again).
    input_hash = models.CharField(max_length=64, blank=True, default="", db_default="")
    embedding = VectorField(dimensions=settings.EMBEDDING_DIMENSIONS)
    # The passage under the embedder being switched to (retrieval.embedders.embeddings_switch):
    # filled in the background while search keeps using `embedding`, then swapped in.
    embedding_next = VectorField(dimensions=settings.EMBEDDING_DIMENSIONS, null=True, blank=True)
    # The document's text search configuration (retrieval.language.text_search_config): stemming
    # in its own language, `simple` over unaccented words where PostgreSQL has none.
    text_config = models.CharField(max_length=32, default="english")
    search_vector = models.GeneratedField(
        expression=Func(
            F("text_config"),
            F("heading"),
            F("text"),
            function="retrieval_tsvector",
            output_field=SearchVectorField(),
        ),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(
                fields=["document", "version", "ordinal"], name="chunk_document_version_ordinal"
            )
        ]
        indexes = [
            # Half precision in the index only (the column keeps float32): half the index size
            # and build memory, so 1M chunks fit in RAM; search ranks its candidates by the
            # float32 distance (bench/retrieval_speed.py, README). Search's SQL must use this
            # very expression, or PostgreSQL cannot use the index.
            HnswIndex(
                OpClass(
                    Cast("embedding", HalfVectorField(dimensions=settings.EMBEDDING_DIMENSIONS)),
                    name="halfvec_cosine_ops",
                ),
                name="chunk_embedding_hnsw",
                m=16,
                # 64 left recall@10 at 0.95 at 1M chunks even at ef_search 1000; 200 reached 1.0 at
                # the default ef_search 400 (bench/retrieval_speed.py --rebuild-hnsw), and the
                # build took 751 s at 1M here.
                ef_construction=200,
            ),
            # fastupdate off: a bulk load otherwise leaves rows in the GIN pending list, which
            # every full-text query scans linearly until a vacuum (bench: 21 ms -> ~1 s).
            GinIndex(fields=["search_vector"], name="chunk_search_vector_gin", fastupdate=False),
        ]

    def __str__(self) -> str:
        return f"{self.document.title} #{self.ordinal}"


class PassageMove(models.Model):
    """A passage id of an earlier version whose text the current version kept (the same heading
    and text), and that passage now: links quoted in earlier answers (`/passages/<id>/`) lead to
    it. Moved on at every new version that keeps it, and deleted with the passage it names when
    that goes (changed, or its document deleted): the link then leads nowhere.

    Not a foreign key: with one, every deletion of a version's passages would first read them
    all (vectors included) to cascade."""

    old_id = models.BigIntegerField(primary_key=True)
    new_id = models.BigIntegerField(db_index=True)

    def __str__(self) -> str:
        return f"{self.old_id} -> {self.new_id}"


class CuratedAnswer(models.Model):
    """An answer an admin wrote for questions the knowledge lacked, served through the cache.

    Each version is a set of CacheEntry rows (one per phrasing) with the same `version`: editing
    adds a version and retires the previous rows ("superseded"), so the history stays.
    """

    question = models.TextField(help_text="The main phrasing of the question.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.question[:80]


class CacheEntry(models.Model):
    """An accepted, grounded answer that may be served again for the same standalone question."""

    question = models.TextField(help_text="The standalone question the answer was given to.")
    embedding = VectorField(dimensions=settings.EMBEDDING_DIMENSIONS)
    # The question under the embedder being switched to (see Chunk.embedding_next).
    embedding_next = VectorField(dimensions=settings.EMBEDDING_DIMENSIONS, null=True, blank=True)
    answer = models.TextField()
    # The sources exactly as shown with the answer (chunk_id, document_id, document_version...).
    sources = models.JSONField(default=list, blank=True)
    # {"<document_id>": version} of every cited document: a changed version retires the entry.
    document_versions = models.JSONField(default=dict, blank=True)
    tier = models.CharField(max_length=40, blank=True)
    score = models.FloatField(null=True, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=10, default=0)
    active = models.BooleanField(default=True, db_index=True)
    retired_reason = models.CharField(max_length=40, blank=True)
    hit_count = models.PositiveIntegerField(default=0)
    last_hit_at = models.DateTimeField(null=True, blank=True)
    # An admin's curated answer (one version of it): never expires by age and is never retired
    # by a thumbs-down alone; an edit supersedes it.
    curated = models.ForeignKey(
        CuratedAnswer, null=True, blank=True, on_delete=models.CASCADE, related_name="entries"
    )
    version = models.PositiveIntegerField(default=0)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The sessions that produced this answer (keyed digests, never the session keys). Until it is
    # shared (CACHE_SHARE_MIN_SESSIONS of them agreed, or an admin approved it) only they get it.
    producers = models.JSONField(default=list, blank=True)
    shared_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "cache entries"
        indexes = [
            HnswIndex(
                name="cache_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            # A changed document retires the entries that cited it: without this each document
            # ingested, replaced or deleted read every active entry (about 10 ms at 50,000).
            GinIndex(
                fields=["document_versions"],
                name="cache_document_versions_gin",
                condition=models.Q(active=True),
            ),
        ]

    def __str__(self) -> str:
        return self.question[:80]


class EmbedderState(models.Model):
    """Whose vectors the tables hold (`active`, a dotted path) and a switch in progress (one row).

    Changing EMBEDDER does not change `active` at once: the passages and cached questions are
    embedded again in the background (into `embedding_next`) and swapped in one transaction,
    so search answers with the old vectors until the new ones are complete.
    """

    active = models.CharField(max_length=200)
    target = models.CharField(max_length=200, blank=True, help_text="Being switched to.")
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"{self.active} -> {self.target}" if self.target else self.active


class CacheHit(models.Model):
    """One cached answer served; a thumbs-down on it marks it a false hit (CACHE_RETIRE_VOTES
    sessions' false hits retire a shared entry)."""

    entry = models.ForeignKey(CacheEntry, on_delete=models.CASCADE, related_name="hits")
    question = models.TextField(help_text="The standalone question that was served the entry.")
    similarity = models.FloatField()
    guard_score = models.FloatField(null=True, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # The keyed digest of the session served (distinct thumbs-down sessions retire an entry).
    session = models.CharField(max_length=64, blank=True, default="")
    false_hit = models.BooleanField(default=False, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.question[:60]} -> {self.entry_id}"


class CacheDay(models.Model):
    """Per-day lookup counts: the hit rate is hits / lookups (bypassed questions counted apart)."""

    day = models.DateField(unique=True)
    lookups = models.PositiveIntegerField(default=0)
    hits = models.PositiveIntegerField(default=0)
    bypassed = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.day}: {self.hits}/{self.lookups}"


class WebSource(models.Model):
    """A web page or a sitemap an admin added: its pages are fetched and re-synced on a schedule."""

    class Kind(models.TextChoices):
        UNKNOWN = "", "not fetched yet"
        PAGE = "page"
        SITEMAP = "sitemap"

    url = models.URLField(max_length=2000, unique=True, help_text="A page or a sitemap.xml.")
    kind = models.CharField(max_length=8, choices=Kind.choices, blank=True, editable=False)
    last_synced_at = models.DateTimeField(null=True, blank=True, editable=False)
    next_sync_at = models.DateTimeField(null=True, blank=True, db_index=True, editable=False)
    error = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["url"]

    def __str__(self) -> str:
        return self.url


class WebPage(models.Model):
    """One page of a web source, its document, and what the next conditional request sends."""

    class State(models.TextChoices):
        ACTIVE = "active"
        RETIRED = "retired"

    source = models.ForeignKey(WebSource, on_delete=models.CASCADE, related_name="pages")
    url = models.URLField(max_length=2000, unique=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.ACTIVE)
    etag = models.CharField(max_length=300, blank=True)
    last_modified = models.CharField(max_length=100, blank=True)
    # sha256 of the extracted text: a page re-served with new markup but the same text is unchanged.
    content_hash = models.CharField(max_length=64, blank=True)
    # Heading text -> the `id` of that heading on the page, for citation links to url#id.
    anchors = models.JSONField(default=dict, blank=True)
    failures = models.PositiveSmallIntegerField(
        default=0, help_text="Failed syncs in a row (5xx, timeouts); reset by a good fetch."
    )
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["url"]

    def __str__(self) -> str:
        return self.url
