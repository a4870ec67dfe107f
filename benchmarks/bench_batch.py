"""Batch benchmark (issue 15): offline screen throughput (local processes vs local Ray), peak
RSS as the cohort grows, projected model cost per 100 notes with Message Batches + caching + hybrid.

    .venv/bin/python benchmarks/bench_batch.py all [--sizes 1000,10000,50000] [--throughput-notes 10000]

Synthetic Bulk Data NDJSON (Patient, Condition, DocumentReference with inline text) is generated
from the synthetic_data/ bundles (every note's text extracted once, PDFs included) and the
eval_corpora/synthea/ notes, varied per copy (new ids, shifted dates, a line of another note
appended, order rotated), until the wanted number of notes. Each measurement runs in a fresh child
process so its peak RSS is its own: NDJSON streamed into the encrypted spool → per-patient work
items through the role policy (``build_item``) → sealed work file → engine → sealed results
opened and checkpointed — the batch pipeline minus HTTP. Results: benchmarks/results/batch.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "batch.json"
SECRET = b"bench-batch-secret-0123456789abcdef"


# ---- synthetic NDJSON --------------------------------------------------------------------------

def _templates() -> list[tuple[dict | None, list[dict], list[tuple[dict, str]]]]:
    """(patient, conditions, [(document, text)]) per source patient, texts extracted once."""
    from app.fhir.attachments import extract_text
    from app.retrieval.bundles import BundleClient

    out = []
    files = sorted((ROOT / "synthetic_data" / "bundles").glob("pat-*.json"))
    files += sorted((ROOT / "eval_corpora" / "synthea" / "bundles").glob("*.json"))
    for f in files:
        resources = [e["resource"] for e in json.loads(f.read_text())["entry"]]
        client = BundleClient(resources)
        patient = next((r for r in resources if r["resourceType"] == "Patient"), None)
        conds = [r for r in resources if r["resourceType"] == "Condition"]
        docs = []
        for r in resources:
            if r["resourceType"] == "DocumentReference":
                text = extract_text(client, r).text  # type: ignore[arg-type]
                if text:
                    docs.append((r, text))
        if docs:
            out.append((patient, conds, docs))
    return out


def generate(dir_: Path, notes: int, seed: int = 15) -> dict:
    rng = random.Random(seed)  # noqa: S311 - synthetic data variation, not security
    templates = _templates()
    filler = [t.splitlines()[0] for _p, _c, docs in templates for _d, t in docs if t.strip()][:500]
    dir_.mkdir(parents=True, exist_ok=True)
    files = {t: (dir_ / f"{t}.ndjson").open("w") for t in ("Patient", "Condition", "DocumentReference")}
    written = patients = 0
    try:
        while written < notes:
            patient, conds, docs = templates[patients % len(templates)]
            pid = f"syn-{patients:06d}"
            patients += 1
            files["Patient"].write(json.dumps({**(patient or {"resourceType": "Patient"}), "id": pid}) + "\n")
            for i, c in enumerate(conds):
                files["Condition"].write(json.dumps({**c, "id": f"{pid}-c{i}",
                                                     "subject": {"reference": f"Patient/{pid}"}}) + "\n")
            shift = rng.randint(-2, 2)
            rot = rng.randrange(len(docs))
            for i, (doc, text) in enumerate(docs[rot:] + docs[:rot]):
                if written >= notes:
                    break
                varied = text + "\n" + rng.choice(filler)
                date = doc.get("date")
                if isinstance(date, str) and date[:4].isdigit():
                    date = f"{int(date[:4]) + shift:04d}{date[4:]}"
                new = {k: v for k, v in doc.items() if k not in ("content",)}
                new.update(id=f"{pid}-d{i}", subject={"reference": f"Patient/{pid}"}, date=date,
                           content=[{"attachment": {"contentType": "text/plain; charset=utf-8",
                                                    "data": base64.b64encode(varied.encode()).decode()}}])
                files["DocumentReference"].write(json.dumps(new) + "\n")
                written += 1
    finally:
        for fh in files.values():
            fh.close()
    return {"notes": written, "patients": patients}


# ---- one measured run (child process) ----------------------------------------------------------

def descendants() -> dict[int, tuple[float, float]]:
    """{pid: (peak RSS MB, CPU seconds)} of every process below this one (workers, Ray's daemons)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    me, out = os.getpid(), {}
    for pid in parent:
        p = pid
        while p in parent and p not in (0, 1, me):
            p = parent[p]
        if p != me or pid == me:
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            out[pid] = (hwm / 1024, cpu)
        except (OSError, IndexError, ValueError):
            continue
    return out


def run_once(ndjson_dir: Path, engine: str, workers: int) -> dict:
    from app.batch.engines import get_engine
    from app.batch.pipeline import SpoolClient, build_item
    from app.batch.screen import open_result
    from app.batch.store import Checkpoints, Spool
    from app.retrieval.bundles import BundleClient
    from app.retrieval.policy import RolePolicy
    from app.smart.scopes import Grants
    from app.store.models import Vault

    vault = Vault(SECRET)
    grants = Grants.parse("system/Patient.rs system/Condition.rs system/DocumentReference.rs system/Binary.r")
    policy = RolePolicy.default()
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    t0 = time.perf_counter()
    spool = Spool(work / "spool.sqlite", vault)
    for name in ("Patient", "Condition", "DocumentReference"):
        with (ndjson_dir / f"{name}.ndjson").open() as fh:
            for line in fh:  # streamed, one resource at a time
                spool.add(json.loads(line))
    spool.commit()
    t1 = time.perf_counter()
    nothing = BundleClient([])
    items = 0
    work_file = work / "work.ndjson"
    with work_file.open("w") as out:
        for pid in spool.patients():
            item = build_item(SpoolClient(pid, spool.resources(pid)), nothing, pid, pid, grants=grants,
                              role="clinician", policy=policy)
            out.write(vault.seal(json.dumps(item)) + "\n")
            items += 1
    t2 = time.perf_counter()
    cp = Checkpoints(work / "checkpoints.sqlite", vault)
    eng = get_engine(engine, secret=SECRET, task="irae", backend="offline", role_policy=None, workers=workers)
    notes = findings = done = 0
    seen: dict[int, tuple[float, float]] = {}
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    for sealed in eng.run(work_file, total=items):
        key, summary, _draft, _chart = open_result(vault, sealed)
        cp.screened("bench", key, key, summary, None)
        notes += summary["notes"]
        findings += bool(summary["irae_detected"])
        done += 1
        if done % 20 == 0 or done == items:
            seen.update(descendants())  # sampled while the workers are alive
    t3 = time.perf_counter()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    driver_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    worker_cpu = sum(c for _m, c in seen.values())
    cpu_s = worker_cpu + driver_cpu
    spool.remove()
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"engine": engine, "workers": workers, "patients": items, "notes_screened": notes,
            "patients_with_findings": findings, "spool_s": round(t1 - t0, 2), "items_s": round(t2 - t1, 2),
            "screen_s": round(t3 - t2, 2), "total_s": round(t3 - t0, 2),
            "screen_notes_per_hour": round(notes / (t3 - t2) * 3600),
            "end_to_end_notes_per_hour": round(notes / (t3 - t0) * 3600),
            "screen_cpu_s": round(cpu_s, 1),
            "screen_notes_per_cpu_hour": round(notes / cpu_s * 3600) if cpu_s else None,
            "projected_notes_per_hour_on_2_free_cores": round(2 * notes / cpu_s * 3600) if cpu_s else None,
            "peak_rss_driver_mb": round(self_kb / 1024, 1),
            "peak_rss_largest_worker_mb": round(max([m for m, _c in seen.values()] or [child_kb / 1024]), 1),
            "load_average_1m_after": round(os.getloadavg()[0], 2)}


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args],  # noqa: S603 - this script, our arguments capture_output=True, text=True, timeout=7200,
                         cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- projected model cost ----------------------------------------------------------------------

def projected_cost(sample_notes: int = 100) -> dict:
    """Tokens of the Message Batches requests for ``sample_notes`` notes (hybrid: candidate passages
    only; shared system prefix cached) priced from prices.yaml at the 50 % batch discount."""
    from app.agent.backends.anthropic_batch import batch_request, project_cost
    from app.agent.backends.llm import load_prices
    from app.batch.pipeline import SpoolClient, build_item
    from app.batch.screen import Screener
    from app.retrieval.bundles import BundleClient
    from app.retrieval.policy import RolePolicy
    from app.smart.scopes import Grants

    grants = Grants.parse("system/Patient.rs system/Condition.rs system/DocumentReference.rs system/Binary.r")
    price = load_prices()["claude-sonnet-5-5"]
    screener = Screener(SECRET)
    requests_, notes = [], 0
    for f in sorted((ROOT / "synthetic_data" / "bundles").glob("pat-*.json")):
        resources = [e["resource"] for e in json.loads(f.read_text())["entry"]]
        pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
        mine = [r for r in resources if r["resourceType"] in ("Patient", "Condition", "DocumentReference")]
        item = build_item(SpoolClient(pid, mine), BundleClient(resources), pid, pid, grants=grants,
                          role="clinician", policy=RolePolicy.default())
        from app.batch.screen import build_chart

        chart = build_chart(item, screener.policy)
        req = batch_request(chart, custom_id=f"cid-{len(requests_)}", model="claude-sonnet-5-5")
        requests_.append(req)
        notes += len(chart.documents)
    cost = project_cost(requests_, price)
    per_100 = cost["batch_cost_usd"] / notes * 100
    return {**cost, "notes": notes, "patients": len(requests_), "cost_per_100_notes_usd": round(per_100, 4),
            "model": "claude-sonnet-5-5", "target_per_100_notes_usd": 0.25}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["all", "gen", "run", "cost"])
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--notes", type=int, default=1000)
    ap.add_argument("--engine", default="local")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--throughput-notes", type=int, default=10000)
    args = ap.parse_args()
    if args.mode == "gen":
        print(json.dumps(generate(args.dir, args.notes)))
        return
    if args.mode == "run":
        print(json.dumps(run_once(args.dir, args.engine, args.workers)))
        return
    if args.mode == "cost":
        print(json.dumps(projected_cost(), indent=2))
        return
    base = Path(tempfile.mkdtemp(prefix="bench-batch-data-"))
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_average_1m_start": round(os.getloadavg()[0], 2),
                                 "note": "2-core machine shared with other jobs; wall figures are under that load, "
                                         "per-CPU figures are not"},
                     "memory": [], "throughput": []}

    def save() -> None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    sizes = [int(x) for x in args.sizes.split(",")]
    # order: small sizes, then the throughput pair, then the largest size (the longest run) last
    for n in [x for x in sizes if x <= args.throughput_notes]:
        d = base / f"n{n}"
        gen = child(["gen", "--dir", str(d), "--notes", str(n)])
        results["memory"].append({"notes": n, **gen, **child(["run", "--dir", str(d), "--engine", "local",
                                                              "--workers", str(args.workers)])})
        print(json.dumps(results["memory"][-1]), flush=True)
        save()
    d = base / f"n{args.throughput_notes}"
    if not d.exists():
        child(["gen", "--dir", str(d), "--notes", str(args.throughput_notes)])
    local = next((m for m in results["memory"] if m["notes"] == args.throughput_notes), None)
    results["throughput"].append(local or child(["run", "--dir", str(d), "--engine", "local",
                                                 "--workers", str(args.workers)]))
    results["throughput"].append(child(["run", "--dir", str(d), "--engine", "ray", "--workers", str(args.workers)]))
    print(json.dumps(results["throughput"][-1]), flush=True)
    save()
    for n in [x for x in sizes if x > args.throughput_notes]:
        d = base / f"n{n}"
        gen = child(["gen", "--dir", str(d), "--notes", str(n)])
        results["memory"].append({"notes": n, **gen, **child(["run", "--dir", str(d), "--engine", "local",
                                                              "--workers", str(args.workers)])})
        print(json.dumps(results["memory"][-1]), flush=True)
        save()
    try:
        results["cost"] = projected_cost()
    except ImportError as exc:
        results["cost"] = {"error": f"not measured: {exc}"}
    save()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
