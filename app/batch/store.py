"""What a batch keeps on disk: the export spool and the per-patient checkpoints.

Both are SQLite files under ``APP_DATA_DIR/batch/`` (directory mode 0700), local to the machine
that drives the batch (the Ray driver on a cluster); neither is part of the app's main database.

- ``Spool`` (``<batch>/spool.sqlite``): the exported resources, keyed by (type, id) so a
  re-delivered file (a restarted export) overwrites instead of duplicating, grouped by patient so
  the pipeline reads one patient at a time. Bodies are encrypted (``Vault``): they hold PHI.
  Deleted when the batch completes.
- ``Checkpoints`` (``checkpoints.sqlite``): one row per batch (its saved export status URL, its
  phase) and one per patient (an opaque key, never the id): ``screened`` (result kept, encrypted,
  so a re-run writes without screening again), ``done`` (draft written or nothing to write).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from app.store.models import Vault

_SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS res (type TEXT NOT NULL, id TEXT NOT NULL, patient TEXT NOT NULL,
                                body TEXT NOT NULL, PRIMARY KEY (type, id));
CREATE INDEX IF NOT EXISTS res_patient ON res(patient);
"""

_CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (batch_id TEXT PRIMARY KEY, phase TEXT NOT NULL, status_url TEXT,
                                  created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS patient (batch_id TEXT NOT NULL, patient_key TEXT NOT NULL, state TEXT NOT NULL,
                                    run_id TEXT, summary TEXT, sealed TEXT, screens INTEGER NOT NULL DEFAULT 0,
                                    writes INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL,
                                    PRIMARY KEY (batch_id, patient_key));
"""


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def patient_of(resource: dict) -> str | None:
    """The patient a resource belongs to (itself for a Patient)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return str(rid) if rid else None
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            parts = ref["reference"].rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2] == "Patient":
                return parts[-1]
    return None


class Spool:
    def __init__(self, path: Path, vault: Vault) -> None:
        self.path = path
        self.vault = vault
        private_dir(path.parent)
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.executescript(_SPOOL_SCHEMA)
        self._pending = 0
        self.unassigned = 0  # resources that name no patient (skipped)

    def add(self, resource: dict) -> bool:
        pid = patient_of(resource)
        rid = resource.get("id")
        if not pid or not isinstance(rid, str):
            self.unassigned += 1
            return False
        self.db.execute("INSERT OR REPLACE INTO res (type, id, patient, body) VALUES (?, ?, ?, ?)",
                        (str(resource.get("resourceType")), rid, pid,
                         self.vault.seal(json.dumps(resource, separators=(",", ":")))))
        self._pending += 1
        if self._pending >= 500:
            self.commit()
        return True

    def commit(self) -> None:
        self.db.commit()
        self._pending = 0

    def patients(self) -> Iterator[str]:
        """Distinct patients, in a stable order (the rows are read lazily)."""
        cursor = self.db.execute("SELECT DISTINCT patient FROM res ORDER BY patient")
        while rows := cursor.fetchmany(500):
            yield from (r[0] for r in rows)

    def count_patients(self) -> int:
        return int(self.db.execute("SELECT COUNT(DISTINCT patient) FROM res").fetchone()[0])

    def resources(self, patient: str) -> list[dict]:
        rows = self.db.execute("SELECT body FROM res WHERE patient = ? ORDER BY type, id", (patient,)).fetchall()
        return [json.loads(self.vault.open(r[0])) for r in rows]

    def close(self) -> None:
        self.commit()
        self.db.close()

    def remove(self) -> None:
        self.close()
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)


class Checkpoints:
    """Batch and patient progress; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path, vault: Vault, *, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        private_dir(path.parent)
        self.db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self.db.executescript(_CHECKPOINT_SCHEMA)
        self.vault = vault
        self.clock = clock
        self.lock = threading.Lock()

    # ---- batch -------------------------------------------------------------------------
    def batch(self, batch_id: str) -> dict:
        with self.lock:
            row = self.db.execute("SELECT phase, status_url FROM batch WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                now = self.clock()
                self.db.execute("INSERT INTO batch VALUES (?, 'fetch', NULL, ?, ?)", (batch_id, now, now))
                self.db.commit()
                return {"phase": "fetch", "status_url": None}
            return {"phase": row[0], "status_url": row[1]}

    def set_batch(self, batch_id: str, **fields: str | None) -> None:
        with self.lock:
            for key, value in fields.items():
                if key not in ("phase", "status_url"):
                    raise ValueError(key)
                self.db.execute(f"UPDATE batch SET {key} = ?, updated = ? WHERE batch_id = ?",  # noqa: S608
                                (value, self.clock(), batch_id))
            self.db.commit()

    # ---- patients ----------------------------------------------------------------------
    def state(self, batch_id: str, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT state FROM patient WHERE batch_id = ? AND patient_key = ?",
                                  (batch_id, key)).fetchone()
            return row[0] if row else None

    def finished(self, batch_id: str) -> set[str]:
        """Keys of patients whose screen is recorded (screened or done)."""
        with self.lock:
            return {r[0] for r in self.db.execute("SELECT patient_key FROM patient WHERE batch_id = ?",
                                                  (batch_id,))}

    def screened(self, batch_id: str, key: str, run_id: str, summary: dict, sealed: str | None) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO patient (batch_id, patient_key, state, run_id, summary, sealed, screens, updated) "
                "VALUES (?, ?, 'screened', ?, ?, ?, 1, ?) ON CONFLICT (batch_id, patient_key) DO UPDATE SET "
                "screens = screens + 1, summary = excluded.summary, sealed = excluded.sealed, "
                "updated = excluded.updated",
                (batch_id, key, run_id, json.dumps(summary), sealed, self.clock()))
            self.db.commit()

    def done(self, batch_id: str, key: str, draft_state: str, *, wrote: bool) -> None:
        with self.lock:
            row = self.db.execute("SELECT summary FROM patient WHERE batch_id = ? AND patient_key = ?",
                                  (batch_id, key)).fetchone()
            summary = json.loads(row[0]) if row and row[0] else {}
            summary["draft_state"] = draft_state
            self.db.execute("UPDATE patient SET state = 'done', sealed = NULL, summary = ?, writes = writes + ?, "
                            "updated = ? WHERE batch_id = ? AND patient_key = ?",
                            (json.dumps(summary), 1 if wrote else 0, self.clock(), batch_id, key))
            self.db.commit()

    def pending_writes(self, batch_id: str) -> Iterator[tuple[str, str, str]]:
        """(key, run_id, sealed result) of patients screened but not yet through the outbox."""
        with self.lock:
            rows = self.db.execute("SELECT patient_key, run_id, sealed FROM patient WHERE batch_id = ? AND "
                                   "state = 'screened'", (batch_id,)).fetchall()
        yield from rows

    def rows(self, batch_id: str) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT patient_key, state, run_id, summary, screens, writes FROM patient "
                                   "WHERE batch_id = ? ORDER BY patient_key", (batch_id,)).fetchall()
        return [{"patient_key": k, "state": s, "run_id": r, "screens": n, "writes": w,
                 **(json.loads(summary) if summary else {})} for k, s, r, summary, n, w in rows]

    def close(self) -> None:
        with self.lock:
            self.db.close()
