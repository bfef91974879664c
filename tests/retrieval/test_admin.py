"""The admin upload page: many files at once, a clear message for each bad one, states in the list."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from retrieval.models import KnowledgeDocument
from retrieval.services import document_process
from tests.retrieval import files

pytestmark = pytest.mark.django_db
UPLOAD = "admin:retrieval_knowledgedocument_upload"
LIST = "admin:retrieval_knowledgedocument_changelist"


@pytest.fixture
def staff(client):  # noqa: ANN001, ANN201
    """A logged-in superuser's test client."""
    user = get_user_model().objects.create_superuser("boss", "boss@example.invalid", "pw")
    client.force_login(user)
    return client


def upload(client, *items: tuple[str, bytes]):  # noqa: ANN001, ANN201
    return client.post(
        reverse(UPLOAD),
        {"files": [SimpleUploadedFile(name, data) for name, data in items]},
        follow=True,
    )


def messages_of(response) -> list[str]:  # noqa: ANN001
    return [str(m) for m in response.context["messages"]]


def test_upload_page_renders_and_add_leads_to_it(staff) -> None:  # noqa: ANN001
    assert staff.get(reverse(UPLOAD)).status_code == 200
    response = staff.get(reverse("admin:retrieval_knowledgedocument_add"))
    assert response.status_code == 302 and response.url == reverse(UPLOAD)


def test_bad_uploads_each_get_a_message_and_good_ones_are_queued(staff, settings) -> None:  # noqa: ANN001
    settings.INGEST_MAX_FILE_BYTES = 5000
    response = upload(
        staff,
        ("returns.md", b"# Returns\n\nWithin 30 days."),
        ("empty.txt", b""),
        ("prices.numbers", b"PK\x03\x04..."),
        ("renamed.pdf", b"plain text pretending"),
        ("huge.md", b"# Huge\n\n" + b"words " * 2000),
    )
    shown = messages_of(response)
    assert any("returns.md: queued for ingestion" in m for m in shown)
    assert any("empty.txt: the file is empty" in m for m in shown)
    assert any("prices.numbers: unsupported file type (.numbers)" in m for m in shown)
    assert any("renamed.pdf: this is not a PDF" in m for m in shown)
    assert any("huge.md: the file is" in m and "over the" in m for m in shown)
    assert list(KnowledgeDocument.objects.values_list("source_name", "status")) == [
        ("returns.md", "queued")
    ]


def test_background_failures_show_their_reason_in_the_list(staff) -> None:  # noqa: ANN001
    upload(
        staff,
        ("corrupt.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 20),
        ("locked.pdf", files.pdf_encrypted(["Staff codes"])),
        ("scan.pdf", files.pdf_blank()),
        ("guide.docx", files.docx_file("Guide", {"Lamps": "Use LED bulbs only."})),
    )
    for document in KnowledgeDocument.objects.all():
        document_process(document_id=document.id, version=document.version)
    states = dict(KnowledgeDocument.objects.values_list("source_name", "status"))
    assert states == {
        "corrupt.pdf": "failed",
        "locked.pdf": "failed",
        "scan.pdf": "failed",
        "guide.docx": "ready",
    }
    page = staff.get(reverse(LIST)).content.decode()
    assert "encrypted (password-protected)" in page
    assert "no text could be extracted" in page
    assert "damaged" in page or "parser failed" in page
    assert "1 / 1" in page or "2 / 2" in page  # chunks done / total of the ready docx


def test_reingest_action_gives_a_failed_document_a_new_version(staff) -> None:  # noqa: ANN001
    upload(staff, ("scan.pdf", files.pdf_blank()))
    document = KnowledgeDocument.objects.get()
    document_process(document_id=document.id, version=document.version)
    staff.post(
        reverse(LIST),
        {"action": "reingest", "_selected_action": [document.id]},
        follow=True,
    )
    document.refresh_from_db()
    assert document.status == "queued" and document.version == 2 and document.error == ""
