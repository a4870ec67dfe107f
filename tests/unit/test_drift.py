"""Drift statistics: a shifted distribution alerts after two periods, noise does not."""

from __future__ import annotations

import numpy as np
import pytest

from app.monitoring.drift import (
    DriftError,
    NoteRecord,
    Snapshot,
    calibrate,
    check,
    classifier_auc,
    cosine_distance,
    false_alarm_rate,
    kl_divergence,
    mmd_rbf,
    output_rates,
    output_thresholds,
    snapshot,
)

WORDS_A = "fever cough dyspnea fatigue nausea rash colitis hepatitis steroid imaging follow".split()
WORDS_B = "fracture cast orthopedic splint sprain knee ankle tendon physiotherapy crutch".split()


def _notes(rng, n, *, shift=0.0, words=WORDS_A, types=("11506-3", "18842-5"), length=(40, 80)):
    out = []
    dim = 16
    mean = np.ones(dim)  # sentence embeddings share a common direction
    mean[1] += shift
    for _ in range(n):
        k = int(rng.integers(*length))
        text = " ".join(rng.choice(words, size=k))
        out.append(NoteRecord(text=text, note_type=str(rng.choice(types)), sections=("assessment", "plan"),
                              embedding=(rng.normal(size=dim) + mean).tolist()))
    return out


@pytest.fixture(scope="module")
def baseline():
    rng = np.random.default_rng(7)
    notes = _notes(rng, 300)
    base = snapshot("baseline", notes)
    th = calibrate(notes, period_size=60, rounds=30, baseline=base)
    return notes, base, th


def test_snapshot_keeps_no_text(baseline):
    notes, base, _ = baseline
    blob = repr(base.as_dict())
    assert "colitis" not in blob and "fever" not in blob
    assert base.notes == 300 and abs(sum(base.note_types.values()) - 1) < 1e-9
    assert Snapshot.from_dict(base.as_dict()).tokens == base.tokens


def test_shift_alerts_after_two_periods_not_one(baseline):
    _, base, th = baseline
    rng = np.random.default_rng(11)
    periods = [snapshot("w1", _notes(rng, 60)),
               snapshot("w2", _notes(rng, 60, shift=3.0, words=WORDS_B, types=("34111-5",))),
               snapshot("w3", _notes(rng, 60, shift=3.0, words=WORDS_B, types=("34111-5",)))]
    one = check(base, periods[:2], th)
    assert not one["alerts"], "a single shifted period must not alert"
    assert "embedding_centroid_cosine" in one["periods"][1]["flags"]
    two = check(base, periods, th)
    metrics = {a["metric"] for a in two["alerts"]}
    assert {"embedding_centroid_cosine", "token_kl", "note_type_tv", "embedding_classifier_auc"} <= metrics
    assert all(a["periods"] == ["w2", "w3"] for a in two["alerts"])


def test_noise_does_not_alert(baseline):
    notes, base, th = baseline
    rate = false_alarm_rate(notes, th, period_size=60, periods=6, trials=5, base=base)
    assert rate <= 0.4


def test_interrupted_shift_does_not_alert(baseline):
    _, base, th = baseline
    rng = np.random.default_rng(5)
    shifted = dict(shift=3.0, words=WORDS_B, types=("34111-5",))
    periods = [snapshot("w1", _notes(rng, 60, **shifted)), snapshot("w2", _notes(rng, 60)),
               snapshot("w3", _notes(rng, 60, **shifted))]
    assert not [a for a in check(base, periods, th)["alerts"] if a["metric"] == "embedding_centroid_cosine"]


def test_gold_f1_relative_drop():
    rng = np.random.default_rng(3)
    notes = _notes(rng, 40)
    base = snapshot("b", notes, gold_f1=0.90)
    ok = snapshot("p1", notes, gold_f1=0.86)   # 4.4 % relative drop
    bad = snapshot("p2", notes, gold_f1=0.85)  # 5.6 %
    alerts = check(base, [ok, bad], {})["alerts"]
    assert [a["periods"] for a in alerts if a["metric"] == "gold_f1"] == [["p2"]]


def test_output_rates_and_their_alert():
    runs_ok = [{"status": "completed", "sentences": 10, "unsupported": 0, "organs": ["hepatic"],
                "review": "approved"}] * 9 + [{"status": "escalated", "sentences": 5, "unsupported": 1,
                                               "review": "rejected"}]
    rates = output_rates(runs_ok)
    assert rates["escalation_rate"] == pytest.approx(0.1)
    assert rates["flag_rate:hepatic"] == pytest.approx(0.9)
    assert rates["override_rate"] == pytest.approx(0.1)
    assert rates["unsupported_rate"] == pytest.approx(1 / 95)
    rng = np.random.default_rng(1)
    notes = _notes(rng, 30)
    history = [snapshot(f"h{i}", notes, runs=runs_ok[: 9] + [dict(runs_ok[-1], status=s)])
               for i, s in enumerate(["escalated", "completed", "escalated", "completed"])]
    oth = output_thresholds(history)
    bad_runs = [dict(r, status="escalated") for r in runs_ok]
    periods = [snapshot("x1", notes, runs=bad_runs), snapshot("x2", notes, runs=bad_runs)]
    alerts = check(history[0], periods, {}, output_baseline=oth)["alerts"]
    assert "output:escalation_rate" in {a["metric"] for a in alerts}


def test_distances_behave():
    assert cosine_distance([1, 0], [1, 0]) == pytest.approx(0.0)
    assert cosine_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert kl_divergence({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == pytest.approx(0.0, abs=1e-9)
    assert kl_divergence({"a": 0.9, "b": 0.1}, {"a": 0.1, "b": 0.9}) > 1.0
    rng = np.random.default_rng(0)
    same = mmd_rbf(rng.normal(size=(50, 4)), rng.normal(size=(50, 4)))
    moved = mmd_rbf(rng.normal(size=(50, 4)), rng.normal(size=(50, 4)) + 2)
    assert moved > 5 * max(same, 1e-3)
    assert classifier_auc(rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) + 2) > 0.9


def test_empty_period_is_a_clear_error():
    with pytest.raises(DriftError) as err:
        snapshot("empty", [])
    assert err.value.code == "drift_no_notes"
