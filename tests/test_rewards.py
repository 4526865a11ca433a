"""Reward sources behind one interface: each scores (prompt, responses) groups, values by hand."""

from __future__ import annotations

import math

import pytest
import torch

import selfreward.loop as loop
from selfreward import chat
from selfreward.data.builtin import build_base_model, build_tokenizer, write_base_model
from selfreward.generation import load_engine
from selfreward.judge import judge
from selfreward.prompts import fill, load_template
from selfreward.rewards.constitution import broken_principles, judge_template
from selfreward.rewards.reward_model import preference_pairs
from selfreward.rewards import Context, Scored, per_distinct, score_groups
from selfreward.rundir import read_jsonl, write_jsonl
from conftest import TINY, compose_config

TEXTS = ["User: sort: 3 1 2\nAssistant:\n1 2 3", "User: evens: 1 2 4\nAssistant:\n2 4"] * 20


def _no_model(*_):
    pytest.fail("this reward needs no model")


def _ctx(cfg, policy=_no_model, engine=_no_model, oracle=None):
    return Context(cfg, 0, policy=policy, engine=engine, oracle=oracle)


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    """The engine of a random tiny Llama saved as the loop saves models (float32 on the CPU)."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(TEXTS, vocab_size=300)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    write_base_model(folder, tokenizer, build_base_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2,
                                                         intermediate_size=64))
    cfg = compose_config(TINY)
    return load_engine(str(folder), cfg.model, cfg.generation), str(folder)


def test_per_distinct_scores_each_distinct_candidate_once_and_shares_it():
    seen = []

    def score_items(items):
        seen.extend(items)
        return [Scored(float(len(r))) for _, r in items]

    result = per_distinct([("p", ["ab", "c", "ab"]), ("q", ["ab"])], score_items)
    assert seen == [("p", "ab"), ("p", "c"), ("q", "ab")]
    assert [[s.score for s in row] for row in result] == [[2.0, 1.0, 2.0], [2.0]]
    assert result[0][0] is result[0][2]


def test_self_consistency_by_hand():
    cfg = compose_config([*TINY, "reward=self_consistency"])
    groups = [("sort: 3 1 2", ["1 2 3", " 1  2 3 ", "3 2 1", "1 2 3\n"]), ("evens: 2 3", ["2", "3"])]
    result = score_groups(cfg, groups, _ctx(cfg))
    # "1 2 3" is three of the four samples once whitespace is normalised; "3 2 1" one of four.
    assert [[s.score for s in row] for row in result] == [[0.75, 0.75, 0.25, 0.75], [0.5, 0.5]]
    assert [s.details["votes"] for s in result[0]] == [3, 3, 1, 3]


def _by_hand(engine, prompt, response):
    """log pi(response, end of turn | prompt) from one forward pass over the whole sequence."""
    tokenizer, model = engine.tokenizer, engine.model
    context = chat.prompt_ids(tokenizer, prompt)
    answer = tokenizer.encode(response, add_special_tokens=False) + [chat.end_of_turn_id(tokenizer)]
    ids = torch.tensor([context + answer])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
    total = sum(logp[len(context) + k - 1, t].item() for k, t in enumerate(answer))
    return total, len(answer)


@pytest.mark.parametrize("normalised", [False, True])
def test_likelihood_is_the_models_log_probability_of_the_answer(tiny_engine, normalised):
    engine, _ = tiny_engine
    cfg = compose_config([*TINY, "reward=likelihood", f"reward.length_normalised={normalised}"])
    groups = [("sort: 3 1 2", ["1 2 3", "3 2 1", "1 2 3"]), ("evens: 1 2 4", ["2 4", ""])]
    result = score_groups(cfg, groups, _ctx(cfg, policy=lambda: engine))
    for (prompt, responses), row in zip(groups, result):
        for response, scored in zip(responses, row):
            total, tokens = _by_hand(engine, prompt, response)
            assert scored.score == pytest.approx(total / tokens if normalised else total, abs=1e-4)
            assert scored.details == {"logprob": pytest.approx(total, abs=1e-4), "tokens": tokens}
            assert scored.judgments == [] and scored.scores == []
    # Copies share one scoring; an empty answer is scored too (the chance of stopping at once).
    assert result[0][0] is result[0][2] and math.isfinite(result[1][1].score)


def test_the_judgments_stage_writes_any_reward_through_the_interface(tmp_path):
    cfg = compose_config([*TINY, "reward=self_consistency"])
    write_jsonl(tmp_path / "candidates.jsonl", [{"prompt": "p", "responses": ["a", "b", "a"],
                                                 "finished": [True, True, False]}])
    info = loop.write_judgments(_ctx(cfg), cfg, out=tmp_path)
    rows = read_jsonl(tmp_path / "judgments.jsonl")
    assert [(r["response"], r["finished"], r["score"]) for r in rows] == [("a", True, 2 / 3), ("b", True, 1 / 3),
                                                                           ("a", False, 2 / 3)]
    assert all(r["judgments"] == [] and r["scores"] == [] for r in rows)
    assert info["distinct_candidates"] == 2 and info["parse_failure_rate"] is None
    assert info["mean_score"] == pytest.approx(0.5)


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


class _JudgeWithScores(_Judge):
    """A _Judge whose most likely score after any judgment's Score: is 2."""

    def continuation_logprobs(self, messages, prefixes, continuations):
        return [[0.0 if c == " 2" else -9.0 for c in continuations] for _ in prefixes]


def test_the_judgments_stage_counts_completed_scores_as_parse_failures(tmp_path, caplog):
    (tmp_path / "judge.txt").write_text("{prompt}|{response}")
    cfg = compose_config([*TINY, "judge.repeats=2", f"judge.template={tmp_path / 'judge.txt'}",
                          "judge.complete_score=true"])
    engine = _JudgeWithScores({"p|a": "fine\nScore: 4", "p|b": "no score"})
    write_jsonl(tmp_path / "candidates.jsonl", [{"prompt": "p", "responses": ["a", "b", "b"]}])
    with caplog.at_level("WARNING", logger="selfreward"):
        info = loop.write_judgments(_ctx(cfg, policy=lambda: engine), cfg, out=tmp_path)
    # More than a fifth unread: the judge may have broken, and the log says so.
    assert "the judge left 2 of 4 judgments without a readable score (2 completed)" in caplog.text
    rows = read_jsonl(tmp_path / "judgments.jsonl")
    assert [(r["score"], r["score_completed"]) for r in rows] == [(4.0, [False, False]), (2.0, [True, True]),
                                                                   (2.0, [True, True])]
    # 4 judgments of 2 distinct candidates, 2 read from a model's completion: half of them unread.
    assert info["judgments"] == 4 and info["parse_failure_rate"] == 0.5 and info["completed_scores"] == 2
    assert info["unscored_candidates"] == 0


def test_the_judgments_stage_is_quiet_while_a_fifth_or_fewer_are_unread(tmp_path, caplog):
    (tmp_path / "judge.txt").write_text("{prompt}|{response}")
    cfg = compose_config([*TINY, "judge.repeats=1", f"judge.template={tmp_path / 'judge.txt'}"])
    engine = _Judge({f"p|{a}": f"Score: {i}" for i, a in enumerate("abcd")} | {"p|e": "no score"})
    write_jsonl(tmp_path / "candidates.jsonl", [{"prompt": "p", "responses": list("abcde")}])
    with caplog.at_level("WARNING", logger="selfreward"):
        info = loop.write_judgments(_ctx(cfg, policy=lambda: engine), cfg, out=tmp_path)
    assert info["parse_failure_rate"] == pytest.approx(0.2) and "readable score" not in caplog.text


def test_a_teacher_model_judges_instead_of_the_policy(tiny_engine):
    engine, folder = tiny_engine
    # Expected-score judging: greedy, so the teacher's scores can be checked against the judge's.
    cfg = compose_config([*TINY, "judge=expected", "reward=teacher", f"reward.model={folder}"])
    loaded = []

    def by_path(path):
        loaded.append(path)
        return engine

    groups = [("sort: 3 1 2", ["1 2 3", "3 2 1", "1 2 3"])]
    result = score_groups(cfg, groups, _ctx(cfg, engine=by_path))
    assert loaded and set(loaded) == {folder}  # the teacher's folder, and the policy never asked
    items = [("sort: 3 1 2", "1 2 3"), ("sort: 3 1 2", "3 2 1")]
    direct = judge(engine, load_template(cfg.judge.template), items, cfg.judge, seed=0)
    assert [s.score for s in result[0]] == [direct[0]["score"], direct[1]["score"], direct[0]["score"]]
    assert result[0][0].judgments == direct[0]["judgments"] and 0 <= result[0][0].score <= 5


def test_broken_principles_are_read_from_the_last_broken_line():
    assert broken_principles("Broken: 2, 1\nScore: 3", 3) == [1, 2]
    assert broken_principles("**Broken:** none\nScore: 5", 3) == []
    assert broken_principles("Broken: 1\nBroken: 3.\nScore: 4", 3) == [3]
    assert broken_principles("Broken: 4\nScore: 1", 3) is None  # there is no principle 4
    assert broken_principles("Broken: all of them", 3) is None
    assert broken_principles("Score: 5", 3) is None


def test_the_constitution_is_numbered_into_the_judge_prompt_and_the_judge_scores_it():
    cfg = compose_config([*TINY, "judge.repeats=1", "reward=constitution", "reward.principles=[Be right.,Be short.]"])
    template = judge_template(["Be right.", "Be short."], "judge_constitution", 0, 5)
    assert "\n1. Be right.\n2. Be short.\n" in template and "from 0 (breaks them all) to 5 (breaks none)" in template
    good, bad = (fill(template, prompt="p", response=r) for r in ("a", "b"))
    engine = _Judge({good: "Broken: none\nScore: 5", bad: "Broken: 1, 2\nScore: 1"})
    result = score_groups(cfg, [("p", ["a", "b"])], _ctx(cfg, policy=lambda: engine))
    assert engine.asked == [good, bad]
    assert [(s.score, s.details["broken"]) for s in result[0]] == [(5.0, [[]]), (1.0, [[1, 2]])]


def test_preference_pairs_from_seed_judgments_by_hand():
    eft = [{"prompt": "p", "response": "a", "judgment": "Score: 5"},
           {"prompt": "p", "response": "b", "judgment": "Score: 2"},
           {"prompt": "p", "response": "c", "judgment": "Score: 2"},  # ties b: no pair b-c
           {"prompt": "p", "response": "d", "judgment": "garbled"},  # no score: left out
           {"prompt": "q", "response": "x", "judgment": "Score: 1"}]  # one answer: no pair
    assert preference_pairs(eft, 0, 5) == [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                           {"prompt": "p", "chosen": "a", "rejected": "c"}]


def test_the_reward_model_is_trained_once_with_trl_and_scores_with_its_head(tiny_engine, tmp_path, monkeypatch):
    _, folder = tiny_engine
    import shutil

    from transformers import AutoModelForSequenceClassification

    from selfreward.data import SeedData
    from selfreward.rewards import reward_model

    shutil.copytree(folder, tmp_path / "m1" / "model")
    eft = [{"prompt": "sort: 3 1 2", "response": "1 2 3", "judgment": "Score: 5"},
           {"prompt": "sort: 3 1 2", "response": "3 2 1", "judgment": "Score: 1"},
           {"prompt": "evens: 1 2 4", "response": "2 4", "judgment": "Score: 5"},
           {"prompt": "evens: 1 2 4", "response": "1", "judgment": "Score: 0"}]
    cfg = compose_config([*TINY, "reward=reward_model", "reward.learning_rate=3e-3", "reward.epochs=30",
                          "reward.batch_size=2", "training.logging_steps=1"])
    ctx = Context(cfg, 0, oracle=None, data=SeedData([], eft, [], []), run_dir=tmp_path)
    groups = [("sort: 3 1 2", ["1 2 3", "3 2 1"]), ("evens: 1 2 4", ["2 4", "1", "2 4"])]
    result = score_groups(cfg, groups, ctx)
    info = read_jsonl(tmp_path / "m1" / "reward_model_log.jsonl")
    assert (tmp_path / "m1" / "reward_model.done").is_file() and info[-1]["train_loss"] is not None
    # The head fits the two training pairs: chosen above rejected for both.
    assert result[0][0].score > result[0][1].score and result[1][0].score > result[1][1].score
    assert result[1][2] is result[1][0]
    # The score is the saved head's output on the chat-formatted (prompt, answer), by hand.
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m1" / "reward_model").eval()
    tokenizer = tiny_engine[0].tokenizer
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "sort: 3 1 2"},
                                         {"role": "assistant", "content": "3 2 1"}], tokenize=True,
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        assert result[0][1].score == pytest.approx(model(input_ids=torch.tensor([ids])).logits[0, 0].item(), abs=1e-5)
    # Trained once: a later iteration reads the stage's model.
    monkeypatch.setattr(reward_model, "train", lambda *a, **k: pytest.fail("trained again"))
    again = score_groups(cfg, groups, ctx)
    assert [s.score for s in again[0]] == [s.score for s in result[0]]
