"""Measurements of a model, with scripted engines so that every number is known by hand."""

import itertools
import random
import statistics

import pytest

from selfreward.data import Oracle, SeedData
from selfreward.evaluation import (
    evaluate_best_of_n,
    evaluate_judge,
    evaluate_position_bias,
    head_to_head,
    head_to_head_parts,
    selection_accuracy,
)
from selfreward.rewards import Context
from conftest import TINY, compose_config
from selfreward.rundir import read_jsonl


def test_head_to_head_by_hand():
    # 5>4 win, 3=3 tie, 4<5 loss, 2>0 win: wins 2/4, ties 1/4, losses 1/4; win rate 0.5 + 0.125.
    result = head_to_head([5, 3, 4, 2], [4, 3, 5, 0])
    assert (result["win"], result["tie"], result["loss"], result["win_rate"]) == (0.5, 0.25, 0.25, 0.625)
    with pytest.raises(ValueError):
        head_to_head([1, 2], [1])


def test_head_to_head_parts_by_hand():
    # Prompts: A right / B wrong (win), both right (tie), both wrong 3 > 1 (win), both wrong 2 < 4
    # (loss), A wrong / B right (loss), both wrong 2 = 2 (tie). Win rate (2 + 2 * 0.5) / 6 = 0.5.
    # Accuracy 2/6 each: accuracy part 0; both-wrong signs +1, -1, 0: partial-credit part 0.
    a, b = [5, 5, 3, 2, 1, 2], [2, 5, 1, 4, 5, 2]
    ra, rb = [True, True, False, False, False, False], [False, True, False, False, True, False]
    result = head_to_head_parts(a, b, ra, rb)
    assert result["win_rate"] == 0.5 and result["accuracy_part"] == 0 and result["partial_credit_part"] == 0
    # B's both-wrong answer on the fourth prompt graded 1 instead of 4: A wins it. Win rate 4/6,
    # partial-credit part (+1 +1 +0) / 6 / 2 = 1/6, and 0.5 + 0 + 1/6 is the win rate.
    b[3] = 1
    result = head_to_head_parts(a, b, ra, rb)
    assert result["win_rate"] == pytest.approx(4 / 6) and result["partial_credit_part"] == pytest.approx(1 / 6)
    # Accuracy alone: A right on 3 of 4, B on 1 of 4, both wrong and graded alike on the last:
    # wins 2, ties 2 -> 0.75 = 0.5 + (3 - 1) / 4 / 2.
    result = head_to_head_parts([5, 5, 5, 0], [0, 0, 5, 0], [True, True, True, False], [False, False, True, False])
    assert (result["win_rate"], result["accuracy_part"], result["accuracy_a"]) == (0.75, 0.25, 0.75)
    with pytest.raises(ValueError, match="outscore"):  # a right answer graded below a wrong one
        head_to_head_parts([3], [4], [True], [False])
    with pytest.raises(ValueError):
        head_to_head_parts([], [], [], [])


class ScoreByResponse:
    """A judge that gives each response a fixed verdict text, whatever the template."""

    def __init__(self, verdicts):
        self.verdicts = verdicts

    def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
        return [[self._verdict(m)] * n for m in messages]

    def _verdict(self, message):
        if "<response_a>" in message:  # pairwise: always the first one shown
            return "Winner: A"
        response = message.split("<response>")[1].split("</response>")[0]
        return self.verdicts[response]


class Cfg:
    class judge:
        template, mode, repeats, pairwise_template = "judge_additive_small", "sample", 2, "judge_pairwise"
        temperature, top_p, max_new_tokens, min_score, max_score = 0.7, 0.9, 48, 0, 5
        complete_score, continue_unscored = False, 0

    class evaluation:
        judge_repeats = None
        position_bias, pairwise_pairs, pairwise_max_new_tokens = True, 10, 16


def _data(judge_eval):
    return SeedData(ift=[], eft=[], eval_prompts=[], judge_eval=judge_eval)


def test_evaluate_judge_by_hand(tmp_path):
    data = _data([
        {"prompt": "p", "responses": ["good", "ok", "bad"], "scores": [5, 3, 0]},
        {"prompt": "q", "responses": ["x", "y"], "ranks": [0, 1]},
    ])
    engine = ScoreByResponse({"good": "Score: 5", "ok": "Score: 1", "bad": "Score: 2", "x": "nonsense",
                              "y": "Score: 4"})
    result = evaluate_judge(engine, data, Cfg, seed=0, out_dir=tmp_path)
    # Group p: pairs (good,ok) right, (good,bad) right, (ok,bad) wrong (1 < 2); group q: x has no
    # score, so its pair counts as wrong. 2 of 4 pairs: 0.5.
    assert result["judge/pairwise_accuracy"] == 0.5
    # Its standard error over the two prompts: residuals 2 - 0.5*3 = 0.5 and 0 - 0.5*1 = -0.5,
    # sqrt(2/1 * 0.5) / 4 pairs = 0.25.
    assert result["judge/pairwise_accuracy_se"] == pytest.approx(0.25)
    # Exact match: p's order is wrong, q has a failure: 0 of 2. 5-best: p's best got 5, q's has none: 1/2.
    assert result["judge/exact_match"] == 0.0 and result["judge/five_best"] == 0.5
    # 2 judgments per response, those of x fail: 2 of 10.
    assert result["judge/parse_failure_rate"] == pytest.approx(0.2)
    # Spearman on p only (q has a None): gold ranks (3,2,1) vs judge ranks (3,1,2): rho = 0.5.
    assert result["judge/spearman"] == pytest.approx(0.5)
    rows = read_jsonl(tmp_path / "eval_judge.jsonl")
    assert [r["score"] for r in rows] == [5, 1, 2, None, 4] and rows[3]["judgments"] == ["nonsense"] * 2


class Completes(ScoreByResponse):
    """ScoreByResponse whose most likely score after an appended Score: is 5."""

    def continuation_logprobs(self, messages, prefixes, continuations):
        return [[0.0 if c == " 5" else -9.0 for c in continuations] for _ in prefixes]


def test_evaluate_judge_with_completed_scores(tmp_path, monkeypatch):
    """judge.complete_score: x's unread judgments get the judge's likeliest score (5), so q's pair is
    right; they still count as parse failures, and as completed."""
    data = _data([{"prompt": "q", "responses": ["x", "y"], "ranks": [0, 1]}])
    monkeypatch.setattr(Cfg.judge, "complete_score", True)
    result = evaluate_judge(Completes({"x": "nonsense", "y": "Score: 4"}), data, Cfg, seed=0, out_dir=tmp_path)
    assert result["judge/pairwise_accuracy"] == 1.0
    assert result["judge/parse_failure_rate"] == 0.5 and result["judge/completed_scores"] == 2


def test_position_bias_of_a_judge_that_always_picks_the_first(tmp_path):
    data = _data([{"prompt": "p", "responses": ["a", "b", "c"], "scores": [2, 1, 1]}])
    result = evaluate_position_bias(ScoreByResponse({}), data, Cfg, seed=0, out_dir=tmp_path)
    # Pairs with different gold: (a,b), (a,c). Every verdict picks the first shown: bias +0.5;
    # each pair is right in one order only: accuracy 0.5.
    assert result["judge/position_bias"] == 0.5
    assert result["judge/pairwise_ab_accuracy"] == 0.5
    assert result["judge/pairwise_ab_parse_failure_rate"] == 0.0


class Verdicts:
    """A pairwise judge with a fixed verdict per (first shown, second shown)."""

    def __init__(self, table):
        self.table = table

    def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
        out = []
        for m in messages:
            first = m.split("<response_a>")[1].split("</response_a>")[0]
            second = m.split("<response_b>")[1].split("</response_b>")[0]
            out.append([self.table[(first, second)]])
        return out


def test_judged_head_to_head_in_both_orders():
    from selfreward.evaluation import judged_head_to_head

    engine = Verdicts({
        ("a1", "b1"): "Winner: A", ("b1", "a1"): "Winner: B",   # A wins in both orders: a win
        ("a2", "b2"): "Winner: A", ("b2", "a2"): "Winner: A",   # the first shown always wins: a tie
        ("a3", "b3"): "Winner: B", ("b3", "a3"): "Winner: A",   # B wins in both orders: a loss
        ("a4", "b4"): "???", ("b4", "a4"): "Winner: B",         # one verdict unparsed: a tie
    })
    template = "{prompt}<response_a>{response_a}</response_a><response_b>{response_b}</response_b>"
    result = judged_head_to_head(engine, template, ["p"] * 4, ["a1", "a2", "a3", "a4"], ["b1", "b2", "b3", "b4"],
                                 max_new_tokens=8, seed=0)
    # 1 win, 2 ties, 1 loss: win rate 0.25 + 2 * 0.25 / 2 = 0.5.
    assert (result["win"], result["tie"], result["loss"], result["win_rate"]) == (0.25, 0.5, 0.25, 0.5)
    assert result["length_a"] == 2.0 and result["length_b"] == 2.0


def test_self_judge_quality_by_hand():
    from selfreward.evaluation import self_judge_quality
    from selfreward.data.builtin import is_correct, oracle_score

    # Oracle scores: "1 2 3" 5; "1 3 2" 3 (digits, length, items); "1 2 2" 3 (digits, length, order);
    # "9" 2 (digits, order: one digit is ascending); "x" 0.
    pairs = [
        {"prompt": "sort: 3 1 2", "chosen": "1 2 3", "rejected": "1 3 2"},  # right: 5 > 3
        {"prompt": "sort: 3 1 2", "chosen": "1 3 2", "rejected": "1 2 2"},  # oracle tie: 3 = 3
        {"prompt": "sort: 3 1 2", "chosen": "9", "rejected": "1 2 3"},      # wrong: 2 < 5
        {"prompt": "draw: a cat", "chosen": "1", "rejected": "2"},          # not gradeable: left out
    ]
    judged = [
        {"prompt": "sort: 3 1 2", "response": "1 2 3", "score": 4.0},
        {"prompt": "sort: 3 1 2", "response": "1 2 3", "score": 4.0},  # a copy counts once
        {"prompt": "sort: 3 1 2", "response": "1 3 2", "score": 3.0},
        {"prompt": "sort: 3 1 2", "response": "9", "score": 5.0},
        {"prompt": "sort: 3 1 2", "response": "x", "score": None},     # unscored: left out
        {"prompt": "draw: a cat", "response": "1", "score": 2.0},      # not gradeable: left out
    ]
    assert [oracle_score("sort: 3 1 2", r) for r in ("1 2 3", "1 3 2", "1 2 2", "9", "x")] == [5, 3, 3, 2, 0]
    q = self_judge_quality(pairs, judged, oracle_score, is_correct)
    assert q["self_judge/pair_accuracy"] == pytest.approx(1 / 3)
    # Right answers: chosen "1 2 3" only (1 of 3); rejected "1 2 3" only (1 of 3).
    assert q["self_judge/chosen_correct_rate"] == pytest.approx(1 / 3)
    assert q["self_judge/rejected_correct_rate"] == pytest.approx(1 / 3)
    assert "self_judge/chosen_correct_rate" not in self_judge_quality(pairs, judged, oracle_score)
    assert q["self_judge/pair_tie_rate"] == pytest.approx(1 / 3)
    # judge (4, 3, 5) vs oracle (5, 3, 2): ranks (2, 1, 3) vs (3, 2, 1) -> rho = 1 - 6*(1+1+4)/(3*8) = -0.5
    assert q["self_judge/oracle_spearman"] == pytest.approx(-0.5)


def test_best_and_worst_of_n_by_hand():
    scores, correct = [3, 1, 2, 2], [1, 0, 0, 1]
    assert selection_accuracy(scores, correct, 1) == selection_accuracy(scores, correct, 1, worst=True) == 0.5
    # The 6 pairs: {3,1} {3,2} {3,2'} pick the right 3 -> 1; {1,2} -> 0; {1,2'} -> 1; {2,2'} a tie -> 0.5.
    assert selection_accuracy(scores, correct, 2) == pytest.approx(4.5 / 6)
    # Worst: {3,1} {3,2} {1,2} {1,2'} -> 0; {3,2'} -> 1; {2,2'} -> 0.5.
    assert selection_accuracy(scores, correct, 2, worst=True) == pytest.approx(1.5 / 6)
    # Triples: three hold the 3 (right); {1,2,2'} ties 2 and 2' -> 0.5.
    assert selection_accuracy(scores, correct, 3) == pytest.approx(3.5 / 4)
    assert selection_accuracy(scores, correct, 4) == 1.0 and selection_accuracy(scores, correct, 4, worst=True) == 0.0
    # An unscored sample is never picked while a scored one is in the subset, best or worst.
    assert selection_accuracy([None, 1.0], [1, 0], 2) == selection_accuracy([None, 1.0], [1, 0], 2, worst=True) == 0.0
    assert selection_accuracy([None, None], [1, 0], 2) == 0.5
    with pytest.raises(ValueError):
        selection_accuracy(scores, correct, 5)


def _enumerated(scores, correct, n, worst):
    """Best-of-n over every subset, ties broken at random (their mean), unscored never first."""
    def pick(subset):
        keys = [(-1 if worst else 1) * scores[i] if scores[i] is not None else float("-inf") for i in subset]
        top = max(keys)
        return statistics.fmean(correct[i] for i, k in zip(subset, keys) if k == top)
    return statistics.fmean(pick(s) for s in itertools.combinations(range(len(scores)), n))


def test_the_estimator_equals_the_mean_over_all_subsets():
    rng = random.Random(0)
    for _ in range(200):
        m = rng.randint(1, 8)
        scores = [rng.choice([None, 0.0, 1.0, 2.0, 3.5]) for _ in range(m)]
        correct = [rng.randint(0, 1) for _ in range(m)]
        for n in range(1, m + 1):
            for worst in (False, True):
                assert selection_accuracy(scores, correct, n, worst=worst) == pytest.approx(
                    _enumerated(scores, correct, n, worst))


class Pool:
    """Fixed samples per prompt (the first n)."""

    def __init__(self, samples):
        self.samples, self.calls = samples, []

    def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
        self.calls.append((sampling, n))
        return [self.samples[m][:n] for m in messages]


def test_evaluate_best_of_n_by_hand(tmp_path):
    cfg = compose_config([*TINY, "reward=oracle", "evaluation=best_of_n", "evaluation.best_of_n_sizes=[4,1,2]"])
    # The fake reward is the answer's length; the oracle says "right" for answers holding "x".
    oracle = Oracle(correct=lambda p, r: "x" in r, score=lambda p, r: float(len(r)))
    engine = Pool({"p": ["xxx", "a", "bb", "xx", "more"], "q": ["yy", "y", "x", "yyy"]})
    data = SeedData([], [], [{"prompt": "p"}, {"prompt": "q"}], [])
    result = evaluate_best_of_n(engine, data, cfg, oracle, Context(cfg, 0, oracle=oracle), seed=1, out_dir=tmp_path)
    (sampling, n), = engine.calls
    assert n == 4 and (sampling.temperature, sampling.top_p) == (0.7, 0.9)  # the evaluation's sampling
    # p: lengths 3 1 2 2, right 1 0 0 1 (the hand case above); q: lengths 2 1 1 3, right 0 0 1 0:
    # ("1'" is the right "x"). q best-of-2: {2,1} {2,1'} {2,3} {1,3} {1',3} -> 0, {1,1'} a tie -> 0.5: 0.5/6.
    # q worst-of-2: {2,1} -> 0, {2,1'} -> 1, {2,3} -> 0, {1,1'} -> 0.5, {1,3} -> 0, {1',3} -> 1: 2.5/6.
    assert result == pytest.approx({
        "bon/oracle/oracle_accuracy@1": (0.5 + 0.25) / 2, "won/oracle/oracle_accuracy@1": (0.5 + 0.25) / 2,
        "bon/oracle/oracle_accuracy@2": (4.5 / 6 + 0.5 / 6) / 2, "won/oracle/oracle_accuracy@2": (1.5 / 6 + 2.5 / 6) / 2,
        "bon/oracle/oracle_accuracy@4": (1.0 + 0.0) / 2, "won/oracle/oracle_accuracy@4": (0.0 + 0.5) / 2,
    })
    rows = read_jsonl(tmp_path / "eval_best_of_n.jsonl")
    assert rows[1] == {"prompt": "q", "responses": ["yy", "y", "x", "yyy"], "scores": [2.0, 1.0, 1.0, 3.0],
                       "correct": [False, False, True, False]}


def test_head_to_head_script_matches_the_loop(tiny_run):
    # scripts/head_to_head.py on the sampled answers gives the loop's own h2h/vs_m1_win_rate_sampled,
    # and its split adds up to it.
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "head_to_head.py"
    out = subprocess.run([sys.executable, str(script), str(tiny_run), "--a", "3", "--b", "1", "--answers", "sampled"],
                         capture_output=True, text=True, check=True).stdout
    m3 = read_jsonl(tiny_run / "metrics.jsonl")[2]
    win_rate = float(re.search(r"win rate \(ties half\) ([\d.]+)%", out).group(1)) / 100
    assert win_rate == pytest.approx(m3["h2h/vs_m1_win_rate_sampled"], abs=5e-4)
    acc_part, partial = (float(x) for x in re.search(r"= 0\.5 ([+-][\d.]+) .* ([+-][\d.]+) \(partial", out).groups())
    assert 0.5 + acc_part + partial == pytest.approx(win_rate, abs=1e-3)
    m1 = read_jsonl(tiny_run / "metrics.jsonl")[0]
    gap = m3["policy/oracle_accuracy_sampled"] - m1["policy/oracle_accuracy_sampled"]
    assert acc_part == pytest.approx(gap / 2, abs=1e-4)
