"""Where ``python -m app drift snapshot | check`` keeps its snapshots, and how it reads a period.

Snapshots hold aggregates only, but sampled embeddings are derived from notes: they are sealed
with the store's Vault (``APP_SECRET_KEY``) at rest in ``APP_DATA_DIR/drift/``. A period's notes
come from a directory of FHIR bundles or Bulk Data NDJSON (``DocumentReference.ndjson``), read
through the same attachment extraction and role policy as the app (a denied note never counts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from app.errors import AppError
from app.monitoring import drift
from app.store.models import Vault

_PERIOD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEADING = re.compile(r"^\s*(?:#+\s*)?([A-Za-z][A-Za-z /&-]{2,40}):?\s*$|^\s*([A-Z][A-Za-z /&-]{2,40}):", re.M)


def check_period(name: str) -> str:
    if not isinstance(name, str) or not _PERIOD.match(name):
        raise AppError("A period name is 1-64 letters, digits, '.', '_' or '-' (e.g. 2026-W48).",
                       code="drift_bad_period", http_status=400)
    return name


class SnapshotStore:
    def __init__(self, directory: Path, secret: bytes) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._vault = Vault(secret)

    def _path(self, period: str) -> Path:
        return self.dir / f"{check_period(period)}.snapshot"

    def save(self, snap: drift.Snapshot, *, baseline: bool = False,
             thresholds: dict[str, drift.Threshold] | None = None) -> Path:
        body: dict[str, Any] = {"snapshot": snap.as_dict(), "baseline": baseline}
        if thresholds is not None:
            body["thresholds"] = {k: [t.mean, t.sd] for k, t in thresholds.items()}
        path = self._path(snap.period)
        path.write_text(self._vault.seal(json.dumps(body)), encoding="ascii")
        return path

    def load_all(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.dir.glob("*.snapshot")):
            body = json.loads(self._vault.open(path.read_text(encoding="ascii")))
            body["snapshot"] = drift.Snapshot.from_dict(body["snapshot"])
            if "thresholds" in body:
                body["thresholds"] = {k: drift.Threshold(*v) for k, v in body["thresholds"].items()}
            out.append(body)
        return out


def _resources(data: Path) -> Iterator[dict]:
    """DocumentReferences (and Binaries) from bundles/*.json, *.json bundles or *.ndjson files."""
    if (data / "bundles").is_dir():
        data = data / "bundles"
    for path in sorted(data.glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle.get("entry") or []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"]
    for path in sorted(data.glob("*.ndjson")):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def note_records(data: Path, *, since: date | None = None, until: date | None = None, role: str = "clinician",
                 embedder: Any = None, policy: Any = None) -> list[drift.NoteRecord]:
    """The period's permitted notes as NoteRecords (text kept in memory only, for counting)."""
    from app.fhir.attachments import extract_text
    from app.retrieval.bundles import BundleClient
    from app.retrieval.policy import AccessContext, RolePolicy, decide, document_meta

    if not data.is_dir():
        raise AppError("The drift data directory does not exist.", code="drift_no_data", http_status=400)
    resources = list(_resources(data))
    client = BundleClient(resources)
    policy = policy or RolePolicy.default()
    context = AccessContext(role=role, can_read_documents=True)
    texts: list[tuple[str, str | None]] = []
    for res in resources:
        if res.get("resourceType") != "DocumentReference":
            continue
        try:
            meta = document_meta(res)
        except (AppError, ValueError, TypeError):
            continue
        day = (meta.date or "")[:10]
        if since and (not day or day < since.isoformat()):
            continue
        if until and (not day or day >= until.isoformat()):
            continue
        if not decide(meta, context, policy).allowed:
            continue
        extracted = extract_text(client, res)  # type: ignore[arg-type]
        if extracted.text:
            texts.append((extracted.text, meta.type_code))
    vectors: list[Any] = [None] * len(texts)
    if embedder is not None and texts:
        vectors = list(embedder.encode([t[:2000] for t, _ in texts]))
    return [drift.NoteRecord(text=t, note_type=kind, sections=tuple(sections_of(t)),
                             embedding=None if v is None else [float(x) for x in v])
            for (t, kind), v in zip(texts, vectors, strict=True)]


def sections_of(text: str) -> Iterable[str]:
    """Section categories of a note: the clinical pipeline's when it is there, else headings."""
    try:
        from app.agent.clinical.pipeline import sections

        cats = {s.category for s in sections(text) if getattr(s, "category", None)}
        if cats:
            return sorted(cats)
    except ImportError:
        pass
    return sorted({(m.group(1) or m.group(2)).strip().lower() for m in _HEADING.finditer(text)})
