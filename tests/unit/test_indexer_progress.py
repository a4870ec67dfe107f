"""Indexing while drafting starts: newest notes first, search after the newest 20, read_notes
after all; attachment fetches bounded; a failed build is a clear error (model-free)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.agent.runtime import ChartTools, Limits
from app.errors import AppError
from app.retrieval import indexer
from app.retrieval.bundles import BundleClient
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.indexer import EARLY_START_NOTES, build_index, open_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants

BUNDLES = Path(__file__).resolve().parents[2] / "synthetic_data" / "bundles"
PATIENT = "pat-onc-02"


class GatedEmbedder(HashingEmbedder):
    """In the build thread, encodes only while ``gate`` is open (queries from the test's own
    thread pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail = False

    def encode(self, texts):  # type: ignore[no-untyped-def, override]
        if threading.current_thread() is not threading.main_thread() and not self.gate.wait(30):
            raise TimeoutError("test gate never opened")
        if self.fail:
            raise RuntimeError("model crashed")
        return super().encode(texts)


class CountingClient(BundleClient):
    """Records how many attachment fetches run at once."""

    def __init__(self, resources) -> None:  # type: ignore[no-untyped-def]
        super().__init__(resources)
        self.active = 0
        self.max_active = 0
        self.fetched = 0
        self._lock = threading.Lock()

    def fetch_limited(self, url, *, accept, max_bytes):  # type: ignore[no-untyped-def]
        with self._lock:
            self.active += 1
            self.fetched += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(0.01)
        try:
            return super().fetch_limited(url, accept=accept, max_bytes=max_bytes)
        finally:
            with self._lock:
                self.active -= 1


def client() -> CountingClient:
    source = BundleClient.from_paths([BUNDLES / "00-practitioners.json", BUNDLES / f"{PATIENT}.json"])
    return CountingClient(source._by_key.values())


def opened(c: BundleClient, embedder):  # type: ignore[no-untyped-def]
    return open_chart(c, PATIENT, grants=Grants.parse("patient/*.read"), role="clinician",
                      policy=RolePolicy.default(), embedder=embedder)


def start_build(c, chart):  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            build_index(c, chart)
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_search_starts_after_the_newest_notes_read_notes_waits_for_all(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(indexer, "EMBED_GROUP_CHUNKS", 1)  # one note per embedding call
    c, embedder = client(), GatedEmbedder()
    chart = opened(c, embedder)
    total = chart.progress.total
    assert total > EARLY_START_NOTES + 5
    thread, errors = start_build(c, chart)
    assert not chart.progress.wait(EARLY_START_NOTES, timeout=0.3)  # the gate holds the build
    assert chart.progress.state == "indexing"

    # let the build through note by note until the newest 20 are in, then hold it again
    released = threading.Event()

    def release_until_early() -> None:
        while chart.progress.done < EARLY_START_NOTES:
            embedder.gate.set()
            time.sleep(0.001)
        embedder.gate.clear()
        released.set()

    threading.Thread(target=release_until_early, daemon=True).start()
    assert chart.progress.wait(EARLY_START_NOTES, timeout=30)
    released.wait(30)
    results = chart.search("immune-related colitis", k=5)  # does not wait for the rest
    assert results and chart.progress.state == "indexing"
    newest = sorted((m for m, _ in chart.pending.values()), key=lambda m: m.date or "", reverse=True)
    indexed = set(chart.documents)
    assert {m.id for m in newest[:EARLY_START_NOTES]} <= indexed  # the newest, in order
    assert len(indexed) < total
    snapshot = chart.documents
    for _ in snapshot.items():  # iterating while the build goes on never raises
        embedder.gate.set()
    tools = ChartTools(chart, Limits(max_tool_calls=100))
    chunks = tools.read_notes()  # waits for every note
    assert chart.progress.state == "ready" and chart.progress.done == total
    assert {ch.document_id for ch in chunks} == set(chart.documents)
    assert len(chart.documents) == chart.counts["allowed"]
    thread.join(10)
    assert not errors


def test_a_failed_build_is_a_clear_error() -> None:
    c, embedder = client(), GatedEmbedder()
    embedder.fail = True
    embedder.gate.set()
    chart = opened(c, embedder)
    thread, errors = start_build(c, chart)
    thread.join(30)
    assert errors and chart.progress.state == "failed"
    with pytest.raises(AppError) as info:
        chart.wait_indexed()
    assert info.value.http_status == 503 and info.value.code == "RuntimeError"
    with pytest.raises(AppError):
        chart.search("anything")


def test_attachment_fetches_are_concurrent_and_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    c, embedder = client(), GatedEmbedder()
    embedder.gate.set()
    chart = opened(c, embedder)
    lock = threading.Lock()
    state = {"active": 0, "max_active": 0, "fetched": 0}
    ahead: list[int] = []
    real_extract, real_chunk = indexer.extract_text, indexer.chunk_document

    def extract_text(client_, document, *, max_bytes):  # type: ignore[no-untyped-def]
        with lock:
            state["active"] += 1
            state["fetched"] += 1
            state["max_active"] = max(state["max_active"], state["active"])
        time.sleep(0.01)  # a network round trip
        try:
            return real_extract(client_, document, max_bytes=max_bytes)
        finally:
            with lock:
                state["active"] -= 1

    def chunk_document(chart_, meta, text):  # type: ignore[no-untyped-def]
        ahead.append(state["fetched"] - chart_.progress.done)  # fetched, not yet counted done
        return real_chunk(chart_, meta, text)

    monkeypatch.setattr(indexer, "extract_text", extract_text)
    monkeypatch.setattr(indexer, "chunk_document", chunk_document)
    build_index(c, chart)
    assert chart.progress.state == "ready"
    assert state["fetched"] == chart.progress.total > indexer.FETCH_WINDOW
    assert 1 < state["max_active"] <= indexer.FETCH_WORKERS
    # memory bound: at most the window plus one embedding group of notes held before "done"
    assert max(ahead) <= indexer.FETCH_WINDOW + indexer.EMBED_GROUP_CHUNKS
    assert c.fetched == 5  # the notes with a url attachment fetched their Binary once


def test_a_chart_that_is_not_being_built_never_waits() -> None:
    c = client()
    chart = opened(c, HashingEmbedder())
    started = time.monotonic()
    assert chart.progress.state == "pending"
    chart.progress.state = "ready"
    chart.wait_indexed()
    assert time.monotonic() - started < 1
    assert np.asarray(chart.search("colitis")).size == 0  # nothing indexed, nothing found


def test_a_cancelled_build_stops_keeps_what_is_indexed_and_says_so(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(indexer, "EMBED_GROUP_CHUNKS", 1)
    c, embedder = client(), GatedEmbedder()
    chart = opened(c, embedder)
    total = chart.progress.total
    thread, errors = start_build(c, chart)
    while chart.progress.done < 3:  # let three notes through, then cancel
        embedder.gate.set()
        time.sleep(0.001)
    embedder.gate.clear()
    chart.progress.cancel.set()
    embedder.gate.set()
    thread.join(30)
    assert not errors and chart.progress.state == "cancelled"
    done = chart.progress.done
    assert 3 <= done < total
    assert chart.counts["skipped:cancelled"] == total - done
    assert c.fetched <= done + indexer.FETCH_WINDOW + 1  # nothing fetched beyond the window
    assert len(chart.documents) == done  # what was indexed stays; drafting says it was cancelled
    with pytest.raises(AppError) as info:
        chart.wait_indexed()
    assert info.value.code == "index_cancelled" and info.value.http_status == 503
