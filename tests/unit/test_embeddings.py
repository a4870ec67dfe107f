"""Embedder: offline load of the bundled model, weight verification, and useful similarities."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.errors import ConfigError
from app.retrieval.embeddings import (
    EXPECTED_SHA256,
    WEIGHTS_FILE,
    Embedder,
    default_model_path,
    file_sha256,
)


@functools.cache
def shared_embedder() -> Embedder:
    """One load per test session (test_index.py uses it too)."""
    return Embedder()


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return shared_embedder()


def test_bundled_weights_are_the_upstream_file() -> None:
    digest = file_sha256(default_model_path() / WEIGHTS_FILE)
    assert digest == EXPECTED_SHA256
    assert digest.startswith("53aa5117") and digest.endswith("d9db")


def test_loads_offline(embedder: Embedder) -> None:
    assert embedder.model_id == "all-MiniLM-L6-v2"
    assert embedder.dim == 384
    assert embedder.max_tokens == 256


def test_encode_shape_dtype_and_norm(embedder: Embedder) -> None:
    vectors = embedder.encode(["chest pain", "pneumonia treated with amoxicillin", ""])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)
    empty = embedder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    with pytest.raises(TypeError):
        embedder.encode("not a list")  # type: ignore[arg-type]


def test_similar_sentences_score_higher(embedder: Embedder) -> None:
    a, b, c = embedder.encode([
        "The patient had a heart attack last year.",
        "History of myocardial infarction.",
        "The parking garage closes at nine in the evening.",
    ])
    assert float(a @ b) > float(a @ c) + 0.2


def test_count_tokens(embedder: Embedder) -> None:
    assert embedder.count_tokens("") == 0
    assert embedder.count_tokens("hello world") == 2  # no [CLS]/[SEP]
    assert embedder.count_tokens("pembrolizumab") > 1  # word pieces


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(default_model_path(), target)
    return target


def test_wrong_expected_sha_is_refused_before_loading(model_copy: Path) -> None:
    with pytest.raises(ConfigError, match="sha256"):
        Embedder(model_copy, expected_sha256="0" * 64)


def test_tampered_weights_are_refused(model_copy: Path) -> None:
    weights = model_copy / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256") as info:
        Embedder(model_copy, expected_sha256=EXPECTED_SHA256)
    assert info.value.code == "config_error"


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        Embedder(tmp_path, expected_sha256=EXPECTED_SHA256)


def test_unknown_model_name_fails_offline_with_config_error() -> None:
    with pytest.raises(ConfigError):
        Embedder("example-org/no-such-model-here")
    with pytest.raises(ConfigError, match="local model directory"):
        Embedder("example-org/no-such-model-here", expected_sha256=EXPECTED_SHA256)
