"""Drift monitoring: input and output statistics per period against a baseline (field guide, Table 5).

A *snapshot* summarises one period (a day or a week) of notes and runs, with no note text in it:

- input: the embedding centroid, a sample of embeddings (for the classifier two-sample test and
  MMD), the top-K token distribution (KL divergence), the note-type mix, note lengths and the
  section mix;
- output: flag rate per organ, unsupported-sentence rate, escalation, refusal and override rates.

``check`` compares each period with the baseline. Every metric becomes one number per period
(a distance from the baseline, or a rate); its noise level comes from a bootstrap of the
baseline itself (pseudo-periods resampled from the baseline notes), so thresholds are
calibrated rather than guessed. The field guide's rule then applies: an alert when a metric
moves more than ``z`` (2) standard deviations from its bootstrap mean for ``consecutive`` (2)
periods in a row. Gold-set rescoring alerts on a relative F1 drop of 5 % or more.

Only aggregates leave this module: counts, rates, distances, a centroid and sampled vectors
(embeddings are not text, but they are derived from PHI: snapshots are stored encrypted at
rest by the caller and never logged). Token statistics keep hashed tokens only.

Methods follow evidently's (cosine distance of centroids, domain classifier ROC AUC with a
0.55 threshold, MMD with an RBF kernel, KL on top-K tokens); evidently itself is not a
dependency (telemetry, ~79 packages).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from app.errors import AppError

TOP_K_TOKENS = 200
SAMPLE_VECTORS = 256
CLASSIFIER_AUC_DRIFT = 0.55
Z_THRESHOLD = 2.0
CONSECUTIVE = 2
GOLD_RELATIVE_DROP = 0.05
_TOKEN = re.compile(r"[a-z][a-z0-9]{2,}")


class DriftError(AppError):
    code = "drift_error"


@dataclass
class NoteRecord:
    """What drift needs of one note: no text leaves the caller except through these aggregates."""

    text: str
    note_type: str | None
    sections: tuple[str, ...] = ()
    embedding: Sequence[float] | None = None


@dataclass
class Snapshot:
    period: str
    notes: int
    centroid: list[float] | None
    vectors: list[list[float]]
    tokens: dict[str, float]  # hashed token -> share among the period's top-K tokens
    note_types: dict[str, float]
    sections: dict[str, float]
    length_mean: float
    length_sd: float
    lengths: list[int]
    outputs: dict[str, float] = field(default_factory=dict)  # flag_rate:<organ>, unsupported_rate, ...
    gold_f1: float | None = None
    model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Snapshot:
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as exc:
            raise DriftError("The drift snapshot is malformed.", code="drift_snapshot_invalid") from exc


def _hash_token(tok: str) -> str:
    return hashlib.sha256(tok.encode()).hexdigest()[:12]


def _shares(counter: Counter) -> dict[str, float]:
    total = sum(counter.values())
    return {k: v / total for k, v in sorted(counter.items())} if total else {}


def token_counts(texts: Iterable[str]) -> Counter:
    """Document frequency of (hashed) tokens: each note counts a token once, so one very long
    note cannot dominate the period's distribution."""
    c: Counter = Counter()
    for t in texts:
        c.update({_hash_token(w) for w in _TOKEN.findall(t.lower())})
    return c


def output_rates(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Rates over a period's runs (persisted run rows): status shares, flag rate per organ,
    unsupported-sentence rate, override rate (rejected or edited beyond the threshold)."""
    n = len(runs)
    if not n:
        return {}
    out: dict[str, float] = {}
    status = Counter(str(r.get("status", "")) for r in runs)
    out["escalation_rate"] = status.get("escalated", 0) / n
    out["failure_rate"] = (status.get("failed", 0) + status.get("loop_detected", 0)
                           + status.get("limit_exceeded", 0)) / n
    out["refusal_rate"] = sum(1 for r in runs if r.get("answer_found") is False) / n
    sentences = sum(int(r.get("sentences", 0) or 0) for r in runs)
    unsupported = sum(int(r.get("unsupported", 0) or 0) for r in runs)
    out["unsupported_rate"] = unsupported / sentences if sentences else 0.0
    organs = Counter(o for r in runs for o in set(r.get("organs") or ()))
    for organ, k in sorted(organs.items()):
        out[f"flag_rate:{organ}"] = k / n
    reviewed = [r for r in runs if r.get("review")]
    if reviewed:
        out["override_rate"] = sum(1 for r in reviewed if r.get("review") in ("rejected", "overridden")) / len(reviewed)
    return out


def snapshot(period: str, notes: Sequence[NoteRecord], *, runs: Sequence[Mapping[str, Any]] = (),
             gold_f1: float | None = None, model: str | None = None, seed: int = 0) -> Snapshot:
    """Aggregate one period. ``notes`` carry text only for counting; the snapshot holds none."""
    if not notes:
        raise DriftError("A drift snapshot needs at least one note.", code="drift_no_notes")
    rng = np.random.default_rng(seed)
    vecs = [np.asarray(n.embedding, dtype=np.float32) for n in notes if n.embedding is not None]
    centroid = None
    sample: list[list[float]] = []
    if vecs:
        mat = np.vstack(vecs)
        centroid = mat.mean(axis=0).tolist()
        idx = rng.choice(len(mat), size=min(SAMPLE_VECTORS, len(mat)), replace=False)
        sample = mat[np.sort(idx)].round(5).tolist()
    top = token_counts(n.text for n in notes).most_common(TOP_K_TOKENS)
    lengths = [len(n.text) for n in notes]
    return Snapshot(
        period=period, notes=len(notes), centroid=centroid, vectors=sample,
        tokens=_shares(Counter(dict(top))),
        note_types=_shares(Counter(n.note_type or "unknown" for n in notes)),
        sections=_shares(Counter(s for n in notes for s in set(n.sections))),
        length_mean=float(np.mean(lengths)), length_sd=float(np.std(lengths)), lengths=lengths,
        outputs=output_rates(runs), gold_f1=gold_f1, model=model,
    )


# -- distances -------------------------------------------------------------------------------

def cosine_distance(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    if a is None or b is None:
        return 0.0
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return 0.0 if denom == 0 else float(1.0 - va.dot(vb) / denom)


def kl_divergence(p: Mapping[str, float], q: Mapping[str, float], eps: float = 1e-4) -> float:
    """KL(p || q) over the union of keys, both smoothed with ``eps`` and renormalised."""
    keys = sorted(set(p) | set(q))
    if not keys:
        return 0.0
    pv = np.array([p.get(k, 0.0) + eps for k in keys])
    qv = np.array([q.get(k, 0.0) + eps for k in keys])
    pv, qv = pv / pv.sum(), qv / qv.sum()
    return float(np.sum(pv * np.log(pv / qv)))


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def classifier_auc(base: Sequence[Sequence[float]], cur: Sequence[Sequence[float]], seed: int = 0) -> float:
    """Domain-classifier two-sample test: cross-validated ROC AUC of telling current from baseline.
    0.5 means indistinguishable; evidently's default drift threshold is 0.55."""
    if len(base) < 5 or len(cur) < 5:
        return 0.5
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.vstack([np.asarray(base, dtype=np.float64), np.asarray(cur, dtype=np.float64)])
    y = np.r_[np.zeros(len(base)), np.ones(len(cur))]
    folds = min(5, len(base), len(cur))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(LogisticRegression(max_iter=500, C=1.0), x, y, cv=cv, method="predict_proba")[:, 1]
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, proba))


def mmd_rbf(base: Sequence[Sequence[float]], cur: Sequence[Sequence[float]]) -> float:
    """Squared maximum mean discrepancy with an RBF kernel (median-heuristic bandwidth)."""
    if not len(base) or not len(cur):
        return 0.0
    from scipy.spatial.distance import cdist

    x, y = np.asarray(base, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    z = np.vstack([x, y])
    d = cdist(z, z, "sqeuclidean")
    med = float(np.median(d[d > 0])) if np.any(d > 0) else 1.0
    k = np.exp(-d / med)
    n = len(x)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())


def length_ks(base: Sequence[int], cur: Sequence[int]) -> float:
    from scipy.stats import ks_2samp

    if not base or not cur:
        return 0.0
    return float(ks_2samp(base, cur).statistic)


def metrics(base: Snapshot, cur: Snapshot, *, classifier: bool = True) -> dict[str, float]:
    """One number per metric: how far ``cur`` is from ``base`` (or the rate itself for outputs)."""
    out = {
        "embedding_centroid_cosine": cosine_distance(base.centroid, cur.centroid),
        "token_kl": kl_divergence(cur.tokens, base.tokens),
        "note_type_tv": total_variation(cur.note_types, base.note_types),
        "section_tv": total_variation(cur.sections, base.sections),
        "length_mean": cur.length_mean,
        "length_ks": length_ks(base.lengths, cur.lengths),
    }
    if base.vectors and cur.vectors:
        out["embedding_mmd"] = mmd_rbf(base.vectors, cur.vectors)
        if classifier:
            out["embedding_classifier_auc"] = classifier_auc(base.vectors, cur.vectors)
    out.update({f"output:{k}": v for k, v in cur.outputs.items()})
    return out


# -- calibration and the alert rule ------------------------------------------------------------

@dataclass(frozen=True)
class Threshold:
    mean: float
    sd: float

    def z(self, value: float) -> float:
        if self.sd <= 1e-12:
            return 0.0 if abs(value - self.mean) <= 1e-12 else math.copysign(math.inf, value - self.mean)
        return (value - self.mean) / self.sd


def calibrate(baseline_notes: Sequence[NoteRecord], *, period_size: int, rounds: int = 40, seed: int = 0,
              baseline: Snapshot | None = None) -> dict[str, Threshold]:
    """Bootstrap thresholds on the baseline alone: in each of ``rounds`` rounds the baseline notes are
    shuffled, ``period_size`` of them form a pseudo-period and the rest a pseudo-baseline, and every
    metric is computed between the two. That is the metric's spread when nothing has drifted: a
    new period drawn from the baseline's distribution, compared with notes it does not contain.
    The classifier test is not bootstrapped (its null is AUC 0.5; it has a fixed threshold)."""
    if len(baseline_notes) < period_size + 2:
        raise DriftError("Calibration needs more baseline notes than one period holds.",
                         code="drift_baseline_too_small")
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        order = rng.permutation(len(baseline_notes))
        pseudo = snapshot(f"boot-{r}", [baseline_notes[i] for i in order[:period_size]], seed=seed + r + 1)
        rest = snapshot(f"rest-{r}", [baseline_notes[i] for i in order[period_size:]], seed=seed + r + 1)
        for k, v in metrics(rest, pseudo, classifier=False).items():
            samples.setdefault(k, []).append(v)
    return {k: Threshold(float(np.mean(v)), float(np.std(v, ddof=1))) for k, v in samples.items()}


# Distances from the baseline alert only when they grow; levels (mean length, output rates) both ways.
TWO_SIDED = frozenset({"length_mean"})


def _exceeds(metric: str, th: Threshold | None, value: float, z: float) -> bool:
    if th is None:
        return False
    score = th.z(value)
    return abs(score) > z if (metric in TWO_SIDED or metric.startswith("output:")) else score > z


@dataclass
class Alert:
    metric: str
    periods: list[str]
    values: list[float]
    rule: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(base: Snapshot, periods: Sequence[Snapshot], thresholds: Mapping[str, Threshold], *,
          z: float = Z_THRESHOLD, consecutive: int = CONSECUTIVE, auc_threshold: float = CLASSIFIER_AUC_DRIFT,
          gold_drop: float = GOLD_RELATIVE_DROP, output_baseline: Mapping[str, Threshold] | None = None,
          ) -> dict[str, Any]:
    """Score every period against the baseline and apply the alert rules.

    - a distance with a bootstrap threshold alerts when z > ``z`` (mean length: |z|) for ``consecutive``
      periods in a row;
    - the classifier AUC alerts above ``auc_threshold`` for ``consecutive`` periods;
    - output rates alert by the same z rule against ``output_baseline`` (mean/s.d. of earlier periods);
    - gold-set F1 alerts at once on a relative drop of ``gold_drop`` or more from the baseline's.
    """
    rows = [{"period": p.period, "metrics": metrics(base, p)} for p in periods]
    flags: dict[str, list[bool]] = {}
    for row in rows:
        for k, v in row["metrics"].items():
            if k == "embedding_classifier_auc":
                hit = v > auc_threshold
            elif k.startswith("output:"):
                hit = _exceeds(k, (output_baseline or {}).get(k[len("output:"):]), v, z)
            else:
                hit = _exceeds(k, thresholds.get(k), v, z)
            flags.setdefault(k, []).append(hit)
        row["flags"] = sorted(k for k, v in flags.items() if v[-1])
    alerts: list[Alert] = []
    for k, hits in flags.items():
        run = 0
        for i, hit in enumerate(hits):
            run = run + 1 if hit else 0
            if run == consecutive:
                span = rows[i - consecutive + 1:i + 1]
                alerts.append(Alert(k, [r["period"] for r in span], [r["metrics"][k] for r in span],
                                    f"{'AUC>' + str(auc_threshold) if k == 'embedding_classifier_auc' else f'|z|>{z}'}"
                                    f" for {consecutive} consecutive periods"))
    if base.gold_f1:
        for p in periods:
            if p.gold_f1 is not None and (base.gold_f1 - p.gold_f1) / base.gold_f1 >= gold_drop:
                alerts.append(Alert("gold_f1", [p.period], [p.gold_f1],
                                    f"relative F1 drop >= {gold_drop:.0%} from {base.gold_f1:.3f}"))
    return {"periods": rows, "alerts": [a.as_dict() for a in alerts]}


def output_thresholds(history: Sequence[Snapshot]) -> dict[str, Threshold]:
    """Mean and s.d. of each output rate over earlier (baseline) periods."""
    vals: dict[str, list[float]] = {}
    for s in history:
        for k, v in s.outputs.items():
            vals.setdefault(k, []).append(v)
    return {k: Threshold(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
            for k, v in vals.items()}


def false_alarm_rate(baseline_notes: Sequence[NoteRecord], thresholds: Mapping[str, Threshold], *,
                     period_size: int, periods: int = 20, trials: int = 10, seed: int = 1000,
                     base: Snapshot | None = None) -> float:
    """Share of trials in which ``periods`` no-drift periods (resampled from the baseline) raise any alert."""
    base = base or snapshot("baseline", baseline_notes)
    rng = np.random.default_rng(seed)
    alarms = 0
    for t in range(trials):
        snaps = []
        for p in range(periods):
            idx = rng.integers(0, len(baseline_notes), size=period_size)
            snaps.append(snapshot(f"t{t}-p{p}", [baseline_notes[i] for i in idx], seed=seed + t * periods + p))
        if check(base, snaps, thresholds)["alerts"]:
            alarms += 1
    return alarms / trials
