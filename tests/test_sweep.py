"""Sweeps through Hydra's submitit launcher: conf/hydra/ composes (the SLURM job it would submit is
rendered, not submitted), and a 2-seed sweep runs here with hydra/launcher=submitit_local, each
job's training under `accelerate launch` (SELFREWARD_TRAIN_LAUNCHER, set per job by Hydra)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from selfreward.config import register_configs
from selfreward.rundir import read_jsonl

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]'")
import submitit  # noqa: E402 - installed with the launcher

CONF = Path(__file__).resolve().parent.parent / "conf"
HYDRA_FILES = sorted((CONF / "hydra").rglob("*.yaml"))

register_configs()


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("path", HYDRA_FILES, ids=[str(p.relative_to(CONF)) for p in HYDRA_FILES])
def test_every_hydra_config_file_composes(path):
    group = path.parent.relative_to(CONF).as_posix()  # hydra/launcher, hydra/sweeper
    cfg = _compose([f"{group}={path.stem}"])
    assert cfg.hydra[group.split("/")[1]]._target_  # the plugin the file configures


def test_the_slurm_launcher_submits_one_job_per_seed_with_a_gpu(tmp_path, monkeypatch):
    cfg = _compose(["hydra/launcher=slurm", "hydra/sweeper=seeds", f"hydra.sweep.dir={tmp_path}",
                    "hydra.job.name=selfreward"])
    assert cfg.hydra.sweeper.params.seed == "0,1,2,3,4"
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    # submitit only looks for srun to know it is on a cluster; this one is never run.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    submitted = {}

    def map_array(executor, fn, *args):  # in place of sbatch: keep the executor and its jobs
        submitted.update(executor=executor, jobs=list(zip(*args)))
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    assert [job[0] for job in submitted["jobs"]] == [["seed=0"], ["seed=1"]]
    # The sbatch script submitit would submit for each job (its parameter names are checked by submitit).
    script = submitted["executor"]._executor._make_submission_file_text("python -u -m submitit.core._submit", "x")
    for line in ("--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1", "--cpus-per-task=8", "--time=1440",
                 "--job-name=selfreward"):
        assert f"#SBATCH {line}\n" in script, line
    assert submitted["executor"]._executor.max_num_timeout == 3  # requeued on timeout: the run resumes


def test_a_seed_sweep_runs_locally_with_submitit_and_accelerate(tmp_path):
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SELFREWARD_TRAIN_LAUNCHER", None)  # set per job by Hydra below
    small = ["experiment=smoke", "iterations=0", "data.world.n_ift=40", "data.world.n_self_instruct=8",
             "data.world.n_eft=40", "data.world.n_eval_prompts=4", "data.world.n_judge_eval=2",
             "training.sft.epochs=1", "threads=1"]
    sweep = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "-m", "selfreward.cli", "-m", "hydra/launcher=submitit_local",
                           "hydra/sweeper=seeds", "seed=0,1", *small, f"hydra.sweep.dir={sweep}",
                           f'+hydra.job.env_set.SELFREWARD_TRAIN_LAUNCHER="{shlex.join(accelerate)}"'],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.jsonl"))
    assert [p.name.rsplit("seed=", 1)[1].split(",")[0] for p in runs] == ["0", "1"]
    for seed, run in enumerate(runs):
        assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
        assert [r["model"] for r in read_jsonl(run / "metrics.jsonl")] == [1]
    assert (runs[0] / "data" / "ift.jsonl").read_text() != (runs[1] / "data" / "ift.jsonl").read_text()
    # Each job is a submitit job that ran M1's SFT under accelerate's launcher.
    jobs = sorted(sweep.glob(".submitit/*/*_log.out"))
    assert len(jobs) == 2
    for out in jobs:
        text = out.read_text() + out.with_name(out.name.replace(".out", ".err")).read_text()
        assert "stage sft in its own process: " in text and "accelerate.commands.launch" in text
        assert "Job completed successfully" in text
