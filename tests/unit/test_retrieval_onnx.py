"""ONNX Runtime path of the Embedder: the same vectors and token counts as torch (the quality
rule), the on-disk export keyed by the weights' sha256 and checked on every load, fallbacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.errors import ConfigError
from app.retrieval import onnx_session
from app.retrieval.embeddings import EXPECTED_SHA256, Embedder, default_model_path
from app.retrieval.onnx_session import (
    MANIFEST_FILE,
    ONNX_FILE,
    cache_entry,
    load_cached,
    read_layout,
)
from tests.unit.test_embeddings import shared_embedder

TEXTS = [
    "Assessment: grade 2 immune-related colitis; budesonide started.",
    "Plan: TSH in 6 weeks.",
    "HPI: " + "Persistent dry cough and exertional dyspnea, ground-glass opacities on CT. " * 40,  # > 256 tokens
    "",
    "  Leading and trailing blanks; naïve café, Ünïcödé and 12.5 mg/m² doses  ",
]

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(runtime="torch")


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory with the export written once (the first load exports)."""
    where = tmp_path_factory.mktemp("models")
    first = Embedder(cache_dir=where)
    assert first.runtime == "onnx" and first.onnx_source == "exported"
    return where


def test_cached_export_gives_the_same_vectors_as_torch(torch_embedder: Embedder, model_cache: Path,
                                                       ) -> None:
    onnx = Embedder(cache_dir=model_cache)
    assert onnx.onnx_source == "cache" and onnx._model is None  # no torch model held
    assert onnx.model_id == torch_embedder.model_id and onnx.dim == torch_embedder.dim == 384
    assert onnx.max_tokens == torch_embedder.max_tokens == 256
    a, b = onnx.encode(TEXTS), torch_embedder.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), onnx.dim) and a.dtype == np.float32
    live = [0, 1, 2, 4]
    cosine = np.sum(a[live] * b[live], axis=1)
    assert np.all(cosine > 0.9999), cosine
    assert np.abs(a - b).max() < 1e-3
    # batch composition does not change a vector (padding is masked out)
    single = np.vstack([onnx.encode([t]) for t in TEXTS])
    assert np.abs(single - a).max() < 1e-4


def test_in_memory_export_matches_too(torch_embedder: Embedder) -> None:
    onnx = shared_embedder()
    assert onnx.runtime == "onnx"
    a, b = onnx.encode(TEXTS[:3]), torch_embedder.encode(TEXTS[:3])
    assert np.all(np.sum(a * b, axis=1) > 0.9999)


def test_token_counts_match_the_hugging_face_tokenizer(torch_embedder: Embedder, model_cache: Path,
                                                       ) -> None:
    onnx = Embedder(cache_dir=model_cache)
    for text in [*TEXTS, "pembrolizumab", "hello world", "a\n\nb\tc", "x" * 5000]:
        assert onnx.count_tokens(text) == torch_embedder.count_tokens(text), text[:30]


def _copy_cache(model_cache: Path, tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "models"
    shutil.copytree(model_cache, target)
    return target, cache_entry(target, EXPECTED_SHA256)


def test_a_tampered_export_is_refused_and_exported_again(model_cache: Path, tmp_path: Path) -> None:
    where, entry = _copy_cache(model_cache, tmp_path)
    data = bytearray((entry / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (entry / ONNX_FILE).write_bytes(bytes(data))
    layout = read_layout(default_model_path())
    assert layout is not None
    assert load_cached(where, layout, EXPECTED_SHA256, 1) is None
    again = Embedder(cache_dir=where)
    assert again.onnx_source == "exported"  # a fresh export replaced the damaged one
    assert load_cached(where, layout, EXPECTED_SHA256, 1) is not None


def test_manifest_for_other_weights_or_a_wrong_probe_is_a_miss(model_cache: Path, tmp_path: Path) -> None:
    where, entry = _copy_cache(model_cache, tmp_path)
    layout = read_layout(default_model_path())
    assert layout is not None
    manifest = json.loads((entry / MANIFEST_FILE).read_text())
    other = dict(manifest, weights_sha256="0" * 64)
    (entry / MANIFEST_FILE).write_text(json.dumps(other))
    assert load_cached(where, layout, EXPECTED_SHA256, 1) is None
    wrong_probe = dict(manifest, probe=[-x for x in manifest["probe"]])
    (entry / MANIFEST_FILE).write_text(json.dumps(wrong_probe))
    assert load_cached(where, layout, EXPECTED_SHA256, 1) is None
    (entry / MANIFEST_FILE).write_text("{not json")
    assert load_cached(where, layout, EXPECTED_SHA256, 1) is None
    (entry / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert load_cached(where, layout, EXPECTED_SHA256, 1) is not None


def test_changed_tokenizer_file_is_a_miss(model_cache: Path, tmp_path: Path) -> None:
    where, _ = _copy_cache(model_cache, tmp_path)
    model = tmp_path / "model"
    shutil.copytree(default_model_path(), model)
    layout = read_layout(model)
    assert layout is not None and load_cached(where, layout, EXPECTED_SHA256, 1) is not None
    tok = json.loads((model / "tokenizer.json").read_text())
    tok["normalizer"]["lowercase"] = False
    (model / "tokenizer.json").write_text(json.dumps(tok))
    assert load_cached(where, layout, EXPECTED_SHA256, 1) is None


def test_cache_files_are_private(model_cache: Path) -> None:
    entry = cache_entry(model_cache, EXPECTED_SHA256)
    assert (entry.stat().st_mode & 0o077) == 0
    for name in (ONNX_FILE, MANIFEST_FILE):
        assert ((entry / name).stat().st_mode & 0o077) == 0


def test_unknown_runtime_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Embedder(runtime="tensorrt")


def _layout_dir(tmp_path: Path, modules: list[str], pooling: dict, lower: bool = False) -> Path:
    d = tmp_path / "m"
    (d / "1_Pooling").mkdir(parents=True)
    (d / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": "1_Pooling" if t == "Pooling" else "",
          "type": f"sentence_transformers.models.{t}"} for i, t in enumerate(modules)]))
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 8, **pooling}))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": lower}))
    (d / "tokenizer.json").write_text("{}")
    return d


@pytest.mark.parametrize(("modules", "pooling", "lower", "supported"), [
    (["Transformer", "Pooling", "Normalize"], {"pooling_mode_mean_tokens": True}, False, True),
    (["Transformer", "Pooling"], {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False},
     False, True),
    (["Transformer", "Pooling"], {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
     False, False),
    (["Transformer", "Pooling"], {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
     False, False),
    (["Transformer", "Pooling"], {"pooling_mode": "mean"}, False, True),
    (["Transformer", "Pooling"], {"pooling_mode": "cls"}, False, False),
    (["Transformer", "Pooling", "Dense"], {"pooling_mode_mean_tokens": True}, False, False),
    (["Pooling"], {"pooling_mode_mean_tokens": True}, False, False),
    (["Transformer", "Pooling"], {"pooling_mode_mean_tokens": True}, True, False),  # lower-cases outside
])
def test_only_mean_pooling_layouts_run_on_onnx(tmp_path: Path, modules: list[str], pooling: dict,
                                               lower: bool, supported: bool) -> None:
    layout = read_layout(_layout_dir(tmp_path, modules, pooling, lower))
    assert (layout is not None) == supported
    if layout is not None:
        assert layout.dim == 8 and layout.max_tokens == 128


def test_bundled_layout() -> None:
    layout = read_layout(default_model_path())
    assert layout is not None and layout.dim == 384 and layout.max_tokens == 256 and layout.normalize
    assert onnx_session.read_layout(Path("/nonexistent")) is None
