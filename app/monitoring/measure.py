"""Reproducible governance figures for docs/governance.md (``python -m app.monitoring.measure``).

- ``false-alarm``: the drift rule's false-alarm rate on a realistic baseline: the permitted notes
  of a corpus (default ``synthetic_data``), embedded with the bundled model, thresholds calibrated
  by bootstrap on them, then no-drift periods resampled from the same notes are checked.
- ``stress``: irAE F1 of the offline engine on a corpus and on each template stress transform of
  it (``app.monitoring.stress``). Run it on ``eval_corpora/irae/dev`` only, never on the sealed
  split (the sealed split is for the final figure, not for tuning); the command refuses a path
  containing ``sealed``.

Prints JSON (figures only: no text, no names).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def false_alarm(data: Path, *, period_size: int, periods: int, trials: int, embed: bool) -> dict:
    from app.monitoring import drift
    from app.monitoring.drift_store import note_records

    embedder = None
    if embed:
        from app.retrieval.embeddings import Embedder

        embedder = Embedder(None)
    started = time.monotonic()
    notes = note_records(data, embedder=embedder)
    base = drift.snapshot("baseline", notes)
    thresholds = drift.calibrate(notes, period_size=period_size, baseline=base)
    rate = drift.false_alarm_rate(notes, thresholds, period_size=period_size, periods=periods, trials=trials,
                                  base=base)
    return {"notes": len(notes), "period_size": period_size, "periods_per_trial": periods, "trials": trials,
            "embeddings": embed, "false_alarm_rate": rate, "metrics": sorted(thresholds),
            "seconds": round(time.monotonic() - started, 1)}


def stress(data: Path) -> dict:
    from app.agent.backends import get_backend
    from app.monitoring.evaluation import evaluate_irae
    from app.monitoring.stress import TRANSFORMS, transform_corpus
    from app.retrieval.embeddings import HashingEmbedder

    if "sealed" in data.resolve().parts:
        raise SystemExit("refused: the stress test runs on the dev split, never on eval_corpora/irae/sealed")
    backend = get_backend("offline")

    def score(where: Path) -> dict:
        f = evaluate_irae(backend, HashingEmbedder(), where)
        return {k: round(float(f[k]), 4) for k in ("patient_f1", "patient_precision", "patient_recall",
                                                  "event_precision", "event_recall", "grade_agreement")}

    out = {"data": str(data.relative_to(ROOT) if data.is_relative_to(ROOT) else data.name),
           "baseline": score(data), "transforms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in TRANSFORMS:
            dst = Path(tmp) / kind
            rewritten = transform_corpus(data, dst, kind)
            fig = score(dst)
            fig["notes_rewritten"] = rewritten
            fig["f1_delta_pp"] = round(100 * (fig["patient_f1"] - out["baseline"]["patient_f1"]), 1)
            fig["event_f1_delta_pp"] = round(100 * (_f1(fig) - _f1(out["baseline"])), 1)
            fig["within_3pp"] = abs(fig["f1_delta_pp"]) <= 3 and abs(fig["event_f1_delta_pp"]) <= 3
            out["transforms"][kind] = fig
    return out


def _f1(f: dict) -> float:
    p, r = f["event_precision"], f["event_recall"]
    return 2 * p * r / (p + r) if p + r else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.monitoring.measure")
    sub = ap.add_subparsers(dest="cmd", required=True)
    fa = sub.add_parser("false-alarm")
    fa.add_argument("--data", type=Path, default=ROOT / "synthetic_data" / "bundles")
    fa.add_argument("--period-size", type=int, default=25)
    fa.add_argument("--periods", type=int, default=10)
    fa.add_argument("--trials", type=int, default=20)
    fa.add_argument("--no-embed", action="store_true")
    st = sub.add_parser("stress")
    st.add_argument("--data", type=Path, default=ROOT / "eval_corpora" / "irae" / "dev")
    args = ap.parse_args(argv)
    if args.cmd == "false-alarm":
        out = false_alarm(args.data, period_size=args.period_size, periods=args.periods, trials=args.trials,
                          embed=not args.no_embed)
    else:
        out = stress(args.data)
    json.dump(out, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
