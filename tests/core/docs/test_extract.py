"""Document extraction on real files: PDFs written by fpdf2, DOCX by python-docx, text in many
encodings, and documents that installed packages and the system ship (written by no one here)."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from pathlib import Path

import docx
import pytest
from fpdf import FPDF

from app.core.docs import (
    PDFIUM_LOCK,
    SUPPORTED_SUFFIXES,
    DocumentError,
    Extracted,
    Limits,
    Unit,
    extract,
    kind_of,
)
from app.core.errors import CamelidError

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LLAMA = ("Llamas are domesticated South American camelids, widely used as meat and pack animals "
         "by Andean cultures since the pre-Columbian era. ")


def check_offsets(result: Extracted) -> None:
    """The invariant every kind keeps: each unit sits at `start` in the joined full text."""
    text = result.text
    assert result.chars == len(text)
    for unit in result.units:
        assert isinstance(unit, Unit)
        assert unit.text and unit.text == unit.text.strip()
        assert text[unit.start: unit.start + len(unit.text)] == unit.text
    starts = [u.start for u in result.units]
    assert starts == sorted(starts) and (not starts or starts[0] == 0)


def message_of(error: pytest.ExceptionInfo[DocumentError]) -> str:
    assert isinstance(error.value, CamelidError)
    assert error.value.code == "document"
    text = str(error.value)
    assert "Traceback" not in text and text.endswith((".", ")"))
    return text


# --- PDF ---------------------------------------------------------------------------------------

def write_pdf(path: Path, chapters: int = 3, paragraphs: int = 3, blank_after: int | None = None,
              unicode_font: bool = False) -> Path:
    pdf = FPDF()
    pdf.set_auto_page_break(True, margin=15)
    if unicode_font:
        pdf.add_font("dejavu", "", str(DEJAVU))
    for chapter in range(1, chapters + 1):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 20)
        pdf.multi_cell(0, 10, f"Chapter {chapter}: Llamas of region {chapter}")
        pdf.ln(4)
        pdf.set_font("dejavu" if unicode_font else "Helvetica", "", 11)
        for n in range(paragraphs):
            pdf.multi_cell(0, 6, f"Paragraph {n} of chapter {chapter}. " + LLAMA * 3)
            pdf.ln(5)
        if blank_after == chapter:
            pdf.add_page()
    pdf.output(str(path))
    return path


def test_multi_page_pdf_has_pages_headings_and_round_trips(tmp_path: Path) -> None:
    result = extract(write_pdf(tmp_path / "llamas.pdf"))
    check_offsets(result)
    assert (result.kind, result.pages, result.warnings) == ("pdf", 3, [])
    headings = [u for u in result.units if u.text.startswith("Chapter")]
    assert [u.text for u in headings] == [f"Chapter {c}: Llamas of region {c}" for c in (1, 2, 3)]
    assert [u.page for u in headings] == [1, 2, 3]
    body = [u for u in result.units if u.text.startswith("Paragraph")]
    assert len(body) == 9  # paragraphs are found from the gaps between lines
    for unit in body:
        chapter = int(unit.text.split("chapter ")[1].split(".")[0])
        assert unit.page == chapter
        assert unit.heading == f"Chapter {chapter}: Llamas of region {chapter}"
        assert unit.text.endswith("era.")
        assert "  " not in unit.text and "\n" not in unit.text
    # the words come back whole, lines joined with single spaces
    assert (f"Paragraph 1 of chapter 2. {LLAMA * 3}".strip()) in result.text


def test_pdf_unicode_text_round_trips(tmp_path: Path) -> None:
    if not DEJAVU.exists():
        pytest.skip("DejaVu font not installed")
    pdf = FPDF()
    pdf.add_font("dejavu", "", str(DEJAVU))
    pdf.add_page()
    pdf.set_font("dejavu", "", 12)
    line = "Ünïcödé café naïve – “quotes” and Ελληνικά, Русский."
    pdf.multi_cell(0, 7, line)
    path = tmp_path / "unicode.pdf"
    pdf.output(str(path))
    result = extract(path)
    check_offsets(result)
    assert result.units[0].text == line and result.units[0].page == 1


def cjk_pdf(lines_by_page: list[list[str]]) -> bytes:
    """A PDF in Chinese with PDFium's built-in STSong-Light font (CMap UniGB-UCS2-H, no font file
    needed); "" in a page's lines leaves an empty line (a paragraph gap)."""
    objs: dict[int, bytes] = {}
    kids: list[int] = []
    n = 5
    for lines in lines_by_page:
        ops = ["BT /F1 12 Tf 16 TL 72 720 Td"]
        for line in lines:
            if line == "":
                ops.append("T*")
                continue
            ops.append("<" + line.encode("utf-16-be").hex() + "> Tj T*")
        ops.append("ET")
        content = "\n".join(ops).encode()
        objs[n] = b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"
        objs[n + 1] = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % n
        kids.append(n + 1)
        n += 2
    objs[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objs[2] = b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + b"] /Count %d >>" % len(kids)
    objs[3] = b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H /DescendantFonts [4 0 R] >>"
    objs[4] = b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> /FontDescriptor << /Type /FontDescriptor /FontName /STSong-Light /Flags 6 /FontBBox [0 -200 1000 900] /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 /StemV 80 >> >>"
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n"
    xref = len(out)
    size = max(objs) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def test_chinese_pdf_lines_join_without_spaces(tmp_path: Path) -> None:
    path = tmp_path / "羊驼.pdf"
    path.write_bytes(cjk_pdf([["羊驼是一种原产于南美洲的驯养动物，", "主要分布在秘鲁、玻利维亚和智利。", "",
                                "它们的毛非常柔软。"], ["第二页：羊驼以草为食。"]]))
    result = extract(path)
    check_offsets(result)
    assert [(u.text, u.page) for u in result.units] == [
        ("羊驼是一种原产于南美洲的驯养动物，主要分布在秘鲁、玻利维亚和智利。", 1),
        ("它们的毛非常柔软。", 1),
        ("第二页：羊驼以草为食。", 2)]
    assert "驯养动物，主要分布" in result.text


def test_pdf_with_an_empty_page_warns(tmp_path: Path) -> None:
    result = extract(write_pdf(tmp_path / "gap.pdf", chapters=2, blank_after=1))
    check_offsets(result)
    assert result.pages == 3
    assert result.warnings == ["Page 2 is blank."]
    assert {u.page for u in result.units} == {1, 3}


def image_png(path: Path) -> Path:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + bytes(random.Random(1).randrange(256) for _ in range(48))
                    for _ in range(16))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_pdf_of_images_says_scanned(tmp_path: Path) -> None:
    png = image_png(tmp_path / "scan.png")
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.image(str(png), x=10, y=10, w=150)
    pdf.add_page()  # and an empty one
    path = tmp_path / "scan.pdf"
    pdf.output(str(path))
    with pytest.raises(DocumentError) as error:
        extract(path)
    assert message_of(error).startswith(
        "scan.pdf has no text layer: it looks like a scanned document. Camelid cannot read "
        "scanned pages yet (no OCR).")


def test_pdf_with_some_scanned_pages_warns(tmp_path: Path) -> None:
    png = image_png(tmp_path / "scan.png")
    pdf = FPDF()
    for page in range(1, 9):
        pdf.add_page()
        if page in (3, 7):
            pdf.image(str(png), x=10, y=10, w=150)
        else:
            pdf.set_font("Helvetica", "", 11)
            pdf.multi_cell(0, 6, f"Llama number {page * 7} grazes.")
    path = tmp_path / "mixed.pdf"
    pdf.output(str(path))
    result = extract(path)
    check_offsets(result)
    assert result.warnings == ["Pages 3 and 7 have no text layer (scanned?); they were skipped."]
    assert [u.page for u in result.units] == [1, 2, 4, 5, 6, 8]


class HandbookPDF(FPDF):
    def header(self) -> None:
        self.set_font("Helvetica", "I", 9)
        self.cell(0, 8, "Llama Handbook - draft", align="C")
        self.ln(12)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", "", 9)
        self.cell(0, 8, f"Page {self.page_no()} of {{nb}}", align="C")


def test_running_headers_and_page_numbers_are_dropped(tmp_path: Path) -> None:
    pdf = HandbookPDF()
    for section in range(1, 6):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 9, f"Section {section}")
        pdf.ln(3)
        pdf.set_font("Helvetica", "", 11)
        pdf.multi_cell(0, 6, f"Body of section {section}. " + LLAMA)
    path = tmp_path / "handbook.pdf"
    pdf.output(str(path))
    result = extract(path)
    check_offsets(result)
    assert [(u.text, u.page, u.heading) for u in result.units] == [
        (text, page, f"Section {page}") for page in range(1, 6)
        for text in (f"Section {page}", f"Body of section {page}. {LLAMA.strip()}")]
    assert "Handbook" not in result.text and "of 5" not in result.text


def test_truncated_and_random_pdfs_are_refused_with_a_sentence(tmp_path: Path) -> None:
    good = write_pdf(tmp_path / "good.pdf", chapters=4).read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(good[: len(good) // 3])
    try:  # PDFium repairs what it can; either some text comes back or a sentence does
        result = extract(cut)
        check_offsets(result)
        assert result.units
    except DocumentError as error:
        assert "cut.pdf" in str(error) and "PDF" in str(error)
    noise = tmp_path / "noise.pdf"
    noise.write_bytes(random.Random(7).randbytes(50_000))
    with pytest.raises(DocumentError) as info:
        extract(noise)
    assert message_of(info).startswith(
        "noise.pdf is not a readable PDF (it may be damaged or encrypted).")
    header_only = tmp_path / "header.pdf"
    header_only.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<")
    with pytest.raises(DocumentError, match="is not a readable PDF"):
        extract(header_only)


def test_password_protected_pdf_asks_for_the_password(tmp_path: Path) -> None:
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="secret")  # RC4: no extra library
    pdf.add_page()
    pdf.set_font("Helvetica", "", 12)
    pdf.cell(0, 10, "Secret llama plans")
    path = tmp_path / "locked.pdf"
    pdf.output(str(path))
    with pytest.raises(DocumentError) as error:
        extract(path)
    assert message_of(error).startswith("locked.pdf is protected by a password.")
    # an owner password alone (no password to open) does not stop reading
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner")
    pdf.add_page()
    pdf.set_font("Helvetica", "", 12)
    pdf.cell(0, 10, "Open llama plans")
    open_path = tmp_path / "open.pdf"
    pdf.output(str(open_path))
    assert extract(open_path).text == "Open llama plans"


def test_pdf_page_and_char_limits(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "long.pdf", chapters=5)
    result = extract(path, limits=Limits(max_pages=2))
    check_offsets(result)
    assert result.pages == 5 and {u.page for u in result.units} == {1, 2}
    assert result.warnings == ["long.pdf has 5 pages; only the first 2 were read."]
    result = extract(path, limits=Limits(max_chars=1000))
    check_offsets(result)
    assert 900 < result.chars <= 1000
    assert result.warnings == ["long.pdf is longer than 1,000 characters; only the first 1,000 "
                               "were read."]


def test_pdf_speed_100_pages(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "hundred.pdf", chapters=100, paragraphs=4)
    started = time.perf_counter()
    result = extract(path)
    seconds = time.perf_counter() - started
    check_offsets(result)
    assert result.pages == 100 and len(result.units) == 500
    print(f"\n100-page PDF: {seconds:.3f} s, {100 / seconds:.0f} pages/s, {result.chars:,} chars")
    assert seconds < 10


def test_pdfium_lock_is_held_while_reading(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "locked-out.pdf", chapters=2)
    results: list[Extracted] = []
    with PDFIUM_LOCK:
        worker = threading.Thread(target=lambda: results.append(extract(path)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not results  # waits for the lock
    worker.join(10)
    assert results and results[0].pages == 2
    # and threads reading at once all get the same, right answer
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(extract(path).text))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 4 and len(set(answers)) == 1


def test_cancel_stops_with_a_sentence(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "slow.pdf", chapters=3)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DocumentError) as error:
        extract(path, cancel=cancel)
    assert message_of(error) == "Reading slow.pdf was cancelled."
    text = tmp_path / "big.txt"
    text.write_text("\n\n".join(f"Paragraph {i}." for i in range(5000)), encoding="utf-8")
    with pytest.raises(DocumentError, match=r"^Reading big.txt was cancelled\.$"):
        extract(text, cancel=cancel)


# --- DOCX --------------------------------------------------------------------------------------

def test_docx_headings_paragraphs_and_table(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_heading("Camelid field guide", level=0)
    document.add_paragraph("An introduction   to\tcamelids.")
    document.add_heading("Llamas", level=1)
    document.add_paragraph("Llamas carry packs.")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([("Animal", "Weight", "Origin"), ("Llama", "130 kg", "Andes"),
                             ("Alpaca", "60 kg", "")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    merged = table.cell(2, 1).merge(table.cell(2, 2))
    merged.text = "about 60 kg"
    document.add_heading("骆驼", level=2)
    document.add_paragraph("骆驼是一种大型哺乳动物。")
    path = tmp_path / "guide.docx"
    document.save(str(path))
    result = extract(path)
    check_offsets(result)
    assert result.kind == "docx" and result.pages is None and result.warnings == []
    got = [(u.text, u.heading) for u in result.units]
    assert got == [
        ("Camelid field guide", "Camelid field guide"),
        ("An introduction to camelids.", "Camelid field guide"),
        ("Llamas", "Llamas"),
        ("Llamas carry packs.", "Llamas"),
        ("Animal | Weight | Origin", "Llamas"),
        ("Llama | 130 kg | Andes", "Llamas"),
        ("Alpaca | about 60 kg", "Llamas"),  # a merged cell once
        ("骆驼", "骆驼"),
        ("骆驼是一种大型哺乳动物。", "骆驼"),
    ]


def test_corrupt_docx_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.docx"
    document = docx.Document()
    document.add_paragraph("Hello " * 2000)
    document.save(str(good))
    cut = tmp_path / "cut.docx"
    cut.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(DocumentError) as error:
        extract(cut)
    assert message_of(error).startswith("cut.docx is not a readable Word document")
    fake = tmp_path / "fake.docx"
    fake.write_bytes(b"This is plain text pretending to be Word.")
    with pytest.raises(DocumentError, match=r"fake\.docx is not a readable Word document"):
        extract(fake)
    import zipfile
    other_zip = tmp_path / "other.docx"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("hello.txt", "not a Word document")
    with pytest.raises(DocumentError, match=r"other\.docx is not a readable Word document"):
        extract(other_zip)


def test_docx_that_unpacks_too_large_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    document = docx.Document()
    document.add_paragraph("x" * 300_000)
    document.save(str(path))
    with pytest.raises(DocumentError) as error:
        extract(path, limits=Limits(max_unzipped_bytes=100_000))
    assert "bomb.docx unpacks to" in message_of(error)


def test_default_docx_template_has_no_text(tmp_path: Path) -> None:
    template = Path(docx.__file__).parent / "templates" / "default.docx"
    with pytest.raises(DocumentError, match=r"^default.docx contains no text to read\."):
        extract(template)


# --- Markdown, text, HTML, code ----------------------------------------------------------------

MARKDOWN = """---
title: Camelids
---

# Camelids

Camelids are   large,
long-necked mammals.

## Llamas ##

Llamas carry packs.

```python
# not a heading
def spit():

    return "ptooey"
```

Alpacas
-------

Alpacas give fibre.

***

Done.
"""


def test_markdown_headings_and_fences(tmp_path: Path) -> None:
    path = tmp_path / "camelids.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    result = extract(path)
    check_offsets(result)
    assert result.kind == "markdown" and result.warnings == []
    assert [(u.text, u.heading) for u in result.units] == [
        ("title: Camelids", None),
        ("Camelids", "Camelids"),
        ("Camelids are large, long-necked mammals.", "Camelids"),
        ("Llamas", "Llamas"),
        ("Llamas carry packs.", "Llamas"),
        ('# not a heading\ndef spit():\n\n    return "ptooey"', "Llamas"),
        ("Alpacas", "Alpacas"),
        ("Alpacas give fibre.", "Alpacas"),
        ("Done.", "Alpacas"),
    ]


CHINESE = """# 羊驼简介

羊驼是一种原产于南美洲的驯养动物，
主要分布在秘鲁、玻利维亚和智利。
它们的毛非常柔软。

## 饲养

羊驼以草为食。Alpacas eat grass,
and 它们 live in herds.
"""


def test_chinese_markdown_stays_intact(tmp_path: Path) -> None:
    path = tmp_path / "羊驼.md"
    path.write_text(CHINESE, encoding="utf-8")
    result = extract(path)
    check_offsets(result)
    assert [(u.text, u.heading) for u in result.units] == [
        ("羊驼简介", "羊驼简介"),
        ("羊驼是一种原产于南美洲的驯养动物，主要分布在秘鲁、玻利维亚和智利。它们的毛非常柔软。", "羊驼简介"),
        ("饲养", "饲养"),
        ("羊驼以草为食。Alpacas eat grass, and 它们 live in herds.", "饲养"),
    ]
    assert "驯养动物，主要分布" in result.text  # searchable across the source's line break
    # the same text as plain UTF-8, GB18030 and decomposed (NFD) forms
    txt = tmp_path / "alpaca.txt"
    txt.write_text(CHINESE.replace("#", ""), encoding="utf-8")
    assert "驯养动物，主要分布" in extract(txt).text
    gb = tmp_path / "gb.txt"
    gb.write_bytes("羊驼是一种原产于南美洲的驯养动物。\n\n它们的毛非常柔软。".encode("gb18030"))
    result = extract(gb)
    assert result.text == "羊驼是一种原产于南美洲的驯养动物。\n\n它们的毛非常柔软。"
    assert result.warnings == ["gb.txt is not UTF-8; it was read as GB18030 (Chinese). If "
                               "characters look wrong, save it as UTF-8 and add it again."]
    nfd = tmp_path / "nfd.txt"
    nfd.write_text("Cafe\u0301 con leche", encoding="utf-8")
    assert extract(nfd).text == "Café con leche"


def test_text_encodings(tmp_path: Path) -> None:
    body = "Llamas ﻿and alpacas — “camelids”.\n\nZweiter Absatz: Größe."
    for encoding in ("utf-16", "utf-16-be", "utf-8-sig"):
        path = tmp_path / f"{encoding}.txt"
        data = body.encode(encoding)
        if encoding == "utf-16-be":
            data = b"\xfe\xff" + data
        path.write_bytes(data)
        result = extract(path)
        check_offsets(result)
        assert result.warnings == []
        assert result.text == "Llamas and alpacas — “camelids”.\n\nZweiter Absatz: Größe."
    damaged = tmp_path / "damaged.txt"
    damaged.write_bytes("Größe café naïve déjà vu — “ok” ".encode() * 3 + b"\xff end")
    result = extract(damaged)
    assert result.text == ("Größe café naïve déjà vu — “ok” " * 3).strip() + " \ufffd end"
    assert result.warnings == ["damaged.txt has 1 byte that is not valid UTF-8; it was replaced "
                               "with \ufffd."]
    legacy = tmp_path / "legacy.txt"
    legacy.write_bytes("Größe café – ok".encode("cp1252"))
    result = extract(legacy)
    assert result.text == "Größe café – ok"
    assert result.warnings == ["legacy.txt is not UTF-8; it was read as Windows-1252 (Western "
                               "European). If characters look wrong, save it as UTF-8 and add it "
                               "again."]


def test_binary_and_empty_files_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "photo.txt"
    binary.write_bytes(image_png(tmp_path / "x.png").read_bytes())
    with pytest.raises(DocumentError) as error:
        extract(binary)
    assert message_of(error).startswith(
        "photo.txt does not look like a text file (it contains binary data).")
    controls = tmp_path / "controls.md"
    controls.write_bytes(bytes(range(1, 32)) * 100)
    with pytest.raises(DocumentError, match="does not look like a text file"):
        extract(controls)
    for name in ("empty.txt", "empty.pdf", "empty.docx", "empty.py"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(DocumentError) as error:
            extract(tmp_path / name)
        assert message_of(error).startswith(f"{name} is empty (0 bytes).")
    spaces = tmp_path / "spaces.txt"
    spaces.write_text(" \n\n\t\n", encoding="utf-8")
    with pytest.raises(DocumentError, match=r"^spaces.txt contains no text to read\."):
        extract(spaces)


def test_missing_folder_unsupported_and_too_large(tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as error:
        extract(tmp_path / "nowhere.pdf")
    assert message_of(error).startswith("nowhere.pdf does not exist")
    folder = tmp_path / "folder.md"
    folder.mkdir()
    with pytest.raises(DocumentError, match=r"^folder.md is a folder, not a file\."):
        extract(folder)
    for name, sentence in (("slides.pptx", "slides.pptx is a .pptx file, which Camelid cannot read."),
                           ("old.doc", "old.doc is a .doc document, which Camelid cannot read."),
                           ("data", "data is a file without a suffix, which Camelid cannot read.")):
        (tmp_path / name).write_bytes(b"something")
        with pytest.raises(DocumentError) as error:
            extract(tmp_path / name)
        assert message_of(error).startswith(sentence)
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000, encoding="utf-8")
    with pytest.raises(DocumentError) as error:
        extract(big, limits=Limits(max_file_bytes=1000))
    assert message_of(error).startswith("big.txt is 5,000 bytes; Camelid reads documents of up "
                                        "to 1,000 bytes.")
    if sys.platform != "win32" and os.geteuid() != 0:
        locked = tmp_path / "locked.txt"
        locked.write_text("secret", encoding="utf-8")
        locked.chmod(0)
        with pytest.raises(DocumentError, match=r"^Camelid is not allowed to read locked.txt\."):
            extract(locked)


def test_kind_of_and_suffixes() -> None:
    assert kind_of(Path("a.PDF")) == "pdf" and kind_of(Path("b.docx")) == "docx"
    assert kind_of(Path("c.markdown")) == "markdown" and kind_of(Path("d.htm")) == "html"
    assert kind_of(Path("e.rst")) == "text" and kind_of(Path("f.tsx")) == "code"
    assert kind_of(Path("LICENSE")) == "text" and kind_of(Path("Makefile")) == "code"
    assert kind_of(Path("g.pptx")) is None and kind_of(Path("noext")) is None
    assert {".pdf", ".docx", ".md", ".txt", ".html", ".py", ".csv", ".json"} <= SUPPORTED_SUFFIXES
    assert all(s.startswith(".") and s == s.lower() for s in SUPPORTED_SUFFIXES)


HTML = """<!DOCTYPE html>
<html><head><title>Ignored title</title>
<style>body { color: red }</style>
<script>var secret = "do not index";</script>
<body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<h1>Camelids &amp; kin</h1>
<p>Llamas   are <b>large</b>
and <i>friendly</i>.<br>New line in the same paragraph.
<p>An unclosed paragraph.
<h2>Data</h2>
<table><tr><th>Animal</th><th>Weight</th></tr><tr><td>Llama</td><td>130&nbsp;kg</td></tr></table>
<ul><li>One</li><li>Two</li></ul>
<pre>def spit():
    return 1</pre>
<script type="module">console.log("no")</script>
<p>骆驼<span>和</span>羊驼</p>
</body></html>
"""


def test_html_blocks_headings_and_skipped_elements(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(HTML, encoding="utf-8")
    result = extract(path)
    check_offsets(result)
    assert [(u.text, u.heading) for u in result.units] == [
        ("Camelids & kin", "Camelids & kin"),
        ("Llamas are large and friendly. New line in the same paragraph.", "Camelids & kin"),
        ("An unclosed paragraph.", "Camelids & kin"),
        ("Data", "Data"),
        ("Animal | Weight", "Data"),
        ("Llama | 130\u00a0kg".replace("\u00a0", " "), "Data"),
        ("One", "Data"),
        ("Two", "Data"),
        ("def spit():\n    return 1", "Data"),
        ("骆驼和羊驼", "Data"),
    ]
    for hidden in ("secret", "color", "Home", "Ignored title", "console"):
        assert hidden not in result.text


def test_html_legacy_charset(tmp_path: Path) -> None:
    path = tmp_path / "legacy.htm"
    path.write_bytes('<meta charset="windows-1252"><p>Größe – café</p>'.encode("cp1252"))
    assert extract(path).text == "Größe – café"


CODE = "\n".join(
    [f"def function_{i}(x):\n    return x * {i}\n" for i in range(60)]
)


def test_source_code_blocks_keep_indentation(tmp_path: Path) -> None:
    path = tmp_path / "module.py"
    path.write_text(CODE, encoding="utf-8")
    result = extract(path)
    check_offsets(result)
    assert result.kind == "code" and all(u.heading is None and u.page is None for u in result.units)
    assert len(result.units) == 3  # 180 lines in blocks of about 60, cut at blank lines
    assert all(u.text.startswith("def function_") for u in result.units)
    assert "    return x * 7" in result.units[0].text
    # every line of the source is in exactly one block
    joined = "\n".join(u.text for u in result.units)
    assert [line for line in joined.split("\n") if line] == [line for line in CODE.split("\n") if line]
    minified = tmp_path / "bundle.min.js"
    minified.write_text("var a=1;" * 5000, encoding="utf-8")
    result = extract(minified)
    check_offsets(result)
    assert all(len(u.text) <= 4000 for u in result.units) and 10 <= len(result.units) <= 11
    assert " ".join(u.text for u in result.units) == "var a=1;" * 5000  # cut at spaces


def test_csv_keeps_rows_and_long_text_is_split(tmp_path: Path) -> None:
    path = tmp_path / "herd.csv"
    path.write_text("name,  weight\n" + "".join(f"llama{i},{100 + i}\n" for i in range(150)),
                    encoding="utf-8")
    result = extract(path)
    check_offsets(result)
    assert result.units[0].text.startswith("name, weight\nllama0,100\nllama1,101")
    assert len(result.units) == 3
    wall = tmp_path / "wall.txt"
    wall.write_text(("A sentence about llamas. " * 1000).strip(), encoding="utf-8")
    result = extract(wall)
    check_offsets(result)
    assert len(result.units) > 1 and all(len(u.text) <= 4000 for u in result.units)
    assert all(u.text.endswith("llamas.") for u in result.units)
    cjk_wall = tmp_path / "cjk.txt"
    cjk_wall.write_text("羊驼" * 5000, encoding="utf-8")
    result = extract(cjk_wall)
    check_offsets(result)
    assert "".join(u.text for u in result.units) == "羊驼" * 5000


def test_rst_underlined_headings(tmp_path: Path) -> None:
    path = tmp_path / "guide.rst"
    path.write_text("=====\nGuide\n=====\n\nIntro text.\n\nUsage\n-----\nRun it.\n", encoding="utf-8")
    result = extract(path)
    check_offsets(result)
    assert [(u.text, u.heading) for u in result.units] == [
        ("Guide", "Guide"), ("Intro text.", "Guide"), ("Usage", "Usage"), ("Run it.", "Usage")]


def test_text_char_limit_keeps_offsets(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("\n\n".join(f"# Part {i}\n\nBody {i}." for i in range(200)), encoding="utf-8")
    result = extract(path, limits=Limits(max_chars=500))
    check_offsets(result)
    assert 450 < result.chars <= 500 and len(result.warnings) == 1


# --- real documents nobody here wrote ----------------------------------------------------------

def real_documents() -> list[Path]:
    site = Path(docx.__file__).parent.parent
    found: list[Path] = []
    for pattern, count in (("*/README.md", 3), ("**/*.rst", 3), ("*.dist-info/LICENSE*", 2),
                           ("*.dist-info/licenses/LICENSE*", 2), ("**/*.md", 3)):
        picks = sorted(p for p in site.glob(pattern) if p.is_file() and 2000 < p.stat().st_size
                       < 2_000_000 and kind_of(p))
        found.extend(picks[:count])
    for pdf in ("/usr/share/doc/libtasn1-doc/libtasn1.pdf",
                "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"):
        if Path(pdf).is_file():
            found.append(Path(pdf))
    return list(dict.fromkeys(found))


def test_real_documents_extract_cleanly() -> None:
    documents = real_documents()
    if len(documents) < 5:
        pytest.skip("too few documents shipped with installed packages")
    for path in documents:
        result = extract(path)
        check_offsets(result)
        assert result.warnings == [], (path, result.warnings)
        assert len(result.text) > 500, path
        assert "\x00" not in result.text and "\ufffd" not in result.text, path
        if result.kind == "pdf":
            assert result.pages and all(u.page for u in result.units)
            assert sum(1 for u in result.units if u.heading) > len(result.units) // 2
    kinds = {kind_of(path) for path in documents}
    assert {"markdown", "text"} <= kinds
