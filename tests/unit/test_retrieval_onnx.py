"""ONNX Runtime path of the Embedder: the same vectors as torch (the quality rule), and fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import ConfigError
from app.retrieval.embeddings import Embedder
from app.retrieval.onnx_session import _mean_pooling_only
from tests.unit.test_embeddings import shared_embedder

TEXTS = [
    "Assessment: grade 2 immune-related colitis; budesonide started.",
    "Plan: TSH in 6 weeks.",
    "HPI: " + "Persistent dry cough and exertional dyspnea, ground-glass opacities on CT. " * 40,  # > 256 tokens
    "",
]

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(runtime="torch")


def test_auto_uses_onnx_with_the_same_vectors_as_torch(torch_embedder: Embedder) -> None:
    onnx = shared_embedder()
    assert onnx.runtime == "onnx" and torch_embedder.runtime == "torch"
    assert onnx.model_id == torch_embedder.model_id and onnx.dim == torch_embedder.dim
    a, b = onnx.encode(TEXTS), torch_embedder.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), onnx.dim) and a.dtype == np.float32
    cosine = np.sum(a[:3] * b[:3], axis=1)
    assert np.all(cosine > 0.9999), cosine
    assert np.abs(a - b).max() < 1e-3
    # batch composition does not change a vector (padding is masked out)
    single = np.vstack([onnx.encode([t]) for t in TEXTS[:3]])
    assert np.abs(single - a[:3]).max() < 1e-4


def test_unknown_runtime_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Embedder(runtime="tensorrt")


def test_only_mean_pooling_models_are_exported(torch_embedder: Embedder) -> None:
    assert _mean_pooling_only(torch_embedder._model)

    class Pooling:
        def __init__(self, **modes: bool) -> None:
            self.modes = modes

        def get_config_dict(self) -> dict:
            return {f"pooling_mode_{k}": v for k, v in self.modes.items()}

    class Transformer:
        auto_model = object()

    assert not _mean_pooling_only([Transformer(), Pooling(cls_token=True, mean_tokens=False)])
    assert not _mean_pooling_only([Transformer(), Pooling(mean_tokens=True, max_tokens=True)])
    assert not _mean_pooling_only([Pooling(mean_tokens=True)])
    assert _mean_pooling_only([Transformer(), Pooling(mean_tokens=True, cls_token=False)])

    class NamedPooling:
        def __init__(self, mode: str) -> None:
            self.mode = mode

        def get_config_dict(self) -> dict:
            return {"pooling_mode": self.mode, "embedding_dimension": 8}

    assert _mean_pooling_only([Transformer(), NamedPooling("mean")])
    assert not _mean_pooling_only([Transformer(), NamedPooling("cls")])
    assert not _mean_pooling_only([Transformer(), NamedPooling("mean"), Pooling()])  # not Normalize
