"""Reward sources behind one interface: each scores (prompt, responses) groups, values by hand."""

from __future__ import annotations

import pytest

from selfreward.rewards import Context, Scored, per_distinct, score_groups
from conftest import TINY, compose_config


def _no_model(*_):
    pytest.fail("this reward needs no model")


def _ctx(cfg, policy=_no_model, engine=_no_model, oracle=None):
    return Context(cfg, 0, policy=policy, engine=engine, oracle=oracle)


def test_per_distinct_scores_each_distinct_candidate_once_and_shares_it():
    seen = []

    def score_items(items):
        seen.extend(items)
        return [Scored(float(len(r))) for _, r in items]

    result = per_distinct([("p", ["ab", "c", "ab"]), ("q", ["ab"])], score_items)
    assert seen == [("p", "ab"), ("p", "c"), ("q", "ab")]
    assert [[s.score for s in row] for row in result] == [[2.0, 1.0, 2.0], [2.0]]
    assert result[0][0] is result[0][2]


class _Judge:
    """Writes a prepared judgment per message, recording what it was asked."""

    def __init__(self, outputs):
        self.outputs, self.asked = outputs, []

    def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
        self.asked.extend(messages)
        return [[self.outputs[m]] * n for m in messages]


def test_the_self_judge_judges_each_distinct_candidate_once_with_the_judge_settings(tmp_path):
    (tmp_path / "judge.txt").write_text("{prompt}|{response}")
    cfg = compose_config([*TINY, "judge.repeats=2", f"judge.template={tmp_path / 'judge.txt'}"])
    engine = _Judge({"p|a": "fine\nScore: 4", "p|b": "no score"})
    result = score_groups(cfg, [("p", ["a", "b", "a"])], _ctx(cfg, policy=lambda: engine))
    assert engine.asked == ["p|a", "p|b"]
    a, b, again = result[0]
    assert (a.score, a.scores, a.judgments) == (4.0, [4, 4], ["fine\nScore: 4"] * 2)
    assert (b.score, b.scores) == (None, [None, None]) and again is a
    assert a.details["n_parsed"] == 2 and b.details["n_failed"] == 2
