"""The EHR's look (SMART App Launch "Styling", ``smart_style_url``) as a stylesheet.

The style JSON is fetched server side, only from an allowed EHR origin (no
request to anywhere else), without a token, and only well-formed values are
used: colours as #hex or rgb(), fonts from a safe character set. The result
is served as CSS custom properties, so no inline style is needed (the CSP
forbids it).
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import requests
from flask import Blueprint, Response

from app.web.context import current, services

bp = Blueprint("style", __name__)

_COLOR = re.compile(r"^(#[0-9a-fA-F]{3,8}|rgba?\(\s*[0-9.,%\s]+\))$")
_FONT = re.compile(r"^[A-Za-z0-9 ,\-\"']{1,120}$")
_DIM = re.compile(r"^[0-9.]{1,6}(px|rem|em)$")
MAPPING = {  # SMART style key -> (CSS custom property, validator)
    "color_background": ("--sda-bg", _COLOR),
    "color_text": ("--sda-text", _COLOR),
    "color_highlight": ("--sda-highlight", _COLOR),
    "color_error": ("--sda-error", _COLOR),
    "color_success": ("--sda-success", _COLOR),
    "font_family_body": ("--sda-font", _FONT),
    "dim_border_radius": ("--sda-radius", _DIM),
}


def style_css(doc: object) -> str:
    """CSS custom properties from a SMART style document; anything malformed is dropped."""
    if not isinstance(doc, dict):
        return ""
    rules = []
    for key, (prop, pattern) in MAPPING.items():
        value = doc.get(key)
        if isinstance(value, str) and pattern.match(value.strip()):
            rules.append(f"  {prop}: {value.strip()};")
    return ":root {\n" + "\n".join(rules) + "\n}\n" if rules else ""


@bp.get("/ehr-style.css")
def ehr_style():  # type: ignore[no-untyped-def]
    state = current()
    css = state.style_css
    if css is None:
        css = ""
        url = state.smart_style_url
        origins = services().settings.allowed_iss_origins
        u = urlparse(url or "")
        if url and f"{u.scheme}://{u.netloc}" in origins:
            try:
                resp = requests.get(url, timeout=5, headers={"Accept": "application/json"})
                if resp.ok and len(resp.content) < 20_000:
                    css = style_css(resp.json())
            except (requests.RequestException, ValueError):
                css = ""
        state.style_css = css
    return Response(css, mimetype="text/css", headers={"Cache-Control": "private, max-age=300"})
