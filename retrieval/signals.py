"""Events other apps listen to (the answer cache invalidates on document_changed)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, pre_delete
from django.dispatch import Signal

from retrieval.models import Chunk, KnowledgeDocument, PassageMove

# Sent (after commit) whenever the passages a document serves change: a new version became
# ready, or the document was deleted. A replacement that is only accepted changes nothing yet:
# the old version is served until the new one is ready. sender=KnowledgeDocument; kwargs:
# document_id: int, version: int, deleted: bool, and for a new version `carried`: {old passage
# id: new passage id} of the passages it kept unchanged (same heading and text), None when no
# earlier version was served.
document_changed = Signal()


def document_changed_send(
    *, document_id: int, version: int, deleted: bool, carried: dict[int, int] | None = None
) -> None:
    """Send document_changed once the current transaction commits (at once outside one)."""
    transaction.on_commit(
        lambda: document_changed.send(
            sender=KnowledgeDocument,
            document_id=document_id,
            version=version,
            deleted=deleted,
            carried=carried,
        )
    )


def _on_document_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    # A receiver rather than a service call, so admin bulk deletes and shell deletes are seen too.
    document_changed_send(document_id=instance.id, version=instance.version, deleted=True)


def _on_document_deleting(sender: Any, instance: Any, **kwargs: Any) -> None:
    # Links of earlier versions' passages that lead to this document's (PassageMove is not a
    # foreign key, so no cascade takes them): read while its passages still exist.
    PassageMove.objects.filter(
        new_id__in=Chunk.objects.filter(document_id=instance.id).values("id")
    ).delete()


def connect() -> None:
    """Wire model signals (called from RetrievalConfig.ready)."""
    pre_delete.connect(
        _on_document_deleting, sender=KnowledgeDocument, dispatch_uid="retrieval_document_deleting"
    )
    post_delete.connect(
        _on_document_deleted, sender=KnowledgeDocument, dispatch_uid="retrieval_document_deleted"
    )
