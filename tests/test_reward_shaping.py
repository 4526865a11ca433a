"""InfAlign's CTRL around a reward: quantiles among reference samples and the exponential
transform, by hand, with a fake reward (the oracle reward with a scripted oracle) and fixed
reference samples from a scripted engine."""

import math

import pytest

from selfreward.data import Oracle
from selfreward.reward_shaping import calibrate, ctrl_scores, shape, transform
from selfreward.rewards import Context, Scored, score_groups
from conftest import TINY, compose_config


def test_calibrate_counts_lower_references_and_half_the_ties():
    reference = [2.0, 3.0, 4.0, 1.0]
    assert calibrate(3.0, reference) == (2 + 0.5) / 4  # below: 2 and 1; one tie
    assert calibrate(1.0, reference) == 0.5 / 4
    assert calibrate(5.0, reference) == 1.0
    assert calibrate(0.0, reference) == 0.0
    assert calibrate(7.0, [7.0]) == 0.5  # K = 1: a tie is the median


def test_transform_is_increasing_for_both_signs():
    assert transform(0.625, 2.0) == pytest.approx(math.exp(1.25))
    assert transform(0.625, -2.0) == pytest.approx(-math.exp(-1.25))
    for t in (2.0, -2.0):
        assert transform(0.125, t) < transform(0.625, t) < transform(1.0, t)


def test_ctrl_scores_by_hand_keeps_raw_reward_and_quantile():
    scored = [[Scored(3.0, details={"votes": 1}), Scored(1.0), Scored(None)], [Scored(2.0)]]
    shaped = ctrl_scores(scored, [[2.0, 3.0, None, 4.0, 1.0], [None, None]], t=2.0)
    # Prompt 1: the unscored reference is left out, so the quantiles are among 2, 3, 4, 1.
    assert shaped[0][0].score == pytest.approx(math.exp(2 * 0.625))
    assert shaped[0][1].score == pytest.approx(math.exp(2 * 0.125))
    assert shaped[0][0].details == {"votes": 1, "raw_score": 3.0, "quantile": 0.625}
    # No reward, or no scored reference for the prompt: no shaped reward (no pair).
    assert shaped[0][2].score is None and shaped[0][2].details["quantile"] is None
    assert shaped[1][0].score is None and shaped[1][0].details["raw_score"] == 2.0


class FixedSamples:
    """An engine whose samples for each prompt are fixed; it records how it was asked."""

    def __init__(self, samples):
        self.samples, self.calls = samples, []

    def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
        self.calls.append((messages, sampling, n))
        return [self.samples[m][:n] for m in messages]


@pytest.mark.parametrize("t", [2.0, -1.0])
def test_shape_samples_k_references_scores_them_with_the_same_reward_and_transforms(t):
    cfg = compose_config([*TINY, "reward=oracle", "reward_shaping=ctrl", "reward_shaping.k=4",
                          f"reward_shaping.t={t}"])
    length = Oracle(correct=lambda p, r: False, score=lambda p, r: float(len(r)))  # the fake reward
    engine = FixedSamples({"p": ["aa", "aaa", "aaaa", "a", "unused"], "q": ["bb", "bb", "b", "bbbbbb"]})
    ctx = Context(cfg, 7, policy=lambda: engine, oracle=length)
    groups = [("p", ["aaa", "a", "aaaaa"]), ("q", ["bb"])]
    shaped, reference = shape(cfg, groups, score_groups(cfg, groups, ctx), ctx)
    (messages, sampling, n), = engine.calls
    g = cfg.generation
    assert messages == ["p", "q"] and n == 4
    assert (sampling.temperature, sampling.top_p, sampling.max_new_tokens) == (g.temperature, g.top_p,
                                                                                g.max_new_tokens)
    assert reference == [{"prompt": "p", "responses": ["aa", "aaa", "aaaa", "a"], "scores": [2.0, 3.0, 4.0, 1.0]},
                         {"prompt": "q", "responses": ["bb", "bb", "b", "bbbbbb"], "scores": [2.0, 2.0, 1.0, 6.0]}]
    # p: 3 -> (2 + 0.5)/4, 1 -> 0.5/4, 5 -> 4/4; q: 2 -> (1 + 2 * 0.5)/4.
    quantiles = [[0.625, 0.125, 1.0], [0.5]]
    assert [[s.details["quantile"] for s in row] for row in shaped] == quantiles
    expected = [[math.copysign(math.exp(t * q), t) for q in row] for row in quantiles]
    assert [[s.score for s in row] for row in shaped] == [[pytest.approx(v) for v in row] for row in expected]
    assert [[s.details["raw_score"] for s in row] for row in shaped] == [[3.0, 1.0, 5.0], [2.0]]


def test_no_shaping_returns_the_rewards_untouched():
    cfg = compose_config(TINY)
    scored = [[Scored(1.0)]]
    assert shape(cfg, [("p", ["a"])], scored, Context(cfg, 0)) == (scored, [])


def test_a_tiny_run_with_ctrl_and_best_of_n(tmp_path):
    """The loop with both: judgments.jsonl holds the shaped rewards of reference.jsonl's quantiles,
    and every model's metrics.jsonl row the Best-of-N / Worst-of-N family from eval_best_of_n.jsonl."""
    import torch

    import selfreward.loop as loop
    from selfreward.evaluation import selection_accuracy
    from selfreward.rundir import read_jsonl

    cfg = compose_config([*TINY, "threads=1", "reward=likelihood", "reward_shaping=ctrl", "reward_shaping.k=4",
                          "reward_shaping.t=2", "evaluation=best_of_n", "evaluation.best_of_n_sizes=[1,2,4]"])
    threads = torch.get_num_threads()
    try:
        loop.run(cfg, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "run"
    reference = {r["prompt"]: r for r in read_jsonl(run / "m2" / "reference.jsonl")}
    candidates = read_jsonl(run / "m2" / "candidates.jsonl")
    assert set(reference) == {c["prompt"] for c in candidates}
    assert all(len(r["responses"]) == len(r["scores"]) == 4 for r in reference.values())
    judged = read_jsonl(run / "m2" / "judgments.jsonl")
    for row in judged:
        q = calibrate(row["raw_score"], reference[row["prompt"]]["scores"])
        assert row["quantile"] == q and row["score"] == pytest.approx(math.exp(2 * q))
    assert read_jsonl(run / "m2" / "pairs.jsonl")

    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["model"] for r in rows] == [1, 2]
    for row in rows:
        pool = read_jsonl(run / f"m{row['model']}" / "eval_best_of_n.jsonl")
        assert all(len(p["responses"]) == 4 for p in pool)
        for n in (1, 2, 4):
            for kind, worst in (("bon", False), ("won", True)):
                value = row[f"{kind}/likelihood/oracle_accuracy@{n}"]
                assert 0 <= value <= 1
                assert value == pytest.approx(sum(selection_accuracy(p["scores"], p["correct"], n, worst=worst)
                                                  for p in pool) / len(pool))
        assert row["bon/likelihood/oracle_accuracy@1"] == pytest.approx(row["won/likelihood/oracle_accuracy@1"])
