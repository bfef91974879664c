"""Checks on untrusted uploads, and their parsing in a child process with a memory cap and a timeout.

pypdf, python-docx, python-pptx and openpyxl run on attacker-controlled bytes: a crafted file
can loop or inflate to gigabytes. The parsers therefore run in `retrieval.parse_worker` under
RLIMIT_AS and RLIMIT_CPU (set by the child itself) and a wall-clock timeout; an Office file's
declared zip member sizes and compression ratio are checked before it is opened; the extracted
text is capped.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from retrieval.parse_worker import ParseFailure, parse_markdown, parse_text

SUPPORTED_TYPES = {
    ".txt": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".csv": "csv",
}
# Office files are zip archives of XML; each must hold its main part.
_OFFICE_MAIN_PART = {
    "docx": ("word/document.xml", "Word document"),
    "pptx": ("ppt/presentation.xml", "PowerPoint presentation"),
    "xlsx": ("xl/workbook.xml", "Excel workbook"),
}


class DocumentRejected(Exception):
    """The file cannot become a document; the message says why, in words an admin can act on."""


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    text: str
    paged: bool = False  # pages separated by form feeds (retrieval.chunking.PAGE_BREAK)


def source_type_for(name: str) -> str:
    """The source type for a file name, or DocumentRejected listing what is accepted."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_TYPES:
        accepted = ", ".join(sorted(SUPPORTED_TYPES))
        shown = suffix or "no extension"
        raise DocumentRejected(f"{name}: unsupported file type ({shown}); accepted: {accepted}")
    return SUPPORTED_TYPES[suffix]


def upload_check(*, name: str, data: bytes) -> str:
    """Cheap checks done at upload time (size, emptiness, type, content sniffing); returns the type."""
    limit = settings.INGEST_MAX_FILE_BYTES
    if len(data) > limit:
        raise DocumentRejected(
            f"{name}: the file is {_mb(len(data))}, over the {_mb(limit)} limit (INGEST_MAX_FILE_BYTES)"
        )
    if not data.strip():
        raise DocumentRejected(f"{name}: the file is empty")
    _name_check(name)
    kind = source_type_for(name)
    if kind == "pdf" and not data.lstrip()[:5] == b"%PDF-":
        raise DocumentRejected(
            f"{name}: this is not a PDF (it lacks the %PDF header); was it renamed?"
        )
    if kind in _OFFICE_MAIN_PART:
        _office_check(name=name, kind=kind, data=data)
    if kind in ("txt", "md", "html", "csv") and b"\x00" in data[:8192]:
        raise DocumentRejected(f"{name}: this is a binary file, not {kind} text; was it renamed?")
    return kind


def _name_check(name: str) -> None:
    # Names are keys, never paths, but they reach logs, the admin and export files: folders are
    # allowed as a namespace ("demo/returns.md"), climbing out of one or an absolute path is not.
    parts = name.split("/")
    if (
        "\\" in name
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise DocumentRejected(
            f"{name!r}: the file name contains '..', an absolute path, a backslash or a "
            "control character; upload the file under a plain name"
        )


# An Office file is XML in a zip: text compresses about 5-10 to 1; far more is a zip bomb.
_DOCX_MAX_RATIO = 100


def _office_check(*, name: str, kind: str, data: bytes) -> None:
    # python-docx, python-pptx and openpyxl read zip members whole: refuse declared sizes that
    # would blow up memory (INGEST_DOCX_MAX_UNCOMPRESSED_BYTES covers every Office type).
    main_part, what = _OFFICE_MAIN_PART[kind]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DocumentRejected(
            f"{name}: this is not a .{kind} file (not a zip archive); was it renamed?"
        ) from None
    with archive:
        members = archive.infolist()
        if main_part not in {m.filename for m in members}:
            raise DocumentRejected(f"{name}: this zip file is not a {what} (no {main_part})")
        total = sum(m.file_size for m in members)
        biggest = max(members, key=lambda m: m.file_size)
        if total > settings.INGEST_DOCX_MAX_UNCOMPRESSED_BYTES:
            raise DocumentRejected(
                f"{name}: the .{kind} would expand to {_mb(total)} (member {biggest.filename} alone "
                f"{_mb(biggest.file_size)}), over the {_mb(settings.INGEST_DOCX_MAX_UNCOMPRESSED_BYTES)} limit"
            )
        packed = sum(m.compress_size for m in members) or 1
        if total > 1_000_000 and total / packed > _DOCX_MAX_RATIO:
            raise DocumentRejected(
                f"{name}: the .{kind} would expand {total / packed:,.0f} to 1 (to {_mb(total)}); "
                f"real documents stay far below {_DOCX_MAX_RATIO} to 1 (a zip bomb?)"
            )


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def document_parse(*, name: str, kind: str, data: bytes) -> ParsedDocument:
    """Parse bytes in a memory-capped, time-limited child process; DocumentRejected on any failure.

    Plain text and markdown are only decoded (bounded by the upload limit), so they skip the
    child process; every other type always goes through it.
    """
    max_chars = settings.INGEST_MAX_TEXT_CHARS
    if kind in ("txt", "md"):
        try:
            title, text = (parse_markdown if kind == "md" else parse_text)(data)
        except ParseFailure as exc:
            raise DocumentRejected(f"{name}: {exc}") from None
        if not text.strip():
            raise DocumentRejected(f"{name}: no text could be extracted")
        _text_check(name, text, max_chars)
        return ParsedDocument(title=title, text=text.strip())
    timeout = settings.INGEST_PARSE_TIMEOUT_SECONDS
    cpu = settings.INGEST_PARSE_CPU_SECONDS
    root = Path(__file__).resolve().parent.parent
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    try:
        completed = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                _BOOT,
                kind,
                str(settings.INGEST_PARSE_MEMORY_BYTES),
                str(cpu),
                str(max_chars),
            ],
            input=data,
            capture_output=True,
            timeout=timeout,
            env=env,
            cwd=str(root),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DocumentRejected(
            f"{name}: parsing took longer than {timeout} s and was stopped (INGEST_PARSE_TIMEOUT_SECONDS)"
        ) from None
    if completed.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise DocumentRejected(
            f"{name}: parsing used more than {cpu} s of CPU and was stopped "
            "(INGEST_PARSE_CPU_SECONDS); the file may loop"
        )
    memory_mb = settings.INGEST_PARSE_MEMORY_BYTES // 1_000_000
    try:
        result = json.loads(completed.stdout or b"{}")
    except json.JSONDecodeError:
        result = {}
    if result.get("kind") == "memory" or b"MemoryError" in completed.stderr:
        raise DocumentRejected(
            f"{name}: parsing needed more than {memory_mb} MB of memory and was stopped "
            "(INGEST_PARSE_MEMORY_BYTES)"
        )
    if "error" in result:
        raise DocumentRejected(f"{name}: {result['error']}")
    if completed.returncode != 0 or "text" not in result:
        tail = completed.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [
            f"exit status {completed.returncode}"
        ]
        raise DocumentRejected(f"{name}: the parser failed on this file ({tail[0][:200]})")
    paged = bool(result.get("paged"))
    # A paged text keeps its leading and trailing form feeds: they count its empty pages.
    text = result["text"].strip(" \t\r\n") if paged else result["text"].strip()
    if not text.strip():
        raise DocumentRejected(
            f"{name}: no text could be extracted (a scanned or image-only file needs OCR first)"
        )
    _text_check(name, text, max_chars)
    return ParsedDocument(title=result["title"], text=text, paged=paged)


def _text_check(name: str, text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise DocumentRejected(
            f"{name}: the extracted text is {len(text):,} characters, over the {max_chars:,} "
            "limit (INGEST_MAX_TEXT_CHARS); split the document"
        )


# -I (isolated) ignores PYTHONPATH, so the child puts the project root on sys.path itself.
_BOOT = (
    "import os, sys; sys.path.insert(0, os.environ['PYTHONPATH']); "
    "from retrieval.parse_worker import main; sys.exit(main())"
)
