"""Faults met while a run works end with one clear line and never cost a finished stage: a loss
that goes NaN, a write that fails, an iteration without pairs. (Bad input at the door:
tests/test_bad_inputs.py.)"""

import errno

import pytest

import selfreward.loop as loop
from selfreward import rundir
from selfreward.rundir import SelfRewardError, read_jsonl
from selfreward.training import train_dpo, train_sft
from selfreward.data.builtin import (
    WorldConfig,
    build_base_model,
    build_tokenizer,
    build_world,
    tokenizer_corpus,
    write_base_model,
)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A small untrained model folder, with the tokenizer of a small world."""
    root = tmp_path_factory.mktemp("base")
    build_world(WorldConfig(n_ift=60, n_self_instruct=0, n_eft=0, n_eval_prompts=4, n_judge_eval=2), root / "world")
    tokenizer = build_tokenizer(tokenizer_corpus(root / "world"), vocab_size=128)
    write_base_model(root / "model", tokenizer, build_base_model(
        tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=128))
    return root / "model"


# A learning rate that overflows the weights within a few Adam steps: the loss becomes NaN.
EXPLODE = ["training.sft.learning_rate=1e30", "training.dpo.learning_rate=1e30", "training.sft.batch_size=8",
           "training.dpo.batch_size=4"]


def test_sft_with_a_nan_loss_stops_naming_the_step_and_saves_nothing(tiny_config, base_model, tmp_path):
    examples = [{"prompt": f"sort: {i % 10} 1 2", "completion": "1 2"} for i in range(40)]
    with pytest.raises(SelfRewardError, match=r"^sft: the training loss is not finite at step ([2-9]) of 25 "
                                              r"\(gradient norm nan\); the stage stopped and saved nothing"):
        train_sft(str(base_model), examples, tmp_path / "m1" / "model", tiny_config(*EXPLODE), seed=0)
    assert not (tmp_path / "m1" / "model").exists()
    # The same data at a sane learning rate trains: the stop is the loss's doing, not the data's.
    train_sft(str(base_model), examples, tmp_path / "m1" / "model", tiny_config("training.sft.epochs=1"), seed=0)
    assert (tmp_path / "m1" / "model" / "model.safetensors").is_file()


def test_dpo_with_a_nan_loss_stops_naming_the_step_and_the_previous_model_stays(tiny_config, base_model, tmp_path):
    pairs = [{"prompt": f"sort: {i % 10} 1 2", "chosen": "1 2", "rejected": "2 1"} for i in range(16)]
    before = (base_model / "model.safetensors").read_bytes()
    with pytest.raises(SelfRewardError, match=r"^dpo-m2: the training loss is not finite at step [2-4] of 4 "
                                              r"\(gradient norm nan\)"):
        train_dpo(str(base_model), str(base_model), pairs, tmp_path / "m2" / "model", tiny_config(*EXPLODE), seed=0,
                  run_name="dpo-m2")
    assert not (tmp_path / "m2" / "model").exists()
    assert (base_model / "model.safetensors").read_bytes() == before


def test_a_nan_loss_leaves_the_stage_unfinished_in_the_loop(tiny_config, tmp_path):
    cfg = tiny_config(*EXPLODE)
    with pytest.raises(SelfRewardError, match=r"^sft: the training loss is not finite at step \d+ of \d+"):
        loop.run(cfg, tmp_path)
    assert (tmp_path / "m0" / "base.done").is_file()
    assert not (tmp_path / "m1" / "sft.done").exists() and not (tmp_path / "m1" / "model").exists()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_failed_write_leaves_the_stage_unfinished_and_resume_redoes_it(tiny_config, tmp_path, monkeypatch):
    """A full disk while the data stage writes: one line, no marker, no temporary file; the same
    command afterwards redoes the stage and ends with the files of a run that never failed."""
    cfg = tiny_config()
    real_fsync = rundir.os.fsync
    calls = []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) == 3:  # config.yaml and environment.jsonl are written, then the data stage's first file
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    stop = RuntimeError("past the data stage")

    def stop_after_data(*args):
        raise stop

    monkeypatch.setattr(rundir.os, "fsync", full_disk)
    monkeypatch.setattr(loop, "base_model_path", stop_after_data)
    run = tmp_path / "run"
    with pytest.raises(SelfRewardError, match=r"^cannot write .*/data/\w+\.jsonl: No space left on device; the stage "
                                              r"writing it is unfinished and is redone when the run is resumed$"):
        loop.run(cfg, run)
    assert not (run / "data" / "data.done").exists() and not list(run.rglob("*.tmp"))
    monkeypatch.setattr(rundir.os, "fsync", real_fsync)
    with pytest.raises(RuntimeError, match="past the data stage"):
        loop.run(cfg, run)
    clean = tmp_path / "clean"
    with pytest.raises(RuntimeError, match="past the data stage"):
        loop.run(cfg, clean)
    assert (run / "data" / "data.done").is_file()
    for path in sorted((clean / "data").glob("*.jsonl")):
        assert (run / "data" / path.name).read_bytes() == path.read_bytes(), path.name


def test_an_os_error_inside_a_stage_is_one_line_and_leaves_no_marker(tmp_path):
    def save_model():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m2" / "model.tmp" / "model.safetensors"))

    with pytest.raises(SelfRewardError, match=r"^stage dpo in .*m2 failed: No space left on device \(.*model.safetensors\); "
                                              r"it is unfinished and is redone when the run is resumed$"):
        rundir.run_stage(tmp_path / "m2", "dpo", save_model)
    assert not (tmp_path / "m2" / "dpo.done").exists()


def test_an_iteration_without_pairs_stops_and_keeps_finished_stages(tiny_config, tmp_path):
    # One token per judgment cannot reach a "Score: N" line: nothing parses, so there are no pairs.
    cfg = tiny_config("judge.max_new_tokens=1")
    with pytest.raises(SelfRewardError, match=r"made no preference pairs from \d+ prompts \(0 ties, \d+ with fewer than 2 distinct scored"):
        loop.run(cfg, tmp_path)
    assert (tmp_path / "m1" / "sft.done").is_file() and (tmp_path / "m2" / "judgments.done").is_file()
    assert not (tmp_path / "m2" / "pairs.done").exists()
    assert [r["model"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1]
    model = (tmp_path / "m1" / "model" / "model.safetensors").read_bytes()
    judged = (tmp_path / "m2" / "judgments.jsonl").read_bytes()
    # Running it again fails the same way, redoing nothing that was finished.
    with pytest.raises(SelfRewardError, match="made no preference pairs"):
        loop.run(cfg, tmp_path)
    assert (tmp_path / "m1" / "model" / "model.safetensors").read_bytes() == model
    assert (tmp_path / "m2" / "judgments.jsonl").read_bytes() == judged
