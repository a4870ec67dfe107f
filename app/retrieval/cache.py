"""Encrypted on-disk cache of chunk embeddings and chunk boundaries (one SQLite file).

A re-launch embeds only what is new: a chunk whose text was embedded before
by the same model is read back instead of encoded again, and a document whose
extracted text was chunked before (same model tokenizer, same limits) gets its
chunk boundaries back without running the tokenizer.

What is on disk, and why it holds no note text:

- row keys are HMAC-SHA256(key, model id + sha256 of the text), not the bare
  sha256: a short, common chunk ("Plan: continue.") cannot be confirmed by
  hashing guesses without the app's secret;
- values are AES-256-GCM ciphertexts (random 96-bit nonce, the row key as
  associated data, so a value moved to another row fails to decrypt);
- both keys come from ``APP_SECRET_KEY`` through HKDF-SHA256; rotating the
  secret makes every row unreadable, and unreadable rows count as misses;
- the only plain columns are the model id and a timestamp (for the purge).

``python -m app cache purge`` deletes rows (all, one model's, or older ones).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

CACHE_FILE = "embedding-cache.sqlite"
_SALT = b"smart-draft-agent/embedding-cache/v1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, model TEXT NOT NULL,
                                    value BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunkings (key BLOB PRIMARY KEY, model TEXT NOT NULL,
                                      value BLOB NOT NULL, created REAL NOT NULL);
"""
_TABLES = ("vectors", "chunkings")


class TextEncoder(Protocol):
    """What the cache needs from an embedder (``Embedder`` or a test stand-in)."""

    model_id: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(secret)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


class EmbeddingCache:
    """Thread-safe; one file per app (``APP_DATA_DIR/embedding-cache.sqlite``)."""

    def __init__(self, path: str | Path, secret: bytes) -> None:
        if not secret:
            raise ValueError("the embedding cache needs a secret")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._aead = AESGCM(_derive(secret, b"aes-256-gcm"))
        self._mac_key = _derive(secret, b"hmac-sha256 row keys")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        os.chmod(self.path, 0o600)
        with self._lock:
            # A cache: losing the last writes in a power cut is fine, an fsync per note is not.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        self.hits = 0
        self.misses = 0

    @classmethod
    def in_dir(cls, data_dir: str | Path, secret: bytes) -> EmbeddingCache:
        return cls(Path(data_dir) / CACHE_FILE, secret)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- keys and sealing ------------------------------------------------------------------

    def _key(self, kind: str, model_id: str, digest: str) -> bytes:
        return hmac.new(self._mac_key, f"{kind}\0{model_id}\0{digest}".encode(),
                        hashlib.sha256).digest()

    def _seal(self, key: bytes, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plain, key)

    def _open(self, key: bytes, sealed: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], key)
        except (InvalidTag, ValueError):
            return None  # another secret, or a damaged row: a miss, never an error

    def _get(self, table: str, keys: list[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = keys[start:start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT key, CAST(value AS BLOB) FROM {table} WHERE key IN ({marks})", part,  # noqa: S608
                ).fetchall()
                found.update((bytes(k), bytes(v)) for k, v in rows)
        return found

    def _put(self, table: str, model_id: str, items: list[tuple[bytes, bytes]]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT OR REPLACE INTO {table} (key, model, value, created) "  # noqa: S608
                "VALUES (?, ?, ?, ?)",
                [(k, model_id, self._seal(k, v), now) for k, v in items])
            self._db.execute("COMMIT")

    # -- vectors ---------------------------------------------------------------------------

    def encode(self, embedder: TextEncoder, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: cached ones read back, the others encoded in one call and kept."""
        return self.encode_counted(embedder, texts)[0]

    def encode_counted(self, embedder: TextEncoder, texts: Sequence[str],
                       ) -> tuple[np.ndarray, int]:
        """``encode`` plus how many distinct texts the model had to encode."""
        if len(texts) == 0:
            return np.zeros((0, embedder.dim), dtype=np.float32), 0
        keys = [self._key("vec", embedder.model_id, text_sha256(t)) for t in texts]
        stored = self._get("vectors", list(dict.fromkeys(keys)))
        out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            plain = self._open(key, stored[key]) if key in stored else None
            if plain is not None and len(plain) == 4 * embedder.dim:
                out[i] = np.frombuffer(plain, dtype=np.float32)
            else:
                missing.setdefault(key, []).append(i)
        with self._lock:
            self.hits += len(texts) - sum(len(v) for v in missing.values())
            self.misses += len(missing)
        if missing:
            order = list(missing)
            fresh = embedder.encode([texts[missing[k][0]] for k in order])
            fresh = np.asarray(fresh, dtype=np.float32).reshape(len(order), embedder.dim)
            for key, vector in zip(order, fresh, strict=True):
                out[missing[key]] = vector
            self._put("vectors", embedder.model_id,
                      [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                       for k, v in zip(order, fresh, strict=True)])
        return out, len(missing)

    # -- chunk boundaries ------------------------------------------------------------------

    def chunk_spans(self, model_id: str, params: str, text: str,
                    ) -> list[tuple[str | None, int, int]] | None:
        """(section, start, end) of each chunk of ``text`` if chunked before, else None."""
        key = self._key("chunks", f"{model_id}\0{params}", text_sha256(text))
        sealed = self._get("chunkings", [key]).get(key)
        plain = self._open(key, sealed) if sealed is not None else None
        if plain is None:
            return None
        spans = [(s, int(a), int(b)) for s, a, b in json.loads(plain)]
        if any(not 0 <= a < b <= len(text) for _, a, b in spans):
            return None
        return spans

    def put_chunk_spans(self, model_id: str, params: str, text: str,
                        spans: Sequence[tuple[str | None, int, int]]) -> None:
        key = self._key("chunks", f"{model_id}\0{params}", text_sha256(text))
        self._put("chunkings", model_id, [(key, json.dumps([list(s) for s in spans]).encode())])

    # -- housekeeping ----------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {t: int(self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # noqa: S608
                    for t in _TABLES}

    def purge(self, *, model_id: str | None = None, older_than_s: float | None = None) -> int:
        """Delete rows (all by default); returns how many. The file is compacted afterwards."""
        where, args = [], []
        if model_id is not None:
            where.append("(model = ? OR model LIKE ?)")
            args += [model_id, model_id + "+%"]
        if older_than_s is not None:
            where.append("created < ?")
            args.append(time.time() - older_than_s)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        removed = 0
        with self._lock:
            for table in _TABLES:
                removed += self._db.execute(f"DELETE FROM {table}{clause}", args).rowcount  # noqa: S608
            self._db.execute("VACUUM")
        return removed


def shared_cache(extensions: dict, settings: object) -> EmbeddingCache | None:
    """The app's one cache (kept in ``app.extensions``), or None when APP_EMBEDDING_CACHE=false."""
    if not getattr(settings, "embedding_cache", True):
        return None
    cache = extensions.get("embedding_cache")
    if cache is None:
        cache = extensions.setdefault(
            "embedding_cache",
            EmbeddingCache.in_dir(settings.data_dir, settings.secret()))  # type: ignore[attr-defined]
    return cache
