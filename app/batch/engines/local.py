"""``--engine local``: the screen in worker processes over the cores of this machine.

``concurrent.futures.ProcessPoolExecutor`` (``forkserver`` start method, so the workers do not
inherit the driver's threads and sockets); each worker builds one ``Screener`` (its backend and
policy) and keeps it. Work is submitted while results come back, at most ``4 × workers`` items
in flight, so memory stays flat whatever the cohort size. ``workers=0`` screens in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from app.batch.screen import Screener

_SCREENER: Screener | None = None
# one thread per worker process: the workers already fill the cores, and BLAS/OpenMP thread pools in
# every worker oversubscribed a 2-core machine so badly that a 1,000-note batch stalled for minutes
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "TOKENIZERS_PARALLELISM": "false"}


def _init(secret: bytes, task: str, backend: str, role_policy: str | None) -> None:
    global _SCREENER  # noqa: PLW0603 - one screener per worker process
    _SCREENER = Screener(secret, task, backend, role_policy)


def _screen(sealed: str) -> str:
    assert _SCREENER is not None
    return _SCREENER(sealed)


def work_lines(work_file: Path) -> Iterator[str]:
    with work_file.open(encoding="ascii") as fh:
        for line in fh:
            if line.strip():
                yield line.strip()


class LocalEngine:
    name = "local"

    def __init__(self, *, secret: bytes, task: str, backend: str, role_policy: str | None,
                 workers: int | None = None) -> None:
        self.args = (secret, task, backend, role_policy)
        self.workers = (os.cpu_count() or 1) if workers is None else workers

    def run(self, work_file: Path, *, total: int) -> Iterator[str]:
        if self.workers <= 0:
            screener = Screener(*self.args)
            for line in work_lines(work_file):
                yield screener(line)
            return
        for key, value in SINGLE_THREAD_ENV.items():
            os.environ.setdefault(key, value)  # inherited by the forkserver and its workers
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["app.batch.engines.warm"])  # the NLP pipeline, built once
        limit = 4 * self.workers
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init,
                                 initargs=self.args) as pool:
            pending: set[Future[str]] = set()
            for line in work_lines(work_file):
                pending.add(pool.submit(_screen, line))
                if len(pending) >= limit:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield fut.result()
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
