"""Every stage runs on its own, in a process of its own, against a run directory, and gives the
files of the loop run in one process; a stage whose input is missing names it."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file

from selfreward import stages
from selfreward.rundir import read_json, read_jsonl

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# One CPU process: the stage runs under accelerate's launcher as it would on GPUs.
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def _stage(*args, launcher=(sys.executable,)):
    """``python -m selfreward.stages ARGS`` in a new process; the info it prints."""
    done = subprocess.run([*launcher, "-m", "selfreward.stages", *args], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stripped(row):
    """A metrics row or a stage's info without wall times, which differ between any two runs."""
    return {k: v for k, v in row.items() if not k.startswith("time/") and k != "seconds"}


def test_the_stages_run_one_by_one_in_their_own_processes_give_the_loops_files(tiny_run, tmp_path):
    # M1 as the loop made it (its config, data, base model, M1 and M1's measurements) ...
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run / "config.yaml", run)
    for folder in ("data", "m0", "m1"):
        shutil.copytree(tiny_run / folder, run / folder)
    # ... then iteration 1, one process per stage; DPO under `accelerate launch`.
    infos = {name: _stage(name, "--run-dir", str(run), "--t", "1")
             for name in ("prompts", "candidates", "judgments", "pairs")}
    infos["dpo"] = _stage("dpo", "--run-dir", str(run), "--t", "1", launcher=ACCELERATE)
    row = _stage("eval", "--run-dir", str(run), "--t", "2")

    loop_m2, m2 = tiny_run / "m2", run / "m2"
    for name in ("prompts_raw.jsonl", "prompts.jsonl", "candidates.jsonl", "judgments.jsonl", "pairs.jsonl",
                 "eval.json", "eval_judge.jsonl", "eval_policy.jsonl"):
        assert (m2 / name).read_bytes() == (loop_m2 / name).read_bytes(), name
    a, b = load_file(loop_m2 / "model" / "model.safetensors"), load_file(m2 / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # What each stage reports is what its marker records, and the loop's stages recorded the same.
    for name, info in infos.items():
        assert info == read_json(m2 / f"{name}.done")
        assert _stripped(info) == _stripped(read_json(loop_m2 / f"{name}.done")), name
    assert _stripped(row) == _stripped(read_json(loop_m2 / "metrics.json"))
    assert [_stripped(r) for r in read_jsonl(run / "metrics.jsonl")] == \
        [_stripped(r) for r in read_jsonl(tiny_run / "metrics.jsonl")[:2]]
    # A finished stage is not run again: it reports its marker (in this process, whose torch
    # threads the run's threads=1 would change: restored).
    threads = torch.get_num_threads()
    try:
        assert stages.run_stage("pairs", run, 1) == infos["pairs"]
    finally:
        torch.set_num_threads(threads)


def _main(*args):
    """``stages.main`` in this process: (exit code, stderr's last line)."""
    with pytest.raises(SystemExit) as stop:
        stages.main([str(a) for a in args])
    return stop.value.code


def test_a_stage_whose_input_is_missing_names_the_file_and_the_stage_that_writes_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert _main("data", "--run-dir", run) == 2
    assert capsys.readouterr().err.strip() == (
        f"selfreward: error: {run} holds no run (no config.yaml); start one with "
        f"python -m selfreward.stages config --run-dir {run} [overrides]")
    stages.main(["config", "--run-dir", str(run), *TINY])
    assert (run / "config.yaml").is_file()

    assert _main("sft", "--run-dir", run) == 1
    assert capsys.readouterr().err.strip() == (
        f"selfreward: error: stage sft needs {run}/data, written by stage data, which has not finished in {run} "
        f"(no data/data.done); run it first: python -m selfreward.stages data --run-dir {run}")
    stages.main(["data", "--run-dir", str(run), "iterations=3"])  # a key a run may change on resume
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == read_json(run / "data" / "data.done")
    assert _main("candidates", "--run-dir", run, "--t", "1") == 1
    assert capsys.readouterr().err.strip().startswith(
        f"selfreward: error: stage candidates needs {run}/m1/model, written by stage sft, which has not finished "
        f"in {run} (no m1/sft.done); run it first: python -m selfreward.stages sft --run-dir {run}")
    assert _main("pairs", "--run-dir", run, "--t", "2") == 1
    assert capsys.readouterr().err.strip() == (
        f"selfreward: error: stage pairs needs {run}/m3/judgments.jsonl, written by stage judgments, which has not "
        f"finished in {run} (no m3/judgments.done); run it first: "
        f"python -m selfreward.stages judgments --run-dir {run} --t 2")
    assert _main("pairs", "--run-dir", run) == 1
    assert "stage pairs needs --t T" in capsys.readouterr().err
    # The run directory's config is the config: another value stops as a resumed run does.
    assert _main("data", "--run-dir", run, "judge.repeats=5") == 2
    assert "holds a run made with another config (judge.repeats: 2 -> 5)" in capsys.readouterr().err
    assert _main("rft", "--run-dir", run, "--t", "1") == 2
    assert "trains with training.objective=dpo; its training stage is dpo (or train), not rft" in \
        capsys.readouterr().err


def _dpo_arguments_per_iteration(cfg, tiny_run, tmp_path, monkeypatch, keyword: str) -> list:
    """What the loop passes to ``train_dpo`` as ``keyword`` in iterations 1 and 2 of the tiny run
    (its inputs copied, its DPO outputs left out, ``train_dpo`` replaced by a recorder)."""
    import selfreward.loop as loop

    passed = []
    monkeypatch.setattr(loop, "train_dpo", lambda *a, **k: passed.append(k[keyword]) or {"steps": 0})
    run_dir = tmp_path / "run"
    for name in ("data", "m0", "m1", "m2", "m3"):  # every input of both DPO stages, their outputs left out
        shutil.copytree(tiny_run / name, run_dir / name,
                        ignore=shutil.ignore_patterns("dpo.done", *(["model"] if name == "m3" else [])))
    loop.stage_train(cfg, run_dir, 1)
    loop.stage_train(cfg, run_dir, 2)
    return passed


def test_later_iterations_train_at_the_decayed_learning_rate(tiny_run, tmp_path, monkeypatch):
    """training.iteration_lr_decay=0.3: iteration 1 trains at the configured rate, iteration 2 at
    0.3 of it, and the factor is what reaches TRL's learning_rate."""
    from conftest import TINY_RUN, compose_config

    from selfreward import training

    cfg = compose_config([*TINY_RUN, "training.iteration_lr_decay=0.3"])
    assert [training.iteration_lr_scale(cfg.training, t) for t in (1, 2, 3)] == pytest.approx([1, 0.3, 0.09])
    args = training._trainer_args(cfg.training.dpo, cfg.training, cfg.model, tmp_path, 0, "none", "dpo", 0.3)
    assert args["learning_rate"] == pytest.approx(0.3 * cfg.training.dpo.learning_rate)
    # Under DDP: the config's gradient bucket size (the schema's 100 MB: one bucket).
    assert args["ddp_bucket_cap_mb"] == 100

    scales = _dpo_arguments_per_iteration(cfg, tiny_run, tmp_path, monkeypatch, "lr_scale")
    assert scales == pytest.approx([1.0, 0.3])


@pytest.mark.parametrize("per_iteration, expected", [("[]", [None, None]), ("[2]", [2.0, None]),
                                                      ("[1,3.5]", [1.0, 3.5])])
def test_dpo_trains_each_iterations_own_epochs(per_iteration, expected, tiny_run, tmp_path, monkeypatch):
    """training.dpo.iteration_epochs: iteration t's DPO trains the list's t-th value, iterations past
    its end training.dpo.epochs (None in ``expected``), and what the loop passes reaches TRL."""
    from conftest import TINY_RUN, compose_config

    from selfreward import training

    cfg = compose_config([*TINY_RUN, "training.dpo.epochs=5", f"training.dpo.iteration_epochs={per_iteration}"])
    expected = [5.0 if e is None else e for e in expected]
    assert [training.dpo_epochs(cfg.training.dpo, t) for t in (1, 2)] == expected
    for epochs, passed in ((2.5, 2.5), (None, 5.0)):
        args = training._trainer_args(cfg.training.dpo, cfg.training, cfg.model, tmp_path, 0, "none", "dpo",
                                      epochs=epochs)
        assert args["num_train_epochs"] == passed

    assert _dpo_arguments_per_iteration(cfg, tiny_run, tmp_path, monkeypatch, "epochs") == expected


@pytest.mark.parametrize("per_iteration, expected", [("[]", [7, 7]), ("[5]", [5, 7]), ("[5,3]", [5, 3])])
def test_each_iteration_writes_its_own_number_of_prompt_requests(per_iteration, expected, tiny_run, tmp_path,
                                                                  monkeypatch):
    """prompts.iteration_requests: iteration t's writer is asked for the list's t-th value of
    requests, iterations past its end for prompts.n_requests."""
    import selfreward.loop as loop
    from conftest import TINY_RUN, compose_config

    cfg = compose_config([*TINY_RUN, "prompts.n_requests=7", f"prompts.iteration_requests={per_iteration}"])
    assert [loop.prompt_requests(cfg, t) for t in (1, 2)] == expected

    class Writer:  # records how many requests each call holds; writes one fixed line for each
        def generate(self, requests, sampling, **kwargs):
            asked.append(len(requests))
            return [["sort: 3 1 2"] for _ in requests]

    asked = []
    monkeypatch.setattr(loop._Models, "get", lambda self, path: Writer())
    run_dir = tmp_path / "run"
    for name in ("data", "m0", "m1", "m2"):  # the writer's inputs; both rounds' prompts written again
        shutil.copytree(tiny_run / name, run_dir / name, ignore=shutil.ignore_patterns("prompts*"))
    loop.stage_prompts(cfg, run_dir, 1)
    loop.stage_prompts(cfg, run_dir, 2)
    assert asked == expected


@pytest.mark.parametrize("until, expected", [(0, [True, True]), (1, [True, False]), (2, [True, True])])
def test_dpo_groups_by_length_up_to_its_last_iteration(until, expected, tiny_run, tmp_path, monkeypatch):
    """training.dpo.group_by_length_until_iteration: iterations up to it batch DPO's rows by length,
    later ones at random (0: every iteration), and what the loop passes reaches TRL's sampler."""
    from conftest import TINY_RUN, compose_config

    from selfreward import training

    cfg = compose_config([*TINY_RUN, "training.dpo.group_by_length=true",
                          f"training.dpo.group_by_length_until_iteration={until}"])
    strategy = {grouped: training._trainer_args(cfg.training.dpo, cfg.training, cfg.model, tmp_path, 0, "none", "dpo",
                                                group_by_length=grouped)["train_sampling_strategy"]
                for grouped in (True, False, None)}
    assert strategy == {True: "group_by_length", False: "random", None: "group_by_length"}

    assert _dpo_arguments_per_iteration(cfg, tiny_run, tmp_path, monkeypatch, "group_by_length") == expected


def test_eft_replay_fine_tunes_the_trained_model_on_seed_judgments(tiny_run, tmp_path):
    """training.eft_replay_rows: after the round's DPO the model is fine-tuned on that many seed
    EFT rows, which it then writes more likely than the DPO model alone; DPO's own curve is kept."""
    from conftest import TINY_RUN, compose_config

    import selfreward.loop as loop
    from selfreward.data import load_data
    from selfreward.generation import close_engine, load_engine

    def round_one(name, overrides):
        cfg = compose_config([*TINY_RUN, *overrides])
        run_dir = tmp_path / name
        for folder in ("data", "m0", "m1", "m2"):
            shutil.copytree(tiny_run / folder, run_dir / folder,
                            ignore=shutil.ignore_patterns("dpo.done", "*_log.jsonl",
                                                          *(["model"] if folder == "m2" else [])))
        return cfg, run_dir, loop.stage_train(cfg, run_dir, 1)

    replay = ["training.eft_replay_rows=12", "training.eft_replay.learning_rate=3e-4", "training.eft_replay.epochs=4",
              "training.eft_replay.batch_size=4"]
    cfg, plain_dir, plain = round_one("plain", [])
    cfg_r, replay_dir, info = round_one("replay", replay)
    assert "eft_replay_rows" not in plain and not (plain_dir / "m2" / "eft_replay_log.jsonl").exists()
    assert info["eft_replay_rows"] == 12 and info["eft_replay_steps"] > 0
    # The marker's train_loss and training_log.jsonl stay DPO's; the replay's curve is beside them.
    assert info["train_loss"] == plain["train_loss"]
    assert any("rewards/chosen" in row for row in read_jsonl(replay_dir / "m2" / "training_log.jsonl"))
    assert read_jsonl(replay_dir / "m2" / "eft_replay_log.jsonl")[-1]["train_loss"] == info["eft_replay_loss"]

    examples = loop.eft_replay_examples(load_data(replay_dir / "data", cfg_r), cfg_r,
                                        loop.stage_seed(cfg_r.seed, 2, "eft_replay"))
    assert len(examples) == 12 and len({e["prompt"] for e in examples}) == 12

    def mean_logprob(run_dir):
        engine = load_engine(str(run_dir / "m2" / "model"), cfg.model, cfg.generation)
        try:
            total = sum(engine.continuation_logprobs([e["prompt"]], [""], [e["completion"]])[0][0] for e in examples)
        finally:
            close_engine(engine)
        return total / len(examples)

    # Measured: -6.61 against -6.88 nats a judgment (12 steps on 12 rows of a model that knows them).
    assert mean_logprob(replay_dir) > mean_logprob(plain_dir) + 0.1


def test_eft_replay_draws_distinct_rows_per_seed_and_all_of_them_when_asked_for_more(tiny_run):
    from conftest import TINY_RUN, compose_config

    import selfreward.loop as loop
    from selfreward.data import load_data

    cfg = compose_config([*TINY_RUN, "training.eft_replay_rows=5"])
    data = load_data(tiny_run / "data", cfg)
    a, b = loop.eft_replay_examples(data, cfg, 1), loop.eft_replay_examples(data, cfg, 2)
    assert len(a) == 5 and a == loop.eft_replay_examples(data, cfg, 1) and a != b
    everything = loop.eft_replay_examples(data, compose_config([*TINY_RUN, f"training.eft_replay_rows={len(data.eft) + 7}"]), 1)
    assert len(everything) == len(data.eft)


def test_self_replay_rows_are_the_rounds_kept_prompts_pair_judgments_and_chosen_answers(tmp_path):
    """training.self_replay_rows: (request -> prompt) for prompts the loop kept, from the first
    request that wrote each; (filled judge template -> first judgment) for each distinct chosen
    and rejected answer of the pairs; (prompt -> chosen) for each pair; a third of each, all of a
    kind when it has fewer."""
    from conftest import TINY_RUN, compose_config

    import selfreward.loop as loop
    from selfreward.judge import judge_message
    from selfreward.prompts import load_template
    from selfreward.rundir import write_jsonl

    out = tmp_path / "m2"
    out.mkdir()
    write_jsonl(out / "prompts_raw.jsonl", [
        {"request": "R1", "output": "sort: 3 1\nsecond line"},
        {"request": "R2", "output": "sort: 3 1"},          # the same prompt again: R1 wrote it first
        {"request": "R3", "output": "junk the filter dropped"},
        {"request": "R4", "output": "  evens: 4 5  "},
        {"request": "R5", "output": "unique: 2 2"}])
    write_jsonl(out / "prompts.jsonl", [{"prompt": "sort: 3 1"}, {"prompt": "evens: 4 5"}, {"prompt": "unique: 2 2"}])
    write_jsonl(out / "pairs.jsonl", [
        {"prompt": "sort: 3 1", "chosen": "1 3", "rejected": "3 1",
         "chosen_judgments": ["J good", "J other"], "rejected_judgments": ["J bad"]},
        {"prompt": "evens: 4 5", "chosen": "4", "rejected": "5",
         "chosen_judgments": ["J four"], "rejected_judgments": ["J five"]}])
    template = load_template(compose_config(TINY_RUN).judge.template)

    everything = loop.self_replay_examples(out, compose_config([*TINY_RUN, "training.self_replay_rows=100"]), 0)
    prompts = [{"prompt": "R1", "completion": "sort: 3 1"}, {"prompt": "R4", "completion": "evens: 4 5"},
               {"prompt": "R5", "completion": "unique: 2 2"}]
    judgments = [{"prompt": judge_message(template, "sort: 3 1", "1 3"), "completion": "J good"},
                 {"prompt": judge_message(template, "sort: 3 1", "3 1"), "completion": "J bad"},
                 {"prompt": judge_message(template, "evens: 4 5", "4"), "completion": "J four"},
                 {"prompt": judge_message(template, "evens: 4 5", "5"), "completion": "J five"}]
    answers = [{"prompt": "sort: 3 1", "completion": "1 3"}, {"prompt": "evens: 4 5", "completion": "4"}]
    assert everything == prompts + judgments + answers

    # 6 rows: 2 prompts, 2 judgments and 2 answers, drawn with the seed.
    cfg = compose_config([*TINY_RUN, "training.self_replay_rows=6"])
    drawn = [loop.self_replay_examples(out, cfg, seed) for seed in range(8)]
    assert all(len(d) == 6 and all(r in prompts for r in d[:2]) and all(r in judgments for r in d[2:4])
               and sorted(d[4:], key=str) == sorted(answers, key=str) for d in drawn)
    assert len({str(d[:4]) for d in drawn}) > 1 and drawn[0] == loop.self_replay_examples(out, cfg, 0)

    # training.self_replay_kinds: only the kinds named, an equal share each (the first named takes
    # the remainder), in the fixed draw order whatever the order named.
    some = compose_config([*TINY_RUN, "training.self_replay_rows=5", "training.self_replay_kinds=[answers,judgments]"])
    drawn = loop.self_replay_examples(out, some, 3)
    assert all(r in judgments for r in drawn[:2]) and sorted(drawn[2:], key=str) == sorted(answers, key=str)
    assert len(drawn) == 4  # answers' share is 3, but there are only 2
    only = compose_config([*TINY_RUN, "training.self_replay_rows=100", "training.self_replay_kinds=[judgments]"])
    assert loop.self_replay_examples(out, only, 0) == judgments


def test_self_replay_fine_tunes_the_trained_model_on_its_own_round(tiny_run, tmp_path):
    """After the round's DPO the model is fine-tuned on its round's own rows (with seed EFT rows
    too when both are asked for, in one SFT); the marker counts each kind."""
    from conftest import TINY_RUN, compose_config

    import selfreward.loop as loop

    run_dir = tmp_path / "run"
    for folder in ("data", "m0", "m1", "m2"):
        shutil.copytree(tiny_run / folder, run_dir / folder,
                        ignore=shutil.ignore_patterns("dpo.done", "*_log.jsonl", *(["model"] if folder == "m2" else [])))
    cfg = compose_config([*TINY_RUN, "training.self_replay_rows=6", "training.eft_replay_rows=4",
                          "training.dpo.epochs=1", "training.eft_replay.batch_size=5"])
    info = loop.stage_train(cfg, run_dir, 1)
    assert info["self_replay_rows"] == 6 and info["eft_replay_rows"] == 4
    assert info["eft_replay_steps"] == 2  # 10 rows, batches of 5, one epoch
    assert read_jsonl(run_dir / "m2" / "eft_replay_log.jsonl")[-1]["train_loss"] == info["eft_replay_loss"]


def test_prompts_writer_m1_writes_every_iterations_prompts_with_the_runs_m1(tiny_run, tmp_path):
    """prompts.writer=m1: the second iteration's prompts are written by M1 (as by a fixed writer
    given as M1's path), without M2's model."""
    from conftest import TINY_RUN, compose_config

    import selfreward.loop as loop

    def second_prompts(name, writer):
        run_dir = tmp_path / name
        for folder in ("data", "m0", "m1"):
            shutil.copytree(tiny_run / folder, run_dir / folder)
        (run_dir / "m2").mkdir()
        for name in ("prompts.jsonl", "prompts.done"):
            shutil.copy(tiny_run / "m2" / name, run_dir / "m2")
        loop.stage_prompts(compose_config([*TINY_RUN, f"prompts.writer={writer}"]), run_dir, 2)
        return read_jsonl(run_dir / "m3" / "prompts_raw.jsonl")

    assert second_prompts("m1", "m1") == second_prompts("path", tiny_run / "m1" / "model")
    with pytest.raises(loop.MissingInput, match="m2/model"):  # the current model, M2, writes by default
        second_prompts("current", "current")
