"""Child process that turns one untrusted file into markdown-like text.

Run as `python -m retrieval.parse_worker TYPE MEMORY_BYTES CPU_SECONDS MAX_CHARS` with the
file's bytes on stdin; prints one JSON object ({"title", "text", "paged"} or {"error"}) on
stdout. The text is markdown: headings as '#' lines, tables as markdown tables, text a reader
would not see (hidden runs, white-on-white, display:none) left out. A paged text (PDF, slides)
separates its pages with a form feed, so each passage knows its page. It imports no Django and
nothing heavy. It caps its own memory (RLIMIT_AS) and CPU time
(RLIMIT_CPU) before it reads a byte, so a looping parser is ended by the kernel even if the
worker that started it is gone; the parent adds a wall-clock timeout (retrieval/parsing.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import resource
import sys
import zipfile
from dataclasses import dataclass
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


# Elements a browser would not show: their text is no more the document than a script is, and
# hidden text is where injected instructions hide.
_VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
}  # fmt: skip
# A start tag of one of these ends an open <p> (HTML's implied end tags), hidden or not.
_CLOSES_P = {
    "p", "div", "ul", "ol", "table", "section", "article", "pre", "blockquote", "form", "h1", "h2",
    "h3", "h4", "h5", "h6", "header", "footer", "nav", "aside", "hr",
}  # fmt: skip
_ZERO = re.compile(r"0*(?:\.0*)?(?:[a-z]+|%)?")


def _style_hides(style: str) -> bool:
    for declaration in style.split(";"):
        name, _, value = declaration.partition(":")
        name = name.strip().lower()
        value = value.replace("!important", "").strip().lower()
        if (
            (name == "display" and value == "none")
            or (name == "visibility" and value in ("hidden", "collapse"))
            or (name in ("font-size", "opacity") and value and _ZERO.fullmatch(value))
        ):
            return True
    return False


def is_hidden(attrs: list[tuple[str, str | None]]) -> bool:
    """An element a browser does not show: the hidden attribute or an inline style that hides."""
    for name, value in attrs:
        if name == "hidden":
            return True
        if name == "style" and value and _style_hides(value):
            return True
    return False


class _HtmlToMarkdown(HTMLParser):
    """Keeps headings as markdown headings and paragraphs apart; drops scripts, styles and
    hidden elements."""

    _SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    _BLOCK = {"p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        # The hidden element being skipped and how deep its own tag name is nested in it.
        self._hidden_tag = ""
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self._hidden_tag:
            if tag == self._hidden_tag and tag not in _VOID:
                if tag in ("p", "li"):  # a new <p> or <li> ends the hidden one
                    self._hidden_tag, self._hidden_depth = "", 0
                else:
                    self._hidden_depth += 1
                    return
            elif self._hidden_tag == "p" and tag in _CLOSES_P:
                self._hidden_tag, self._hidden_depth = "", 0
            else:
                return
        if tag not in _VOID and is_hidden(attrs):
            self._hidden_tag, self._hidden_depth = tag, 1
            return
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if self._hidden_tag:
            if tag == self._hidden_tag:
                self._hidden_depth -= 1
                if self._hidden_depth <= 0:
                    self._hidden_tag = ""
            return
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif re.fullmatch(r"h[1-6]", tag) or tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._hidden_tag:
            return
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


def parse_markdown(data: bytes) -> tuple[str, str]:
    """Markdown: UTF-8 text with its hidden HTML elements (display:none, hidden) dropped."""
    title, text = parse_text(data)
    return title, drop_hidden_html(text)


_TAG = re.compile(r"<(/?)([a-zA-Z][\w-]*)((?:\s+[^>]*?)?)\s*(/?)>")
_ATTR = re.compile(r"""([^\s=/>]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?""")


def drop_hidden_html(markdown: str) -> str:
    """Markdown without the HTML elements in it that a browser would hide (outside code fences)."""
    out: list[str] = []
    fence = ""
    hidden_tag, depth = "", 0
    for line in markdown.splitlines(keepends=True):
        opener = re.match(r" {0,3}(`{3,}|~{3,})", line)
        if fence or (opener and not hidden_tag):
            if fence and opener and opener.group(1)[0] == fence[0]:
                fence = ""
            elif not fence:
                fence = opener.group(1)
            out.append(line)
            continue
        kept, position = [], 0
        for match in _TAG.finditer(line):
            closing, name, attributes, self_closing = match.groups()
            name = name.lower()
            if hidden_tag:
                if name == hidden_tag and not self_closing:
                    depth += -1 if closing else 1
                    if depth == 0:
                        hidden_tag, position = "", match.end()
                continue
            if closing or self_closing or name in _VOID:
                continue
            attrs = [
                (a.lower(), v.strip("\"'") if v else None) for a, v in _ATTR.findall(attributes)
            ]
            if is_hidden(attrs):
                kept.append(line[position : match.start()])
                hidden_tag, depth = name, 1
        if not hidden_tag:
            kept.append(line[position:])
        out.append("".join(kept))
    return "".join(out)


def body_text(text: str) -> str:
    """Text that is not a heading, escaped where it would read as one ("# not a title")."""
    return "\\" + text if re.match(r"#{1,6}(\s|$)", text) else text


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# A long table is cut into blocks that each repeat the header row, so every passage made of it
# still says what its columns mean.
_TABLE_BLOCK_ROWS = 20


def markdown_table(rows: list[list[str]]) -> str:
    """Rows of cell texts as markdown tables (the first row is the header), blank-line separated
    blocks of at most _TABLE_BLOCK_ROWS rows; empty rows and columns are dropped."""
    rows = [[_cell(c) for c in row] for row in rows]
    rows = [row for row in rows if any(row)]
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    used = [i for i in range(width) if any(row[i] for row in rows)]
    rows = [[row[i] for i in used] for row in rows]
    if len(rows) == 1 or len(used) == 1:
        return "\n".join(" | ".join(c for c in row if c) for row in rows)
    header, body = rows[0], rows[1:]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(row) + " |"

    head = [line(header), "| " + " | ".join("---" for _ in header) + " |"]
    blocks = [
        "\n".join([*head, *(line(r) for r in body[i : i + _TABLE_BLOCK_ROWS])])
        for i in range(0, len(body), _TABLE_BLOCK_ROWS)
    ]
    return "\n\n".join(blocks)


def parse_pdf(data: bytes) -> tuple[str, str]:
    """Each page's text with pypdf, pages apart (form feeds); headings from the outline, else
    from font sizes. Encrypted and corrupt files fail with a reason."""
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
        pages = [_pdf_page_lines(page) for page in reader.pages]
        outline = _pdf_outline(reader)
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
    if outline:
        _pdf_headings_from_outline(pages, outline)
    else:
        _pdf_headings_from_sizes(pages)
    return title.strip(), "\n\f\n".join(_pdf_page_markdown(lines) for lines in pages)


@dataclass
class _PdfLine:
    text: str
    size: float  # the font size most of its characters are set in, in points
    heading: int = 0  # markdown heading level, 0: body text


def _pdf_page_lines(page: object) -> list[_PdfLine]:
    """The page's text lines with their font sizes (pypdf's text visitor)."""
    lines: list[_PdfLine] = []
    parts: list[tuple[str, float]] = []

    def flush() -> None:
        text = " ".join("".join(t for t, _ in parts).split())
        if text:
            sizes: dict[float, int] = {}
            for t, size in parts:
                sizes[size] = sizes.get(size, 0) + len(t.strip())
            lines.append(_PdfLine(text, max(sizes, key=lambda k: sizes[k])))
        parts.clear()

    def visit(text: str, cm: list, tm: list, font: object, font_size: float) -> None:  # noqa: ARG001
        # The rendered size is the font size scaled by the text and graphics matrices.
        size = round(abs(font_size) * math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3]), 1)
        pieces = text.split("\n")
        for i, piece in enumerate(pieces):
            if i:
                flush()
            if piece:
                parts.append((piece, size))

    page.extract_text(visitor_text=visit)  # type: ignore[attr-defined]
    flush()
    return lines


def _pdf_outline(reader: object) -> list[tuple[int, str, int]]:
    """(page index, title, depth) of the PDF's outline (bookmarks); [] if it has none."""
    found: list[tuple[int, str, int]] = []

    def walk(items: list, depth: int) -> None:
        for item in items:
            if len(found) >= 2000 or depth > 5:
                return
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)  # type: ignore[attr-defined]
                title = " ".join(str(item.title or "").split())
            except Exception:  # noqa: BLE001 - a broken bookmark must not sink the text
                continue
            if title and page is not None and page >= 0:
                found.append((page, title, depth))

    try:
        walk(reader.outline, 0)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a broken outline is no reason to refuse the text
        return []
    return found


def _squash(text: str) -> str:
    return re.sub(r"\W+", "", text).lower()


def _pdf_headings_from_outline(pages: list[list[_PdfLine]], outline: list) -> None:
    """Mark each bookmark's line on its page a heading (##, ### ... by depth); add it at the top
    of the page when no line matches."""
    inserted = [0] * len(pages)
    for index, title, depth in outline:
        if index >= len(pages):
            continue
        level = min(6, depth + 2)
        wanted = _squash(title)
        # The heading line may carry a section number the bookmark leaves out ("2.1 Naming").
        line = next(
            (
                ln
                for ln in pages[index]
                if not ln.heading
                and wanted
                and _squash(ln.text).endswith(wanted)
                and len(_squash(ln.text)) - len(wanted) <= 6
            ),
            None,
        )
        if line is not None:
            line.heading = level
        else:
            pages[index].insert(inserted[index], _PdfLine(title, 0.0, level))
            inserted[index] += 1


def _pdf_headings_from_sizes(pages: list[list[_PdfLine]]) -> None:
    """Short lines set clearly larger than the body text become headings, the largest size
    first; a largest size used once, on the first page, is the title (#)."""
    weight: dict[float, int] = {}
    for lines in pages:
        for line in lines:
            weight[line.size] = weight.get(line.size, 0) + len(line.text)
    if not weight:
        return
    body = max(weight, key=lambda k: weight[k])
    candidates = [
        line
        for lines in pages
        for line in lines
        if line.size >= body * 1.15 and len(line.text) <= 120 and re.search(r"[^\W\d_]", line.text)
    ]
    sizes = sorted({line.size for line in candidates}, reverse=True)[:4]
    if not sizes:
        return
    first = [line for line in candidates if line.size == sizes[0]]
    title_size = sizes[0] if len(first) == 1 and any(first[0] is ln for ln in pages[0]) else None
    levels = {}
    level = 2
    for size in sizes:
        if size == title_size:
            levels[size] = 1
        else:
            levels[size], level = level, level + 1
    for line in candidates:
        line.heading = levels.get(line.size, 0)


def _pdf_page_markdown(lines: list[_PdfLine]) -> str:
    """A page's lines as markdown: headings on their own, body lines joined into paragraphs that
    end at a line finishing a sentence well short of the page's usual line length."""
    width = max((len(ln.text) for ln in lines if not ln.heading), default=0)
    blocks: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(" ".join(paragraph))
            paragraph.clear()

    size = 0.0
    for line in lines:
        if line.heading:
            flush()
            blocks.append("#" * line.heading + " " + line.text)
            continue
        line.text = body_text(line.text)
        if line.size != size:
            flush()  # a change of type size is a change of block (a caption, a heading)
            size = line.size
        if paragraph and paragraph[-1].endswith("-") and line.text[:1].islower():
            paragraph[-1] = paragraph[-1][:-1] + line.text  # a word hyphenated at the line end
        elif re.match(r"[\u2022\u25aa\u2013*-]\s|\d{1,2}[.)]\s", line.text):
            flush()  # a list item starts its own paragraph
            paragraph.append(line.text)
        else:
            paragraph.append(line.text)
        if re.search(r"[.!?:][\"')\]]*$", line.text) and len(line.text) < 0.8 * width:
            flush()
    flush()
    return "\n\n".join(blocks)


def parse_docx(data: bytes) -> tuple[str, str]:
    """Paragraphs and tables of a .docx in document order, headings as markdown headings, text
    Word does not show (hidden runs, white on white) left out (member sizes checked by the
    parent)."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    _zip_refuse_doctype(data, ".docx")
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError) as exc:
        raise ParseFailure(f"the .docx file is damaged and cannot be read ({exc})") from None
    background = document.element.find(_w("background"))
    white_page = background is None or (background.get(_w("color")) or "FFFFFF").upper() in (
        "FFFFFF",
        "AUTO",
    )
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            table = markdown_table(_docx_table_rows(block, white_page))
            if table:
                lines.append(table)
            continue
        text = _docx_visible_text(block, white_page).strip()
        if not text:
            continue
        style = (block.style.name if block.style is not None else "") or ""
        match = re.fullmatch(r"Heading (\d)", style)
        if style == "Title":
            lines.append(f"# {text}")
        elif match:
            lines.append("#" * min(6, int(match.group(1)) + 1) + " " + text)
        else:
            lines.append(body_text(text))
    title = (document.core_properties.title or "").strip()
    return title, "\n\n".join(lines)


_W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _w(tag: str) -> str:
    return f"{{{_W_NS}}}{tag}"


def _docx_table_rows(table: object, white_page: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in table.rows:  # type: ignore[attr-defined]
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell is returned once per grid column it spans
                continue
            seen.add(id(cell._tc))
            shaded = _dark_fill(cell._tc.find(f"{_w('tcPr')}/{_w('shd')}"))
            cells.append(
                " ".join(
                    _docx_visible_text(p, white_page and not shaded) for p in cell.paragraphs
                ).strip()
            )
        rows.append(cells)
    return rows


def _dark_fill(shading: object) -> bool:
    """A shading element with a fill that is not white (white text on it can be read)."""
    if shading is None:
        return False
    fill = (shading.get(_w("fill")) or "auto").upper()  # type: ignore[attr-defined]
    return fill not in ("AUTO", "FFFFFF")


def _docx_visible_text(paragraph: object, white_page: bool) -> str:
    """The text of a paragraph's runs that Word shows (also in links, fields and insertions)."""
    from docx.text.run import Run

    element = paragraph._p  # type: ignore[attr-defined]
    shaded = _dark_fill(element.find(f"{_w('pPr')}/{_w('shd')}"))
    runs = element.xpath(
        "./w:r | ./w:hyperlink/w:r | ./w:ins/w:r | ./w:smartTag/w:r | ./w:fldSimple/w:r"
        " | ./w:sdt/w:sdtContent/w:r"
    )
    return "".join(
        run.text
        for run in (Run(r, paragraph) for r in runs)
        if not _docx_run_hidden(run, paragraph, white_page and not shaded)
    )


def _docx_styles(run: object, paragraph: object) -> list:
    """The run's character style and the paragraph's style, each with its base styles."""
    chain = []
    for style in (getattr(run, "style", None), getattr(paragraph, "style", None)):
        depth = 0
        while style is not None and depth < 10:
            chain.append(style)
            style = style.base_style
            depth += 1
    return chain


def _docx_run_hidden(run: object, paragraph: object, white_page: bool) -> bool:
    """Hidden (w:vanish), set in a size of 1 pt or less, or white without a highlight or shading
    on a white page: directly or through its styles."""
    fonts = [run.font] + [s.font for s in _docx_styles(run, paragraph)]  # type: ignore[attr-defined]
    hidden = next((f.hidden for f in fonts if f.hidden is not None), False)
    if hidden:
        return True
    size = next((f.size for f in fonts if f.size is not None), None)
    if size is not None and size.pt <= 1:
        return True
    if not white_page or not run.text.strip():  # type: ignore[attr-defined]
        return False
    if run.font.highlight_color is not None or _dark_fill(  # type: ignore[attr-defined]
        run._r.find(f"{_w('rPr')}/{_w('shd')}")  # type: ignore[attr-defined]
    ):
        return False
    for font in fonts:
        color = font.color
        if color is not None and color.type is not None:
            return str(color.rgb or "").upper() == "FFFFFF"
    return False


def parse_pptx(data: bytes) -> tuple[str, str]:
    """The slides of a .pptx, one page each (a hidden slide stays an empty page so numbers
    match): its title as a heading, then its text boxes and tables from top to bottom.
    Speaker notes are not shown to the audience and are left out."""
    import pptx
    from pptx.exc import PackageNotFoundError

    _zip_refuse_doctype(data, ".pptx")
    try:
        presentation = pptx.Presentation(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError) as exc:
        raise ParseFailure(f"the .pptx file is damaged and cannot be read ({exc})") from None
    pages: list[str] = []
    for slide in presentation.slides:
        if slide._element.get("show") == "0":
            pages.append("")
            continue
        blocks: list[str] = []
        title_shape = slide.shapes.title
        if title_shape is not None and title_shape.text_frame.text.strip():
            blocks.append("## " + " ".join(title_shape.text_frame.text.split()))
        for shape in _pptx_shapes_in_order(slide.shapes):
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if getattr(shape, "has_table", False) and shape.has_table:
                rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
                blocks.append(markdown_table(rows))
            elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                text = "\n".join(
                    body_text(" ".join(p.text.split()))
                    for p in shape.text_frame.paragraphs
                    if p.text.strip()
                )
                if text:
                    blocks.append(text)
        pages.append("\n\n".join(b for b in blocks if b))
    title = (presentation.core_properties.title or "").strip()
    return title, "\n\f\n".join(pages)


def _pptx_shapes_in_order(shapes: object) -> list:
    """Shapes (group members included) top to bottom, then left to right."""
    flat = []
    for shape in shapes:  # type: ignore[attr-defined]
        if shape.shape_type is not None and hasattr(shape, "shapes"):
            flat.extend(_pptx_shapes_in_order(shape.shapes))
        else:
            flat.append(shape)
    return sorted(flat, key=lambda s: (s.top or 0, s.left or 0))


def parse_xlsx(data: bytes) -> tuple[str, str]:
    """Each visible sheet of an .xlsx as a section with its cells as markdown tables (stored
    values, not formulas); hidden sheets, rows and columns are left out."""
    import openpyxl
    from openpyxl.utils import get_column_letter

    _zip_refuse_doctype(data, ".xlsx")
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), data_only=True)
    except (KeyError, ValueError, TypeError, zipfile.BadZipFile, OSError) as exc:
        raise ParseFailure(f"the .xlsx file is damaged and cannot be read ({exc})") from None
    sections: list[str] = []
    for sheet in workbook.worksheets:
        if sheet.sheet_state != "visible":
            continue
        hidden_columns = {
            index
            for index in range(1, (sheet.max_column or 0) + 1)
            if sheet.column_dimensions[get_column_letter(index)].hidden
        }
        rows = [
            [
                "" if cell.value is None else str(cell.value)
                for cell in row
                if cell.column not in hidden_columns
            ]
            for row in sheet.iter_rows()
            if row and not sheet.row_dimensions[row[0].row].hidden
        ]
        table = markdown_table(rows)
        if table:
            sections.append(f"## {sheet.title}\n\n{table}")
    title = (workbook.properties.title or "").strip()
    return title, "\n\n".join(sections)


def parse_csv(data: bytes) -> tuple[str, str]:
    """A CSV file (UTF-8, the delimiter sniffed) as markdown tables, its first row the header."""
    _, text = parse_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error as exc:
        raise ParseFailure(f"the CSV file cannot be read ({exc})") from None
    return "", markdown_table(rows)


def _zip_refuse_doctype(data: bytes, label: str) -> None:
    """Refuse XML with a document type declaration: Office never writes one, and it is how
    entity attacks (external entities reading files, "billion laughs") begin."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ParseFailure(f"the {label} file is damaged and cannot be read ({exc})") from None
    with archive:
        for member in archive.infolist():
            if not member.filename.endswith((".xml", ".rels")):
                continue
            with archive.open(member) as handle:
                tail = b""
                while block := handle.read(1 << 20):
                    if b"<!DOCTYPE" in tail + block or b"<!ENTITY" in tail + block:
                        raise ParseFailure(
                            f"the {label} part {member.filename} declares a DOCTYPE or entities, "
                            "which Office never writes (an XML entity attack?)"
                        )
                    tail = block[-16:]


PARSERS = {
    "txt": parse_text,
    "md": parse_markdown,
    "html": parse_html,
    "pdf": parse_pdf,
    "docx": parse_docx,
    "pptx": parse_pptx,
    "xlsx": parse_xlsx,
    "csv": parse_csv,
}
# Texts whose pages are separated by form feeds (chunks then carry their page).
PAGED = {"pdf", "pptx"}


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
        out = {"title": title, "text": text, "paged": kind in PAGED}
    except ParseFailure as exc:
        out = {"error": str(exc)}
    except MemoryError:
        out = {"error": "memory", "kind": "memory"}
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
