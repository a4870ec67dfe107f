"""Engines run the screen over a work file of sealed items and yield sealed results (any order).

- ``local``: worker processes over the cores (``concurrent.futures.ProcessPoolExecutor``);
- ``ray``: Ray Data (``read_text`` of the work file, ``map_batches`` with a callable class on an
  actor pool), on a local Ray or the cluster ``RAY_ADDRESS`` points at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from app.errors import ConfigError


class Engine(Protocol):
    name: str

    def run(self, work_file: Path, *, total: int) -> Iterator[str]: ...


def get_engine(name: str, *, secret: bytes, task: str, backend: str, role_policy: str | None,
               workers: int | None = None) -> Engine:
    if name == "local":
        from app.batch.engines.local import LocalEngine

        return LocalEngine(secret=secret, task=task, backend=backend, role_policy=role_policy, workers=workers)
    if name == "ray":
        from app.batch.engines.ray import RayEngine

        return RayEngine(secret=secret, task=task, backend=backend, role_policy=role_policy, workers=workers)
    raise ConfigError(f"Unknown engine {name!r}; choose local or ray.")
