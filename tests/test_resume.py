"""A run stopped after any stage and started again gives the results of an uninterrupted run."""

import json
import shutil

import pytest
import yaml
import torch
from safetensors.torch import load_file

import selfreward.loop as loop
from conftest import TINY_RUN, compose_config
from selfreward.rundir import SelfRewardError, environment, environment_changes, read_json, read_jsonl, record_environment


def _stripped(rows):
    """Metrics rows without wall times, which differ between any two runs."""
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_interrupted_run_resumes_to_the_same_result(tiny_run, tmp_path, monkeypatch):
    # The uninterrupted run is the shared one (M1, M2, M3); this one, with the same config, is
    # killed in its first DPO and resumed for one iteration (a key a run may change on resume).
    straight = tiny_run
    expected = read_jsonl(straight / "metrics.jsonl")[:2]

    # Crash in DPO: data, base model, SFT, M1's eval and the generation stages of iteration 1
    # are done; the DPO model is not.
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed during DPO")

    broken = tmp_path / "broken"
    monkeypatch.setattr(loop, "train_dpo", crash)
    threads = torch.get_num_threads()  # the run's threads=1 sets this process's; restored below
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run(compose_config(TINY_RUN), broken)
        assert (broken / "m2" / "pairs.done").is_file() and not (broken / "m2" / "dpo.done").exists()
        assert [r["model"] for r in read_jsonl(broken / "metrics.jsonl")] == [1]
        judged_before = (broken / "m2" / "judgments.jsonl").read_bytes()
        monkeypatch.undo()

        resumed = loop.run(compose_config([*TINY_RUN, "iterations=1"]), broken)
    finally:
        torch.set_num_threads(threads)

    # Finished stages were not redone, and everything equals the uninterrupted run.
    assert (broken / "m2" / "judgments.jsonl").read_bytes() == judged_before
    for name in ("prompts.jsonl", "candidates.jsonl", "judgments.jsonl", "pairs.jsonl"):
        assert (broken / "m2" / name).read_bytes() == (straight / "m2" / name).read_bytes(), name
    a = load_file(straight / "m2" / "model" / "model.safetensors")
    b = load_file(broken / "m2" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _stripped(resumed) == _stripped(expected)
    assert _stripped(read_jsonl(broken / "metrics.jsonl")) == _stripped(expected)
    # Times are those of the run that did the work, read back from the stage markers.
    assert resumed[1]["time/prompts_s"] == read_json(broken / "m2" / "prompts.done")["seconds"]
    # Each start is recorded, and a resume on the same machine changes nothing recorded.
    assert len(read_jsonl(straight / "environment.jsonl")) == 1
    first, again = read_jsonl(broken / "environment.jsonl")
    assert first["entry"] == again["entry"] == "selfreward"
    assert environment_changes(first, again) == []
    assert again["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert again["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_a_resume_elsewhere_is_recorded_and_said(tmp_path, caplog):
    here = environment()
    # Another kernel version and core count are recorded, not reported: they do not move the numbers.
    elsewhere = {**here, "started": "2026-01-01T00:00:00+0000", "entry": "selfreward", "cpu_capability": "AVX2",
                 "system": "Linux-5.0", "cpus": 64, "packages": {**here["packages"], "torch": "2.0.0"}}
    (tmp_path / "environment.jsonl").write_text(json.dumps(elsewhere) + "\n")
    with caplog.at_level("WARNING", logger="selfreward"):
        changes = record_environment(tmp_path, "stage dpo --t 1")
    assert changes == [f"cpu_capability: 'AVX2' -> {here['cpu_capability']!r}",
                       f"torch: 2.0.0 -> {here['packages']['torch']}"]
    assert "cpu_capability: 'AVX2'" in caplog.text and "not be bit-identical" in caplog.text
    rows = read_jsonl(tmp_path / "environment.jsonl")
    assert [r["entry"] for r in rows] == ["selfreward", "stage dpo --t 1"]
    # A third start on this machine still differs from the first, and only in those two facts.
    assert len(record_environment(tmp_path, "selfreward")) == 2


def test_a_half_written_stage_is_redone(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config("iterations=0")
    loop.run(cfg, tmp_path)
    # A crash while writing eval files: the outputs exist but the marker does not.
    (tmp_path / "m1" / "eval.done").unlink()
    (tmp_path / "m1" / "eval_policy.jsonl").write_text("half a li")
    rows = loop.run(cfg, tmp_path)
    assert len(read_jsonl(tmp_path / "m1" / "eval_policy.jsonl")) == 16
    assert rows[0]["model"] == 1


def test_resuming_with_another_config_stops(tiny_config, tmp_path):
    loop.run(tiny_config("iterations=0"), tmp_path)
    with pytest.raises(SelfRewardError, match=r"judge.repeats: 2 -> 5"):
        loop.run(tiny_config("iterations=0", "judge.repeats=5"), tmp_path)
    # Changing the number of iterations or the logger is allowed: it extends the same run.
    rows = loop.run(tiny_config("iterations=0", "logger=none"), tmp_path)
    assert [r["model"] for r in rows] == [1]


def test_a_run_saved_before_the_reward_interface_resumes(tiny_config, tmp_path):
    # Its config.yaml had judge.source (model or oracle) and no reward, nor pairs.rho.
    for source, reward in (("model", "self_judge"), ("oracle", "oracle")):
        cfg = tiny_config(f"reward={reward}")
        folder = tmp_path / source
        loop.check_config(cfg, folder.mkdir() or folder)
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        del saved["reward"], saved["pairs"]["rho"]
        saved["judge"]["source"] = source
        (folder / "config.yaml").write_text(yaml.safe_dump(saved))
        loop.check_config(cfg, folder)  # no change found
        other = "oracle" if reward == "self_judge" else "self_judge"
        with pytest.raises(SelfRewardError, match=rf"reward._target_: 'selfreward.rewards.{reward}.score' -> "
                                                  rf"'selfreward.rewards.{other}.score'"):
            loop.check_config(tiny_config(f"reward={other}"), folder)


def test_a_run_saved_before_reward_shaping_and_best_of_n_resumes(tiny_config, tmp_path):
    cfg = tiny_config()
    loop.check_config(cfg, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["reward_shaping"], saved["evaluation"]["best_of_n"], saved["evaluation"]["best_of_n_sizes"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    loop.check_config(cfg, tmp_path)  # the new keys at their defaults: no change found
    with pytest.raises(SelfRewardError, match=r"reward_shaping.method: 'none' -> 'ctrl'"):
        loop.check_config(tiny_config("reward_shaping=ctrl"), tmp_path)
    with pytest.raises(SelfRewardError, match=r"evaluation.best_of_n: False -> True"):
        loop.check_config(tiny_config("evaluation.best_of_n=true"), tmp_path)


def test_a_run_saved_before_the_meta_judge_vllm_and_precomputed_reference_resumes(tiny_config, tmp_path):
    cfg = tiny_config()
    loop.check_config(cfg, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["meta_judge"], saved["generation"]["vllm"], saved["training"]["dpo"]["precompute_ref_log_probs"]
    del saved["data"]["world"]["n_meta_judge"], saved["data"]["world"]["meta_judge_template"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    loop.check_config(cfg, tmp_path)  # the new keys at their defaults: no change found
    with pytest.raises(SelfRewardError, match=r"meta_judge.enabled: False -> True"):
        loop.check_config(tiny_config("meta_judge=pairwise"), tmp_path)
    with pytest.raises(SelfRewardError, match=r"data.world.n_meta_judge: 0 -> 10"):
        loop.check_config(tiny_config("data.world.n_meta_judge=10"), tmp_path)


def test_a_run_saved_before_the_ift_task_weights_reads_as_a_uniform_world(tiny_config, tmp_path):
    # Before the field, every world was drawn uniformly over tasks: the weighted default does not apply.
    uniform = tiny_config("data.world.ift_task_weights=[]")
    loop.check_config(uniform, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["data"]["world"]["ift_task_weights"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    loop.check_config(uniform, tmp_path)
    with pytest.raises(SelfRewardError, match=r"data.world.ift_task_weights: \[\] -> \[1.0, 2.0, 0.6\]"):
        loop.check_config(tiny_config("data.world.ift_task_weights=[1,2,0.6]"), tmp_path)


def test_a_run_stopped_after_the_reward_model_stage_resumes_to_the_same_judgments(tiny_config, tmp_path, monkeypatch):
    from selfreward.rewards import reward_model

    cfg = tiny_config("reward=reward_model", "reward.epochs=1")
    straight = tmp_path / "straight"
    loop.run(cfg, straight)

    # Crash right after m1/reward_model is trained, before the candidates are scored. The
    # broken run starts from the straight one's data and M1 (what this test is about comes after).
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while scoring")

    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(straight / "config.yaml", broken)
    for folder in ("data", "m0", "m1"):
        shutil.copytree(straight / folder, broken / folder, ignore=shutil.ignore_patterns("reward_model*"))
    assert not (broken / "m1" / "reward_model.done").exists()
    monkeypatch.setattr(reward_model, "rewards", crash)
    with pytest.raises(KeyboardInterrupt):
        loop.run(cfg, broken)
    assert (broken / "m1" / "reward_model.done").is_file() and not (broken / "m2" / "judgments.done").exists()
    monkeypatch.undo()
    monkeypatch.setattr(reward_model, "train", lambda *a, **k: pytest.fail("the reward model was trained again"))
    loop.run(cfg, broken)
    for name in ("judgments.jsonl", "pairs.jsonl"):
        assert (broken / "m2" / name).read_bytes() == (straight / "m2" / name).read_bytes(), name
