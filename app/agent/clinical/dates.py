"""Dates written in clinical text ("2025-03-14", "3/14/2025", "14 March 2025", "Mar 2025") → ISO."""

from __future__ import annotations

import re
from datetime import date

_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                        "dec"), start=1)}


def _month(name: str) -> int:
    return _MONTHS[name.lower().rstrip(".")[:3]]
_MON = r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|" \
       r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
DATE = re.compile(
    r"\b(?P<iso>(?P<y1>(?:19|20)\d\d)-(?P<m1>\d\d)-(?P<d1>\d\d))\b"
    r"|\b(?P<m2>\d{1,2})/(?P<d2>\d{1,2})/(?P<y2>(?:19|20)?\d\d)\b"
    r"|\b(?P<d3>\d{1,2})(?:st|nd|rd|th)?\s+" + _MON.replace("mon>", "mon3>") + r",?\s+(?P<y3>(?:19|20)\d\d)\b"
    r"|\b" + _MON.replace("mon>", "mon4>") + r"\s+(?:(?P<d4>\d{1,2})(?:st|nd|rd|th)?,?\s+)?(?P<y4>(?:19|20)\d\d)\b",
    re.IGNORECASE)


def _iso(y: int, m: int, d: int) -> str | None:
    try:
        return date(y, m, d).isoformat()
    except ValueError:
        return None


def parse_dates(text: str) -> list[tuple[int, int, str]]:
    """(start, end, ISO date) for every date in ``text``; a month without a day is its first day."""
    out = []
    for m in DATE.finditer(text):
        g = m.groupdict()
        iso = None
        if g["iso"]:
            iso = _iso(int(g["y1"]), int(g["m1"]), int(g["d1"]))
        elif g["m2"]:
            y = int(g["y2"])
            iso = _iso(y + 2000 if y < 100 else y, int(g["m2"]), int(g["d2"]))
        elif g["mon3"]:
            iso = _iso(int(g["y3"]), _month(g["mon3"]), int(g["d3"]))
        elif g["mon4"]:
            iso = _iso(int(g["y4"]), _month(g["mon4"]), int(g["d4"] or 1))
        if iso:
            out.append((m.start(), m.end(), iso))
    return out


def years(text: str) -> list[int]:
    """Four-digit years named in ``text``."""
    return [int(y) for y in re.findall(r"\b((?:19|20)\d\d)\b", text)]
