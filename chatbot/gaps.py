"""What the knowledge lacks: customers' questions the bot could not settle, grouped by meaning.

A gap is a customer's answer (`Message`, role assistant, origin customer) that was declined
(abstained), accepted with a score less than GAP_LOW_SCORE_MARGIN above its tier's threshold, or
got a thumbs-down. Its question (the standalone question, else the customer's words) is embedded
once and the vector kept on the message; the questions are grouped by agglomerative clustering
(scikit-learn, cosine, average linkage, cut at GAP_CLUSTER_DISTANCE). The grouping is cached under
a fingerprint of the selection, so the page reclusters only when a gap arrives or is closed.

A dismissed (or curated) group stays hidden until a new question falls into it; its earlier
questions are then counted again beside the new ones.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import BooleanField, F, OuterRef, Q, QuerySet, Subquery, TextField, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from chatbot.models import Message
from retrieval.curated import curated_save
from retrieval.embedders import get_embedder, vector_literal
from retrieval.models import CuratedAnswer
from routing.models import ModelTier

DISMISSED = "dismissed"
CURATED = "curated"
SPARK_DAYS = 14
EXAMPLES = 5
_CACHE_PREFIX = "chatbot.gaps:"
_TABLE = f'"{Message._meta.db_table}"'
_STATE_KEY = _CACHE_PREFIX + "grouping"
# New questions beyond this share of those already grouped trigger a full recluster.
RECLUSTER_SHARE = 0.25
# More questions without a vector than this are embedded by a background task, not the page
# (a backlog of thousands takes minutes on a small CPU).
EMBED_INLINE_MAX = 200
FILL_QUEUED_KEY = _CACHE_PREFIX + "fill-queued"


@dataclass
class GapGroup:
    """Questions of one meaning: counts, examples, why they are gaps, and their trend."""

    key: int  # the group's oldest message id: stable while the group stays the same
    question: str  # the member nearest to the others (the medoid)
    examples: list[tuple[str, int]]  # distinct questions, most asked first, with their counts
    count: int  # every question of the group in the window
    open_ids: list[int]  # questions no admin has closed yet (what the actions act on)
    closed: int
    reasons: dict[str, int]  # declined, low score, thumbs-down
    feedback_reasons: dict[str, int]
    this_week: int
    last_week: int
    per_day: list[int]  # the last SPARK_DAYS days, oldest first
    last_at: datetime | None = None
    sparkline: str = field(default="")  # SVG polyline points

    @property
    def open(self) -> int:
        """Questions still waiting for an admin."""
        return len(self.open_ids)


def _low_score_sql() -> tuple[str, list[Any]]:
    """SQL true for an answer accepted with a score below its tier's threshold + the margin."""
    clauses, params = [], []
    margin = settings.GAP_LOW_SCORE_MARGIN
    for name, threshold in ModelTier.objects.values_list("name", "threshold"):
        clauses.append(
            f'({_TABLE}."tier" = %s AND jsonb_path_exists({_TABLE}."attempts", '
            "'$[*] ? (@.outcome == \"accepted\" && @.score < $limit)', "
            "jsonb_build_object('limit', %s::float)))"
        )
        params += [name, float(threshold) + margin]
    return ("(" + " OR ".join(clauses) + ")" if clauses else "false"), params


def asked_question() -> Coalesce:
    """An answer's question: its standalone question, else the customer's message before it."""
    asked = Message.objects.filter(
        conversation_id=OuterRef("conversation_id"), role=Message.Role.USER, id__lt=OuterRef("id")
    ).order_by("-id")
    return Coalesce(
        NullIf(F("standalone_question"), Value("")),
        Subquery(asked.values("content")[:1]),
        Value(""),
        output_field=TextField(),
    )


def gap_messages(*, now: datetime | None = None) -> QuerySet[Message]:
    """Customers' declined, barely accepted and thumbed-down answers of the window, newest first."""
    now = now or timezone.now()
    low_sql, low_params = _low_score_sql()
    return (
        Message.objects.filter(
            role=Message.Role.ASSISTANT,
            origin=Message.Origin.CUSTOMER,
            created_at__gte=now - timedelta(days=settings.GAP_WINDOW_DAYS),
        )
        .annotate(low_score=RawSQL(low_sql, low_params, output_field=BooleanField()))
        .filter(Q(abstained=True) | Q(feedback=-1) | Q(low_score=True, cached=False))
        .annotate(question=asked_question())
        .order_by("-created_at", "-id")
    )


def _reason(row: dict[str, Any]) -> str:
    if row["abstained"]:
        return "declined"
    if row["feedback"] == -1:
        return "thumbs-down"
    return "low score"


_STORE_VECTORS_SQL = (
    f"UPDATE {_TABLE} AS m SET question_embedding = v.e::vector "
    "FROM unnest(%s::bigint[], %s::text[]) AS v(id, e) WHERE m.id = v.id"
)


def _vectors(rows: list[dict[str, Any]]) -> np.ndarray:
    """Each row's question vector: stored ones read back, missing ones embedded once and stored."""
    ids = [r["id"] for r in rows]
    stored = dict(
        Message.objects.filter(id__in=ids, question_embedding__isnull=False).values_list(
            "id", "question_embedding"
        )
    )
    missing = [r for r in rows if r["id"] not in stored]
    if missing:
        vectors = get_embedder().embed([r["question"] for r in missing])
        for row, vector in zip(missing, vectors, strict=True):
            stored[row["id"]] = vector
        # One statement for all of them: a CASE per row (bulk_update) is quadratic in Postgres.
        with connection.cursor() as cursor:
            cursor.execute(
                _STORE_VECTORS_SQL,
                [
                    [r["id"] for r in missing],
                    [vector_literal(v) for v in vectors],
                ],
            )
    return np.asarray([np.asarray(stored[i], dtype=np.float32) for i in ids])


def cluster_labels(vectors: np.ndarray, *, distance: float) -> np.ndarray:
    """Cluster labels of L2-normalised vectors: average linkage, cut at this cosine distance."""
    if len(vectors) < 2:
        return np.zeros(len(vectors), dtype=int)
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance
    )
    return model.fit_predict(vectors)


def _assign(
    old_vectors: np.ndarray, old_labels: np.ndarray, new_vectors: np.ndarray, *, distance: float
) -> np.ndarray:
    """Labels for new questions without reclustering the rest: the new ones are clustered among
    themselves, then each of their clusters joins the existing group nearest on average (the
    average-linkage distance) when within `distance`, else becomes a group of its own."""
    local = cluster_labels(new_vectors, distance=distance)
    size = int(old_labels.max()) + 1 if len(old_labels) else 0
    labels = np.empty(len(new_vectors), dtype=int)
    if size:
        members = np.zeros((len(old_labels), size), dtype=np.float32)
        members[np.arange(len(old_labels)), old_labels] = 1.0
        # Summed similarity of every new question to every existing group's members.
        sums = (new_vectors @ old_vectors.T) @ members
        counts = members.sum(axis=0)
    for cluster in np.unique(local):
        idx = np.flatnonzero(local == cluster)
        if size:
            mean = sums[idx].sum(axis=0) / (len(idx) * np.maximum(counts, 1.0))
            mean[counts == 0] = -np.inf
            best = int(np.argmax(mean))
            if 1.0 - mean[best] <= distance:
                labels[idx] = best
                continue
        labels[idx] = size
        size += 1
    return labels


def _clustered(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and group labels aligned with rows: new questions join the cached grouping, and
    everything is reclustered only when there is no grouping yet (or it is a day old) or the new
    questions are more than a quarter of those already grouped (groups would drift)."""
    distance = settings.GAP_CLUSTER_DISTANCE
    state = cache.get(_STATE_KEY)
    index = {} if state is None or state["distance"] != distance else state["index"]
    known = [r for r in rows if r["id"] in index]
    new = [r for r in rows if r["id"] not in index]
    if not known or len(new) > RECLUSTER_SHARE * len(known):
        vectors = _vectors(rows)
        labels = cluster_labels(vectors, distance=distance)
    else:
        positions = [index[r["id"]] for r in known]
        old_vectors, old_labels = state["vectors"][positions], state["labels"][positions]
        if new:
            new_vectors = _vectors(new)
            new_labels = _assign(old_vectors, old_labels, new_vectors, distance=distance)
            by_id = {
                r["id"]: (v, label)
                for r, v, label in zip(
                    known + new,
                    np.concatenate([old_vectors, new_vectors]),
                    np.concatenate([old_labels, new_labels]),
                    strict=True,
                )
            }
            vectors = np.asarray([by_id[r["id"]][0] for r in rows])
            labels = np.asarray([by_id[r["id"]][1] for r in rows], dtype=int)
        else:
            vectors, labels = old_vectors, old_labels
    if state is None or new or len(rows) != len(index):
        cache.set(
            _STATE_KEY,
            {
                "index": {r["id"]: n for n, r in enumerate(rows)},
                "vectors": vectors,
                "labels": labels,
                "distance": distance,
            },
            timeout=24 * 3600,
        )
    return vectors, labels


def _sparkline(values: list[int], *, width: int = 84, height: int = 18) -> str:
    top = max(values) or 1
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )


def _group(
    rows: list[dict[str, Any]], vectors: np.ndarray, *, today: date, week_start: datetime
) -> GapGroup:
    centre = vectors.mean(axis=0)
    medoid = int(np.argmax(vectors @ centre))
    texts = Counter(" ".join(r["question"].split()) for r in rows)
    days = [today - timedelta(days=SPARK_DAYS - 1 - i) for i in range(SPARK_DAYS)]
    per_day = Counter(timezone.localdate(r["created_at"]) for r in rows)
    counts = [per_day.get(d, 0) for d in days]
    last_week_start = week_start - timedelta(days=7)
    return GapGroup(
        key=min(r["id"] for r in rows),
        question=rows[medoid]["question"],
        examples=texts.most_common(EXAMPLES),
        count=len(rows),
        open_ids=sorted(r["id"] for r in rows if not r["gap_closed"]),
        closed=sum(1 for r in rows if r["gap_closed"]),
        reasons=dict(Counter(_reason(r) for r in rows).most_common()),
        feedback_reasons=dict(
            Counter(
                Message.FeedbackReason(r["feedback_reason"]).label
                for r in rows
                if r["feedback_reason"] in Message.FeedbackReason.values
            ).most_common()
        ),
        this_week=sum(1 for r in rows if r["created_at"] >= week_start),
        last_week=sum(1 for r in rows if last_week_start <= r["created_at"] < week_start),
        per_day=counts,
        last_at=max(r["created_at"] for r in rows),
        sparkline=_sparkline(counts),
    )


def _fingerprint(rows: list[dict[str, Any]], today: date) -> str:
    digest = hashlib.sha1()
    digest.update(
        f"{today}|{settings.GAP_CLUSTER_DISTANCE}|{settings.GAP_LOW_SCORE_MARGIN}|".encode()
    )
    for r in rows:
        digest.update(
            f"{r['id']}:{r['gap_closed']}:{r['feedback']}:{r['feedback_reason']};".encode()
        )
    return _CACHE_PREFIX + digest.hexdigest()


def _rows(now: datetime) -> list[dict[str, Any]]:
    return [
        r
        for r in gap_messages(now=now)
        .annotate(has_vector=Q(question_embedding__isnull=False))
        .values(
            "id",
            "question",
            "created_at",
            "abstained",
            "feedback",
            "feedback_reason",
            "gap_closed",
            "has_vector",
        )[: settings.GAP_MAX_QUESTIONS]
        if r["question"].strip()
    ]


def gap_vectors_fill(*, batch: int = 256) -> int:
    """Embed and store every gap question of the window that has no vector yet; how many."""
    missing = [r for r in _rows(timezone.now()) if not r["has_vector"]]
    for start in range(0, len(missing), batch):
        _vectors(missing[start : start + batch])
    return len(missing)


def gap_inbox(*, now: datetime | None = None) -> tuple[list[GapGroup], int]:
    """The page's view: the open groups, and how many questions still wait for their vector.

    Beyond EMBED_INLINE_MAX questions without a vector, a background task embeds them (queued
    here, once) and the groups are made of the others meanwhile: the page never waits minutes.
    """
    now = now or timezone.now()
    rows = _rows(now)
    missing = sum(1 for r in rows if not r["has_vector"])
    if missing <= EMBED_INLINE_MAX:
        return _grouped(rows, now), 0
    if cache.add(FILL_QUEUED_KEY, True, timeout=600):
        from chatbot.gaps_tasks import gap_vectors_task

        gap_vectors_task.enqueue()
    return _grouped([r for r in rows if r["has_vector"]], now), missing


def gap_groups(*, include_closed: bool = False, now: datetime | None = None) -> list[GapGroup]:
    """Groups with a question still open (all with include_closed), biggest first; embeds what
    it must (CPU work: call from a worker thread, never the event loop)."""
    now = now or timezone.now()
    groups = _grouped(_rows(now), now, include_closed=True)
    return groups if include_closed else [g for g in groups if g.open_ids]


def _grouped(
    rows: list[dict[str, Any]], now: datetime, *, include_closed: bool = False
) -> list[GapGroup]:
    """Rows grouped by meaning, cached under a fingerprint of the selection: a miss embeds new
    questions and joins them to the grouping or reclusters."""
    today = timezone.localdate(now)
    key = _fingerprint(rows, today)
    groups: list[GapGroup] | None = cache.get(key)
    if groups is None:
        groups = []
        if rows:
            vectors, labels = _clustered(rows)
            week_start = now - timedelta(days=7)
            for label in np.unique(labels):
                members = np.flatnonzero(labels == label)
                groups.append(
                    _group(
                        [rows[i] for i in members],
                        vectors[members],
                        today=today,
                        week_start=week_start,
                    )
                )
        groups.sort(key=lambda g: (-len(g.open_ids), -g.count, -(g.last_at or now).timestamp()))
        cache.set(key, groups, timeout=3600)
    return groups if include_closed else [g for g in groups if g.open_ids]


def _gap_ids(ids: list[int]) -> QuerySet[Message]:
    """Only customers' answers can be closed from the inbox, whatever ids a form posts."""
    return Message.objects.filter(
        id__in=ids, role=Message.Role.ASSISTANT, origin=Message.Origin.CUSTOMER, gap_closed=""
    )


def parse_ids(raw: list[str] | str) -> list[int]:
    """Message ids from a form (a list of values or one comma-separated value); ValueError if bad."""
    values = raw.split(",") if isinstance(raw, str) else [v for r in raw for v in r.split(",")]
    try:
        ids = [int(v) for v in values if v.strip()]
    except ValueError as exc:
        raise ValueError("The group's questions were not sent as message ids.") from exc
    if not ids:
        raise ValueError("No questions chosen.")
    return ids


def gap_dismiss(*, ids: list[int]) -> int:
    """Hide these questions (their group stays hidden until a new question joins it); how many."""
    return _gap_ids(ids).update(gap_closed=DISMISSED, gap_closed_at=timezone.now())


def gap_curate(
    *,
    ids: list[int],
    question: str,
    answer: str,
    phrasings: list[str] | str = "",
    document_ids: list[int] | None = None,
    author: Any = None,
    curated: CuratedAnswer | None = None,
) -> CuratedAnswer:
    """Write (or re-version) a curated answer for a group and close its questions."""
    saved = curated_save(
        question=question,
        answer=answer,
        phrasings=phrasings,
        document_ids=document_ids,
        author=author,
        curated=curated,
    )
    if ids:
        _gap_ids(ids).update(gap_closed=CURATED, gap_closed_at=timezone.now())
    return saved


def gap_questions(*, ids: list[int]) -> list[str]:
    """The distinct questions of these gap messages, most asked and most central first (to prefill
    a curated answer: the first is the group's own question, as the inbox shows it)."""
    rows = [
        r
        for r in gap_messages().filter(id__in=ids).values("question", "question_embedding")
        if r["question"].strip()
    ]
    vectors = [
        np.asarray(r["question_embedding"]) for r in rows if r["question_embedding"] is not None
    ]
    centre = np.mean(vectors, axis=0) if vectors else None
    counts: Counter[str] = Counter()
    centrality: dict[str, float] = {}
    for r in rows:
        text = " ".join(r["question"].split())
        counts[text] += 1
        if centre is not None and r["question_embedding"] is not None:
            centrality[text] = float(np.asarray(r["question_embedding"]) @ centre)
    return sorted(counts, key=lambda t: (-counts[t], -centrality.get(t, 0.0)))
