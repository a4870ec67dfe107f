"""Smoke test of benchmarks/bench_index.py --quick (model-free, a few seconds): it runs and writes
the JSON keys the issue asks for; the numbers themselves come from `make bench`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_index.py"


def test_quick_benchmark_writes_its_json(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_index", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "latest.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("cold_speedup", "warm_speedup", "query_p95_ms", "peak_rss_mb", "notes", "chunks"):
        assert key in result, key
    assert result["notes"] > 0 and result["chunks"] >= result["notes"]
    assert result["launch"]["warm_embedded"] == 0  # the re-launch embedded nothing
    assert result["launch"]["cold_embedded"] + result["launch"]["cold_from_cache"] == result["chunks"]
    assert result["launch"]["cold_embedded"] > 0  # cold starts from an empty cache file
    assert "launch_synthetic_data" in result and "synthetic_data_queries" in result
    assert result["dense_index"][0]["hnsw_recall_at_5"] > 0.5
    assert "launch→ready" in capsys.readouterr().out
