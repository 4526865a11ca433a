"""Meta-Rewarding's meta-judge: which candidates are contested, win counts in both orders and the
judgment pairs they make (a scripted engine, values by hand), the world's meta-judging
demonstrations, and the config rules."""

import random

import pytest
from conftest import compose_config

from selfreward.config import ConfigError, validate
from selfreward.data.builtin import (CHECKS, WorldConfig, build_world, judgment_text, oracle_score, rubric_checks,
                                     wrong_judgment)
from selfreward.judge import judge_message
from selfreward.meta_judge import (closer_to_oracle_rate, contested, judgment_pairs, meta_judge_message,
                                   parse_meta_winner)
from selfreward.prompts import load_template
from selfreward.rundir import read_jsonl

META = load_template("meta_judge_small")
JUDGE = load_template("judge_additive_small")


def judged(prompt, response, judgments, scores):
    return {"prompt": prompt, "response": response, "judgments": judgments, "scores": scores}


class MetaEngine:
    """Prefers, in every order, the judgment whose score is in ``good``; records what it was asked."""

    def __init__(self, good, position=None):
        self.good, self.position, self.messages = good, position, []

    def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
        assert sampling.temperature == 0.0  # meta-judging is greedy
        self.messages += messages
        out = []
        for m in messages:
            if self.position:  # always the same position, whatever is shown
                out.append([f"Winner: {self.position}"])
                continue
            a = m.split("<judgment_a>")[1].split("</judgment_a>")[0]
            out.append(["Winner: A" if a.endswith(f"Score: {self.good}") else "Winner: B"])
        return out


def test_contested_keeps_distinct_parsed_judgments_that_disagree():
    records = [
        judged("sort: 2 1", "1 2", ["x\nScore: 5", "y\nScore: 4", "x\nScore: 5"], [5, 4, 5]),  # x twice: once
        judged("sort: 2 1", "2 1", ["a\nScore: 3", "b\nScore: 3"], [3, 3]),  # agree on the score
        judged("sort: 3 1", "1 3", ["a\nScore: 5", "junk"], [5, None]),  # one parsed
    ]
    found = contested(records)
    assert [(r["response"], kept) for r, kept in found] == [("1 2", [0, 1])]


def test_pairs_from_wins_in_both_orders():
    r = judged("sort: 2 1", "1 2", ["right\nScore: 5", "wrong\nScore: 3", "half\nScore: 4"], [5, 3, 4])
    engine = MetaEngine(good=5)
    pairs, info = judgment_pairs(engine, META, JUDGE, [r], max_responses=10, max_new_tokens=8, seed=0)
    # 3 judgments: 3 comparisons, each shown in both orders.
    assert len(engine.messages) == 6
    assert engine.messages[0] == meta_judge_message(META, "sort: 2 1", "1 2", "right\nScore: 5", "wrong\nScore: 3")
    assert engine.messages[1] == meta_judge_message(META, "sort: 2 1", "1 2", "wrong\nScore: 3", "right\nScore: 5")
    # The scripted meta-judge picks "right" whenever it is shown; otherwise the B position:
    # right 4 wins; wrong vs half: order (wrong, half) -> B = half, order (half, wrong) -> B = wrong.
    [pair] = pairs
    assert pair["wins"] == [4, 1, 1]
    assert pair["chosen"] == "right\nScore: 5"
    assert pair["rejected"] == "wrong\nScore: 3"  # fewest wins; a tie goes to the earlier judgment
    assert pair["prompt"] == judge_message(JUDGE, "sort: 2 1", "1 2")
    assert info["meta_judge/comparisons"] == 3
    assert info["meta_judge/position_consistency"] == pytest.approx(2 / 3)
    assert info["meta_judge/parse_failure_rate"] == 0
    assert info["meta_judge/pairs"] == 1


def test_a_meta_judge_that_only_sees_positions_makes_no_pair():
    r = judged("sort: 2 1", "1 2", ["right\nScore: 5", "wrong\nScore: 3"], [5, 3])
    pairs, info = judgment_pairs(MetaEngine(good=None, position="A"), META, JUDGE, [r], max_responses=10,
                                 max_new_tokens=8, seed=0)
    assert pairs == []  # one win each
    assert info["meta_judge/position_consistency"] == 0


def test_unparsed_verdicts_count_no_win_and_are_reported():
    class Mumbler:
        def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
            return [["A maybe"] for _ in messages]

    r = judged("sort: 2 1", "1 2", ["right\nScore: 5", "wrong\nScore: 3"], [5, 3])
    pairs, info = judgment_pairs(Mumbler(), META, JUDGE, [r], max_responses=10, max_new_tokens=8, seed=0)
    assert pairs == [] and info["meta_judge/parse_failure_rate"] == 1


def test_at_most_max_responses_are_meta_judged_seeded():
    records = [judged(f"sort: {i} 1", "1", [f"a{i}\nScore: 5", f"b{i}\nScore: 1"], [5, 1]) for i in range(9)]
    first, info = judgment_pairs(MetaEngine(good=5), META, JUDGE, records, max_responses=4, max_new_tokens=8, seed=3)
    again, _ = judgment_pairs(MetaEngine(good=5), META, JUDGE, records, max_responses=4, max_new_tokens=8, seed=3)
    assert info["meta_judge/contested"] == 9 and info["meta_judge/judged"] == 4
    assert [p["task_prompt"] for p in first] == [p["task_prompt"] for p in again]


def test_parse_meta_winner_ignores_quoted_judgments():
    assert parse_meta_winner("Winner: B") == "B"
    assert parse_meta_winner("<judgment_a>Winner: A</judgment_a>\nWinner: B") == "B"
    assert parse_meta_winner("<judgment_a>x\nWinner: A") is None  # only quoted text
    assert parse_meta_winner("Winner: C") is None


def test_closer_to_oracle_rate_by_hand():
    # "1 2" is the answer to "sort: 2 1" (oracle 5); the third pair ties at whatever "2 1" scores.
    assert oracle_score("sort: 2 1", "1 2") == 5
    truth = oracle_score("sort: 2 1", "2 1")
    pairs = [
        {"task_prompt": "sort: 2 1", "response": "1 2", "chosen_score": 5, "rejected_score": 3},  # closer
        {"task_prompt": "sort: 2 1", "response": "1 2", "chosen_score": 3, "rejected_score": 4},  # farther
        {"task_prompt": "sort: 2 1", "response": "2 1", "chosen_score": truth, "rejected_score": truth},  # equal
        {"task_prompt": "not a task", "response": "1", "chosen_score": 5, "rejected_score": 0},  # left out
    ]
    assert closer_to_oracle_rate(pairs, oracle_score) == pytest.approx(1 / 3)
    assert closer_to_oracle_rate([], oracle_score) is None


def test_wrong_judgment_flips_one_or_two_verdicts_and_keeps_the_score_consistent():
    rng = random.Random(0)
    checks = rubric_checks("sort: 3 1 2", "1 2 3")
    for _ in range(50):
        text = wrong_judgment(rng, checks)
        verdicts, score = text.split("\nScore: ")
        flags = {v.split()[0]: v.split()[1] == "yes" for v in verdicts.split(", ")}
        assert 1 <= sum(flags[c] != checks[c] for c in CHECKS) <= 2
        assert int(score) == sum(flags.values())
        assert text != judgment_text(checks)


def test_world_meta_judge_demonstrations(tmp_path):
    base = dict(seed=1, n_ift=40, n_self_instruct=5, n_eft=60, n_eval_prompts=10, n_judge_eval=4)
    build_world(WorldConfig(**base), tmp_path / "off")
    build_world(WorldConfig(**base, n_meta_judge=30), tmp_path / "on")
    off, on = read_jsonl(tmp_path / "off" / "ift.jsonl"), read_jsonl(tmp_path / "on" / "ift.jsonl")
    meta = [r for r in on if r.get("kind") == "meta_judge"]
    assert len(meta) == 30 and len(on) == len(off) + 30
    assert sorted(r["response"] for r in meta) == ["Winner: A"] * 15 + ["Winner: B"] * 15
    for row in meta:  # the winner is the rubric's own judgment of the response
        task = row["prompt"].split("User: ")[1].split("\n")[0]
        response = row["prompt"].split("<response>")[1].split("</response>")[0]
        winner = row["response"][-1].lower()
        shown = row["prompt"].split(f"<judgment_{winner}>")[1].split(f"</judgment_{winner}>")[0]
        assert shown == judgment_text(rubric_checks(task, response))
    # Every other file is the same with and without the demonstrations.
    for name in ("eft.jsonl", "eval_prompts.jsonl", "judge_eval.jsonl"):
        assert (tmp_path / "on" / name).read_text() == (tmp_path / "off" / name).read_text()
    assert sorted(map(str, off)) == sorted(map(str, (r for r in on if r.get("kind") != "meta_judge")))


def test_meta_judge_config_rules():
    validate(compose_config(["experiment=meta_rewarding"]))
    for overrides, message in [
        (["meta_judge=pairwise", "reward=oracle"], "reward=self_judge"),
        (["meta_judge=pairwise", "judge.repeats=1"], "judge.repeats >= 2"),
        (["meta_judge=pairwise", "judge=expected"], "judge.mode=sample"),
        (["meta_judge=pairwise", "experiment=sft_best"], "allowed: dpo"),
        (["meta_judge=pairwise", "meta_judge.template=no_such_template"], "meta_judge.template"),
        (["meta_judge=pairwise", "meta_judge.max_responses=0"], "meta_judge.max_responses"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            validate(compose_config(["recipe=none", *overrides]))  # the rules on the plain values


def test_meta_judge_in_the_loop_trains_on_judgment_pairs(tiny_run, tmp_path, monkeypatch):
    """One iteration with meta_judge=pairwise from the shared tiny run's M1 (copied, as the controls
    start from the default's M1): judge_pairs.jsonl is written, DPO trains on both kinds of pair,
    and the metrics row reports them."""
    import json
    import shutil

    from conftest import TINY_RUN

    import selfreward.loop as loop

    trained = []
    real_train_dpo = loop.train_dpo

    def recording_train_dpo(model_path, ref_path, pairs, *args, **kwargs):
        trained.append(pairs)
        return real_train_dpo(model_path, ref_path, pairs, *args, **kwargs)

    class PreferHigherScore:
        """The tiny test model always names the same position (no pairs); a scripted meta-judge
        that prefers the higher-scored judgment makes pairs, so that their way into DPO is tested."""

        def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
            def score(m, tag):
                return int(m.split(f"<{tag}>")[1].split(f"</{tag}>")[0].rsplit("Score: ", 1)[1])
            return [["Winner: A" if score(m, "judgment_a") > score(m, "judgment_b") else "Winner: B"]
                    for m in messages]

    real_write = loop.write_judge_pairs
    monkeypatch.setattr(loop, "train_dpo", recording_train_dpo)
    monkeypatch.setattr(loop, "write_judge_pairs", lambda engine, *a, **k: real_write(PreferHigherScore(), *a, **k))
    run_dir = tmp_path / "run"
    for name in ("data", "m0", "m1"):
        shutil.copytree(tiny_run / name, run_dir / name)
    loop.run(compose_config([*TINY_RUN, "iterations=1", "meta_judge=pairwise", "meta_judge.max_responses=20"]),
             run_dir)
    out = run_dir / "m2"
    response_pairs = read_jsonl(out / "pairs.jsonl")
    judge_pairs = read_jsonl(out / "judge_pairs.jsonl")
    assert (out / "judge_pairs.done").is_file()
    [pairs] = trained
    assert judge_pairs and all(p["chosen_score"] > p["rejected_score"] for p in judge_pairs)
    assert len(pairs) == len(response_pairs) + len(judge_pairs)
    for p in judge_pairs:  # the judge prompt of a candidate, its chosen and rejected judgments
        assert p["prompt"] == judge_message(JUDGE, p["task_prompt"], p["response"])
        assert p["chosen"] != p["rejected"]
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["meta_judge/pairs"] == len(judge_pairs)
    assert 0 < row["meta_judge/judged"] <= 20
    assert "time/judge_pairs_s" in row
