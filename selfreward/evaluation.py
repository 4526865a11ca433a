"""Measurements of a model M_t on held-out data: its judging and its answers.

The judge is measured against the gold ranking of ``judge_eval.jsonl``; answers against an
oracle (the built-in world's checker, or exact match with a reference answer when the eval
prompts carry one). The outputs that the numbers come from are written beside them so that
notebooks can look at individual cases.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfreward import metrics
from selfreward.data import SeedData, gold_labels
from selfreward.generation import Engine, Sampling
from selfreward.judge import judge
from selfreward.prompts import load_template
from selfreward.rundir import write_jsonl

@dataclass(frozen=True)
class Oracle:
    """Ground truth for measurement: is an answer correct, and (if known) its graded quality."""

    correct: Callable[[str, str], bool]
    score: Callable[[str, str], float | None] | None = None


def make_oracle(cfg, data: SeedData) -> Oracle | None:
    """The built-in world's checker and rubric, exact match on reference answers, or None."""
    if cfg.data.source == "builtin":
        from selfreward.world import is_correct, oracle_score

        return Oracle(is_correct, oracle_score)
    answers = {r["prompt"]: r["answer"] for r in data.eval_prompts if "answer" in r}
    if len(answers) < len(data.eval_prompts):
        return None
    return Oracle(lambda prompt, response: response.strip() == str(answers[prompt]).strip())


def head_to_head(scores_a: list[float], scores_b: list[float]) -> dict:
    """Win/tie/loss of A against B, prompt by prompt (ties count half in ``win_rate``)."""
    outcomes = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b, strict=True)]
    return metrics.win_rate(outcomes)


def evaluate_judge(engine: Engine, data: SeedData, cfg, *, seed: int, out_dir: Path) -> dict:
    """Judge every held-out response and compare with the gold ranking."""
    items = [(row["prompt"], resp) for row in data.judge_eval for resp in row["responses"]]
    j = cfg.judge
    records = judge(
        engine, load_template(j.template), items, Sampling(j.temperature, j.top_p, j.max_new_tokens),
        repeats=cfg.evaluation.judge_repeats or j.repeats, min_score=j.min_score, max_score=j.max_score,
        seed=seed, desc="eval judge",
    )
    groups, rows, k = [], [], 0
    for row in data.judge_eval:
        recs = records[k : k + len(row["responses"])]
        k += len(row["responses"])
        gold = gold_labels(row)
        groups.append({"gold": gold, "pred": [r["score"] for r in recs]})
        rows.extend({"prompt": row["prompt"], "response": resp, "gold": g, **r}
                    for resp, g, r in zip(row["responses"], gold, recs))
    write_jsonl(out_dir / "eval_judge.jsonl", rows)
    # The parse-failure rate counts single judgments, not candidates left without any score.
    judgments = [s for r in records for s in r["scores"]]
    result = metrics.judge_metrics(groups)
    result["parse_failure_rate"] = sum(s is None for s in judgments) / len(judgments)
    return {f"judge/{key}": value for key, value in result.items()}


def evaluate_policy(engine: Engine, data: SeedData, cfg, oracle: Oracle | None, *, seed: int,
                    out_dir: Path) -> dict:
    """Greedy and sampled answers to the held-out prompts, scored by the oracle."""
    e = cfg.evaluation
    prompts = [r["prompt"] for r in data.eval_prompts]
    greedy = [o[0] for o in engine.generate(prompts, Sampling(0.0, 1.0, e.max_new_tokens), seed=seed,
                                            desc="eval greedy")]
    sampled = [o[0] for o in engine.generate(prompts, Sampling(e.sampled_temperature, e.top_p, e.max_new_tokens),
                                             seed=seed + 1, desc="eval sampled")]
    rows = []
    for p, g, s in zip(prompts, greedy, sampled):
        row = {"prompt": p, "greedy": g, "sampled": s}
        if oracle is not None:
            row.update(greedy_correct=oracle.correct(p, g), sampled_correct=oracle.correct(p, s))
            if oracle.score is not None:
                row.update(greedy_score=oracle.score(p, g), sampled_score=oracle.score(p, s))
        rows.append(row)
    write_jsonl(out_dir / "eval_policy.jsonl", rows)
    result = {"policy/mean_length": statistics.fmean(len(g) for g in greedy)}
    if oracle is not None:
        result["policy/oracle_accuracy"] = statistics.fmean(r["greedy_correct"] for r in rows)
        result["policy/oracle_accuracy_sampled"] = statistics.fmean(r["sampled_correct"] for r in rows)
        if oracle.score is not None:
            result["policy/oracle_score"] = statistics.fmean(r["greedy_score"] for r in rows)
            result["policy/oracle_score_sampled"] = statistics.fmean(r["sampled_score"] for r in rows)
    else:
        result["policy/oracle_accuracy"] = result["policy/oracle_accuracy_sampled"] = None
    return result
