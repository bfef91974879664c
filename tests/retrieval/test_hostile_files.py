"""Hostile uploads (made here, in memory): each is refused with a reason an admin can read, and
the queue keeps flowing: the document queued after them is still ingested by a real worker.
Also: a document being indexed is never searched half-way."""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np
import pytest

from retrieval.embedders import Embedder, get_embedder
from retrieval.ingestion import document_process
from retrieval.models import Chunk, KnowledgeDocument
from retrieval.parsing import DocumentRejected
from retrieval.services import document_accept, document_upload
from tests.retrieval import files
from tests.retrieval.test_worker import run_worker_batch

pytestmark = pytest.mark.django_db(transaction=True)
Status = KnowledgeDocument.Status


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF from its objects (object 1 is the catalogue), with a correct cross-reference table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def _pdf_page(content: bytes) -> bytes:
    """One page whose content stream is `content`, Flate-compressed."""
    stream = zlib.compress(content, 9)
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream)
            + stream
            + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )


def flate_bomb_pdf() -> bytes:
    """Under 1 MB on disk, about 200 MB of page content once inflated."""
    return _pdf_page(b"BT /F1 12 Tf 72 720 Td " + (b"(" + b"A" * 64 + b") Tj ") * 3_000_000 + b"ET")


def looping_pdf() -> bytes:
    """The page tree lists itself among its own pages."""
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


def cpu_burning_pdf() -> bytes:
    """Small on disk, but millions of text operators: minutes of parsing in pure Python."""
    return _pdf_page(b"BT /F1 12 Tf 72 720 Td " + b"(AB) Tj 1 0 Td " * 2_500_000 + b"ET")


def docx_bomb() -> bytes:
    """A valid-looking .docx whose body inflates 1000:1 (50 MB from about 50 KB)."""
    body = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body>" + b" " * 50_000_000 + b"</w:body></w:document>"
    )
    source = zipfile.ZipFile(io.BytesIO(files.docx_file("Bomb", {"A": "b"})))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb:
        for member in source.infolist():
            data = body if member.filename == "word/document.xml" else source.read(member)
            bomb.writestr(member.filename, data)
    return out.getvalue()


def docx_xxe() -> bytes:
    """A .docx whose body declares an external entity reading /etc/passwd and uses it."""
    source = zipfile.ZipFile(io.BytesIO(files.docx_file("Prices", {"Lamps": "MARKER"})))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as attack:
        for member in source.infolist():
            data = source.read(member)
            if member.filename == "word/document.xml":
                data = re.sub(
                    rb"(<\?xml[^>]*\?>)",
                    rb'\1<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
                    data,
                    count=1,
                ).replace(b"MARKER", b"&xxe;")
            attack.writestr(member.filename, data)
    return out.getvalue()


GOOD = "# Returns\n\nItems can be returned within 30 days of delivery for a full refund.\n"

# name, file, where it is stopped, words the admin's reason must contain
HOSTILE = [
    ("flate-bomb.pdf", flate_bomb_pdf, "worker", "inflates"),
    ("looping.pdf", looping_pdf, "worker", "cyclic"),
    ("cpu-burner.pdf", cpu_burning_pdf, "worker", "INGEST_PARSE_CPU_SECONDS"),
    ("bomb.docx", docx_bomb, "upload", "zip bomb"),
    ("xxe.docx", docx_xxe, "worker", "DOCTYPE"),
    ("one-line-50mb.txt", lambda: b"x" * 50_000_000, "upload", "INGEST_MAX_FILE_BYTES"),
    ("one-line-3mb.md", lambda: b"word " * 600_000, "worker", "INGEST_MAX_TEXT_CHARS"),
    ("../../etc/cron.d/evil.md", lambda: b"# Evil\n\nrun me", "upload", "'..'"),
    ("/etc/passwd.md", lambda: b"# Evil\n\nrun me", "upload", "absolute path"),
]


@pytest.mark.slow
def test_hostile_files_are_refused_with_a_reason_and_the_queue_keeps_flowing(
    settings, monkeypatch
) -> None:  # noqa: ANN001
    # The worker process reads the environment: a short CPU allowance keeps the test quick.
    monkeypatch.setenv("INGEST_PARSE_CPU_SECONDS", "3")
    queued: dict[str, str] = {}
    for name, make, stage, reason in HOSTILE:
        if stage == "upload":
            with pytest.raises(DocumentRejected) as refused:
                document_upload(source_name=name, data=make())
            assert reason in str(refused.value), (name, str(refused.value))
        else:
            document = document_upload(source_name=name, data=make())
            assert document.status == Status.QUEUED
            queued[name] = reason
    after = document_upload(source_name="after-the-attack.md", data=GOOD.encode())

    run_worker_batch()

    for name, reason in queued.items():
        document = KnowledgeDocument.objects.get(source_name=name)
        assert document.status == Status.FAILED, (name, document.status, document.error)
        assert reason in document.error, (name, document.error)
        assert not document.chunks.exists()
    after.refresh_from_db()
    assert after.status == Status.READY, after.error
    assert after.chunks.exists()
    assert not KnowledgeDocument.objects.filter(source_name__contains="..").exists()
    # Nothing hostile was read into any passage.
    assert not Chunk.objects.filter(text__contains="root:").exists()


def test_a_document_with_too_many_passages_is_refused_before_embedding(settings) -> None:  # noqa: ANN001
    settings.INGEST_MAX_CHUNKS = 3
    settings.CHUNK_TOKENS = 40
    text = "\n\n".join(
        f"Paragraph {i} says something different about parcel number {i} and its route."
        for i in range(30)
    )
    document = document_accept(source_name="long.md", data=f"# Long\n\n{text}".encode())
    assert document_process(document_id=document.id, version=document.version, enqueue=print) == (
        "failed"
    )
    document.refresh_from_db()
    assert document.status == Status.FAILED
    assert "over the 3 limit (INGEST_MAX_CHUNKS)" in document.error
    assert not document.chunks.exists()


class SearchingEmbedder(Embedder):
    """Embeds with random unit vectors; between batches it searches the knowledge base the way
    a customer's question would, and on the third batch the backend dies."""

    dimensions = 384
    seen: list[tuple[str, int, list[int]]] = []
    batches = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from retrieval.search import passages_rank

        cls = type(self)
        cls.batches += 1
        document = KnowledgeDocument.objects.get(source_name="being-indexed.md")
        found = passages_rank(
            vector=[1.0] + [0.0] * 383, question="parcel route", mode="hybrid", candidates=50
        )
        cls.seen.append((document.status, document.chunks.count(), [p.document_id for p in found]))
        if cls.batches >= 3:
            raise RuntimeError("embedding backend went away")
        vectors = np.random.default_rng(cls.batches).normal(size=(len(texts), self.dimensions))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_a_document_being_indexed_is_never_searched_half_way(settings) -> None:  # noqa: ANN001
    settings.EMBEDDER = f"{__name__}.SearchingEmbedder"
    settings.EMBEDDING_BATCH_SIZE = 2
    settings.CHUNK_TOKENS = 20
    settings.CHUNK_OVERLAP_TOKENS = 0
    SearchingEmbedder.seen, SearchingEmbedder.batches = [], 0
    get_embedder.cache_clear()
    text = "\n\n".join(f"Parcel {i} takes route {i} through the depot at night." for i in range(16))
    document = document_accept(source_name="being-indexed.md", data=f"# Parcels\n\n{text}".encode())
    try:
        with pytest.raises(RuntimeError):
            document_process(
                document_id=document.id, version=document.version, enqueue=lambda **_: None
            )
    finally:
        get_embedder.cache_clear()
    assert len(SearchingEmbedder.seen) == 3
    for status, chunks, found in SearchingEmbedder.seen:
        # Mid-way: not ready, no passage written, none served.
        assert status == Status.EMBEDDING and chunks == 0 and document.id not in found
    document.refresh_from_db()
    assert document.status != Status.READY
    assert not document.chunks.exists()


def test_a_broken_replacement_keeps_the_old_version_searchable() -> None:
    from retrieval.services import document_ingest_text

    old = document_ingest_text(
        source_name="guide.md", title="Guide", text="# Guide\n\nParcels leave the depot at night."
    )
    assert old.chunks.exists()
    broken = document_accept(source_name="guide.md", data=b"# Guide\n\n\xff\xfe not UTF-8")
    assert (
        document_process(document_id=broken.id, version=broken.version, enqueue=print) == "failed"
    )
    assert Chunk.objects.filter(document_id=old.id, text__contains="depot").exists()
