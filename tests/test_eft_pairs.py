"""training.eft_pairs_rows: M_t judges seed EFT rows, and where its score is not the seed row's
the pair (seed judgment, its own) joins the round's DPO pairs (a scripted judge, values by hand;
the stage and its way into DPO on the shared tiny run's M1)."""

import json
import shutil

import pytest
from conftest import TINY_RUN, compose_config

from selfreward.config import ConfigError, validate
from selfreward.judge import judge_message, seed_judgment_pairs
from selfreward.loop import eft_pairs_rows as loop_eft_pairs_rows
from selfreward.prompts import load_template
from selfreward.rundir import read_jsonl

JUDGE = load_template("judge_additive_small")


class ScriptedJudge:
    """Writes "Score: N" with N looked up by the response shown (no score line for a missing one)."""

    def __init__(self, scores):
        self.scores, self.calls = scores, []

    def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
        self.calls.append((len(messages), n, sampling.temperature))
        out = []
        for m in messages:
            response = m.split("<response>")[1].split("</response>")[0]
            score = self.scores.get(response)
            out.append([f"checked {response}\nScore: {score}" if score is not None else "checked"] * n)
        return out


def eft_row(prompt, response, score):
    return {"prompt": prompt, "response": response, "judgment": f"seed trace\nScore: {score}", "score": score}


def test_pairs_where_the_judge_disagrees_with_the_seed_row():
    rows = [eft_row("sort: 2 1", "1 2", 5), eft_row("sort: 3 1", "3 1", 2), eft_row("evens: 4 1", "4 1", 3),
            eft_row("unique: 7 7", "7", 5)]
    # Agrees on the first and last, scores the second 5 where the seed says 2, cannot read the third.
    engine = ScriptedJudge({"1 2": 5, "3 1": 5, "7": 5})
    cfg = compose_config([*TINY_RUN]).judge
    pairs, info = seed_judgment_pairs(engine, JUDGE, rows, cfg, seed=0)
    assert engine.calls == [(4, 1, cfg.temperature)]  # one judgment a row, with the judge's settings
    assert [(p["task_prompt"], p["chosen_score"], p["rejected_score"]) for p in pairs] == [
        ("sort: 3 1", 2, 5), ("evens: 4 1", 3, None)]
    assert pairs[0] == {"prompt": judge_message(JUDGE, "sort: 3 1", "3 1"), "chosen": "seed trace\nScore: 2",
                        "rejected": "checked 3 1\nScore: 5", "task_prompt": "sort: 3 1", "response": "3 1",
                        "chosen_score": 2, "rejected_score": 5}
    assert info == {"eft_pairs/judged": 4, "eft_pairs/agreement": 0.5, "eft_pairs/unread": 1, "eft_pairs/pairs": 2}
    assert seed_judgment_pairs(engine, JUDGE, [], cfg, seed=0)[1]["eft_pairs/agreement"] is None


@pytest.mark.parametrize("overrides, message", [
    (["training.eft_pairs_rows=-1"], "training.eft_pairs_rows=-1; allowed: an integer >= 0"),
    (["training.eft_pairs_anchors=-1"], "training.eft_pairs_anchors=-1.0; allowed: a number >= 0"),
    (["training.eft_pairs_rows_decay=1.5"], r"training.eft_pairs_rows_decay=1.5; allowed: a number in \[0, 1\]"),
    (["training.eft_pairs_rows=10", "judge=expected"], "training.eft_pairs_rows=10 with judge.mode=expected"),
    (["training.eft_pairs_rows=10", "training.objective=rft"], "training.eft_pairs_rows=10 with training.objective=rft"),
])
def test_bad_eft_pairs_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config([*TINY_RUN, *overrides]))


def _record_dpo_with_an_always_five_judge(monkeypatch):
    """DPO's pair lists, recorded as the loop calls it; the seed rows judged by a judge that scores
    every answer 5."""
    import selfreward.loop as loop

    trained = []
    real_train_dpo, real_pairs = loop.train_dpo, loop.seed_judgment_pairs

    def recording_train_dpo(model_path, ref_path, pairs, *args, **kwargs):
        trained.append(pairs)
        return real_train_dpo(model_path, ref_path, pairs, *args, **kwargs)

    class AlwaysFive:
        def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
            return [["looks right\nScore: 5"] * n for _ in messages]

    monkeypatch.setattr(loop, "train_dpo", recording_train_dpo)
    monkeypatch.setattr(loop, "seed_judgment_pairs", lambda engine, *a, **k: real_pairs(AlwaysFive(), *a, **k))
    return trained


def test_eft_pairs_join_the_rounds_dpo(tiny_run, tmp_path, monkeypatch):
    """One iteration with training.eft_pairs_rows from the shared tiny run's M1 (copied): the
    judge_pairs stage draws that many seed EFT rows and writes the pairs where a judge (scripted to
    score every answer 5) disagrees with them; DPO trains on the response pairs and these; the
    metrics row reports the counts."""
    import selfreward.loop as loop

    trained = _record_dpo_with_an_always_five_judge(monkeypatch)
    run_dir = tmp_path / "run"
    for name in ("data", "m0", "m1"):
        shutil.copytree(tiny_run / name, run_dir / name)
    cfg = compose_config([*TINY_RUN, "iterations=1", "training.eft_pairs_rows=30"])
    loop.run(cfg, run_dir)
    out = run_dir / "m2"
    eft_pairs = read_jsonl(out / "eft_pairs.jsonl")
    seed_rows = {(r["prompt"], r["response"]): r for r in read_jsonl(run_dir / "data" / "eft.jsonl")}
    drawn_not_five = [r for r in seed_rows.values() if r["score"] != 5]
    assert eft_pairs and len(eft_pairs) <= 30 and len(drawn_not_five) >= len(eft_pairs)
    for p in eft_pairs:  # the seed judgment of a row the judge scored 5, where the seed did not
        row = seed_rows[(p["task_prompt"], p["response"])]
        assert p["chosen"] == row["judgment"] and p["chosen_score"] == row["score"] != 5
        assert p["rejected"] == "looks right\nScore: 5" and p["rejected_score"] == 5
        assert p["prompt"] == judge_message(JUDGE, p["task_prompt"], p["response"])
    [pairs] = trained
    assert pairs == read_jsonl(out / "pairs.jsonl") + eft_pairs
    assert not (out / "judge_pairs.jsonl").exists()  # no meta-judge
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["eft_pairs/judged"] == 30 and row["eft_pairs/pairs"] == len(eft_pairs)
    assert row["eft_pairs/agreement"] == pytest.approx(1 - len(eft_pairs) / 30)
    assert "time/judge_pairs_s" in row


def test_eft_pairs_anchors_join_the_rounds_dpo(tiny_run, tmp_path, monkeypatch):
    """training.eft_pairs_anchors=1: besides the pairs where the judge (scripted to score every
    answer 5) errs, as many rows where it agreed with the seed (those the seed scored 5) join DPO,
    each its seed judgment on both sides."""
    import selfreward.loop as loop

    trained = _record_dpo_with_an_always_five_judge(monkeypatch)
    run_dir = tmp_path / "run"
    for name in ("data", "m0", "m1"):
        shutil.copytree(tiny_run / name, run_dir / name)
    cfg = compose_config([*TINY_RUN, "iterations=1", "training.eft_pairs_rows=40", "training.eft_pairs_anchors=1"])
    loop.run(cfg, run_dir)
    out = run_dir / "m2"
    eft_pairs, anchors = read_jsonl(out / "eft_pairs.jsonl"), read_jsonl(out / "eft_anchors.jsonl")
    seed_rows = {(r["prompt"], r["response"]): r for r in read_jsonl(run_dir / "data" / "eft.jsonl")}
    agreed = 40 - len(eft_pairs)  # the drawn rows the seed scored 5
    assert eft_pairs and agreed and len(anchors) == min(agreed, len(eft_pairs))
    for a in anchors:
        row = seed_rows[(a["task_prompt"], a["response"])]
        assert a["chosen"] == a["rejected"] == row["judgment"] and row["score"] == 5
        assert a["prompt"] == judge_message(JUDGE, a["task_prompt"], a["response"])
    assert len({(a["task_prompt"], a["response"]) for a in anchors} & {(p["task_prompt"], p["response"])
                                                                       for p in eft_pairs}) == 0
    [pairs] = trained
    assert pairs == read_jsonl(out / "pairs.jsonl") + eft_pairs + anchors
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["eft_pairs/anchors"] == len(anchors)
    with pytest.raises(ConfigError, match="training.eft_pairs_anchors=1.0 with training.dpo.sft_weight=0"):
        validate(compose_config([*TINY_RUN, "training.eft_pairs_rows=10", "training.eft_pairs_anchors=1",
                                 "training.dpo.sft_weight=0"]))


def test_eft_pairs_rows_per_round():
    cfg = compose_config([*TINY_RUN, "training.eft_pairs_rows=2000"])
    assert [loop_eft_pairs_rows(cfg, t) for t in (1, 2, 3)] == [2000, 2000, 2000]
    cfg.training.eft_pairs_rows_decay = 0.25
    assert [loop_eft_pairs_rows(cfg, t) for t in (1, 2, 3)] == [2000, 500, 125]
    cfg.training.eft_pairs_rows_decay = 0.0
    assert [loop_eft_pairs_rows(cfg, t) for t in (1, 2, 3)] == [2000, 0, 0]


def test_eft_pairs_in_the_first_round_only(tiny_run, tmp_path, monkeypatch):
    """training.eft_pairs_rows_decay=0 over two iterations: the first round's DPO gets the seed
    rows' judgment pairs, the second's only its response pairs, and its folder and metrics row hold
    no judge_pairs stage."""
    import selfreward.loop as loop

    trained = _record_dpo_with_an_always_five_judge(monkeypatch)
    run_dir = tmp_path / "run"
    for name in ("data", "m0", "m1"):
        shutil.copytree(tiny_run / name, run_dir / name)
    cfg = compose_config([*TINY_RUN, "iterations=2", "training.eft_pairs_rows=30",
                          "training.eft_pairs_rows_decay=0"])
    loop.run(cfg, run_dir)
    first, second = trained
    eft_pairs = read_jsonl(run_dir / "m2" / "eft_pairs.jsonl")
    assert eft_pairs and first == read_jsonl(run_dir / "m2" / "pairs.jsonl") + eft_pairs
    assert second == read_jsonl(run_dir / "m3" / "pairs.jsonl")
    assert not (run_dir / "m3" / "eft_pairs.jsonl").exists() and not (run_dir / "m3" / "judge_pairs.done").exists()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["eft_pairs/pairs"] == len(eft_pairs) and "time/judge_pairs_s" in rows[1]
    assert not any(k.startswith("eft_pairs/") or k == "time/judge_pairs_s" for k in rows[2])


def test_eft_pairs_without_push_train_only_the_seed_judgment(tmp_path):
    """training.eft_pairs_push=false: the judgment pairs reach DPO with the seed judgment on both
    sides; the response pairs are untouched."""
    from selfreward.loop import training_pairs

    response_pair = {"prompt": "sort: 2 1", "chosen": "1 2", "rejected": "2 1"}
    judgment_pair = {"prompt": "Judge ...", "chosen": "seed trace\nScore: 2", "rejected": "own\nScore: 5",
                     "task_prompt": "sort: 3 1", "response": "3 1", "chosen_score": 2, "rejected_score": 5}
    (tmp_path / "pairs.jsonl").write_text(json.dumps(response_pair) + "\n")
    (tmp_path / "eft_pairs.jsonl").write_text(json.dumps(judgment_pair) + "\n")
    cfg = compose_config([*TINY_RUN, "training.eft_pairs_rows=10"])
    assert training_pairs(cfg, tmp_path, 1) == [response_pair, judgment_pair]
    cfg.training.eft_pairs_push = False
    assert training_pairs(cfg, tmp_path, 1) == [response_pair, {**judgment_pair, "rejected": "seed trace\nScore: 2"}]
    with pytest.raises(ConfigError, match="training.eft_pairs_push=false with training.dpo.sft_weight=0"):
        validate(compose_config([*TINY_RUN, "training.eft_pairs_rows=10", "training.eft_pairs_push=false",
                                 "training.dpo.sft_weight=0"]))


def test_a_pair_with_the_same_answer_on_both_sides_has_no_preference_gradient(tiny_run, tmp_path):
    """What training.eft_pairs_push=false relies on: on pairs whose chosen and rejected answers are
    the same, the gradient of TRL's DPO loss (sigmoid) is zero but for float rounding, and with the
    NLL term the gradient is the NLL's."""
    import torch
    from trl import DPOConfig

    from selfreward.generation import load_model, load_tokenizer
    from selfreward.training import dpo_trainer

    path = str(tiny_run / "m1" / "model")
    pairs = [{"prompt": f"sort: {a} {b}", "chosen": f"{min(a, b)} {max(a, b)}", "rejected": f"{min(a, b)} {max(a, b)}"}
             for a, b in ((3, 1), (2, 7), (9, 4), (5, 6))]

    def gradient_norm(losses, weights, pairs=pairs):
        torch.manual_seed(0)
        model, ref = load_model(path, dtype="float32", device="cpu"), load_model(path, dtype="float32", device="cpu")
        args = DPOConfig(output_dir=str(tmp_path / "dpo"), loss_type=losses, loss_weights=weights, beta=0.1,
                         per_device_train_batch_size=4, use_cpu=True, report_to="none")
        trainer = dpo_trainer(model, ref, load_tokenizer(path), pairs, args)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.compute_loss(trainer.model, batch).backward()
        return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]).item()

    preference_only = gradient_norm(["sigmoid"], None)
    with_nll = gradient_norm(["sigmoid", "sft"], [1.0, 3.0])
    assert with_nll > 0.1 and preference_only < 1e-5 * with_nll, (preference_only, with_nll)
    # The same loss on pairs that differ does push: the small norm above is the pairs', not the setup's.
    differing = [{**p, "rejected": p["chosen"][::-1]} for p in pairs]
    assert gradient_norm(["sigmoid"], None, differing) > 1e-2
