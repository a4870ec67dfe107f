"""``--engine ray``: the screen on Ray Data (pinned ``ray==2.60.0``).

The work file (one sealed item per line) is read with ``ray.data.read_text``; ``map_batches``
runs ``RayScreener``, a callable class, on an actor pool (each actor builds its backend once);
results stream back to the driver, which alone talks to the FHIR server and the outbox.

Ray's API has moved across releases (``compute=ActorPoolStrategy`` → ``concurrency=``), so the
calls are wrapped here (``_map_batches``) and nowhere else. ``RAY_ADDRESS`` selects a cluster
(KubeRay: deploy/ray/); without it a local Ray is started with ``workers`` CPUs. The work file
must be readable by the workers (shared storage on a cluster); items and results stay sealed
(Fernet), and the key reaches the actors as a constructor argument.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.errors import NotBuiltError

RAY_VERSION = "2.60.0"
BATCH_SIZE = 8
# Each actor asks for a fraction of a CPU and the read tasks for a quarter, so N actors on N CPUs
# leave room for the reads: with whole CPUs per actor the reads never get scheduled (a deadlock).
ACTOR_CPUS = 0.75
READ_CPUS = 0.25


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise NotBuiltError(f"--engine ray needs ray=={RAY_VERSION} (pip install ray[data]=={RAY_VERSION}).",
                            code="ray_missing") from None
    return ray


def ensure_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> Any:
    """Connect to ``RAY_ADDRESS`` or start a local Ray once; returns the module."""
    ray = _ray()
    from app.batch.engines.local import SINGLE_THREAD_ENV

    for key, value in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(key, value)  # local Ray workers inherit the driver's environment
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if address is None:
            kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1,
                          object_store_memory=object_store_memory or 100 * 1024 * 1024)
        ray.init(address=address, **kwargs)
    return ray


class RayScreener:
    """``map_batches`` callable class: a batch ``{"text": [sealed items]}`` → ``{"result": [...]}``."""

    def __init__(self, secret: bytes, task: str, backend: str, role_policy: str | None) -> None:
        from app.batch.screen import Screener

        self.screener = Screener(secret, task, backend, role_policy)

    def __call__(self, batch: dict) -> dict:
        return {"result": [self.screener(str(line)) for line in batch["text"]]}


def _map_batches(ds: Any, fn: type, *, kwargs: dict, size: int) -> Any:
    try:
        return ds.map_batches(fn, fn_constructor_kwargs=kwargs, batch_size=BATCH_SIZE, batch_format="numpy",
                              concurrency=size, num_cpus=ACTOR_CPUS)
    except TypeError:  # releases before concurrency= took an ActorPoolStrategy
        from ray.data import ActorPoolStrategy

        return ds.map_batches(fn, fn_constructor_kwargs=kwargs, batch_size=BATCH_SIZE, batch_format="numpy",
                              compute=ActorPoolStrategy(size=size), num_cpus=ACTOR_CPUS)


class RayEngine:
    name = "ray"

    def __init__(self, *, secret: bytes, task: str, backend: str, role_policy: str | None,
                 workers: int | None = None) -> None:
        self.kwargs = {"secret": secret, "task": task, "backend": backend, "role_policy": role_policy}
        self.workers = workers or os.cpu_count() or 1

    def run(self, work_file: Path, *, total: int) -> Iterator[str]:
        if total == 0:
            return
        ray = ensure_ray(self.workers)
        ds = ray.data.read_text(str(work_file), num_cpus=READ_CPUS)
        ds = _map_batches(ds, RayScreener, kwargs=self.kwargs, size=self.workers)
        for row in ds.iter_rows():
            yield str(row["result"])
