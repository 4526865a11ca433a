"""Measurements of a model M_t on held-out data: its judging and its answers.

The judge is measured against the gold ranking of ``judge_eval.jsonl``; answers against an
oracle (the built-in world's checker, or exact match with a reference answer when the eval
prompts carry one). The outputs that the numbers come from are written beside them so that
notebooks can look at individual cases.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

from selfreward import metrics
from selfreward.data import Oracle, SeedData, gold_labels, make_oracle  # noqa: F401 - make_oracle for scripts
from selfreward.generation import Engine, Sampling
from selfreward.judge import judge, pairwise_verdicts
from selfreward.prompts import load_template
from selfreward.rundir import write_jsonl


def head_to_head(scores_a: list[float], scores_b: list[float]) -> dict:
    """Win/tie/loss of A against B, prompt by prompt (ties count half in ``win_rate``)."""
    outcomes = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b, strict=True)]
    return metrics.win_rate(outcomes)


def head_to_head_parts(scores_a: list[float], scores_b: list[float], correct_a: list[bool],
                       correct_b: list[bool]) -> dict:
    """:func:`head_to_head`'s win rate split into what the answers' accuracy decides and what the
    graded score adds, for an oracle whose right answers outscore every wrong one.

    Then a prompt where exactly one answer is right is won by it, and ``win_rate = 0.5 +
    accuracy_part + partial_credit_part`` exactly: ``accuracy_part = (acc_a - acc_b) / 2``, and
    ``partial_credit_part`` is half the mean, over all prompts, of +1 / -1 / 0 where both answers
    are wrong and A's grade is above / below / equal to B's. So a 55% win rate needs A ten points
    more accurate than B, less what partial credit gives. Raises ``ValueError`` if a right answer
    does not outscore a wrong one on the same prompt, or the lists differ in length."""
    n = len(scores_a)
    if not (len(scores_b) == len(correct_a) == len(correct_b) == n) or n == 0:
        raise ValueError("scores and correctness must cover the same prompts, at least one")
    partial = 0
    for sa, sb, ra, rb in zip(scores_a, scores_b, correct_a, correct_b):
        if ra != rb and (sa > sb) != ra:
            raise ValueError(f"a right answer does not outscore a wrong one (scores {sa} and {sb})")
        if not ra and not rb:
            partial += (sa > sb) - (sa < sb)
    result = head_to_head(scores_a, scores_b)
    result.update(accuracy_a=sum(correct_a) / n, accuracy_b=sum(correct_b) / n,
                  accuracy_part=(sum(correct_a) - sum(correct_b)) / n / 2, partial_credit_part=partial / n / 2)
    return result


def self_judge_quality(pairs: list[dict], judged: list[dict], score: Callable[[str, str], float | None],
                       correct: Callable[[str, str], bool] | None = None) -> dict:
    """How well the loop's own judge ordered the loop's own candidates, measured by an oracle's
    graded ``score`` after the fact (the loop never sees these numbers).

    ``self_judge/pair_accuracy``: share of pairs whose chosen answer has a strictly higher oracle
    score than the rejected one; ``self_judge/pair_tie_rate``: share with equal oracle scores (the
    rest point the wrong way). ``self_judge/oracle_spearman``: Spearman correlation between the
    judge's and the oracle's scores over the distinct scored candidates of the iteration, pooled.
    With ``correct``: ``self_judge/chosen_correct_rate`` and ``self_judge/rejected_correct_rate``,
    the share of pairs whose chosen (rejected) answer is right. A pair can point the right way with
    both answers wrong, and DPO's NLL term then trains on a wrong chosen answer; the chosen rate is
    what that term learns from. Prompts the oracle cannot grade (self-instructed prompts that are
    not valid tasks) are left out of all of these.
    """
    graded_pairs = [(p, score(p["prompt"], p["chosen"]), score(p["prompt"], p["rejected"])) for p in pairs]
    graded_pairs = [(p, c, r) for p, c, r in graded_pairs if c is not None and r is not None]
    gradeable = [p for p, _, _ in graded_pairs]
    outcomes = [(c, r) for _, c, r in graded_pairs]
    distinct = {(r["prompt"], r["response"]): r["score"] for r in judged if r["score"] is not None}
    graded = [(s, score(prompt, response)) for (prompt, response), s in distinct.items()]
    graded = [(s, o) for s, o in graded if o is not None]
    judge_scores, oracle_scores = [s for s, _ in graded], [o for _, o in graded]
    n = len(outcomes)
    quality = {
        "self_judge/pair_accuracy": sum(c > r for c, r in outcomes) / n if n else None,
        "self_judge/pair_tie_rate": sum(c == r for c, r in outcomes) / n if n else None,
        # One group pooling every candidate: the judge's scores across prompts, not within each.
        "self_judge/oracle_spearman": metrics.spearman([{"gold": oracle_scores, "pred": judge_scores}])
        if len(judge_scores) > 1 else None,
    }
    if correct is not None:
        quality["self_judge/chosen_correct_rate"] = (
            sum(correct(p["prompt"], p["chosen"]) for p in gradeable) / n if n else None)
        quality["self_judge/rejected_correct_rate"] = (
            sum(correct(p["prompt"], p["rejected"]) for p in gradeable) / n if n else None)
    return quality


def judged_head_to_head(engine: Engine, template: str, prompts: list[str], answers_a: list[str],
                        answers_b: list[str], *, max_new_tokens: int, seed: int) -> dict:
    """A against B on the same prompts, judged with a pairwise template in both orders (the
    paper's protocol): a win needs both verdicts, a disagreement between the orders is a tie,
    and so is a verdict that does not parse. Mean answer lengths are reported beside."""
    verdicts = pairwise_verdicts(engine, template, list(zip(prompts, answers_a, answers_b)),
                                 max_new_tokens=max_new_tokens, seed=seed, desc="head-to-head")
    # With A shown first, "A" is a vote for A; with B shown first, "B" is.
    outcomes = [1.0 if (v1, v2) == ("A", "B") else 0.0 if (v1, v2) == ("B", "A") else 0.5 for v1, v2 in verdicts]
    return {
        **metrics.win_rate(outcomes),
        "length_a": statistics.fmean(len(a) for a in answers_a),
        "length_b": statistics.fmean(len(b) for b in answers_b),
        "verdicts": verdicts,
    }


def evaluate_judge(engine: Engine, data: SeedData, cfg, *, seed: int, out_dir: Path) -> dict:
    """Judge every held-out response and compare with the gold ranking."""
    items = [(row["prompt"], resp) for row in data.judge_eval for resp in row["responses"]]
    records = judge(engine, load_template(cfg.judge.template), items, cfg.judge,
                    repeats=cfg.evaluation.judge_repeats, seed=seed, desc="eval judge")
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
    result = metrics.judge_metrics(groups, top=cfg.judge.max_score)
    completed = [c for r in records for c in r.get("score_completed", [])]
    result["parse_failure_rate"] = (sum(s is None for s in judgments) + sum(completed)) / len(judgments)
    if cfg.judge.complete_score:
        result["completed_scores"] = sum(completed)
    if cfg.judge.continue_unscored:
        result["continued_judgments"] = sum(c > 0 for r in records for c in r.get("judgment_continued", []))
    # Does the judge prefer longer answers among answers of equal gold quality?
    result["length_bias"] = metrics.length_bias([r["score"] for r in rows], [len(r["response"]) for r in rows],
                                                [r["gold"] for r in rows])
    return {f"judge/{key}": value for key, value in result.items()}


def evaluate_position_bias(engine: Engine, data: SeedData, cfg, *, seed: int, out_dir: Path) -> dict:
    """The pairwise template on held-out pairs of different gold quality, in both orders.

    ``judge/position_bias``: the share of parsed verdicts that pick the response shown first,
    minus 0.5 (0 is unbiased, +0.5 always picks the first). ``judge/pairwise_ab_accuracy``: the
    share of pairs judged correctly in both orders (an order-dependent verdict is a tie, 0.5),
    over the pairs whose two verdicts parsed.
    """
    e = cfg.evaluation
    triples = []
    for row in data.judge_eval:
        gold = gold_labels(row)
        for i in range(len(gold)):
            for j in range(i + 1, len(gold)):
                if gold[i] != gold[j]:
                    better, worse = (i, j) if gold[i] > gold[j] else (j, i)
                    triples.append((row["prompt"], row["responses"][better], row["responses"][worse]))
    triples = triples[: e.pairwise_pairs]
    verdicts = pairwise_verdicts(engine, load_template(cfg.judge.pairwise_template), triples,
                                 max_new_tokens=e.pairwise_max_new_tokens, seed=seed)
    write_jsonl(out_dir / "eval_pairwise.jsonl", [
        {"prompt": p, "better": b, "worse": w, "verdict_better_first": v1, "verdict_better_second": v2}
        for (p, b, w), (v1, v2) in zip(triples, verdicts)])
    parsed = [v for pair in verdicts for v in pair if v is not None]
    # Better shown first: "A" is right; better shown second: "B" is right. Only pairs whose two
    # verdicts both parsed count (an unparsed verdict is neither right nor wrong).
    outcomes = [0.5 * ((v1 == "A") + (v2 == "B")) for v1, v2 in verdicts if v1 is not None and v2 is not None]
    return {
        "judge/position_bias": sum(v == "A" for v in parsed) / len(parsed) - 0.5 if parsed else None,
        "judge/pairwise_ab_accuracy": statistics.fmean(outcomes) if outcomes else None,
        "judge/pairwise_ab_parse_failure_rate": 1 - len(parsed) / (2 * len(verdicts)) if verdicts else None,
    }


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


def selection_accuracy(scores: list[float | None], correct: list[float], n: int, *, worst: bool = False) -> float:
    """The expected correctness of the answer that Best-of-``n`` (Worst-of-``n`` with ``worst``)
    picks from ``n`` of these ``m`` samples, averaged over all ``C(m, n)`` subsets: the unbiased
    estimator from one set of samples, computed without listing the subsets.

    With the samples in increasing order of score (decreasing for ``worst``), the one at 0-based
    place ``i`` is picked by a subset whose best it is: ``C(i, n - 1)`` of the ``C(m, n)``
    subsets. Ties are broken at random, which is the same as giving every sample of a tied group
    the group's mean correctness. An unscored sample (``None``) is picked only by a subset with
    no scored sample. Written here because no library we use estimates Best-of-N from a sample pool.
    """
    m = len(scores)
    if not 1 <= n <= m:
        raise ValueError(f"Best-of-{n} needs 1 <= n <= {m} samples")
    sign = -1.0 if worst else 1.0
    keys = [-math.inf if s is None else sign * s for s in scores]
    order = sorted(range(m), key=lambda i: keys[i])
    value = [0.0] * m
    start = 0
    while start < m:  # tied groups: each member gets the group's mean correctness
        end = start
        while end < m and keys[order[end]] == keys[order[start]]:
            end += 1
        mean = statistics.fmean(correct[order[j]] for j in range(start, end))
        for j in range(start, end):
            value[j] = mean
        start = end
    return sum(math.comb(i, n - 1) * value[i] for i in range(m)) / math.comb(m, n)


def reward_name(cfg) -> str:
    """The reward's short name in metric keys: the module of ``reward._target_`` (``likelihood``)."""
    parts = str(cfg.reward._target_).split(".")
    return parts[-2] if len(parts) > 1 else parts[-1]


def evaluate_best_of_n(engine: Engine, data: SeedData, cfg, oracle: Oracle | None, ctx, *, seed: int,
                       out_dir: Path) -> dict:
    """Best-of-N and Worst-of-N by the configured reward (unshaped), graded by the oracle.

    ``max(evaluation.best_of_n_sizes)`` answers per held-out prompt are sampled once (the
    evaluation's sampling settings) and scored once by the reward (``ctx`` is its
    :class:`selfreward.rewards.Context`); every N is computed from that pool with
    :func:`selection_accuracy`. Keys: ``bon/<reward>/oracle_accuracy@N`` and
    ``won/<reward>/oracle_accuracy@N``, the mean over prompts (None without an oracle). The
    samples, scores and oracle verdicts go to ``eval_best_of_n.jsonl``.
    """
    from selfreward.rewards import score_groups

    e = cfg.evaluation
    sizes = sorted(set(e.best_of_n_sizes))
    prompts = [r["prompt"] for r in data.eval_prompts]
    samples = engine.generate(prompts, Sampling(e.sampled_temperature, e.top_p, e.max_new_tokens), n=max(sizes),
                              seed=seed, desc="eval best-of-n")
    scored = score_groups(cfg, [(p, list(o)) for p, o in zip(prompts, samples)], ctx)
    rows = []
    for p, o, row in zip(prompts, samples, scored):
        record = {"prompt": p, "responses": list(o), "scores": [s.score for s in row]}
        if oracle is not None:
            record["correct"] = [oracle.correct(p, r) for r in o]
        rows.append(record)
    write_jsonl(out_dir / "eval_best_of_n.jsonl", rows)
    name = reward_name(cfg)
    result = {}
    for n in sizes:
        for kind, worst in (("bon", False), ("won", True)):
            result[f"{kind}/{name}/oracle_accuracy@{n}"] = statistics.fmean(
                selection_accuracy(r["scores"], [float(c) for c in r["correct"]], n, worst=worst) for r in rows
            ) if oracle is not None else None
    return result
