"""The CLI, end to end: `selfreward experiment=smoke` on the built-in world, with W&B offline."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selfreward.rundir import read_jsonl

REPO = Path(__file__).resolve().parent.parent
REQUIRED_KEYS = {
    "model", "judge/pairwise_accuracy", "judge/pairwise_accuracy_se", "judge/exact_match", "judge/spearman", "judge/kendall_tau",
    "judge/parse_failure_rate", "policy/oracle_accuracy", "policy/oracle_accuracy_sampled", "policy/mean_length",
    "prompts/count", "pairs/count", "pairs/tie_rate",
}
ITERATION_STAGES = ("prompts", "candidates", "judgments", "pairs", "dpo", "eval")


def selfreward(*args, cwd):
    """Run the installed console script (or the module, if the script is not on PATH)."""
    exe = shutil.which("selfreward")
    cmd = [exe] if exe else [sys.executable, "-m", "selfreward.cli"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    done = selfreward("experiment=smoke", "logger=wandb", f"hydra.run.dir={run_dir}", cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_artifacts(smoke_run):
    assert (smoke_run / "config.yaml").is_file()
    for name in ("ift", "eft", "eval_prompts", "judge_eval"):
        assert read_jsonl(smoke_run / "data" / f"{name}.jsonl")
    for model in (2, 3):
        folder = smoke_run / f"m{model}"
        for stage in ITERATION_STAGES:
            assert (folder / f"{stage}.done").is_file(), (folder, stage)
        assert (folder / "model" / "model.safetensors").is_file()
        judged = read_jsonl(folder / "judgments.jsonl")
        assert judged and all(len(j["judgments"]) == 2 and len(j["scores"]) == 2 for j in judged)  # judge.repeats=2
        assert all(isinstance(t, str) for j in judged for t in j["judgments"])  # the judge's raw text
        pairs = read_jsonl(folder / "pairs.jsonl")
        assert pairs and all(p["chosen"] != p["rejected"] and p["chosen_score"] > p["rejected_score"] for p in pairs)
        candidates = read_jsonl(folder / "candidates.jsonl")
        assert all(len(c["responses"]) == 8 for c in candidates)  # generation.n_candidates


def test_metrics(smoke_run):
    rows = read_jsonl(smoke_run / "metrics.jsonl")
    assert [r["model"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert REQUIRED_KEYS <= row.keys()
        assert 0 <= row["judge/pairwise_accuracy"] <= 1 and 0 <= row["policy/oracle_accuracy"] <= 1
    assert {"time/data_s", "time/base_s", "time/sft_s", "time/eval_s"} <= rows[0].keys()
    for row in rows[1:]:
        assert {f"time/{s}_s" for s in ITERATION_STAGES} <= row.keys()
        assert row["pairs/count"] == len(read_jsonl(smoke_run / f"m{row['model']}" / "pairs.jsonl"))


def test_weights_change_at_every_stage(smoke_run):
    folders = ["m0", "m1", "m2", "m3"]
    weights = [load_file(smoke_run / f / "model" / "model.safetensors") for f in folders]
    for before, after, name in zip(weights, weights[1:], folders[1:]):
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert len(changed) == len(before), f"{name}: only {len(changed)} of {len(before)} tensors changed"


def test_wandb_offline_run(smoke_run):
    runs = list((smoke_run / "wandb").glob("offline-run-*"))
    assert runs, "no offline W&B run was written"


def test_same_command_again_resumes_and_changes_nothing(smoke_run):
    before = (smoke_run / "metrics.jsonl").read_bytes()
    done = selfreward("experiment=smoke", f"hydra.run.dir={smoke_run}", cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (smoke_run / "metrics.jsonl").read_bytes() == before


def test_bad_input_ends_with_one_clear_line(smoke_run, tmp_path):
    done = selfreward("experiment=smoke", "training=paper", "model.name_or_path=./no/such/model", "data=files",
                      f"data.dir={smoke_run / 'data'}", f"hydra.run.dir={tmp_path / 'bad'}", cwd=REPO)
    # A bad config: checked before Hydra sets the run directory up (exit 2, nothing written).
    assert done.returncode == 2 and not (tmp_path / "bad").exists()
    assert done.stderr.strip().splitlines()[-1] == ("selfreward: error: invalid config: "
                                                    "model.name_or_path='./no/such/model': no such folder")
    typo = selfreward("judge.repeatz=3", f"hydra.run.dir={tmp_path / 'typo'}", cwd=REPO)
    assert typo.returncode != 0 and "repeatz" in typo.stderr
