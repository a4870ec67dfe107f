"""``python -m app --help`` stays light: no web framework, database, numerics or model runtime.

An import check, not a timed test (timing depends on the machine; ``benchmarks/bench_cli.py``
measures it). The subprocess reports the packages in its ``sys.modules`` at exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_draft_imports import HEAVY, WRAPPER, imported

ROOT = Path(__file__).resolve().parents[2]
HELP_FORBIDDEN = HEAVY | {"flask", "sqlalchemy", "numpy", "onnxruntime", "tokenizers", "faiss",
                          "bm25s", "pydantic", "pydantic_settings", "fhir", "requests", "spacy",
                          "medspacy", "cryptography", "alembic"}


def help_run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    return subprocess.run([sys.executable, "-c", WRAPPER, *args, "--help"],  # noqa: S603
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_help_imports_nothing_heavy() -> None:
    done = help_run()
    assert done.returncode == 0 and "draft" in done.stdout
    modules = imported(done.stderr)
    assert {"click", "app"} <= modules  # the check sees real imports
    assert not modules & HELP_FORBIDDEN, sorted(modules & HELP_FORBIDDEN)


def test_subcommand_help_is_light_too() -> None:
    done = help_run("draft")
    assert done.returncode == 0 and "--fhir-base" in done.stdout
    assert not imported(done.stderr) & HELP_FORBIDDEN
