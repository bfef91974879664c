"""Versioned replacement: search serves one whole version of a document, the old one until the
new one is READY, and a replacement that fails erases nothing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from retrieval.embedders import MiniLMEmbedder, embedding_input, get_embedder
from retrieval.ingestion import document_process
from retrieval.models import Chunk, KnowledgeDocument
from retrieval.search import passages_rank
from retrieval.services import document_accept, document_ingest_text, document_reingest

pytestmark = pytest.mark.django_db(transaction=True)
Status = KnowledgeDocument.Status

OLD = (
    "# Depot\n\n## Hours\n\nParcels leave the depot at night.\n\n## Pickup\n\nPickup is at gate 4."
)
NEW = "\n\n".join(
    ["# Depot", "## Hours"]
    + [f"Parcel run {i} leaves the depot at {i} in the morning." for i in range(12)]
)


def found(question: str) -> list[tuple[int, int, str]]:
    """(document, version, text) of every passage search ranks for the question."""
    vector = get_embedder().embed([question])[0].tolist()
    return [
        (p.document_id, p.document_version, p.text)
        for p in passages_rank(vector=vector, question=question, mode="hybrid", candidates=50)
    ]


class SearchingEmbedder(MiniLMEmbedder):
    """The real embedder, which searches before each batch it embeds (what a customer sees
    while the replacement is indexed) and can be told to die at a given batch."""

    seen: list[list[tuple[int, int, str]]] = []
    die_at = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) > 1 or "Parcel run" in texts[0]:  # a document batch, not a question
            type(self).seen.append(found("when do parcels leave the depot"))
            if len(type(self).seen) == type(self).die_at:
                raise RuntimeError("embedding backend went away")
        return super().embed(texts)


@pytest.fixture
def searching(settings):  # noqa: ANN001, ANN201
    settings.EMBEDDER = f"{__name__}.SearchingEmbedder"
    settings.EMBEDDING_BATCH_SIZE = 2
    settings.CHUNK_TOKENS = 20
    settings.CHUNK_OVERLAP_TOKENS = 0
    SearchingEmbedder.seen, SearchingEmbedder.die_at = [], 0
    get_embedder.cache_clear()
    yield SearchingEmbedder
    get_embedder.cache_clear()


def test_the_old_version_is_served_whole_while_the_new_one_is_indexed(searching) -> None:  # noqa: ANN001
    old = document_ingest_text(source_name="depot.md", title="Depot", text=OLD)
    searching.seen.clear()
    new = document_accept(source_name="depot.md", data=NEW.encode())
    assert new.version == 2
    assert document_process(document_id=new.id, version=2, enqueue=lambda **_: None) == "ready"
    assert len(searching.seen) >= 3  # several batches, a search before each
    for passages in searching.seen:
        ours = {(v, t) for d, v, t in passages if d == old.id}
        # every passage served mid-way is of version 1, and all of version 1 is there
        assert ours == {(1, "Parcels leave the depot at night."), (1, "Pickup is at gate 4.")}
    after = [(v, t) for d, v, t in found("when do parcels leave the depot") if d == old.id]
    assert after and all(v == 2 and "Parcel run" in t for v, t in after)
    assert not Chunk.objects.filter(document_id=old.id, version=1).exists()
    new.refresh_from_db()
    assert new.served_version == 2 and new.status == Status.READY


def test_a_replacement_that_dies_half_way_leaves_the_old_version_served(
    searching, settings
) -> None:  # noqa: ANN001
    settings.INGEST_MAX_ATTEMPTS = 1
    old = document_ingest_text(source_name="depot.md", title="Depot", text=OLD)
    searching.seen.clear()
    searching.die_at = 2
    new = document_accept(source_name="depot.md", data=NEW.encode())
    with pytest.raises(RuntimeError):
        document_process(document_id=new.id, version=2, enqueue=lambda **_: None)
    new.refresh_from_db()
    assert new.status == Status.FAILED and "gave up" in new.error
    assert new.served_version == 1
    served = {(v, t) for d, v, t in found("when do parcels leave the depot") if d == old.id}
    assert served == {(1, "Parcels leave the depot at night."), (1, "Pickup is at gate 4.")}
    assert set(Chunk.objects.filter(document_id=old.id).values_list("version", flat=True)) == {1}


def test_a_broken_file_keeps_the_old_version_and_a_good_one_then_replaces_it() -> None:
    old = document_ingest_text(source_name="depot.md", title="Depot", text=OLD)
    broken = document_accept(source_name="depot.md", data=b"# Depot\n\n\xff\xfe not UTF-8")
    assert document_process(document_id=broken.id, version=2, enqueue=print) == "failed"
    broken.refresh_from_db()
    assert broken.status == Status.FAILED and "not UTF-8" in broken.error
    # The answer a customer gets still comes from version 1, cited as version 1.
    hits = found("what time do parcels leave the depot")
    assert (old.id, 1, "Parcels leave the depot at night.") in hits
    fixed = document_ingest_text(source_name="depot.md", title="Depot", text=NEW)
    assert fixed.version == 3 and fixed.served_version == 3
    texts = {t for d, _, t in found("what time do parcels leave the depot") if d == old.id}
    assert texts and all("Parcel run" in t for t in texts)


def test_reingesting_serves_the_current_chunks_until_the_new_ones_are_ready() -> None:
    document = document_ingest_text(source_name="depot.md", title="Depot", text=OLD)
    ids = set(document.chunks.values_list("id", flat=True))
    document = document_reingest(document=document)
    assert document.status == Status.QUEUED and document.version == 2
    assert {d for d, _, _ in found("when do parcels leave the depot")} == {document.id}
    assert set(document.chunks.values_list("id", flat=True)) == ids
    assert document_process(document_id=document.id, version=2, enqueue=print) == "ready"
    document.refresh_from_db()
    assert document.served_version == 2
    assert set(document.chunks.values_list("version", flat=True)) == {2}
    assert not ids & set(document.chunks.values_list("id", flat=True))


def test_a_new_document_is_not_searched_before_it_is_ready() -> None:
    document = document_accept(source_name="depot.md", data=OLD.encode())
    assert document.served_version is None
    assert document.id not in {d for d, _, _ in found("when do parcels leave the depot")}


GUIDE = {
    "Returns": "Items can be returned within thirty days of delivery for a full refund.",
    "Delivery": "Standard delivery takes three to five working days within the country.",
    "Repairs": "Repairs under warranty are free and take about two weeks.",
}


def _guide(title: str, sections: dict[str, str]) -> bytes:
    return "\n\n".join(
        [f"# {title}", *(f"## {heading}\n\n{text}" for heading, text in sections.items())]
    ).encode()


def _ingest(data: bytes) -> KnowledgeDocument:
    document = document_accept(source_name="guide.md", data=data)
    assert document_process(document_id=document.id, version=document.version, enqueue=None) == (
        "ready"
    )
    document.refresh_from_db()
    return document


def _vectors(document: KnowledgeDocument) -> dict[str, np.ndarray]:
    """The served passages' vectors by text."""
    chunks = document.chunks.filter(version=document.served_version)
    return {c.text: np.asarray(c.embedding) for c in chunks}


def _texts_embedded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the real embedder is given from now on."""
    embedded: list[str] = []
    embed = MiniLMEmbedder.embed

    def counted(self: MiniLMEmbedder, texts: Sequence[str]) -> np.ndarray:
        embedded.extend(texts)
        return embed(self, texts)

    monkeypatch.setattr(MiniLMEmbedder, "embed", counted)
    return embedded


@pytest.fixture
def sections(settings) -> None:  # noqa: ANN001
    """A passage per section of the guide."""
    settings.CHUNK_TOKENS = 40
    settings.CHUNK_OVERLAP_TOKENS = 0


@pytest.mark.usefixtures("sections")
def test_a_new_version_embeds_only_the_passages_that_changed(monkeypatch) -> None:  # noqa: ANN001
    first = _ingest(_guide("Guide", GUIDE))
    assert first.chunks_total == 3
    before = _vectors(first)
    embedded = _texts_embedded(monkeypatch)
    changed = {**GUIDE, "Delivery": "Standard delivery now takes two to four working days."}
    second = _ingest(_guide("Guide", changed))
    assert second.served_version == 2 and second.chunks_total == second.chunks_done == 3
    passage = second.chunks.get(version=2, text=changed["Delivery"])
    # Only the edited section went to the embedder; the others kept their vectors.
    assert embedded == [embedding_input(title="Guide", heading=passage.heading, text=passage.text)]
    after = _vectors(second)
    for heading in ("Returns", "Repairs"):
        assert np.array_equal(after[GUIDE[heading]], before[GUIDE[heading]])
    fresh = get_embedder().embed(embedded)[0]
    assert float(after[changed["Delivery"]] @ fresh) > 0.99
    assert {text for _, _, text in found("how long does delivery take")} >= {changed["Delivery"]}
    assert not second.chunks.filter(version=1).exists()
    # A new title changes what every passage is embedded from: all three again.
    embedded.clear()
    third = _ingest(_guide("Shop guide", changed))
    assert third.served_version == 3 and len(embedded) == 3


@pytest.mark.usefixtures("sections")
def test_passages_of_other_documents_are_not_reused(monkeypatch) -> None:  # noqa: ANN001
    _ingest(_guide("Guide", GUIDE))
    embedded = _texts_embedded(monkeypatch)
    copy = document_accept(source_name="copy-of-guide.md", data=_guide("Guide", GUIDE))
    assert document_process(document_id=copy.id, version=copy.version, enqueue=None) == "ready"
    assert len(embedded) == 3


@pytest.mark.usefixtures("sections")
def test_a_link_to_a_passage_a_new_version_kept_leads_to_it_there() -> None:
    from django.test import Client

    first = _ingest(_guide("Guide", GUIDE))
    old = {c.heading: c.id for c in first.chunks.all()}
    changed = {**GUIDE, "Delivery": "Standard delivery now takes two to four working days."}
    second = _ingest(_guide("Guide", changed))
    new = {c.heading: c.id for c in second.chunks.all()}
    client = Client()
    # An earlier answer's link to the unchanged return policy: the same text, now.
    response = client.get(f"/passages/{old['Returns']}/")
    assert response.status_code == 302 and response["Location"] == f"/passages/{new['Returns']}/"
    assert client.get(response["Location"]).status_code == 200
    # The delivery passage changed: its old link leads nowhere.
    assert client.get(f"/passages/{old['Delivery']}/").status_code == 404
    # Another version that keeps the return policy: the first link follows it there.
    third = _ingest(_guide("Guide", {**changed, "Repairs": "Repairs take ten days."}))
    latest = third.chunks.get(heading="Returns").id
    assert client.get(f"/passages/{old['Returns']}/")["Location"] == f"/passages/{latest}/"
    assert client.get(f"/passages/{new['Returns']}/")["Location"] == f"/passages/{latest}/"
    # Deleting the document takes its links with it.
    third.delete()
    assert client.get(f"/passages/{old['Returns']}/").status_code == 404


def test_links_that_lead_to_a_passage_that_is_gone_are_not_kept() -> None:
    from retrieval.models import PassageMove

    first = _ingest(_guide("Guide", GUIDE))
    old_returns = first.chunks.get(heading="Returns").id
    changed = {**GUIDE, "Delivery": "Standard delivery now takes two to four working days."}
    second = _ingest(_guide("Guide", changed))
    kept = set(PassageMove.objects.values_list("new_id", flat=True))
    assert second.chunks.get(heading="Returns").id in kept
    # The return policy changes now: the links that led to it lead nowhere, and are not kept.
    third = _ingest(_guide("Guide", {**changed, "Returns": "Returns are free for 60 days."}))
    current = set(third.chunks.values_list("id", flat=True))
    assert PassageMove.objects.exists()  # the passages still kept
    assert set(PassageMove.objects.values_list("new_id", flat=True)) <= current
    assert not PassageMove.objects.filter(old_id=old_returns).exists()
    third.delete()
    assert not PassageMove.objects.exists()
