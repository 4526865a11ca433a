"""Bad input ends with a clear error, and never costs a finished stage."""

import json

import pytest

import selfreward.loop as loop
from selfreward.rundir import SelfRewardError, read_jsonl
from selfreward.world import WorldConfig, build_world


@pytest.fixture
def world_dir(tmp_path):
    folder = tmp_path / "world"
    build_world(WorldConfig(n_ift=60, n_self_instruct=10, n_eft=60, n_eval_prompts=8, n_judge_eval=4), folder)
    return folder


def _files_config(tiny_config, folder, *overrides):
    return tiny_config("data=files", f"data.dir={folder}", "model=qwen2_5_0_5b",
                       f"model.name_or_path={folder}/no_model", *overrides)


def test_malformed_seed_file(tiny_config, world_dir, tmp_path):
    with open(world_dir / "eft.jsonl", "a") as f:
        f.write('{"prompt": "sort: 1 2", "response": \n')
    lines = len((world_dir / "eft.jsonl").read_text().splitlines())
    with pytest.raises(SelfRewardError, match=rf"eft.jsonl:{lines}: not valid JSON"):
        loop.run(_files_config(tiny_config, world_dir), tmp_path / "run")


def test_empty_seed_file(tiny_config, world_dir, tmp_path):
    (world_dir / "ift.jsonl").write_text("")
    with pytest.raises(SelfRewardError, match="ift.jsonl: no records"):
        loop.run(_files_config(tiny_config, world_dir), tmp_path / "run")


def test_missing_field_and_unparsable_judgment(tiny_config, world_dir, tmp_path):
    rows = read_jsonl(world_dir / "eft.jsonl")
    rows[2]["judgment"] = "looks fine"
    (world_dir / "eft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SelfRewardError, match="record 3: the judgment does not end with a 'Score: N' line"):
        loop.run(_files_config(tiny_config, world_dir), tmp_path / "run")


def test_missing_model_path(tiny_config, world_dir, tmp_path):
    with pytest.raises(SelfRewardError, match="no_model does not exist"):
        loop.run(_files_config(tiny_config, world_dir), tmp_path / "run")


def test_bad_world_config(tiny_config, tmp_path):
    with pytest.raises(SelfRewardError, match="tasks"):
        loop.run(tiny_config("data.world.tasks=[sort,multiply]"), tmp_path / "run")


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
