"""The normal path of ``python -m app draft`` runs on onnxruntime and ``tokenizers`` alone.

With the ONNX export already in the model cache (``APP_MODEL_CACHE_DIR``), a real draft run
in a subprocess against sekmet-fhir imports neither torch, transformers,
sentence-transformers nor scikit-learn (the test reads the process's ``sys.modules`` at exit).
A control run without the cache exports the model, and then does import torch (so the check
can fail). The summary and irAE tasks run the offline engines' medspaCy pipeline,
whose imports would pull in torch (spacy -> thinc) and scikit-learn (quickumls -> nltk); the
pipeline keeps both out (app/agent/clinical/pipeline.py), and these runs check it. The
``--help`` check is in tests/unit/test_import_budget.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "transformers", "sentence_transformers", "sklearn"}


MARK = "LOADED-MODULES "
# Runs ``python -m app ...`` and, at exit (SystemExit included), prints the top-level packages
# left in ``sys.modules``: what the process really loaded. (``-X importtime`` also lists imports
# that were attempted and refused, so it cannot tell a blocked torch from a loaded one.)
WRAPPER = (
    "import json, runpy, sys\n"
    "sys.argv = ['app', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('app', run_name='__main__', alter_sys=True)\n"
    "finally:\n"
    f"    print({MARK!r} + json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})), file=sys.stderr)\n"
)


def imported(stderr: str) -> set[str]:
    """Top-level package names the app process had loaded when it exited."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(MARK):
            return set(json.loads(line[len(MARK):]))
    raise AssertionError("the app process printed no module list")


def run_app(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WRAPPER, *args],  # noqa: S603
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def fhir_base(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from sandbox.fhirstore import SekmetProcess, load_bundles

    where = tmp_path_factory.mktemp("fhir")
    bundles = where / "bundles"
    bundles.mkdir()
    for name in ("00-practitioners.json", "pat-onc-01.json"):
        shutil.copy(ROOT / "synthetic_data" / "bundles" / name, bundles)
    server = SekmetProcess(where / "sekmet")
    server.start()
    try:
        load_bundles(server.base, bundles, where)
        yield server.base
    finally:
        server.stop()


def app_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env.update(APP_SECRET_KEY=secrets.token_hex(32), APP_DATA_DIR=str(data_dir),
               APP_LLM_BACKEND="offline", PYTHONPATH=str(ROOT))
    return env


# The offline question engine searches the index (query embedding, faiss, BM25); for this
# question it finds no candidate line, so it never starts the medspacy pipeline (see below).
RETRIEVAL_ONLY = ["--task", "question", "--question", "What immunotherapy is the patient receiving?"]


def draft_args(fhir_base: str, task: list[str] = RETRIEVAL_ONLY) -> list[str]:
    return ["--log-level", "WARNING", "draft", "--fhir-base", fhir_base, "--patient", "pat-onc-01",
            *task, "--auth", "none", "--json"]


@pytest.fixture(scope="module")
def warm_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.retrieval.embeddings import Embedder

    data = tmp_path_factory.mktemp("app")
    built = Embedder(cache_dir=data / "models")  # the export a first start writes
    assert built.onnx_source == "exported"
    return data


def test_draft_with_a_cached_export_imports_no_torch(fhir_base: str, warm_data: Path) -> None:
    done = run_app(draft_args(fhir_base), app_env(warm_data))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["status"] == "completed" and result["counts"]["allowed"] > 0
    modules = imported(done.stderr)
    assert {"onnxruntime", "tokenizers", "faiss", "bm25s"} <= modules  # the check sees real imports
    assert not modules & HEAVY, sorted(modules & HEAVY)


@pytest.mark.parametrize("task", ["summary", "irae"])
def test_clinical_engine_draft_imports_no_torch(fhir_base: str, warm_data: Path, task: str) -> None:
    done = run_app(draft_args(fhir_base, ["--task", task]), app_env(warm_data))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["status"] == "completed"
    assert not imported(done.stderr) & HEAVY, sorted(imported(done.stderr) & HEAVY)


def test_draft_without_the_export_writes_it_once(fhir_base: str, tmp_path: Path) -> None:
    data = tmp_path / "app"
    first = run_app(draft_args(fhir_base), app_env(data))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "torch" in imported(first.stderr)  # the export needs torch, once
    manifests = list((data / "models" / "onnx").glob("*/manifest.json"))
    assert len(manifests) == 1
    second = run_app(draft_args(fhir_base), app_env(data))
    assert second.returncode == 0, second.stderr[-2000:]
    assert not imported(second.stderr) & HEAVY
    assert json.loads(second.stdout)["draft"] == json.loads(first.stdout)["draft"]

