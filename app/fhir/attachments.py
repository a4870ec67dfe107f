"""DocumentReference attachments to plain text.

https://hl7.org/fhir/R4/datatypes.html#Attachment and US Core DocumentReference:
several ``content`` entries are the same document in other formats, so the
first one that yields text wins (text/plain preferred, then HTML, then PDF).

- inline ``data`` (base64) or ``url``: relative to the FHIR base, or absolute
  inside it; any other url is refused and counted, never fetched with the token.
  The check is made on the url after percent-decoding (repeatedly) and with dot
  segments refused outright, so ``fhir/%2e%2e/%2e%2e/x`` is not "inside the base";
- text/plain honours ``charset`` (invalid bytes replaced, never fatal);
- text/html becomes text (tags and scripts dropped, entities decoded);
- application/pdf through pypdf with page and size caps;
- other types are skipped and reported; every attachment has a size cap.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import json
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import nh3

from app.fhir.client import FhirClient

MAX_BYTES_DEFAULT = 2_000_000
MAX_PDF_PAGES = 50
_PREFERENCE = ("text/plain", "text/html", "application/xhtml+xml", "application/pdf")


@dataclass(frozen=True)
class ExtractedText:
    text: str | None
    content_type: str | None
    skipped: str | None = None  # reason code when no text
    # Instructions aimed at an AI in markup the reader never sees (HTML comments, hidden
    # elements): they are dropped from ``text``, but the note is still flagged as hostile.
    hidden_injection: bool = False


def hidden_markup_injection(markup: str) -> bool:
    """Does HTML carry injection text outside what ``html_to_text`` keeps (comments, hidden parts)?"""
    from app.agent.guard import looks_injected

    exposed = re.sub(r"<!--|-->", " ", markup)
    exposed = html.unescape(re.sub(r"<[^>]{0,2000}>", " ", exposed))
    return looks_injected(exposed)


def _media_type(content_type: str | None) -> tuple[str, str | None]:
    if not content_type:
        return "", None
    parts = [p.strip() for p in content_type.split(";")]
    charset = None
    for p in parts[1:]:
        if p.lower().startswith("charset="):
            charset = p.split("=", 1)[1].strip().strip('"') or None
    return parts[0].lower(), charset


def html_to_text(markup: str) -> str:
    """Safe text from HTML: script/style content removed, all tags stripped, entities decoded."""
    cleaned = nh3.clean(markup, tags=set(), clean_content_tags={"script", "style"})
    text = html.unescape(cleaned)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def pdf_to_text(data: bytes, *, max_pages: int = MAX_PDF_PAGES) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages[:max_pages]]
    except (PyPdfError, ValueError, KeyError, TypeError):
        return ""
    return "\n\n".join(p.strip() for p in pages if p.strip())


def decode_bytes(data: bytes, media: str, charset: str | None) -> str | None:
    if media == "text/plain":
        try:
            return data.decode(charset or "utf-8", errors="replace")
        except LookupError:  # unknown charset name
            return data.decode("utf-8", errors="replace")
    if media in ("text/html", "application/xhtml+xml"):
        return html_to_text(data.decode(charset or "utf-8", errors="replace"))
    if media == "application/pdf":
        return pdf_to_text(data)
    return None


def safe_reference(client: FhirClient, url: str) -> bool:
    """May the token go to ``url``? Judged after percent-decoding and dot-segment checks.

    The url is decoded until stable (at most three rounds: ``%252e`` is ``%2e`` is ``.``);
    a dot segment (``.`` or ``..``), a backslash or a control character anywhere refuses it;
    then the decoded url must be inside the FHIR base (``FhirClient.inside_base``).
    """
    decoded = url
    for _ in range(3):
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    else:
        return False  # still changing: nested encodings are not something a server sends
    if "\\" in decoded or any(ord(ch) < 32 or ord(ch) == 127 for ch in decoded):
        return False
    if any(seg in (".", "..") for seg in urlsplit(decoded).path.split("/")):
        return False
    inside = getattr(client, "inside_base", None)
    to_url = getattr(client, "url_for", None)
    return inside is None or to_url is None or bool(inside(to_url(decoded)))


def _fetch(client: FhirClient, url: str, media: str, max_bytes: int) -> tuple[bytes | None, str | None]:
    """Binary content by url, inside the FHIR base only, never more than the cap (base64 JSON ~4/3)."""
    if not safe_reference(client, url):
        return None, "foreign_url"
    body, reason, ctype = client.fetch_limited(url, accept="application/fhir+json",
                                               max_bytes=max_bytes * 4 // 3 + 4096)
    if body is None:
        return None, reason
    if "json" in ctype:
        try:
            resource = json.loads(body)
        except ValueError:
            return None, "malformed_binary"
        if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
            return None, "malformed_binary"
        try:
            return base64.b64decode(resource.get("data") or "", validate=False), None
        except (binascii.Error, ValueError):
            return None, "bad_base64"
    return body, None


def extract_text(client: FhirClient, document: dict, *, max_bytes: int = MAX_BYTES_DEFAULT) -> ExtractedText:
    """Text of a DocumentReference, or the reason there is none."""
    contents = [c.get("attachment") for c in document.get("content") or [] if isinstance(c, dict)]
    attachments = [a for a in contents if isinstance(a, dict)]
    if not attachments:
        return ExtractedText(None, None, "no_attachment")
    ranked = sorted(
        attachments,
        key=lambda a: _PREFERENCE.index(m) if (m := _media_type(a.get("contentType"))[0]) in _PREFERENCE else 99,
    )
    last_reason = "unsupported_type"
    for att in ranked:
        media, charset = _media_type(att.get("contentType"))
        if media not in _PREFERENCE:
            last_reason = "unsupported_type"
            continue
        size = att.get("size")
        if isinstance(size, int) and size > max_bytes:
            last_reason = "too_large"
            continue
        raw: bytes | None = None
        if att.get("data"):
            data = att["data"]
            if not isinstance(data, str) or len(data) > max_bytes * 4 // 3 + 4:
                last_reason = "too_large"
                continue
            try:
                raw = base64.b64decode(data, validate=False)
            except (binascii.Error, ValueError):
                last_reason = "bad_base64"
                continue
        elif isinstance(att.get("url"), str):
            raw, reason = _fetch(client, att["url"], media, max_bytes)
            if raw is None:
                last_reason = reason or "fetch_failed"
                continue
        else:
            last_reason = "no_data"
            continue
        if len(raw) > max_bytes:
            last_reason = "too_large"
            continue
        text = decode_bytes(raw, media, charset)
        if text and text.strip():
            hidden = False
            if media in ("text/html", "application/xhtml+xml"):
                hidden = hidden_markup_injection(raw.decode(charset or "utf-8", errors="replace"))
            return ExtractedText(text, media, hidden_injection=hidden)
        last_reason = "empty_text"
    return ExtractedText(None, None, last_reason)
