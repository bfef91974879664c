"""Child process that turns one untrusted file into markdown-like text.

Run as `python -m retrieval.parse_worker TYPE MEMORY_BYTES CPU_SECONDS MAX_CHARS` with the
file's bytes on stdin; prints one JSON object ({"title", "text"} or {"error"}) on stdout. It
imports no Django and nothing heavy. It caps its own memory (RLIMIT_AS) and CPU time
(RLIMIT_CPU) before it reads a byte, so a looping parser is ended by the kernel even if the
worker that started it is gone; the parent adds a wall-clock timeout (retrieval/parsing.py).
"""

from __future__ import annotations

import io
import json
import re
import resource
import sys
import zipfile
from html.parser import HTMLParser


class ParseFailure(Exception):
    """A reason a person can act on (shown in the admin as it is)."""


def parse_text(data: bytes) -> tuple[str, str]:
    """Plain text or markdown: UTF-8 (a BOM is allowed), else a clear failure."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseFailure(
            f"the file is not UTF-8 text (bad byte at position {exc.start}); save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise ParseFailure("the file contains binary data, not text")
    return "", text


class _HtmlToMarkdown(HTMLParser):
    """Keeps headings as markdown headings and paragraphs apart; drops scripts and styles."""

    _SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    _BLOCK = {"p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: ARG002
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif re.fullmatch(r"h[1-6]", tag) or tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def parse_html(data: bytes) -> tuple[str, str]:
    """HTML to markdown-like text: headings kept so chunks carry their section."""
    _, source = parse_text(data) if _is_utf8(data) else ("", data.decode("latin-1"))
    parser = _HtmlToMarkdown()
    parser.feed(source)
    parser.close()
    text = "".join(parser.parts)
    text = "\n\n".join(
        line.strip() for line in re.split(r"\n\s*\n", text) if line.strip() not in ("", "#")
    )
    return parser.title.strip(), text


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def parse_pdf(data: bytes) -> tuple[str, str]:
    """Text of every page with pypdf; encrypted and corrupt files fail with a reason."""
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # An empty user password still lets anyone read some "encrypted" PDFs.
            try:
                ok = reader.decrypt("")
            except Exception:  # noqa: BLE001 - unsupported encryption algorithms raise various errors
                ok = 0
            if not ok:
                raise ParseFailure(
                    "the PDF is encrypted (password-protected); upload an unprotected copy"
                )
        pages = [page.extract_text() or "" for page in reader.pages]
        title = ""
        try:
            title = str((reader.metadata or {}).get("/Title") or "")
        except Exception:  # noqa: BLE001 - broken metadata must not sink a readable PDF
            title = ""
    except ParseFailure:
        raise
    except LimitReachedError as exc:
        raise ParseFailure(f"the PDF inflates beyond what is read ({exc})") from None
    except RecursionError:
        raise ParseFailure("the PDF refers to itself in a loop (too deeply nested)") from None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ParseFailure(f"the PDF is damaged and cannot be read ({exc})") from None
    return title.strip(), "\n\n".join(p.strip() for p in pages if p.strip())


def parse_docx(data: bytes) -> tuple[str, str]:
    """Paragraphs of a .docx, headings as markdown headings (member sizes checked by the parent)."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    _docx_refuse_doctype(data)
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError) as exc:
        raise ParseFailure(f"the .docx file is damaged and cannot be read ({exc})") from None
    lines: list[str] = []
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        match = re.fullmatch(r"Heading (\d)", style)
        if style == "Title":
            lines.append(f"# {text}")
        elif match:
            lines.append("#" * min(6, int(match.group(1)) + 1) + " " + text)
        else:
            lines.append(text)
    for table in document.tables:
        for row in table.rows:
            cells = [cell.text.strip() for cell in row.cells if cell.text.strip()]
            if cells:
                lines.append(" | ".join(cells))
    title = (document.core_properties.title or "").strip()
    return title, "\n\n".join(lines)


def _docx_refuse_doctype(data: bytes) -> None:
    """Refuse XML with a document type declaration: Word never writes one, and it is how
    entity attacks (external entities reading files, "billion laughs") begin."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ParseFailure(f"the .docx file is damaged and cannot be read ({exc})") from None
    with archive:
        for member in archive.infolist():
            if not member.filename.endswith((".xml", ".rels")):
                continue
            with archive.open(member) as handle:
                tail = b""
                while block := handle.read(1 << 20):
                    if b"<!DOCTYPE" in tail + block or b"<!ENTITY" in tail + block:
                        raise ParseFailure(
                            f"the .docx part {member.filename} declares a DOCTYPE or entities, "
                            "which Word never writes (an XML entity attack?)"
                        )
                    tail = block[-16:]


PARSERS = {
    "txt": parse_text,
    "md": parse_text,
    "html": parse_html,
    "pdf": parse_pdf,
    "docx": parse_docx,
}


def _limit(resource_id: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(resource_id)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(resource_id, (soft, hard))


def main() -> int:
    """Cap memory and CPU, read stdin, parse as argv[1], print JSON; exit 0 even for a
    ParseFailure (it is data). Past the CPU limit the kernel sends SIGXCPU, then SIGKILL."""
    kind, memory, cpu, max_chars = sys.argv[1], *map(int, sys.argv[2:5])
    _limit(resource.RLIMIT_AS, memory, memory)
    _limit(resource.RLIMIT_CPU, cpu, cpu + 1)
    data = sys.stdin.buffer.read()
    try:
        title, text = PARSERS[kind](data)
        if len(text) > max_chars:
            raise ParseFailure(
                f"the extracted text is over {max_chars:,} characters (INGEST_MAX_TEXT_CHARS)"
            )
        out = {"title": title, "text": text}
    except ParseFailure as exc:
        out = {"error": str(exc)}
    except MemoryError:
        out = {"error": "memory", "kind": "memory"}
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
