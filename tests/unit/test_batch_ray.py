"""``--engine ray`` on a small local Ray cluster (started once per session; skipped, with the
reason, when Ray cannot start here): the same results as the local engine."""

from __future__ import annotations

import pytest

from app.batch.engines.local import LocalEngine
from app.batch.screen import open_result
from app.store.models import Vault
from tests.unit.test_batch_pipeline import PATIENTS, SECRET, work_file


@pytest.fixture(scope="session")
def ray_cluster():
    try:
        import ray
    except ImportError:
        pytest.skip("ray is not installed (pip install ray[data]==2.60.0)")
    try:
        if not ray.is_initialized():
            ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - any start-up failure means: cannot test Ray here
        pytest.skip(f"a local Ray cluster could not start: {type(exc).__name__}")
    yield ray
    ray.shutdown()


def test_ray_data_actor_pool_gives_the_local_results(ray_cluster, tmp_path):
    from app.batch.engines.ray import RayEngine

    pids = PATIENTS[:2]  # small: each Ray actor start imports the app (seconds on a busy machine)
    path = work_file(tmp_path, pids)
    vault = Vault(SECRET)
    ray_out = {k: s for k, s, _d, _c in (open_result(vault, r) for r in
                                         RayEngine(secret=SECRET, task="irae", backend="offline", role_policy=None,
                                                   workers=1).run(path, total=len(pids)))}
    local = {k: s for k, s, _d, _c in (open_result(vault, r) for r in
                                       LocalEngine(secret=SECRET, task="irae", backend="offline", role_policy=None,
                                                   workers=0).run(path, total=len(pids)))}
    assert ray_out == local and len(ray_out) == len(pids)
    # the driver got sealed results: nothing readable crossed the object store
    assert ray_cluster.is_initialized()
