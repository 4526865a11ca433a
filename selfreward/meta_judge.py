"""Meta-Rewarding's meta-judge (Wu et al. 2024, arXiv 2407.19594): the model judges its own judgments.

The self-judge writes several judgments of each candidate (``judge.repeats``). Where they disagree
on the score, M_t compares two of them with a pairwise meta-judge prompt, in both orders (so that
a preference for the first or second position cancels out); each order gives a win to the
judgment it prefers. The judgment with the most wins becomes the chosen answer to the *judge*
prompt and the one with the fewest the rejected answer, and these judgment pairs are trained
with DPO together with the response pairs, so that the judging skill improves too instead of
being left to drift.

The paper ranks judgments by Elo over many comparisons; with the few judgments per candidate
used here (3 by default) a round robin in both orders gives the same order as Elo, so the win
count is used. Files: ``m<t+1>/judge_pairs.jsonl`` (one pair per line: ``prompt`` is the filled
judge prompt, ``chosen``/``rejected`` the judgments, plus the comparisons behind it).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from itertools import combinations

from pathlib import Path

from selfreward.generation import Engine, Sampling
from selfreward.judge import judge_message, parse_winner
from selfreward.prompts import fill, load_template
from selfreward.rundir import read_jsonl, write_jsonl

# A meta-judge may quote a judgment back; what is quoted must not decide the verdict.
_QUOTED_JUDGMENT = re.compile(r"<judgment_([ab])>.*?(?:</judgment_\1>|\Z)", re.DOTALL)


def meta_judge_message(template: str, prompt: str, response: str, judgment_a: str, judgment_b: str) -> str:
    """The meta-judge's user message: the template filled with the task, the response and two judgments."""
    return fill(template, prompt=prompt, response=response, judgment_a=judgment_a, judgment_b=judgment_b)


def parse_meta_winner(text: str) -> str | None:
    """``"A"`` or ``"B"`` from the meta-judgment's last ``Winner:`` line (quoted judgments ignored)."""
    return parse_winner(_QUOTED_JUDGMENT.sub("", text))


def contested(records: list[dict]) -> list[tuple[dict, list[int]]]:
    """The judged candidates worth meta-judging, each with the indices of its distinct judgments
    that parsed: at least two of them, and not all with the same score (judgments that agree on
    the score give the response pairs nothing to correct)."""
    out = []
    for record in records:
        seen: dict[str, int] = {}
        for i, (text, score) in enumerate(zip(record.get("judgments", []), record.get("scores", []))):
            if score is not None and text not in seen:
                seen[text] = i
        kept = list(seen.values())
        if len(kept) >= 2 and len({record["scores"][i] for i in kept}) >= 2:
            out.append((record, kept))
    return out


def judgment_pairs(engine: Engine, meta_template: str, judge_template: str, records: list[dict], *,
                   max_responses: int, max_new_tokens: int, seed: int,
                   desc: str = "meta-judge") -> tuple[list[dict], dict]:
    """Meta-judge the contested candidates of ``records`` (``judgments.jsonl`` rows of the self-judge)
    and return the judgment pairs and counts for the metrics.

    At most ``max_responses`` contested candidates are meta-judged (a seeded sample, so that the
    stage's cost is bounded); every two of a candidate's distinct parsed judgments are compared in
    both orders with greedy decoding. A pair is made when the most-winning judgment has strictly
    more wins than the least-winning one.
    """
    pool = contested(records)
    rng = random.Random(seed)
    chosen_items = pool if len(pool) <= max_responses else rng.sample(pool, max_responses)
    messages, index = [], []
    for k, (record, kept) in enumerate(chosen_items):
        for i, j in combinations(kept, 2):
            a, b = record["judgments"][i], record["judgments"][j]
            messages.append(meta_judge_message(meta_template, record["prompt"], record["response"], a, b))
            messages.append(meta_judge_message(meta_template, record["prompt"], record["response"], b, a))
            index.append((k, i, j))
    texts = [o[0] for o in engine.generate(messages, Sampling(0.0, 1.0, max_new_tokens), seed=seed, desc=desc)] \
        if messages else []
    wins: list[dict[int, int]] = [{i: 0 for i in kept} for _, kept in chosen_items]
    comparisons: list[list[dict]] = [[] for _ in chosen_items]
    failed = consistent = 0
    for (k, i, j), first, second in zip(index, texts[0::2], texts[1::2]):
        w1, w2 = parse_meta_winner(first), parse_meta_winner(second)
        failed += (w1 is None) + (w2 is None)
        # Order 1 shows i as A; order 2 shows j as A.
        winner1 = {"A": i, "B": j}.get(w1)
        winner2 = {"A": j, "B": i}.get(w2)
        for w in (winner1, winner2):
            if w is not None:
                wins[k][w] += 1
        consistent += winner1 is not None and winner1 == winner2
        comparisons[k].append({"a": i, "b": j, "a_first": first, "b_first": second})
    pairs = []
    for k, (record, kept) in enumerate(chosen_items):
        best = max(kept, key=lambda i: (wins[k][i], -i))
        worst = min(kept, key=lambda i: (wins[k][i], i))
        if wins[k][best] <= wins[k][worst]:
            continue
        pairs.append({
            "prompt": judge_message(judge_template, record["prompt"], record["response"]),
            "chosen": record["judgments"][best], "rejected": record["judgments"][worst],
            "task_prompt": record["prompt"], "response": record["response"],
            "chosen_score": record["scores"][best], "rejected_score": record["scores"][worst],
            "wins": [wins[k][i] for i in kept], "comparisons": comparisons[k],
        })
    n_comparisons = len(index)
    info = {
        "meta_judge/contested": len(pool),
        "meta_judge/judged": len(chosen_items),
        "meta_judge/comparisons": n_comparisons,
        "meta_judge/parse_failure_rate": failed / (2 * n_comparisons) if n_comparisons else None,
        # Both orders preferred the same judgment: the meta-judge looked past the position.
        "meta_judge/position_consistency": consistent / n_comparisons if n_comparisons else None,
        "meta_judge/pairs": len(pairs),
    }
    return pairs, info


def closer_to_oracle_rate(pairs: list[dict], score: Callable[[str, str], float | None]) -> float | None:
    """Built-in world, after the fact: the share of judgment pairs whose chosen judgment's score is
    strictly closer to the oracle's score of the response than the rejected judgment's (pairs the
    oracle cannot grade are left out). Never used by the loop."""
    graded = []
    for p in pairs:
        truth = score(p["task_prompt"], p["response"])
        if truth is not None:
            graded.append(abs(p["chosen_score"] - truth) < abs(p["rejected_score"] - truth))
    return sum(graded) / len(graded) if graded else None


def write_judge_pairs(engine: Engine, cfg, *, seed: int, out: Path, score: Callable[[str, str], float | None] | None = None
                      ) -> dict:
    """The loop's stage: ``out/judgments.jsonl`` in, ``out/judge_pairs.jsonl`` out (settings
    ``cfg.meta_judge``). ``score``: the built-in world's graded oracle, for the after-the-fact
    ``meta_judge/closer_to_oracle_rate``; the pairs never depend on it."""
    m = cfg.meta_judge
    pairs, info = judgment_pairs(engine, load_template(m.template), load_template(cfg.judge.template),
                                 read_jsonl(out / "judgments.jsonl"), max_responses=m.max_responses,
                                 max_new_tokens=m.max_new_tokens, seed=seed)
    write_jsonl(out / "judge_pairs.jsonl", pairs)
    if score is not None:
        info["meta_judge/closer_to_oracle_rate"] = closer_to_oracle_rate(pairs, score)
    return info
