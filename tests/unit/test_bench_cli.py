"""bench_cli measures each child's CPU seconds (user + system) next to its wall clock: a child
that sleeps uses wall time but almost no CPU, a child that computes uses both."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_cli  # noqa: E402


def test_a_sleeping_child_uses_wall_time_not_cpu() -> None:
    run = bench_cli.run([sys.executable, "-c", "import time; time.sleep(0.4); print('ok')"], {})
    assert run.code == 0 and run.out.strip() == "ok"
    assert run.seconds >= 0.4
    assert run.cpu_s < 0.3  # the interpreter's start, not the sleep
    seconds, rss_mb, out, code = run  # the older 4-tuple still unpacks
    assert (seconds, out, code) == (run.seconds, run.out, run.code) and rss_mb > 1


def test_a_computing_child_is_charged_its_cpu() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"
    run = bench_cli.run([sys.executable, "-c", burn], {}, keep_stderr=True)
    assert run.code == 0 and run.err == ""
    assert run.cpu_s >= 0.5
    assert run.seconds >= 0.5


def test_ratios() -> None:
    assert bench_cli.ratio(10.0, 4.0) == 2.5
    assert bench_cli.ratio(1.0, 0.0) != bench_cli.ratio(1.0, 0.0)  # NaN when nothing was measured
