"""Embedding cache: encrypted at rest, keyed by model + text hash, incremental re-launch, purge.

Uses ``HashingEmbedder`` (model-free, counts its calls): what is tested here is
the caching, not embedding quality.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from app.retrieval.bundles import BundleClient
from app.retrieval.cache import CACHE_FILE, EmbeddingCache
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.indexer import build_index, load_chart, open_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants

SECRET = b"unit-test-secret-for-the-embedding-cache"
TEXTS = ["Assessment: grade 2 immune-related colitis, budesonide started.",
         "Plan: repeat TSH in six weeks; continue levothyroxine.",
         "Assessment: grade 2 immune-related colitis, budesonide started."]  # a repeat
BUNDLE = Path(__file__).resolve().parents[2] / "synthetic_data" / "bundles" / "pat-onc-01.json"


@pytest.fixture
def cache(tmp_path: Path) -> EmbeddingCache:
    store = EmbeddingCache.in_dir(tmp_path, SECRET)
    yield store
    store.close()


def test_second_encode_reads_back_without_the_model(cache: EmbeddingCache) -> None:
    embedder = HashingEmbedder()
    first = cache.encode(embedder, TEXTS)
    assert embedder.texts_encoded == 2  # the repeated text is encoded once
    np.testing.assert_allclose(first, HashingEmbedder().encode(TEXTS), rtol=0, atol=0)
    again = cache.encode(embedder, list(reversed(TEXTS)))
    assert embedder.calls == 1 and embedder.texts_encoded == 2
    np.testing.assert_array_equal(again, first[::-1])
    vectors, fresh = cache.encode_counted(embedder, TEXTS + ["Plan: new text."])
    assert fresh == 1 and embedder.texts_encoded == 3
    assert vectors.shape == (4, embedder.dim) and vectors.dtype == np.float32


def test_key_includes_the_model(cache: EmbeddingCache) -> None:
    cache.encode(HashingEmbedder(model_id="model-a"), TEXTS)
    other = HashingEmbedder(model_id="model-b")
    cache.encode(other, TEXTS)
    assert other.texts_encoded == 2  # another model never gets model-a's vectors


def test_no_plain_text_or_bare_hash_on_disk(cache: EmbeddingCache, tmp_path: Path) -> None:
    embedder = HashingEmbedder()
    cache.encode(embedder, TEXTS)
    cache.put_chunk_spans(embedder.model_id, "p", TEXTS[1], [("Plan", 0, len(TEXTS[1]))])
    cache.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(CACHE_FILE))
    assert raw  # the file exists and has content
    for text in TEXTS:
        for needle in (text.encode(), text[:20].encode(), text.encode("utf-16-le")[:40],
                       hashlib.sha256(text.encode()).hexdigest().encode(),
                       hashlib.sha256(text.encode()).digest()):
            assert needle not in raw
    for word in (b"colitis", b"levothyroxine", b"budesonide", b"Assessment"):
        assert word not in raw
    # nor the vectors themselves in the clear
    vector = HashingEmbedder().encode(TEXTS[:1])[0].tobytes()
    assert vector[:32] not in raw


def test_other_secret_or_tampered_rows_are_misses_not_errors(cache: EmbeddingCache,
                                                             tmp_path: Path) -> None:
    cache.encode(HashingEmbedder(), TEXTS)
    cache.close()
    rotated = EmbeddingCache.in_dir(tmp_path, b"another-secret")
    embedder = HashingEmbedder()
    rotated.encode(embedder, TEXTS)
    assert embedder.texts_encoded == 2
    rotated.close()
    db = sqlite3.connect(tmp_path / CACHE_FILE)
    for key, value in db.execute("SELECT key, value FROM vectors").fetchall():
        flipped = bytes(value[:20]) + bytes([value[20] ^ 1]) + bytes(value[21:])
        db.execute("UPDATE vectors SET value = ? WHERE key = ?", (flipped, key))
    db.commit()
    db.close()
    again = EmbeddingCache.in_dir(tmp_path, SECRET)
    embedder = HashingEmbedder()
    np.testing.assert_array_equal(again.encode(embedder, TEXTS), HashingEmbedder().encode(TEXTS))
    assert embedder.texts_encoded == 2
    again.close()


def test_chunk_spans_round_trip_and_reject_impossible_offsets(cache: EmbeddingCache) -> None:
    text = TEXTS[1]
    assert cache.chunk_spans("m", "p", text) is None
    cache.put_chunk_spans("m", "p", text, [("Plan", 0, 5), (None, 5, len(text))])
    assert cache.chunk_spans("m", "p", text) == [("Plan", 0, 5), (None, 5, len(text))]
    assert cache.chunk_spans("m", "other-params", text) is None
    cache.put_chunk_spans("m", "p", "short", [(None, 0, 99)])
    assert cache.chunk_spans("m", "p", "short") is None


def test_purge_all_by_model_and_by_age(cache: EmbeddingCache) -> None:
    cache.encode(HashingEmbedder(model_id="model-a"), TEXTS)
    cache.encode(HashingEmbedder(model_id="model-a+int8"), TEXTS)
    cache.encode(HashingEmbedder(model_id="model-b"), TEXTS)
    assert cache.stats()["vectors"] == 6
    assert cache.purge(older_than_s=3600) == 0
    assert cache.purge(model_id="model-a") == 4  # the model and its int8 variant
    assert cache.stats()["vectors"] == 2
    assert cache.purge() == 2
    assert cache.stats() == {"vectors": 0, "chunkings": 0}


def test_purge_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import main

    monkeypatch.setenv("APP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APP_TESTING", "true")
    monkeypatch.delenv("APP_SECRET_KEY", raising=False)
    from app.config import load_settings

    store = EmbeddingCache.in_dir(tmp_path, load_settings().secret())
    store.encode(HashingEmbedder(), TEXTS)
    store.close()
    result = CliRunner().invoke(main, ["cache", "purge"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"removed": 2,
                                         "remaining": {"vectors": 0, "chunkings": 0}}


# -- incremental re-launch through the indexer -------------------------------------------

def _client(changed: str | None = None) -> BundleClient:
    bundle = json.loads(BUNDLE.read_text(encoding="utf-8"))
    resources = [copy.deepcopy(e["resource"]) for e in bundle["entry"]]
    if changed:
        for res in resources:
            if res.get("id") == changed:
                att = res["content"][0]["attachment"]
                import base64

                text = base64.b64decode(att["data"]).decode() + "\nAddendum: reviewed again today."
                att["data"] = base64.b64encode(text.encode()).decode()
                res["meta"] = {"versionId": "2", "lastUpdated": "2026-11-01T00:00:00Z"}
    return BundleClient(resources)


def _launch(client: BundleClient, embedder: HashingEmbedder, cache: EmbeddingCache | None):
    return load_chart(client, "pat-onc-01", grants=Grants.parse("patient/*.read"),
                      role="clinician", policy=RolePolicy.default(), embedder=embedder,
                      cache=cache)


def _inline_plain_document(client: BundleClient) -> str:
    return next(r["id"] for r in client.search("DocumentReference", {"patient": "pat-onc-01"})
                if (r["content"][0]["attachment"].get("contentType") or "").startswith("text/plain")
                and r["content"][0]["attachment"].get("data") and not r.get("meta", {}).get("security")
                and not r.get("securityLabel"))


def test_relaunch_embeds_only_new_or_changed_documents(cache: EmbeddingCache) -> None:
    cold = HashingEmbedder()
    first = _launch(_client(), cold, cache)
    assert first.progress.state == "ready"
    assert first.progress.embedded == cold.texts_encoded > 0
    # copied-forward text: identical chunks in several notes are embedded once, even cold
    assert first.progress.embedded + first.progress.cached == len(first.index)
    assert cold.texts_encoded == len({c.text for c in first.index.chunks()})

    warm = HashingEmbedder()
    second = _launch(_client(), warm, cache)
    assert warm.calls == 0 and warm.texts_encoded == 0  # nothing embedded again
    assert second.progress.cached == len(second.index) == len(first.index)
    assert [c.id for c in second.index.chunks()] == [c.id for c in first.index.chunks()]

    changed_id = _inline_plain_document(_client())
    changed = HashingEmbedder()
    third = _launch(_client(changed=changed_id), changed, cache)
    assert 0 < changed.texts_encoded <= sum(1 for c in third.index.chunks()
                                            if c.document_id == changed_id)
    assert all(t in third.texts[changed_id] for t in changed.seen)  # only that note's chunks
    assert {c.version for c in third.index.chunks() if c.document_id == changed_id} == {"2"}
    np.testing.assert_array_equal(  # cached vectors equal fresh ones
        third.index._vectors, _launch(_client(changed=changed_id), HashingEmbedder(), None)
        .index._vectors)


def test_most_recent_notes_are_indexed_first_with_progress() -> None:
    client = _client()
    embedder = HashingEmbedder()
    seen_progress: list[tuple[int, int]] = []
    chart = open_chart(client, "pat-onc-01", grants=Grants.parse("patient/*.read"),
                       role="clinician", policy=RolePolicy.default(), embedder=embedder)
    assert chart.progress.state == "pending" and chart.progress.total > 0
    original = embedder.encode

    def recording(texts):  # type: ignore[no-untyped-def]
        seen_progress.append((chart.progress.done, chart.progress.total))
        return original(texts)

    embedder.encode = recording  # type: ignore[method-assign]
    build_index(client, chart)
    order = [next(did for did, text in chart.texts.items() if t in text) for t in embedder.seen]
    dates = [chart.documents[d].date for d in dict.fromkeys(order)]
    assert dates == sorted(dates, reverse=True)
    dones = [d for d, _ in seen_progress]
    assert dones == sorted(dones) and seen_progress[-1][1] == chart.progress.total
    assert chart.progress.as_dict()["state"] == "ready"
    assert chart.progress.done == chart.progress.total
