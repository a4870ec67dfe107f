"""The verified sentence-transformers model run by ONNX Runtime (fp32): same vectors, no torch.

Two halves, so that the normal path never imports torch, transformers or
sentence-transformers:

- ``export_to_cache`` (torch): once per set of weights, the model already
  loaded after its sha256 check is exported to ONNX and written, with a
  manifest, to ``<cache dir>/onnx/<sha256 of the weights>/``. The manifest
  pins the sha256 of the ONNX file and of the tokenizer and configuration
  files it was exported with, and holds a probe vector computed by torch.
- ``load_cached`` (onnxruntime and ``tokenizers`` only): every later start
  reads that directory back, checks every sha256 in the manifest and that
  the probe text still gives torch's vector, then runs the model. Any
  mismatch is a miss (logged with a reason code), never an error: the
  caller exports again.

Supported: a Transformer followed by mean pooling and optional normalisation
(all-MiniLM-L6-v2 and most sentence-transformers models), read from the
model directory's ``modules.json``. For anything else ``read_layout`` returns
None and the caller stays on torch. ``build_session`` keeps the older
in-memory export (no cache directory given).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.logging import event

log = logging.getLogger(__name__)

FORMAT = 1
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
# files of a sentence-transformers directory whose content shapes the vectors besides the weights
PINNED_FILES = (TOKENIZER_FILE, "config.json", "modules.json", "sentence_bert_config.json",
                "1_Pooling/config.json")
PROBE_TEXT = "Assessment: grade 2 immune-related colitis; budesonide started. Plan: TSH in 6 weeks."
PROBE_MIN_COSINE = 0.9999
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# One run of the model gets texts of similar length (sorted by tokens) up to this many padded
# tokens: short chunks go in large batches, long ones in small (per-run overhead vs padding).
# Single-threaded CPU seconds per token on 2 cores: flat from 192 to 512, +7% at 768, worse
# above (cache); 256 gives the parallel runs below more batches to share.
TOKEN_BUDGET = 256


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelLayout:
    """What the torch-free path needs from a sentence-transformers model directory."""

    directory: Path
    dim: int
    max_tokens: int
    normalize: bool


def read_layout(model_dir: Path) -> ModelLayout | None:
    """Transformer + mean pooling (+ Normalize) read from the files, or None (stays on torch)."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if len(types) < 2 or types[0] != "Transformer" or types[1] != "Pooling" \
                or any(t != "Normalize" for t in types[2:]):
            return None
        pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        if "pooling_mode" in pooling:  # sentence-transformers >= 5: one mode by name
            if pooling["pooling_mode"] not in ("mean", ["mean"]):
                return None
        elif not pooling.get("pooling_mode_mean_tokens") or any(
                v for k, v in pooling.items()
                if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"):
            return None
        bert = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
        if bert.get("do_lower_case"):  # sentence-transformers lower-cases outside the tokenizer
            return None
        if not (model_dir / TOKENIZER_FILE).is_file():
            return None
        dim = int(pooling.get("word_embedding_dimension") or pooling.get("embedding_dimension") or 0)
        max_tokens = int(bert.get("max_seq_length") or 0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    if dim < 1 or max_tokens < 8:
        return None
    return ModelLayout(model_dir, dim, max_tokens, normalize=len(types) > 2)


class OnnxSession:
    """Token ids → mean-pooled vectors, like SentenceTransformer.encode (the caller normalises).

    Thread-safe: ``InferenceSession.run`` is, and the two tokenizers are configured once
    (one counts without truncation, the other pads and truncates) and never changed.

    The app opens it with ``num_threads`` intra-op threads and ``workers=1``: batches run one
    after another, each on every core. ``workers > 1`` runs batches in parallel instead, on a
    session opened with one thread (``_open(model, 1)``): on 2 shared cores that used 10 to 20%
    fewer CPU seconds for bulk embedding, but a query is one batch, and on one thread its
    embedding took 8.3 instead of 6.0 ms (query p95 11.4 ms against the 10 ms target, idle
    ``make bench``), so the app keeps the intra-op threads.
    """

    def __init__(self, session: Any, tokenizer_json: str, dim: int, max_tokens: int,
                 workers: int = 1) -> None:
        from tokenizers import Tokenizer

        self._session = session
        self.workers = max(1, int(workers))
        names = {i.name for i in session.get_inputs()}
        self._inputs = [n for n in INPUT_NAMES if n in names]
        self.dim = dim
        self.max_tokens = max_tokens
        self._counter = Tokenizer.from_str(tokenizer_json)
        self._counter.no_truncation()
        self._counter.no_padding()
        self._encoder = Tokenizer.from_str(tokenizer_json)
        self._encoder.enable_truncation(max_length=max_tokens)
        self._encoder.no_padding()  # batches are padded here, after sorting by length
        pad_id = self._encoder.token_to_id("[PAD]")
        self._pad_id = 0 if pad_id is None else pad_id

    def count_tokens(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._counter.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str], *, batch_size: int, token_budget: int = TOKEN_BUDGET,
               ) -> np.ndarray:
        """Mean-pooled vectors. Texts are tokenised once, sorted by length and run in batches
        of at most ``batch_size`` rows and ``token_budget`` padded tokens (at least one row)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        encodings = self._encoder.encode_batch([t.strip() for t in texts])
        lengths = [len(e.ids) for e in encodings]
        order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
        batches: list[list[int]] = []
        start = 0
        while start < len(order):
            end = start + 1  # sorted ascending: the last row of a batch is its longest
            while end < len(order) and end - start < batch_size \
                    and (end - start + 1) * lengths[order[end]] <= token_budget:
                end += 1
            batches.append(order[start:end])
            start = end

        def run(rows: list[int]) -> None:
            width = max(1, lengths[rows[-1]])
            ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            types = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                e = encodings[i]
                ids[r, :lengths[i]] = e.ids
                mask[r, :lengths[i]] = e.attention_mask
                types[r, :lengths[i]] = e.type_ids
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            hidden = self._session.run(None, {n: feed[n] for n in self._inputs})[0]
            weights = mask.astype(np.float32)[..., None]
            out[rows] = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)

        workers = min(self.workers, len(batches))
        if workers <= 1:
            for rows in batches:
                run(rows)
        else:  # the longest batches first, so that the last one to finish is short
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnx-encode") as pool:
                for _ in pool.map(run, reversed(batches)):
                    pass
        return out


def _open(model: bytes | str, num_threads: int = 1) -> Any:
    """A session running each batch on ``num_threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(num_threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: on a shared machine (or several sessions
    # encoding at once) spinning threads steal the cores the running ones need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _export_bytes(model: Any) -> bytes:
    """The loaded SentenceTransformer's transformer as ONNX (last hidden state). Needs torch."""
    import torch

    transformer = model[0]
    auto_model = transformer.auto_model.eval()
    tokenizer = transformer.tokenizer
    names = [n for n in INPUT_NAMES if n in tokenizer.model_input_names]
    sample = tokenizer(["a b"], return_tensors="pt")

    class _Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = auto_model

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Hidden(), tuple(sample[n] for n in names), buffer, input_names=names,
            output_names=["hidden"], opset_version=17, dynamo=False,
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]})
    return buffer.getvalue()


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def build_session(model: Any, layout: ModelLayout, num_threads: int) -> OnnxSession | None:
    """Export ``model`` (a loaded SentenceTransformer) to ONNX in memory and open it, or None."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        event(log, "embeddings.onnx_unavailable", code="onnxruntime_missing")
        return None
    try:
        session = _open(_export_bytes(model), num_threads)
    except Exception as exc:  # noqa: BLE001 - any export failure: stay on torch, say so
        event(log, "embeddings.onnx_unavailable", code="export_failed", error_code=type(exc).__name__)
        return None
    tokenizer_json = (layout.directory / TOKENIZER_FILE).read_text(encoding="utf-8")
    return OnnxSession(session, tokenizer_json, layout.dim, layout.max_tokens, workers=1)


def cache_entry(cache_dir: Path, weights_sha256: str) -> Path:
    return Path(cache_dir) / "onnx" / weights_sha256


def export_to_cache(model: Any, layout: ModelLayout, weights_sha256: str, cache_dir: Path,
                    ) -> Path | None:
    """Write ``model`` as ONNX with its manifest under the cache; None when the export fails.

    Written into a private temporary directory first and renamed into place, so a
    reader never sees half an entry; when another process won the race, its entry is kept.
    """
    entry = cache_entry(cache_dir, weights_sha256)
    entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=entry.parent))
    try:
        (tmp / ONNX_FILE).write_bytes(_export_bytes(model))
        pinned = {}
        for name in PINNED_FILES:
            source = layout.directory / name
            if source.is_file():
                pinned[name] = file_sha256(source)
        probe = model.encode([PROBE_TEXT], convert_to_numpy=True, normalize_embeddings=True,
                             show_progress_bar=False)[0]
        import onnxruntime
        import torch

        manifest = {
            "format": FORMAT, "weights_sha256": weights_sha256,
            "onnx_sha256": file_sha256(tmp / ONNX_FILE), "files_sha256": pinned,
            "dim": layout.dim, "max_tokens": layout.max_tokens,
            "probe": [round(float(x), 7) for x in probe],
            "exported_with": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, sort_keys=True), encoding="utf-8")
        for path in tmp.iterdir():
            os.chmod(path, 0o600)
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)  # a stale or damaged entry (load_cached refused it)
        try:
            os.replace(tmp, entry)
        except OSError:  # another process wrote the entry meanwhile: keep theirs
            pass
    except Exception as exc:  # noqa: BLE001 - no cache entry; the caller stays in memory or on torch
        event(log, "embeddings.onnx_export_failed", error_code=type(exc).__name__)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    event(log, "embeddings.onnx_exported")
    return entry


def load_cached(cache_dir: Path, layout: ModelLayout, weights_sha256: str, num_threads: int,
                ) -> OnnxSession | None:
    """The cached ONNX model for these verified weights, or None (a miss, with a reason code)."""
    entry = cache_entry(cache_dir, weights_sha256)

    def miss(code: str) -> None:
        event(log, "embeddings.onnx_cache_miss", code=code)

    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        miss("absent")
        return None
    try:
        if manifest.get("format") != FORMAT or manifest.get("weights_sha256") != weights_sha256:
            miss("other_model")
            return None
        if int(manifest["dim"]) != layout.dim or int(manifest["max_tokens"]) != layout.max_tokens:
            miss("other_layout")
            return None
        pinned = manifest["files_sha256"]
        for name in PINNED_FILES:
            source = layout.directory / name
            if (source.is_file() and pinned.get(name) != file_sha256(source)) or \
                    (not source.is_file() and name in pinned):
                miss("model_files_changed")
                return None
        onnx_path = entry / ONNX_FILE
        model_bytes = onnx_path.read_bytes()
        if hashlib.sha256(model_bytes).hexdigest() != manifest["onnx_sha256"]:
            miss("onnx_sha256_mismatch")
            return None
        probe = np.asarray(manifest["probe"], dtype=np.float64)
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        miss("malformed")
        return None
    try:
        session = OnnxSession(_open(model_bytes, num_threads),
                              (layout.directory / TOKENIZER_FILE).read_text(encoding="utf-8"),
                              layout.dim, layout.max_tokens, workers=1)
    except ImportError:
        miss("onnxruntime_missing")
        return None
    except Exception as exc:  # noqa: BLE001 - an unreadable model is a miss: export again
        miss("unloadable")
        event(log, "embeddings.onnx_cache_unloadable", error_code=type(exc).__name__)
        return None
    got = _unit(session.encode([PROBE_TEXT], batch_size=1)[0])
    if probe.shape != got.shape or float(got @ _unit(probe)) < PROBE_MIN_COSINE:
        miss("probe_mismatch")
        return None
    return session
