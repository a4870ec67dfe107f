"""OnnxSession runs batches in parallel (one thread per batch, ``workers`` at once): the same
vectors to the bit as one batch after another, real parallel runs, errors not swallowed."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from app.retrieval.embeddings import default_model_path
from app.retrieval.onnx_session import TOKENIZER_FILE, OnnxSession, read_layout
from tests.unit.test_embeddings import shared_embedder

pytest.importorskip("onnxruntime")

TEXTS = [f"Visit {i}: " + "blood pressure stable, lisinopril continued, follow up in three months. " * (i % 7)
         for i in range(60)] + ["", "Plan: TSH in 6 weeks.", "naïve café 12.5 mg/m²"]


class Recording:
    """Wraps an onnxruntime session: which threads ran batches, how many at once."""

    def __init__(self, inner: Any, fail_at: int | None = None) -> None:
        self.inner, self.fail_at = inner, fail_at
        self.threads: set[str] = set()
        self.active = self.max_active = self.runs = 0
        self._lock = threading.Lock()

    def get_inputs(self) -> Any:
        return self.inner.get_inputs()

    def run(self, names: Any, feed: dict) -> Any:
        with self._lock:
            self.runs += 1
            run_no = self.runs
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(0.002)  # long enough for another worker to start its batch
            if run_no == self.fail_at:
                raise RuntimeError("model failed")
            return self.inner.run(names, feed)
        finally:
            with self._lock:
                self.active -= 1


def _session(inner: Any, workers: int) -> OnnxSession:
    layout = read_layout(default_model_path())
    assert layout is not None
    tokenizer = (layout.directory / TOKENIZER_FILE).read_text(encoding="utf-8")
    return OnnxSession(inner, tokenizer, layout.dim, layout.max_tokens, workers=workers)


@pytest.fixture(scope="module")
def ort_session() -> Any:
    embedder = shared_embedder()
    if embedder.runtime != "onnx":
        pytest.skip("the ONNX runtime is not in use")
    return embedder._onnx._session


def test_parallel_batches_give_the_same_vectors_bit_for_bit(ort_session: Any) -> None:
    serial, parallel = Recording(ort_session), Recording(ort_session)
    a = _session(serial, 1).encode(TEXTS, batch_size=64, token_budget=96)
    b = _session(parallel, 2).encode(TEXTS, batch_size=64, token_budget=96)
    assert serial.runs == parallel.runs > 4  # many batches
    np.testing.assert_array_equal(a, b)
    assert serial.threads == {threading.current_thread().name} and serial.max_active == 1
    assert parallel.max_active == 2 and len(parallel.threads) == 2
    assert threading.current_thread().name not in parallel.threads  # the pool ran them
    # one batch (a query) runs on the caller's thread, whatever the workers
    query = Recording(ort_session)
    _session(query, 2).encode(["Any allergies?"], batch_size=64)
    assert query.threads == {threading.current_thread().name} and query.runs == 1


def test_a_failing_batch_fails_the_encode(ort_session: Any) -> None:
    failing = Recording(ort_session, fail_at=3)
    with pytest.raises(RuntimeError, match="model failed"):
        _session(failing, 2).encode(TEXTS, batch_size=64, token_budget=96)
