"""Stages under ``accelerate launch`` with several processes (2 CPU processes, gloo, here).

One launch of ``conf/accelerate/ddp.yml`` with 2 processes runs, through ``python -m
selfreward.stages``'s ``main``: pairs and DPO on the judgments of the shared 1-process run, and
candidates and judgments (sharded generation) on its prompts, then an SFT and greedy generation.
It checks that the run completes, that only the first process writes (every file once), that
DPO's NLL-only shortcut and SFT in length buckets train as TRL does in the same launch, that
gradients summed through shared memory are gloo's to the last bit, and what
matches one process: pairs byte for byte (that stage does not depend on the process count); DPO
(plain, batches that split evenly) and SFT weights up to float rounding; greedy generation exactly
(gathered in the requests' order). Sampled candidates and judgments use per-process seeds, so they
are other samples than one process draws: their shape and order are checked, not their text.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import compose_config
from safetensors.torch import load_file

from selfreward import distributed, stages
from selfreward.cli import free_port  # two suites (or workers) on one machine do not collide
from selfreward.rundir import read_json, read_jsonl
from selfreward.training import train_sft

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "conf/accelerate/ddp.yml"),
          "--num_processes", "2", "--main_process_port", str(free_port())]

# The start of each driver below: every file move into the run folders (rundir writes a temporary
# file, then renames it into place) is recorded in <out>/<name>.rank<R>, per process.
COUNT_WRITES = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path

    from selfreward import distributed

    def count_writes(out, roots, name):
        roots, replace = tuple(str(Path(p).resolve()) for p in roots), os.replace

        def counted(src, dst):
            if str(Path(dst).resolve()).startswith(roots):
                with open(Path(out) / f"{name}.rank{distributed.rank()}", "a") as f:
                    f.write(str(dst) + "\\n")
            return replace(src, dst)

        os.replace = counted
''')

# Run in each process of the launch: the stages through the CLI's main, file moves counted.
DRIVER = COUNT_WRITES + textwrap.dedent('''
    from selfreward import stages

    # Each call of the shared-memory gradient hook (training.ddp_shared_memory) counted.
    hook_calls = [0]
    _hook = distributed.SharedMemoryAllReduce.hook

    def counted_hook(self, state, bucket):
        hook_calls[0] += 1
        return _hook(self, state, bucket)

    distributed.SharedMemoryAllReduce.hook = counted_hook

    out = Path(sys.argv[1])
    runs = sys.argv[2:5]
    count_writes(out, runs, "writes")
    for spec in sys.argv[5:]:
        run, stage, t = spec.split(":")
        stages.main([stage, "--run-dir", run, "--t", t])

    # SFT on 64 seed examples, 2 epochs of 2 steps of 32 (the run's training.sft.batch_size).
    from selfreward.rundir import read_jsonl
    from selfreward.training import train_sft

    run = Path(runs[0])
    cfg = stages.load_config(run)
    cfg.training.sft.epochs = 2
    examples = [{"prompt": r["prompt"], "completion": r["response"]} for r in read_jsonl(run / "data" / "ift.jsonl")]
    calls = [hook_calls[0]]
    train_sft(str(run / "m1" / "model"), examples[:64], out / "sft" / "model", cfg, seed=5)
    calls.append(hook_calls[0])
    cfg.training.ddp_shared_memory = False  # the same through gloo
    train_sft(str(run / "m1" / "model"), examples[:64], out / "sft_gloo" / "model", cfg, seed=5)
    calls.append(hook_calls[0])
    cfg.training.ddp_shared_memory = True
    cfg.training.sft.length_buckets = 2  # the same, each process's batch in two passes by length
    train_sft(str(run / "m1" / "model"), examples[:64], out / "sft_buckets" / "model", cfg, seed=5)
    if distributed.is_main():
        (out / "hook_calls.json").write_text(json.dumps(calls))

    # DPO (NLL weight 6, reference precomputed) on 12 of the run's pairs and 4 rows with the chosen
    # answer on both sides (judge anchors), with the NLL-only shortcut and without. Batches of 4
    # a process: some with such rows on one process and none on the other.
    from selfreward.training import train_dpo

    pairs = read_jsonl(run / "m2" / "pairs.jsonl")[:12]
    rows = pairs + [{**p, "rejected": p["chosen"]} for p in pairs[:4]]
    for shortcut in (True, False):
        cfg = stages.load_config(run)
        cfg.training.dpo.update(sft_weight=6.0, batch_size=8, epochs=2, precompute_ref_log_probs=True,
                                nll_only_shortcut=shortcut)
        train_dpo(str(run / "m1" / "model"), str(run / "m1" / "model"), rows, out / f"anchors{shortcut}" / "model",
                  cfg, seed=3)

    # Greedy generation and continuation log-probs, sharded and not, with M1.
    from selfreward.generation import Sampling
    from selfreward.loop import _Models

    engine = _Models(stages.load_config(run)).get(str(run / "m1" / "model"))
    prompts = [r["prompt"] for r in read_jsonl(run / "data" / "eval_prompts.jsonl")][:12]
    greedy = Sampling(temperature=0.0, max_new_tokens=16)
    alone = engine.generate(prompts, greedy)
    alone_lp = engine.continuation_logprobs(prompts, ["Score: "] * len(prompts), ["1", "2", "3"])
    with distributed.parallel():
        together = engine.generate(prompts, greedy)
        together_lp = engine.continuation_logprobs(prompts, ["Score: "] * len(prompts), ["1", "2", "3"])
    if distributed.is_main():
        (out / "greedy.json").write_text(json.dumps({
            "world": distributed.world_size(), "same_texts": alone == together,
            "same_finished": [[getattr(t, "finished") for t in o] for o in alone] ==
                             [[getattr(t, "finished") for t in o] for o in together],
            "max_logprob_diff": max(abs(a - b) for x, y in zip(alone_lp, together_lp) for a, b in zip(x, y)),
        }))
''')


def _copy(tiny_run, run, m2_files):
    run.mkdir()
    shutil.copy(tiny_run / "config.yaml", run)
    for folder in ("data", "m0", "m1"):
        shutil.copytree(tiny_run / folder, run / folder)
    (run / "m2").mkdir()
    for name in m2_files:
        shutil.copy(tiny_run / "m2" / name, run / "m2" / name)


def _stripped(info):
    return {k: v for k, v in info.items() if k != "seconds"}


def _weights(folder):
    return load_file(folder / "model.safetensors")


def _close(one, two, start, atol):
    """The largest difference between two trained models, and that it is below ``atol`` (the
    updates themselves are about 1e-4 to 1e-2)."""
    assert one.keys() == two.keys()
    assert max((one[k] - start[k]).abs().max().item() for k in one) > max(1e-4, 10 * atol)  # they trained
    return max((one[k] - two[k]).abs().max().item() for k in one) < atol


def test_two_processes_write_once_and_match_one_process_where_they_should(tiny_run, tmp_path):
    # a: pairs and DPO from the 1-process run's judgments. DPO as plain DPO (the NLL term is a
    # token mean per process, see the README) with batches of 4 that split the 20 pairs evenly.
    # c and one_c: the same DPO with the reference's log-probs precomputed.
    a, b, c, one, one_c = (tmp_path / name for name in ("a", "b", "c", "one", "one_c"))
    for run in (a, c, one, one_c):
        _copy(tiny_run, run, ["prompts_raw.jsonl", "prompts.jsonl", "candidates.jsonl", "judgments.jsonl",
                              "prompts.done", "candidates.done", "judgments.done",
                              *(("pairs.jsonl", "pairs.done") if run in (c, one_c) else ())])
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["training"]["dpo"].update(sft_weight=0.0, batch_size=4, precompute_ref_log_probs=run in (c, one_c))
        (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # b: candidates and judgments (sharded sampling) from its prompts.
    _copy(tiny_run, b, ["prompts_raw.jsonl", "prompts.jsonl", "prompts.done"])
    (tmp_path / "driver.py").write_text(DRIVER)
    done = subprocess.run([*LAUNCH, str(tmp_path / "driver.py"), str(tmp_path), str(a), str(b), str(c),
                           f"{a}:pairs:1", f"{a}:dpo:1", f"{c}:dpo:1", f"{b}:candidates:1", f"{b}:judgments:1"],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    # Only the first process wrote, each file once (then its marker).
    assert not (tmp_path / "writes.rank1").exists()
    moved = (tmp_path / "writes.rank0").read_text().split()
    # environment.jsonl gains a line at each stage's start, so it is rewritten once per stage run.
    assert sum(m.endswith("/environment.jsonl") for m in moved) == 5  # one per stage launched
    assert [r["entry"] for r in read_jsonl(a / "environment.jsonl")] == ["stage pairs --t 1", "stage dpo --t 1"]
    moved = [m for m in moved if not m.endswith("/environment.jsonl")]
    assert len(moved) == len(set(moved))
    for run, names in ((a, ["pairs.jsonl", "pairs.done", "model", "training_log.jsonl", "dpo.done"]),
                       (b, ["candidates.jsonl", "candidates.done", "judgments.jsonl", "judgments.done"])):
        assert {str(run / "m2" / n) for n in names} <= set(moved)
    assert not list(tmp_path.glob("*/m2/*.tmp"))

    # Pairs do not depend on the process count: the 1-process run's, byte for byte.
    loop_m2 = tiny_run / "m2"
    assert (a / "m2" / "pairs.jsonl").read_bytes() == (loop_m2 / "pairs.jsonl").read_bytes()
    assert _stripped(read_json(a / "m2" / "pairs.done")) == _stripped(read_json(loop_m2 / "pairs.done"))

    # The same training in one process (here): DPO and SFT give the same weights up to rounding.
    threads = torch.get_num_threads()
    try:
        shutil.copy(a / "m2" / "pairs.jsonl", one / "m2")
        shutil.copy(a / "m2" / "pairs.done", one / "m2")
        stages.run_stage("dpo", one, 1)
        stages.run_stage("dpo", one_c, 1)
        cfg = stages.load_config(a)
        cfg.training.sft.epochs = 2
        examples = [{"prompt": r["prompt"], "completion": r["response"]} for r in read_jsonl(a / "data" / "ift.jsonl")]
        train_sft(str(a / "m1" / "model"), examples[:64], one / "sft" / "model", cfg, seed=5)
    finally:
        torch.set_num_threads(threads)
    start = _weights(tiny_run / "m1" / "model")
    two_dpo, one_dpo = read_json(a / "m2" / "dpo.done"), read_json(one / "m2" / "dpo.done")
    assert two_dpo["steps"] == one_dpo["steps"] == 5
    assert two_dpo["train_loss"] == pytest.approx(one_dpo["train_loss"], rel=1e-5)
    assert _close(_weights(a / "m2" / "model"), _weights(one / "m2" / "model"), start, atol=1e-6)
    assert _close(_weights(c / "m2" / "model"), _weights(one_c / "m2" / "model"), start, atol=1e-6)
    assert _close(_weights(c / "m2" / "model"), _weights(a / "m2" / "model"), start, atol=1e-5)
    assert _close(_weights(tmp_path / "sft" / "model"), _weights(one / "sft" / "model"), start, atol=1e-5)
    assert _close(_weights(tmp_path / "sft_buckets" / "model"), _weights(tmp_path / "sft" / "model"), start, atol=1e-5)

    # Gradients summed through shared memory (training.ddp_shared_memory, on by default): one
    # bucket a step (4 steps), and the weights gloo's all-reduce gives, to the last bit.
    before, after_shared, after_gloo = json.loads((tmp_path / "hook_calls.json").read_text())
    assert before > 0 and after_shared - before == 4 and after_gloo == after_shared
    shared, gloo = _weights(tmp_path / "sft" / "model"), _weights(tmp_path / "sft_gloo" / "model")
    assert all(torch.equal(shared[k], gloo[k]) for k in shared)

    # TRL's metrics, each process's own in training, gathered at the log: tokens summed over the
    # processes, means over rows (each process has as many) the one process's mean.
    two_log, one_log = read_jsonl(a / "m2" / "training_log.jsonl")[-1], read_jsonl(one / "m2" / "training_log.jsonl")[-1]
    assert two_log["num_tokens"] == one_log["num_tokens"] > 0
    for key in ("rewards/chosen", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert two_log[key] == pytest.approx(one_log[key], rel=1e-4, abs=1e-6), key
    two_log, one_log = read_jsonl(tmp_path / "sft" / "training_log.jsonl")[-1], read_jsonl(one / "sft" / "training_log.jsonl")[-1]
    assert two_log["num_tokens"] == one_log["num_tokens"] > 0

    # The NLL-only shortcut under DDP: TRL's training (per process) with fewer tokens run.
    assert _close(_weights(tmp_path / "anchorsTrue" / "model"), _weights(tmp_path / "anchorsFalse" / "model"),
                  start, atol=1e-5)
    fast, full = (read_jsonl(tmp_path / f"anchors{s}" / "training_log.jsonl")[-1] for s in (True, False))
    assert fast["train_loss"] == pytest.approx(full["train_loss"], rel=1e-4)
    assert fast["num_tokens"] < full["num_tokens"]  # the anchors' rejected sides were not run

    # Sharded sampling: every prompt, in order, with its n candidates; every candidate judged, in order.
    prompts = [r["prompt"] for r in read_jsonl(b / "m2" / "prompts.jsonl")]
    candidates = read_jsonl(b / "m2" / "candidates.jsonl")
    n = stages.load_config(b).generation.n_candidates
    assert [c["prompt"] for c in candidates] == prompts
    assert all(len(c["responses"]) == len(c["finished"]) == n for c in candidates)
    judged = read_jsonl(b / "m2" / "judgments.jsonl")
    assert [(r["prompt"], r["response"]) for r in judged] == \
        [(c["prompt"], r) for c in candidates for r in c["responses"]]
    # Greedy generation gathered from 2 processes is the 1-process generation.
    greedy = json.loads((tmp_path / "greedy.json").read_text())
    assert greedy["world"] == 2 and greedy["same_texts"] and greedy["same_finished"]
    assert greedy["max_logprob_diff"] < 1e-4


def test_one_process_is_the_engine_itself_and_slices_keep_the_order():
    engine = object()
    assert distributed.world_size() == 1 and distributed.shard(engine) is engine
    assert distributed.shard_seed(123, 0, 1) == 123
    assert distributed.shard_seed(123, 0, 2) != distributed.shard_seed(123, 1, 2)
    assert distributed.shard_seed(123, 1, 2) == distributed.shard_seed(123, 1, 2)
    for count in (0, 1, 5, 6):
        parts = distributed.slices(count, 4)
        assert [i for p in parts for i in p] == list(range(count))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert distributed.batch_args(16, "x") == {"per_device_train_batch_size": 16}


def test_the_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    configs = {name: load_config_from_file(str(ROOT / "conf" / "accelerate" / f"{name}.yml"))
               for name in ("ddp", "zero3", "fsdp")}
    assert configs["ddp"].distributed_type == DistributedType.MULTI_GPU
    assert configs["fsdp"].distributed_type == DistributedType.FSDP
    assert configs["fsdp"].fsdp_config["fsdp_version"] == 2
    zero3 = configs["zero3"]
    assert zero3.distributed_type == DistributedType.DEEPSPEED
    ds = json.loads((ROOT / zero3.deepspeed_config["deepspeed_config_file"]).read_text())
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_dpo_with_precomputed_reference_log_probs_trains_like_the_reference_model(tiny_run, tmp_path):
    from selfreward.training import train_dpo

    pairs = read_jsonl(tiny_run / "m2" / "pairs.jsonl")[:16]
    m1 = str(tiny_run / "m1" / "model")
    threads = torch.get_num_threads()
    results = {}
    try:
        for precompute in (False, True):
            cfg = compose_config([*TINY_OVERRIDES, f"training.dpo.precompute_ref_log_probs={precompute}"])
            out = tmp_path / f"pre{precompute}" / "model"
            results[precompute] = train_dpo(m1, m1, pairs, out, cfg, seed=1)
            results[precompute]["weights"] = load_file(out / "model.safetensors")
    finally:
        torch.set_num_threads(threads)
    log = read_jsonl(tmp_path / "preTrue" / "training_log.jsonl")
    assert results[True]["steps"] == results[False]["steps"] > 0
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)
    start = load_file(tiny_run / "m1" / "model" / "model.safetensors")
    a, b = results[False]["weights"], results[True]["weights"]
    assert any(not torch.equal(b[k], start[k]) for k in b)  # it trained
    for k in a:  # the same reference, computed before training instead of at every step
        assert torch.allclose(a[k], b[k], atol=1e-4), k


TINY_OVERRIDES = ["experiment=smoke", "threads=1", "training.dpo.epochs=1", "training.dpo.batch_size=8"]


# The whole loop (selfreward's main) in each process of the launch, with file moves counted per process.
LOOP_DRIVER = COUNT_WRITES + textwrap.dedent('''
    from selfreward import cli

    count_writes(sys.argv[1], sys.argv[2:3], "loop_writes")
    sys.argv = ["selfreward", *sys.argv[3:]]
    cli.main()
''')


def test_the_whole_loop_runs_in_two_processes_and_resumes(tmp_path):
    from selfreward.rundir import lock_run_dir

    run = tmp_path / "run"
    (tmp_path / "loop.py").write_text(LOOP_DRIVER)
    command = [*LAUNCH, str(tmp_path / "loop.py"), str(tmp_path), str(run), "experiment=smoke", "iterations=1",
               "threads=1", "processes=2", f"hydra.run.dir={run}"]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert [r["model"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    assert (run / "m2" / "dpo.done").is_file() and (run / "m2" / "model" / "model.safetensors").is_file()
    # Only the first process wrote; both ran every stage (the candidates were sampled in two halves).
    assert not (tmp_path / "loop_writes.rank1").exists()
    assert str(run / "m2" / "candidates.jsonl") in (tmp_path / "loop_writes.rank0").read_text().split()
    assert "sample candidates [2/2]" in done.stderr
    assert [r["entry"] for r in read_jsonl(run / "environment.jsonl")] == ["selfreward"]
    # Run again: every stage is done, nothing is trained again.
    again = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    said = again.stdout + again.stderr
    assert "sample candidates" not in said and "done: M2" in said
    assert len(read_jsonl(run / "environment.jsonl")) == 2
    # A run directory another process holds stops the launch with the message (the other process
    # does not wait for it: the launcher ends it, or loop.run tells it the first one stopped).
    with lock_run_dir(run):
        held = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert held.returncode == 1
    said = held.stdout + held.stderr
    assert "is in use by another selfreward process" in said


def test_selfreward_starts_its_processes_itself_and_the_count_is_part_of_the_config(tmp_path):
    # A run directory with a comma, as a sweep's subdir has: it reaches the processes quoted.
    run = tmp_path / "runs" / "seed=0,threads=1"
    command = [sys.executable, "-m", "selfreward.cli", "experiment=smoke", "iterations=1", "threads=1",
               "training.dpo.epochs=1", f"hydra.run.dir='{run}'"]
    done = subprocess.run([*command, "processes=2"], env=ENV, capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    said = done.stdout + done.stderr
    assert "launching 2 processes" in said and "sample candidates [2/2]" in said  # split in two
    assert [r["model"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["processes"] == 2
    # The samples depend on the count: a resume with another one is another config.
    again = subprocess.run([*command, "processes=1"], env=ENV, capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert again.returncode == 2
    assert "processes: 2 -> 1" in again.stderr


def test_the_loop_refuses_a_process_count_that_is_not_its_launchs(tmp_path, monkeypatch):
    from selfreward.config import ConfigError
    from selfreward.loop import run

    with pytest.raises(ConfigError, match="processes=2 but this is one process"):
        run(compose_config(["experiment=smoke", "processes=2"]), tmp_path / "alone")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="this launch has 2 processes but processes=1; pass processes=2"):
        run(compose_config(["experiment=smoke"]), tmp_path / "launched")
    assert not any(tmp_path.iterdir())  # stopped before anything was written
