"""Untrusted files: what is extracted from good ones, and the reason given for each bad one."""

from __future__ import annotations

import pytest

from retrieval.parsing import DocumentRejected, document_parse, upload_check
from tests.retrieval import files


def parse(name: str, data: bytes) -> tuple[str, str]:
    kind = upload_check(name=name, data=data)
    parsed = document_parse(name=name, kind=kind, data=data)
    return parsed.title, parsed.text


def rejection(name: str, data: bytes) -> str:
    with pytest.raises(DocumentRejected) as info:
        parse(name, data)
    return str(info.value)


def test_markdown_and_text_pass_through() -> None:
    assert parse("a.md", b"# Returns\n\nWithin 30 days.")[1] == "# Returns\n\nWithin 30 days."
    assert "Café" in parse("b.txt", "\ufeffCafé opening hours".encode())[1]


def test_html_keeps_headings_and_drops_scripts() -> None:
    html = (
        b"<html><head><title>Shipping</title><script>var x = 'secret';</script></head>"
        b"<body><h1>Shipping</h1><p>We ship in <b>2 days</b>.</p><h2>Abroad</h2><p>EU only.</p>"
        b"<style>p{}</style></body></html>"
    )
    title, text = parse("shipping.html", html)
    assert title == "Shipping"
    assert "# Shipping" in text and "## Abroad" in text and "We ship in 2 days." in text
    assert "secret" not in text and "p{}" not in text


def test_pdf_text_and_title() -> None:
    title, text = parse(
        "care.pdf", files.pdf_with_text(["Wash linen at 40 degrees.", "Dry flat."], title="Care")
    )
    assert title == "Care"
    assert "Wash linen at 40 degrees." in text and "Dry flat." in text


def test_docx_headings_become_markdown() -> None:
    data = files.docx_file("Warranty", {"Coverage": "Two years on all lamps."})
    title, text = parse("warranty.docx", data)
    assert "# Warranty" in text and "## Coverage" in text and "Two years on all lamps." in text


def test_empty_file() -> None:
    assert "empty" in rejection("empty.md", b"")
    assert "empty" in rejection("blank.txt", b"  \n\n ")


def test_unsupported_type() -> None:
    message = rejection("prices.numbers", b"PK\x03\x04data")
    assert "unsupported file type (.numbers)" in message and ".pdf" in message
    assert ".xlsx" in message and ".pptx" in message and ".csv" in message
    assert "no extension" in rejection("README", b"hello")


def test_file_renamed_to_pdf() -> None:
    assert "not a PDF" in rejection("notes.pdf", b"just some text, renamed")


def test_file_renamed_to_docx() -> None:
    assert "not a .docx" in rejection("notes.docx", b"just some text, renamed")


def test_binary_renamed_to_text() -> None:
    assert "binary" in rejection("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")


def test_corrupt_pdf() -> None:
    message = rejection("broken.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 40)
    assert "broken.pdf" in message and ("damaged" in message or "parser failed" in message)


def test_encrypted_pdf() -> None:
    assert "encrypted" in rejection("secret.pdf", files.pdf_encrypted(["Staff discount codes"]))


def test_pdf_without_text() -> None:
    assert "no text could be extracted" in rejection("scan.pdf", files.pdf_blank())


def test_file_over_the_size_limit(settings) -> None:  # noqa: ANN001
    settings.INGEST_MAX_FILE_BYTES = 1000
    message = rejection("big.md", b"x" * 1001)
    assert "over the 0.0 MB limit" in message or "over the" in message
    assert "INGEST_MAX_FILE_BYTES" in message


def test_docx_that_would_inflate_is_refused_before_opening(settings) -> None:  # noqa: ANN001
    settings.INGEST_DOCX_MAX_UNCOMPRESSED_BYTES = 1_000_000
    data = files.docx_inflating(5_000_000)
    assert len(data) < 50_000  # small on disk, large once inflated
    message = rejection("bomb.docx", data)
    assert "would expand to 5.0 MB" in message and "word/document.xml" in message


def test_parser_memory_limit(settings) -> None:  # noqa: ANN001
    # Too little address space for the parser child: it must fail cleanly, not take the host down.
    settings.INGEST_PARSE_MEMORY_BYTES = 40_000_000
    message = rejection("care.pdf", files.pdf_with_text(["Wash at 40."]))
    assert "needed more than 40 MB of memory" in message


def test_parser_timeout(settings) -> None:  # noqa: ANN001
    settings.INGEST_PARSE_TIMEOUT_SECONDS = 0.001
    assert "longer than" in rejection("care.pdf", files.pdf_with_text(["Wash at 40."]))
