"""A tiny, dependency-free PDF writer with a real text layer.

Produces deterministic bytes (no creation date, fixed /ID), one Helvetica text
object per page, WinAnsi encoding. ``pypdf.PdfReader(...).pages[i].extract_text()``
recovers the text (verified by tests/unit/test_synthetic_data.py).
"""

from __future__ import annotations

import hashlib
import textwrap

LINES_PER_PAGE = 58
WRAP = 92


def _escape(line: str) -> str:
    line = line.encode("cp1252", errors="replace").decode("cp1252")
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _layout(text: str) -> list[list[str]]:
    lines: list[str] = []
    for raw in text.splitlines():
        wrapped = textwrap.wrap(raw, WRAP) if raw.strip() else [""]
        lines.extend(wrapped)
    pages = [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)]
    return pages or [[""]]


def make_pdf(text: str, title: str = "Clinical note") -> bytes:
    """Return the bytes of a valid PDF 1.4 file whose text layer is ``text``."""
    pages = _layout(text)
    n = len(pages)
    # object numbers: 1 catalog, 2 pages, 3 font, 4 info, then (page, content) pairs
    objs: dict[int, bytes] = {}
    kids = " ".join(f"{5 + 2 * i} 0 R" for i in range(n))
    objs[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objs[2] = f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()
    objs[3] = (
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    objs[4] = f"<< /Title ({_escape(title)}) /Producer (synthetic_data.pdf) >>".encode("cp1252")
    for i, page_lines in enumerate(pages):
        ops = ["BT", "/F1 10 Tf", "12 TL", "50 770 Td"]
        for line in page_lines:
            ops.append(f"({_escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        page_no, content_no = 5 + 2 * i, 6 + 2 * i
        objs[page_no] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_no} 0 R >>"
        ).encode()
        objs[content_no] = (
            f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += f"{num} 0 obj\n".encode() + objs[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objs) + 1
    out += f"xref\n0 {size}\n".encode()
    out += b"0000000000 65535 f \n"
    for num in range(1, size):
        out += f"{offsets[num]:010d} 00000 n \n".encode()
    digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
    out += (
        f"trailer\n<< /Size {size} /Root 1 0 R /Info 4 0 R /ID [<{digest}> <{digest}>] >>\n"
        f"startxref\n{xref_at}\n%%EOF\n"
    ).encode()
    return bytes(out)
