"""Benchmark: what one review edit costs (issue 11, finding 5). A script, not a test.

    .venv/bin/python benchmarks/bench_review_edit.py [--json benchmarks/results/review_edit.json]

Measures, on this machine:
- a 1 MB edit through ``POST /api/drafts/<run>/review`` (the request limit is 1 MB, the edit
  cap ``MAX_EDIT_CHARS``): the time to the answer (413 ``edit_too_large`` or Flask's own 413);
- edit distance and line diff at the cap (a full rewrite of a cap-sized text: the worst case
  the cap allows), with rapidfuzz;
- rapidfuzz on a 1 MB text against a 3,000-character draft (what the cap refuses, for scale);
- the previous pure-Python Levenshtein plus difflib on a 5,000-character edit (for comparison;
  the security test measured 33 s for 20,000 characters through the API).
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.review.workflow import MAX_EDIT_CHARS, edit_distance  # noqa: E402
from app.web.review import line_diff  # noqa: E402

WORDS = "patient reports fatigue cough rash plan continue therapy stable improved".split()


def text(n: int, seed: int) -> str:
    rng = random.Random(seed)  # noqa: S311 - benchmark text, not a secret
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(WORDS) + ("\n" if rng.random() < 0.1 else " ")
        out.append(w)
        size += len(w)
    return "".join(out)[:n]


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return round(time.perf_counter() - t, 4)


def old_levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def through_the_api() -> dict:
    from app import create_app
    from app.retrieval.bundles import BundleClient
    from app.retrieval.embeddings import HashingEmbedder
    from app.retrieval.indexer import load_chart
    from app.retrieval.policy import RolePolicy
    from app.smart.scopes import Grants
    from app.web.state import LaunchState

    bundle = Path(__file__).resolve().parents[1] / "synthetic_data" / "bundles" / "pat-gen-05.json"
    resources = [e["resource"] for e in json.loads(bundle.read_text())["entry"]]
    chart = load_chart(BundleClient(resources), "pat-gen-05", grants=Grants.parse("patient/*.read"),
                       role="clinician", policy=RolePolicy.default(), embedder=HashingEmbedder())
    app = create_app({"testing": True, "data_dir": tempfile.mkdtemp(),
                      "allowed_iss": "https://ehr.test/fhir"})
    client = app.test_client()
    app.extensions["smart_draft_web"].put(LaunchState(
        sid="s1", fhir_base="https://ehr.test/fhir", config=None, patient_id="pat-gen-05",
        user_reference=None, role="clinician", unauthenticated=True, chart=chart))
    with client.session_transaction() as sess:
        sess["sid"] = "s1"
    page = client.get("/").get_data(as_text=True)
    headers = {"X-CSRF-Token": page.split('name="csrf-token" content="')[1].split('"')[0]}
    run = client.post("/api/drafts", json={"task": "summary", "write": False}, headers=headers)
    run_id = run.get_json()["run"]["run_id"]
    out = {}
    for label, size in (("edit_1mb", 999_000), ("edit_over_cap", MAX_EDIT_CHARS + 1)):
        body = {"action": "edit", "text": text(size, 1)}
        t = time.perf_counter()
        resp = client.post(f"/api/drafts/{run_id}/review", json=body, headers=headers)
        out[label] = {"status": resp.status_code, "seconds": round(time.perf_counter() - t, 4),
                      "code": (resp.get_json() or {}).get("error", {}).get("code")
                      if resp.is_json else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    a, b = text(MAX_EDIT_CHARS, 1), text(MAX_EDIT_CHARS, 2)
    draft, big = text(3000, 3), text(1_000_000, 4)
    small_a, small_b = text(5000, 5), text(5000, 6)
    results = {
        "max_edit_chars": MAX_EDIT_CHARS,
        "api": through_the_api(),
        "rapidfuzz_distance_at_cap_s": timed(lambda: edit_distance(a, b)),
        "rapidfuzz_line_diff_at_cap_s": timed(lambda: line_diff(a, b)),
        "rapidfuzz_distance_1mb_vs_3k_draft_s": timed(lambda: edit_distance(draft, big)),
        "old_python_levenshtein_plus_difflib_5k_s": timed(lambda: (
            old_levenshtein(small_a, small_b),
            list(difflib.ndiff(small_a.splitlines(), small_b.splitlines())))),
        "rapidfuzz_5k_s": timed(lambda: (edit_distance(small_a, small_b), line_diff(small_a, small_b))),
    }
    print(json.dumps(results, indent=2))  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
