"""Shared helpers: compose the real config (as the CLI does) and shrink it for tests.

The suite runs on two pytest-xdist workers (``-n 2 --dist loadfile`` in pyproject.toml; ``-n 0``
runs it in one process). Each worker gets its share of the cores as torch threads, and the
shared finished run (``tiny_run``) is made once for all workers.
"""

import os
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from hydra import compose, initialize_config_dir

from selfreward.config import register_configs

CONF = Path(__file__).resolve().parent.parent / "conf"

register_configs()

# Two workers with torch's default of one thread per core would each start as many threads as
# the machine has cores, and spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

# Smaller than experiment=smoke: enough for every stage to do real work in seconds.
TINY = [
    "experiment=smoke",
    "iterations=1",
    "data.world.n_ift=300",
    "data.world.n_self_instruct=40",
    "data.world.n_eft=300",
    "data.world.n_eval_prompts=16",
    "data.world.n_judge_eval=8",
    "prompts.n_requests=24",
    "training.sft.epochs=5",
]


# The overrides of the shared finished run (tiny_run): a test composes these plus its own.
TINY_RUN = [*TINY, "iterations=2", "threads=1", "experiment_name=tiny"]


def compose_config(overrides=()):
    """The config the CLI would build from these overrides (without Hydra's run dir)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One real run with two iterations (M1, M2, M3) for tests that only read artifacts, at
    ``<tmp>/runs/tiny/seed0``, made once: under xdist the first worker to need it makes it in the
    workers' common temporary folder while the others wait on a lock. One torch thread is faster
    for this tiny model on a busy 2-core machine; the process-wide setting is restored afterwards."""
    import selfreward.loop as loop

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # each worker's basetemp is a folder of the session's one
    path = root / "shared" / "runs" / "tiny" / "seed0"
    finished = root / "shared" / "tiny_run.done"
    with FileLock(str(root / "tiny_run.lock")):
        if not finished.is_file():
            threads = torch.get_num_threads()
            try:
                loop.run(compose_config(TINY_RUN), path)
            finally:
                torch.set_num_threads(threads)
            finished.touch()
    return path


@pytest.fixture
def tiny_config():
    return lambda *overrides: compose_config([*TINY, *overrides])
