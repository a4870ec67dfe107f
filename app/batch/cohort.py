"""Which patients a batch screens: ``Group/<id>``, a FHIR search, or a file of patient ids.

- ``Group/<id>``: Bulk Data ``Group/<id>/$export`` when the server offers it, else the Group's
  ``member`` references (read with ``system/Group.r``) and paged search per patient;
- ``Condition?code=http://snomed.info/sct|...`` (any search of a type with a ``subject`` or
  ``patient``): the distinct patients the search returns (``Patient?...``: the ids themselves);
- a path to a text file: one patient id per line (``Patient/`` prefix allowed; ``#`` comments).

Patient ids are checked against the FHIR id grammar ([A-Za-z0-9.-]{1,64}); a bad one is an error
that names its line number, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from app.errors import ConfigError
from app.fhir.client import FhirClient

FHIR_ID = re.compile(r"^[A-Za-z0-9.\-]{1,64}$")
_GROUP = re.compile(r"^Group/([A-Za-z0-9.\-]{1,64})$")
_SEARCH = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")
MAX_FILE_IDS = 1_000_000


class CohortError(ConfigError):
    code = "cohort_invalid"


@dataclass(frozen=True)
class Cohort:
    kind: str  # group | search | file
    group_id: str | None = None
    resource_type: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    path: Path | None = None

    @property
    def label(self) -> str:
        """A description without patient ids (for logs and the report)."""
        if self.kind == "group":
            return f"Group/{self.group_id}"
        if self.kind == "search":
            return f"{self.resource_type}?{'&'.join(k for k, _ in self.params)}"
        return f"file:{self.path.name if self.path else ''}"


def parse_cohort(value: str) -> Cohort:
    value = (value or "").strip()
    if m := _GROUP.match(value):
        return Cohort(kind="group", group_id=m.group(1))
    if value.startswith("Group/"):
        raise CohortError("COHORT Group/<id>: the id must be 1-64 letters, digits, '-' or '.'.")
    if m := _SEARCH.match(value):
        params = tuple(parse_qsl(m.group(2), keep_blank_values=False))
        if not params:
            raise CohortError("COHORT search has no parameters (e.g. Condition?code=...).")
        return Cohort(kind="search", resource_type=m.group(1), params=params)
    path = Path(value).expanduser()
    if path.is_file():
        return Cohort(kind="file", path=path)
    raise CohortError("COHORT must be Group/<id>, a FHIR search such as Condition?code=..., or a file of "
                      "patient ids (no such file).")


def file_ids(path: Path) -> Iterator[str]:
    """Patient ids of a file, in order, without repeats."""
    seen: set[str] = set()
    try:
        fh = path.open(encoding="utf-8")
    except OSError:
        raise CohortError("The cohort file cannot be read.") from None
    with fh:
        for n, line in enumerate(fh, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            pid = text.removeprefix("Patient/")
            if not FHIR_ID.match(pid):
                raise CohortError(f"The cohort file's line {n} is not a patient id.")
            if pid not in seen:
                if len(seen) >= MAX_FILE_IDS:
                    raise CohortError(f"The cohort file lists more than {MAX_FILE_IDS} patients.")
                seen.add(pid)
                yield pid


def _patient_of(resource: dict) -> str | None:
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id") or "") or None
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            tail = ref["reference"].split("/")
            if len(tail) >= 2 and tail[-2] == "Patient" and FHIR_ID.match(tail[-1]):
                return tail[-1]
    return None


def search_ids(client: FhirClient, cohort: Cohort, *, max_pages: int = 1000) -> Iterator[str]:
    """Distinct patients of the cohort search (``_elements`` keeps the pages small)."""
    params = dict(cohort.params)
    params.setdefault("_count", "200")
    seen: set[str] = set()
    for res in client.search(str(cohort.resource_type), params, max_pages=max_pages):
        pid = _patient_of(res)
        if pid and pid not in seen:
            seen.add(pid)
            yield pid


def group_members(client: FhirClient, group_id: str) -> Iterator[str]:
    """Patients listed in ``Group.member`` (inactive members skipped)."""
    group = client.read("Group", group_id)
    for member in group.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        pid = _patient_of({"subject": member.get("entity")})
        if pid:
            yield pid


def patient_ids(client: FhirClient, cohort: Cohort) -> Iterator[str]:
    if cohort.kind == "file":
        assert cohort.path is not None
        return file_ids(cohort.path)
    if cohort.kind == "group":
        assert cohort.group_id is not None
        return group_members(client, cohort.group_id)
    return search_ids(client, cohort)
