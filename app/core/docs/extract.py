"""Turn a document file into text units, each with its page number and nearest heading.

This is the first layer of "chat with your documents": a file goes in, a list of
`Unit`s comes out (paragraphs, table rows, blocks of code), each knowing where it
sits in the document's full text (`start`), on which PDF page it was (`page`) and
under which heading (`heading`), so that later layers can chunk, embed, search
and cite. Nothing here needs Qt or a model.

Formats and the libraries that read them:

* PDF through pypdfium2 (Google's PDFium). It was chosen over pypdf because
  PDFium extracts text faster and more faithfully (spacing, ligatures, reading
  order, CJK). PDFium is not thread-safe, so every call into it holds
  `PDFIUM_LOCK`, and every document, page and text page is closed explicitly
  (they hold native memory). Paragraphs are found from the vertical gaps between
  lines; a line set noticeably larger than the body text is taken as a heading.
* Word (.docx) through python-docx: paragraphs, Heading/Title styles as
  headings, and tables one row per unit (cells joined with " | ").
* HTML through the standard library's `html.parser`: one unit per block
  element, h1-h6 as headings; script, style, nav, head and the like are skipped.
* Markdown (`#` and underlined headings, fenced code kept whole), plain text and
  source code (blocks of about `CODE_BLOCK_LINES` lines, whitespace kept).

Safety: every read is bounded (`Limits`), long work checks a `threading.Event`
to stop, and anything wrong with a file is a `DocumentError` whose sentence says
what happened and what to do, never a traceback.

Text is normalised to NFC; inside a prose unit runs of whitespace become one
space, except that a line break between two CJK characters is removed (Chinese
and Japanese do not put spaces between words), so CJK text stays searchable by
substring.
"""

from __future__ import annotations

import codecs
import itertools
import re
import stat
import threading
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from app.core.errors import CamelidError

MiB = 1024 * 1024

#: Longest prose unit; a longer paragraph is split at a sentence end or a space.
MAX_UNIT_CHARS = 4000
#: Source code and other line-oriented files are cut into blocks of about this many lines.
CODE_BLOCK_LINES = 60

#: Every use of pypdfium2 anywhere in Camelid must hold this lock: PDFium is not thread-safe.
PDFIUM_LOCK = threading.Lock()


@dataclass(frozen=True)
class Limits:
    """Bounds on what one `extract` call reads and builds."""

    max_file_bytes: int = 200 * MiB
    max_pages: int = 5000
    max_chars: int = 20_000_000
    #: Most bytes a .docx may unpack to (python-docx holds every part in memory).
    max_unzipped_bytes: int = 512 * MiB


class DocumentError(CamelidError):
    """A document could not be read: missing, empty, too large, unsupported, damaged, cancelled."""

    code = "document"


@dataclass(frozen=True)
class Unit:
    """One piece of a document's text (a paragraph, a heading, a table row, a block of code)."""

    text: str
    #: 1-based page number (PDFs only).
    page: int | None
    #: The nearest heading above this unit (a heading unit's own text); None for code.
    heading: str | None
    #: Offset of `text` in the document's full text, `"\n\n".join(u.text for u in units)`.
    start: int


@dataclass
class Extracted:
    """A document turned into units."""

    path: Path
    #: pdf, docx, markdown, text, html or code.
    kind: str
    units: list[Unit]
    #: The PDF's page count (None for other kinds).
    pages: int | None
    #: Length of `text`.
    chars: int
    #: Sentences about anything skipped or guessed.
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The full text: the units' texts joined by blank lines (each unit's `start` points into it)."""
        return "\n\n".join(unit.text for unit in self.units)


_CODE_SUFFIXES = [
    ".py", ".pyi", ".pyw", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".c", ".h",
    ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".kt",
    ".kts", ".scala", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".bat", ".sql", ".r", ".m", ".mm",
    ".lua", ".pl", ".pm", ".dart", ".hs", ".ex", ".exs", ".erl", ".clj", ".jl", ".vue",
    ".svelte", ".proto", ".cmake", ".gradle", ".tf", ".toml", ".yaml", ".yml", ".json", ".ini",
    ".cfg", ".conf", ".css", ".scss", ".less", ".xml", ".tex",
]
_KINDS: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".md": "markdown", ".markdown": "markdown", ".mdown": "markdown", ".mkd": "markdown",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".txt": "text", ".text": "text", ".rst": "text", ".log": "text", ".csv": "text",
    ".tsv": "text", ".org": "text", ".adoc": "text", ".srt": "text", ".vtt": "text",
    **dict.fromkeys(_CODE_SUFFIXES, "code"),
}
#: Suffixes (lower case, with the dot) that `extract` reads.
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_KINDS)
#: Files without a suffix that are read anyway (compared in lower case).
_NAMES = {
    **dict.fromkeys(["readme", "license", "licence", "copying", "notice", "authors",
                     "changelog", "changes", "news", "contributors", "todo"], "text"),
    **dict.fromkeys(["makefile", "dockerfile", "containerfile", "justfile", "cmakelists.txt"],
                    "code"),
}
#: Files kept line by line (newlines are part of their meaning).
_LINE_SUFFIXES = frozenset({".csv", ".tsv", ".log", ".srt", ".vtt"})
_OFFICE_SUFFIXES = frozenset({".doc", ".odt", ".rtf", ".pages", ".wpd"})


def kind_of(path: Path) -> str | None:
    """The kind `extract` reads `path` as (pdf, docx, markdown, text, html, code), or None."""
    kind = _KINDS.get(path.suffix.lower())
    return kind if kind is not None else _NAMES.get(path.name.lower())


def _name(path: Path, limit: int = 80) -> str:
    """A file name for a sentence: printable and at most `limit` characters."""
    clean = "".join(c if c.isprintable() else "?" for c in (path.name or str(path))[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def _size(n: int) -> str:
    return f"{n / MiB:,.0f} MiB" if n >= MiB else f"{n:,} bytes"


# --- text normalisation -------------------------------------------------------------------

_CJK = ("\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf"
        "\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff")
_CJK_CHAR = re.compile(f"[{_CJK}]")
_CJK_BREAK = re.compile(f"(?<=[{_CJK}])[ \t]*\n\\s*(?=[{_CJK}])")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\u200b\ufeff\ufffe\uffff]")
_SPACES = re.compile(r"\s+")
_INLINE_SPACES = re.compile(r"[^\S\n]+")
_SENTENCE_END = re.compile(r"[.!?;:](?=\s)|[。！？；]")


def _prose(text: str) -> str:
    """NFC, no control characters, whitespace runs as one space, CJK line breaks joined."""
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    return _SPACES.sub(" ", _CJK_BREAK.sub("", text)).strip()


def _verbatim(text: str, collapse: bool = False) -> str:
    """NFC, no control characters, lines kept (trailing spaces and blank edges dropped)."""
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")))
    lines = [_INLINE_SPACES.sub(" ", line).strip() if collapse else line.rstrip()
             for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


def _split_long(text: str, limit: int = MAX_UNIT_CHARS) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut at a sentence end or space if possible."""
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = 0
        for match in _SENTENCE_END.finditer(window, limit // 2):
            cut = match.end()
        if not cut:
            cut = max(window.rfind(" "), window.rfind("\n")) + 1
        if cut < limit // 4:
            cut = limit
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return [piece for piece in pieces if piece]


def _is_cjk(char: str) -> bool:
    return bool(_CJK_CHAR.match(char))


# --- output ----------------------------------------------------------------------------------

class _Full(Exception):
    """The character limit was reached; what was read so far is kept."""


class _Out:
    """Collects units, keeps `start` offsets right, enforces max_chars and cancellation."""

    def __init__(self, name: str, limits: Limits, cancel: threading.Event | None) -> None:
        self.name = name
        self.limits = limits
        self.cancel = cancel
        self.units: list[Unit] = []
        self.chars = 0
        self.truncated = False
        self.warnings: list[str] = []

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DocumentError(f"Reading {self.name} was cancelled.")

    def add(self, text: str, heading: str | None, page: int | None = None) -> None:
        if not text:
            return
        if len(self.units) % 512 == 511:
            self.check()
        start = self.chars + 2 if self.units else 0
        room = self.limits.max_chars - start
        if len(text) > room:
            self.truncated = True
            piece = text[:room].rstrip() if room > 0 else ""
            if piece:
                self.units.append(Unit(piece, page, heading, start))
                self.chars = start + len(piece)
            raise _Full
        self.units.append(Unit(text, page, heading, start))
        self.chars = start + len(text)

    def add_prose(self, text: str, heading: str | None, page: int | None = None) -> None:
        for piece in _split_long(text):
            self.add(piece, heading, page)

    def add_lines(self, text: str, heading: str | None, block: int = CODE_BLOCK_LINES) -> None:
        """Line-oriented text (code, CSV, logs) in blocks of about `block` lines."""
        for piece in _line_blocks(text, block):
            self.add(piece, heading)


def _line_blocks(text: str, block: int) -> Iterator[str]:
    """Blocks of about `block` lines (cut at a blank line near the target), each <= MAX_UNIT_CHARS."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        end = min(len(lines), i + block)
        if end < len(lines):  # prefer a blank line between 2/3 and 4/3 of the block
            blanks = [j for j in range(i + block * 2 // 3, min(len(lines), i + block * 4 // 3))
                      if not lines[j].strip()]
            if blanks:
                end = min(blanks, key=lambda j: abs(j - (i + block)))
        chunk: list[str] = []
        size = 0
        j = i
        while j < end:
            line = lines[j]
            if size + len(line) + 1 > MAX_UNIT_CHARS and chunk:
                break
            if len(line) > MAX_UNIT_CHARS:  # one huge line (minified code, a data dump)
                if chunk:
                    break
                yield from _split_long(line)
                j += 1
                break
            chunk.append(line)
            size += len(line) + 1
            j += 1
        piece = "\n".join(chunk).strip("\n")
        if piece.strip():
            yield piece
        i = max(j, i + 1)


# --- decoding --------------------------------------------------------------------------------

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"),
         (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_:.\-]{1,40})""",
                           re.IGNORECASE)


def _binary(name: str) -> DocumentError:
    return DocumentError(f"{name} does not look like a text file (it contains binary data).",
                         "If it is a document in another format, save it as PDF, .docx or "
                         "plain text and add that file.")


def _decode(data: bytes, name: str, warnings: list[str], html: bool = False) -> str:
    """Text from bytes: a BOM, else UTF-8, else a declared HTML charset, else a legacy guess."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            text = data.decode(codec, errors="replace")
            if "\ufffd" in text:
                label = "UTF-8" if codec == "utf-8-sig" else codec.upper()
                warnings.append(f"{name} has bytes that are not valid {label}; "
                                "they were replaced with \ufffd.")
            return text
    if b"\x00" in data:
        raise _binary(name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd") - data.count("\ufffd".encode())
        good = sum(1 for c in text if ord(c) > 0x7F) - text.count("\ufffd")
        if good >= 10 * bad:  # UTF-8 with a few damaged bytes, not a legacy encoding
            warnings.append(f"{name} has {bad:,} {'byte' if bad == 1 else 'bytes'} that "
                            f"{'is' if bad == 1 else 'are'} not valid UTF-8; "
                            f"{'it was' if bad == 1 else 'they were'} replaced with \ufffd.")
        else:
            text = _legacy(data, name, warnings, html)
    sample = text[:4096]
    controls = sum(1 for c in sample if c < " " and c not in "\t\n\r\f")
    if controls > max(8, len(sample) // 20):
        raise _binary(name)
    return text


def _legacy(data: bytes, name: str, warnings: list[str], html: bool) -> str:
    if html:
        match = _META_CHARSET.search(data[:8192])
        if match:
            try:
                codec = codecs.lookup(match.group(1).decode("ascii")).name
                return data.decode(codec, errors="replace")
            except (LookupError, UnicodeDecodeError):
                pass
    fix = "If characters look wrong, save it as UTF-8 and add it again."
    try:  # Chinese legacy files: GB18030 rejects most Western byte patterns
        text = data.decode("gb18030")
        wide = [c for c in text if ord(c) > 0x7F]
        if wide and sum(1 for c in wide if _is_cjk(c)) >= 0.9 * len(wide):
            warnings.append(f"{name} is not UTF-8; it was read as GB18030 (Chinese). {fix}")
            return text
    except UnicodeDecodeError:
        pass
    try:
        text, label = data.decode("cp1252"), "Windows-1252 (Western European)"
    except UnicodeDecodeError:
        text, label = data.decode("latin-1"), "Latin-1"
    warnings.append(f"{name} is not UTF-8; it was read as {label}. {fix}")
    return text


# --- plain text and Markdown -----------------------------------------------------------------

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_UNDERLINE = re.compile(r"([=\-~^\"'`#*+:._])\1{2,}[ \t]*$")
_PARAGRAPHS = re.compile(r"\n[ \t]*\n")


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2029", "\n\n")


def _underlined(lines: list[str]) -> tuple[str, int] | None:
    """(title, lines used) if a paragraph opens with an RST-style underlined (or overlined) title."""
    if len(lines) >= 3 and _UNDERLINE.match(lines[0]) and _UNDERLINE.match(lines[2]):
        title = lines[1].strip()
        if title and len(lines[0].strip()) >= len(title) and not _UNDERLINE.match(lines[1]):
            return title, 3
    if len(lines) >= 2 and _UNDERLINE.match(lines[1]):
        title = lines[0].strip()
        if title and not _UNDERLINE.match(lines[0]) and len(lines[1].strip()) >= len(title):
            return title, 2
    return None


def _text_units(text: str, out: _Out, line_mode: bool) -> None:
    text = _newlines(text)
    if line_mode:
        out.add_lines(_verbatim(text, collapse=True), None)
        return
    heading: str | None = None
    for n, para in enumerate(_PARAGRAPHS.split(text)):
        if n % 1000 == 999:
            out.check()
        lines = [line for line in para.split("\n") if line.strip()]
        if not lines:
            continue
        found = _underlined(lines)
        if found:
            title, used = found
            heading = _prose(title) or heading
            out.add_prose(heading or "", heading)
            lines = lines[used:]
        out.add_prose(_prose("\n".join(lines)), heading)


#: Inline HTML in Markdown (READMEs' badges and sponsor logos): tags and comments, not text.
_INLINE_HTML = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>\n]{0,1000}>", re.DOTALL)


def _markdown_units(text: str, out: _Out) -> None:
    lines = _newlines(text).split("\n")
    heading: str | None = None
    para: list[str] = []

    def flush() -> None:
        if para:
            prose = _prose(_INLINE_HTML.sub(" ", "\n".join(para)))
            if prose:
                out.add_prose(prose, heading)
            para.clear()

    i = 0
    if lines and lines[0].strip() == "---":  # YAML front matter
        for j in range(1, min(len(lines), 200)):
            if lines[j].strip() in ("---", "..."):
                out.add_lines(_verbatim("\n".join(lines[1:j]), collapse=True), None)
                i = j + 1
                break
    while i < len(lines):
        if i % 5000 == 4999:
            out.check()
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            mark = fence.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith(mark):
                j += 1
            out.add_lines(_verbatim("\n".join(lines[i + 1: j])), heading)
            i = j + 1
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            title = _prose((atx.group(2) or "").rstrip("#"))
            if title:
                heading = title
                out.add(title, heading)
        elif not line.strip():
            flush()
        elif para and _SETEXT.match(line):
            title = _prose("\n".join(para))
            para.clear()
            heading = title[:MAX_UNIT_CHARS] or heading
            out.add_prose(title, heading)
        elif not para and re.fullmatch(r" {0,3}([-*_])([ \t]*\1){2,}[ \t]*", line):
            pass  # a thematic break
        else:
            para.append(line)
        i += 1
    flush()


# --- HTML ------------------------------------------------------------------------------------

_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "form", "header",
    "footer", "hr", "html", "legend", "li", "main", "menu", "ol", "p", "pre", "section",
    "summary", "table", "tbody", "thead", "tfoot", "tr", "ul",
}) | _HEADINGS
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head", "nav", "iframe",
                   "object", "select", "button", "canvas"})


class _HTMLUnits(HTMLParser):
    """Emits one unit per block element; h1-h6 become headings; _SKIP elements are dropped."""

    def __init__(self, out: _Out) -> None:
        super().__init__(convert_charrefs=True)
        self.out = out
        self.heading: str | None = None
        self.buffer: list[str] = []
        self.skip: str | None = None
        self.skip_depth = 0
        self.pre = 0
        self.in_heading = False

    def flush(self) -> None:
        raw = "".join(self.buffer)
        self.buffer.clear()
        if self.in_heading:
            title = _prose(raw)
            if title:
                self.heading = title[:MAX_UNIT_CHARS]
                self.out.add_prose(title, self.heading)
        elif self.pre:
            text = _verbatim(raw)
            if text.strip():
                self.out.add_lines(text, self.heading)
        else:
            self.out.add_prose(_prose(raw), self.heading)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip is not None:
            if tag == self.skip:
                self.skip_depth += 1
            elif self.skip == "head" and tag == "body":  # an unclosed <head>
                self.skip = None
            return
        if tag in _SKIP:
            self.flush()
            self.skip, self.skip_depth = tag, 1
        elif tag == "br":
            self.buffer.append("\n")
        elif tag in ("td", "th"):
            if "".join(self.buffer).strip():
                self.buffer.append(" | ")
        elif tag in _BLOCKS:
            self.flush()
            self.in_heading = tag in _HEADINGS
            if tag == "pre":
                self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip is None and tag == "br":
            self.buffer.append("\n")
        elif self.skip is None and tag in _BLOCKS:
            self.flush()

    def handle_endtag(self, tag: str) -> None:
        if self.skip is not None:
            if tag == self.skip:
                self.skip_depth -= 1
                if self.skip_depth <= 0:
                    self.skip = None
            return
        if tag in _BLOCKS:
            self.flush()
            if tag in _HEADINGS:
                self.in_heading = False
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.skip is None:
            self.buffer.append(data)


def _html_units(text: str, out: _Out) -> None:
    parser = _HTMLUnits(out)
    step = 1 << 20
    for i in range(0, len(text), step):
        out.check()
        parser.feed(text[i: i + step])
    parser.close()
    parser.flush()


# --- DOCX ------------------------------------------------------------------------------------

def _docx_units(path: Path, out: _Out) -> None:
    import docx  # python-docx; imported here so that the other kinds do not pay for it
    from docx.table import Table

    name = out.name
    damaged = DocumentError(f"{name} is not a readable Word document (it may be damaged, or not "
                            "really a .docx file).",
                            "Open it in Word or LibreOffice and save it again as .docx, or as PDF.")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise damaged from error
    if "word/document.xml" not in {info.filename for info in infos}:
        raise damaged
    unpacked = sum(info.file_size for info in infos)
    if unpacked > out.limits.max_unzipped_bytes:
        raise DocumentError(f"{name} unpacks to {_size(unpacked)}; Camelid reads Word documents "
                            f"that unpack to at most {_size(out.limits.max_unzipped_bytes)}.",
                            "Split it into smaller documents, or save it as PDF.")
    out.check()
    try:
        document = docx.Document(str(path))
        blocks = list(document.iter_inner_content())
    except Exception as error:  # python-docx raises zip, XML, KeyError and ValueError alike
        raise damaged from error
    heading: str | None = None
    styles: dict[str | None, str] = {}
    for n, block in enumerate(blocks):
        if n % 200 == 199:
            out.check()
        if isinstance(block, Table):
            for row in block.rows:
                cells: list[str] = []
                seen: set[int] = set()
                for cell in row.cells:  # a merged cell appears once per grid column it spans
                    if id(cell._tc) in seen:
                        continue
                    seen.add(id(cell._tc))
                    text = _prose(cell.text)
                    if text:
                        cells.append(text)
                out.add_prose(" | ".join(cells), heading)
            continue
        text = _prose(block.text)
        if not text:
            continue
        style_id = getattr(block._p, "style", None)  # the pStyle id; looking a style up is slow
        if style_id not in styles:
            styles[style_id] = _style_name(block)
        style = styles[style_id]
        if style.startswith("heading") or style == "title":
            heading = text[:MAX_UNIT_CHARS]
        out.add_prose(text, heading)


def _style_name(paragraph: Any) -> str:
    try:
        style = paragraph.style
        return str(style.name or "").lower() if style is not None else ""
    except Exception:  # a broken styles part: treat as body text
        return ""


# --- PDF -------------------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"(\r\n|\n|\r)")


@dataclass
class _Line:
    text: str
    bottom: float | None
    top: float | None
    size: float | None


@dataclass
class _Para:
    text: str
    page: int
    size: float | None
    lines: int


def _pages_phrase(pages: list[int], limit: int = 8) -> str:
    """[3] -> "Page 3"; [3, 4, 5, 9] -> "Pages 3-5 and 9" (ranges, at most `limit` shown)."""
    ranges: list[list[int]] = []
    for page in pages:
        if ranges and page == ranges[-1][1] + 1:
            ranges[-1][1] = page
        else:
            ranges.append([page, page])
    parts = [str(a) if a == b else f"{a}–{b}" for a, b in ranges]
    if len(parts) > limit:
        parts = [*parts[:limit], f"{len(parts) - limit} more ranges"]
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Page {joined}" if len(pages) == 1 else f"Pages {joined}"


def _pdf_page(document: Any, index: int) -> tuple[list[_Line], bool]:
    """The lines of one page (with boxes and font sizes) and whether it has any objects. Hold the lock."""
    import pypdfium2.raw as pdfium_c

    page = document[index]
    try:
        has_objects = pdfium_c.FPDFPage_CountObjects(page) > 0
        textpage = page.get_textpage()
        try:
            text = textpage.get_text_range()
            lines: list[_Line] = []
            wide = any(ord(c) > 0xFFFF for c in text)  # such a char is 2 UTF-16 units in PDFium

            def units16(part: str) -> int:
                return len(part) + sum(1 for c in part if ord(c) > 0xFFFF) if wide else len(part)

            parts = _LINE_BREAK.split(text)
            offset = 0  # PDFium's text index (UTF-16 code units)
            for k in range(0, len(parts), 2):
                raw_line = parts[k]
                stripped = raw_line.lstrip()
                first = offset + units16(raw_line[: len(raw_line) - len(stripped)])
                offset += units16(raw_line) + (len(parts[k + 1]) if k + 1 < len(parts) else 0)
                if not stripped.strip():
                    continue
                bottom = top = size = None
                char = pdfium_c.FPDFText_GetCharIndexFromTextIndex(textpage, first)
                if char >= 0:
                    try:
                        _, bottom, _, top = textpage.get_charbox(char, loose=True)
                    except Exception:  # PdfiumError: no box for this char
                        bottom = top = None
                    size = float(pdfium_c.FPDFText_GetFontSize(textpage, char)) or None
                lines.append(_Line(raw_line.strip(), bottom, top, size))
        finally:
            textpage.close()
    finally:
        page.close()
    return lines, has_objects


def _join_lines(lines: list[str]) -> str:
    text = ""
    for line in lines:
        if not text:
            text = line
        elif text[-1] in "\x02\ufffe":  # PDFium's mark for a hyphen at a line break
            text = text[:-1] + line
        elif (text[-1] == "-" and len(text) > 1 and text[-2].isalpha() and line[:1].islower()) or (
                _is_cjk(text[-1]) and _is_cjk(line[0])):
            text += line  # a word broken at a hyphen, or CJK (no spaces between words)
        else:
            text += " " + line
    return text


def _paragraphs(lines: list[_Line], page: int) -> list[_Para]:
    """Group a page's lines into paragraphs by vertical gaps and font size changes."""
    gaps: dict[float, list[float]] = {}
    for prev, line in itertools.pairwise(lines):
        if prev.bottom is not None and line.bottom is not None and prev.size and prev.size == line.size:
            delta = prev.bottom - line.bottom
            if 0 < delta < 4 * prev.size:
                gaps.setdefault(round(prev.size, 1), []).append(delta)
    # the lower median: paragraph gaps are the larger deltas
    usual = {size: sorted(deltas)[(len(deltas) - 1) // 2] for size, deltas in gaps.items()}
    groups: list[list[_Line]] = [[lines[0]]] if lines else []
    for prev, line in itertools.pairwise(lines):
        new = False
        if prev.size and line.size and abs(prev.size - line.size) > 0.12 * max(prev.size, line.size):
            new = True
        elif prev.bottom is not None and line.bottom is not None and prev.size:
            delta = prev.bottom - line.bottom
            height = (prev.top - prev.bottom) if prev.top is not None else prev.size
            base = usual.get(round(prev.size, 1), 1.25 * prev.size)
            new = delta < -0.5 * height or delta > 1.3 * base
        if new:
            groups.append([line])
        else:
            groups[-1].append(line)
    paras = []
    for group in groups:
        text = _prose(_join_lines([line.text for line in group]))
        if text:
            size = group[0].size
            paras.append(_Para(text, page, size, len(group)))
    return paras


def _pdf_units(path: Path, out: _Out) -> int:
    """Read a PDF into `out`; returns its page count."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    name = out.name
    try:
        handle = open(path, "rb")  # noqa: SIM115 - PDFium reads it until the document is closed
    except OSError as error:
        raise _unreadable(path, error) from error
    try:
        with PDFIUM_LOCK:
            try:
                document = pdfium.PdfDocument(handle)
            except (RuntimeError, ValueError, OSError) as error:  # PdfiumError is a RuntimeError
                if getattr(error, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
                    raise DocumentError(f"{name} is protected by a password.",
                                        "Open it with its password and save or print an "
                                        "unprotected copy, then add that copy.") from error
                raise DocumentError(f"{name} is not a readable PDF (it may be damaged or "
                                    "encrypted).",
                                    "Open it in a PDF viewer; if it opens, save a new copy "
                                    "and add that.") from error
        try:
            return _pdf_pages(document, out)
        finally:
            with PDFIUM_LOCK:
                document.close()
    finally:
        handle.close()


def _pdf_pages(document: Any, out: _Out) -> int:
    name = out.name
    with PDFIUM_LOCK:
        total = len(document)
    count = min(total, out.limits.max_pages)
    if total > count:
        out.warnings.append(f"{name} has {total:,} pages; only the first {count:,} were read.")
    read: list[tuple[int, bool, list[_Para]]] = []  # (page, has objects, paragraphs)
    damaged: list[int] = []
    chars = 0
    for index in range(count):
        out.check()
        try:
            with PDFIUM_LOCK:
                lines, has_objects = _pdf_page(document, index)
        except (RuntimeError, ValueError, OSError):  # PdfiumError: a page PDFium cannot load
            damaged.append(index + 1)
            continue
        page_paras = _paragraphs(lines, index + 1)
        read.append((index + 1, has_objects, page_paras))
        chars += sum(len(p.text) + 2 for p in page_paras)
        if chars > out.limits.max_chars:
            break
    _drop_furniture([page_paras for _, _, page_paras in read])
    paras = [para for _, _, page_paras in read for para in page_paras]
    blank = [page for page, has_objects, page_paras in read if not page_paras and not has_objects]
    no_text = [page for page, has_objects, page_paras in read if not page_paras and has_objects]
    if not paras:
        if damaged and not no_text:
            raise DocumentError(f"{name} is not a readable PDF (it may be damaged or encrypted).",
                                "Open it in a PDF viewer; if it opens, save a new copy and "
                                "add that.")
        raise DocumentError(f"{name} has no text layer: it looks like a scanned document. Camelid "
                            "cannot read scanned pages yet (no OCR).",
                            "Run it through OCR (for example in a PDF editor) and add the result.")
    if no_text:
        one = len(no_text) == 1
        out.warnings.append(f"{_pages_phrase(no_text)} {'has' if one else 'have'} no text layer "
                            f"(scanned?); {'it was' if one else 'they were'} skipped.")
    if blank:
        out.warnings.append(f"{_pages_phrase(blank)} {'is' if len(blank) == 1 else 'are'} blank.")
    if damaged:
        out.warnings.append(f"{_pages_phrase(damaged)} could not be read (damaged?); "
                            f"{'it was' if len(damaged) == 1 else 'they were'} skipped.")
    _pdf_headings(paras, out)
    return total


_PAGE_NUMBER = re.compile(
    r"(?i:page|seite|página|pagina|p\.|s\.)?\s*[-–—(\[]?\s*(\d{1,5}|x{0,3}(ix|iv|v?i{0,3})|"
    r"X{0,3}(IX|IV|V?I{0,3}))\s*[-–—)\]]?\s*((?i:of|/|von|de|sur)\s*\d{1,5})?")
_LAST_NUMBER = re.compile(r"\d+(?!.*\d)")


def _body_size(paras: list[_Para]) -> float | None:
    """The font size that sets the most characters."""
    weight: dict[float, int] = {}
    for para in paras:
        if para.size:
            weight[round(para.size, 1)] = weight.get(round(para.size, 1), 0) + len(para.text)
    return max(weight, key=lambda size: weight[size]) if weight else None


def _drop_furniture(pages: list[list[_Para]]) -> None:
    """Remove page numbers and running headers/footers from the pages' edges.

    A running header is a short line, no larger than the body text, atop (or under) 3+ pages,
    the same each time or differing only in a number that moves with the page number.
    """
    body = _body_size([para for paras in pages for para in paras])

    def shape(para: _Para) -> tuple[str, int | None] | None:
        if len(para.text) > 150 or (body and para.size and para.size > 1.05 * body):
            return None
        match = _LAST_NUMBER.search(para.text)
        if match is None or len(match.group()) > 6:
            return para.text.lower(), None
        key = para.text[: match.start()] + "#" + para.text[match.end():]
        return key.lower(), para.page - int(match.group())

    seen: dict[tuple[str, tuple[str, int | None]], int] = {}
    for paras in pages:
        for edge, para in (("top", paras[:1]), ("bottom", paras[-1:])):
            for one in para:
                key = shape(one)
                if key is not None:
                    seen[(edge, key)] = seen.get((edge, key), 0) + 1

    def furniture(para: _Para, edge: str) -> bool:
        if len(pages) > 1 and _PAGE_NUMBER.fullmatch(para.text):
            return True
        key = shape(para)
        return key is not None and seen.get((edge, key), 0) >= 3

    for paras in pages:
        for _ in range(2):  # a running header and a page number may both sit at an edge
            if paras and furniture(paras[0], "top"):
                del paras[0]
            if paras and furniture(paras[-1], "bottom"):
                del paras[-1]


def _pdf_headings(paras: list[_Para], out: _Out) -> None:
    """Short paragraphs set clearly larger than the body text are headings."""
    body = _body_size(paras)
    heading: str | None = None
    for para in paras:
        if (body and para.size and para.size >= 1.15 * body and len(para.text) <= 200
                and para.lines <= 3):
            heading = para.text
        out.add_prose(para.text, heading, para.page)


# --- entry point -----------------------------------------------------------------------------

def _unreadable(path: Path, error: OSError) -> DocumentError:
    name = _name(path)
    if isinstance(error, FileNotFoundError):
        return DocumentError(f"{name} does not exist (at {str(path)[:200]}).",
                             "Check the name and folder, or pick the file again.")
    if isinstance(error, PermissionError):
        return DocumentError(f"Camelid is not allowed to read {name}.",
                             "Check the file's permissions, or copy it somewhere you can read.")
    if isinstance(error, IsADirectoryError):
        return DocumentError(f"{name} is a folder, not a file.", "Pick a file inside it.")
    reason = error.strerror or type(error).__name__
    return DocumentError(f"{name} could not be read ({reason}).",
                         "Check that the disk or network share is available, and try again.")


def _unsupported(path: Path) -> DocumentError:
    name, suffix = _name(path), path.suffix.lower()
    if suffix in _OFFICE_SUFFIXES:
        return DocumentError(f"{name} is a {suffix} document, which Camelid cannot read.",
                             "Open it in a word processor and save it as .docx or PDF, "
                             "then add that file.")
    what = f"a {suffix} file" if suffix else "a file without a suffix"
    return DocumentError(f"{name} is {what}, which Camelid cannot read.",
                         "Camelid reads PDF, Word (.docx), Markdown, HTML, plain-text and "
                         "source-code files; save it in one of those formats.")


def extract(path: Path, *, cancel: threading.Event | None = None,
            limits: Limits = Limits()) -> Extracted:
    """Read `path` into text units. Raises `DocumentError` (a sentence and a fix) for any bad file.

    `cancel` is checked between pages, paragraphs and blocks; setting it stops the work with
    `DocumentError("Reading X was cancelled.")`. Text beyond `limits.max_chars` is dropped
    with a warning; files over `limits.max_file_bytes` are refused.
    """
    path = Path(path)
    name = _name(path)
    try:
        info = path.stat()
    except OSError as error:
        raise _unreadable(path, error) from error
    if stat.S_ISDIR(info.st_mode):
        raise DocumentError(f"{name} is a folder, not a file.", "Pick a file inside it.")
    if not stat.S_ISREG(info.st_mode):
        raise DocumentError(f"{name} is not a regular file (a device or pipe?).",
                            "Pick a document file.")
    kind = kind_of(path)
    if kind is None:
        raise _unsupported(path)
    if info.st_size == 0:
        raise DocumentError(f"{name} is empty (0 bytes).",
                            "There is nothing to read in it; pick another file.")
    if info.st_size > limits.max_file_bytes:
        raise DocumentError(f"{name} is {_size(info.st_size)}; Camelid reads documents of up to "
                            f"{_size(limits.max_file_bytes)}.",
                            "Split it into smaller files and add those.")
    out = _Out(name, limits, cancel)
    out.check()
    pages: int | None = None
    try:
        if kind == "pdf":
            pages = _pdf_units(path, out)
        elif kind == "docx":
            _docx_units(path, out)
        else:
            text = _read_text(path, out, html=kind == "html")
            if kind == "markdown":
                _markdown_units(text, out)
            elif kind == "html":
                _html_units(text, out)
            elif kind == "code":
                out.add_lines(_verbatim(_newlines(text)), None)
            else:
                _text_units(text, out, line_mode=path.suffix.lower() in _LINE_SUFFIXES)
    except _Full:
        pass
    if out.truncated:
        out.warnings.append(f"{name} is longer than {limits.max_chars:,} characters; only the "
                            f"first {limits.max_chars:,} were read.")
    if not out.units:
        raise DocumentError(f"{name} contains no text to read.", "Pick a file with text in it.")
    return Extracted(path=path, kind=kind, units=out.units, pages=pages, chars=out.chars,
                     warnings=out.warnings)


def _read_text(path: Path, out: _Out, html: bool) -> str:
    limit = out.limits.max_file_bytes
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise _unreadable(path, error) from error
    if len(data) > limit:
        raise DocumentError(f"{out.name} is larger than {_size(limit)}; Camelid reads documents "
                            f"of up to {_size(limit)}.", "Split it into smaller files and add those.")
    if not data:
        raise DocumentError(f"{out.name} is empty (0 bytes).",
                            "There is nothing to read in it; pick another file.")
    out.check()
    return _decode(data, out.name, out.warnings, html=html)
