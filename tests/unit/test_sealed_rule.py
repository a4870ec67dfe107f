"""The sealed splits stay sealed: no engine code, vocabulary, rule file, test or benchmark names
them (eval_corpora/irae/README.md, "The sealed rule"). They are scored only by `python -m app eval
--data <dir>` at the end, by hand. Once scored, a split is spent (development data) and leaves
this list: irAE `sealed` and `sealed2`, and `synthea-sealed`, are spent."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEALED = ("synthea-sealed3",)
SOURCES = ("app", "tests", "benchmarks")
SUFFIXES = {".py", ".yaml", ".yml", ".json", ".txt"}


def test_no_code_rule_or_test_names_a_sealed_split() -> None:
    offenders = []
    for top in SOURCES:
        for path in (ROOT / top).rglob("*"):
            if path.suffix not in SUFFIXES or path == Path(__file__).resolve() or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in SEALED if name in text]
    assert offenders == []


def test_the_sealed_splits_exist_to_be_scored() -> None:
    assert (ROOT / "eval_corpora" / "synthea-sealed3" / "gold" / "questions.json").is_file()
