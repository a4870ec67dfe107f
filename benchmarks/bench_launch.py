"""Launch → usable chart on the embedded sandbox: median of N launches (``make bench``).

Two times per launch, measured like a browser (requests following redirects):
- chart: from opening the EHR's launch link to the chart page's HTML (banner, conditions, counts);
- ready: until the index is built, i.e. drafting can start.
The first launch also pays the embedding model's load; it is reported apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import requests

from app.devstack import start_stack

PATIENTS = ["pat-onc-01", "pat-onc-02", "pat-onc-03", "pat-gen-01", "pat-gen-02", "pat-onc-04", "pat-onc-05"]


def one(stack, patient: str) -> dict:  # type: ignore[no-untyped-def]
    http = requests.Session()
    t0 = time.monotonic()
    resp = http.get(stack.launch_link(patient=patient), timeout=120)
    chart = time.monotonic() - t0
    assert resp.status_code == 200, resp.status_code
    while True:
        body = http.get(stack.app_url + "/api/index-status", timeout=30).json()
        if body["progress"]["state"] in ("ready", "failed"):
            break
        time.sleep(0.05)
    return {"patient": patient, "chart_s": round(chart, 3), "ready_s": round(time.monotonic() - t0, 3),
            "documents": body["counts"].get("read", 0), "chunks": body["chunks"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=len(PATIENTS))
    parser.add_argument("--out", default="benchmarks/results/launch.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp))
        try:
            warm = one(stack, "pat-gen-03")  # loads the embedding model
            runs = [one(stack, PATIENTS[i % len(PATIENTS)]) for i in range(args.runs)]
        finally:
            stack.stop()
    result = {"first_launch": warm, "runs": runs,
              "median_chart_s": statistics.median(r["chart_s"] for r in runs),
              "median_ready_s": statistics.median(r["ready_s"] for r in runs)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"first launch (model load): chart {warm['chart_s']} s, ready {warm['ready_s']} s")
    for r in runs:
        print(f"{r['patient']}: chart {r['chart_s']} s, index ready {r['ready_s']} s "
              f"({r['documents']} notes, {r['chunks']} chunks)")
    print(f"median over {len(runs)}: chart {result['median_chart_s']} s, ready {result['median_ready_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
