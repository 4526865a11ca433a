"""Does the self-judge's consensus know better than one of its judgments? Built-in world, oracle after the fact.

    python scripts/judge_consistency.py runs/judge_overrule/seed100 [--judge 1] [--model 2] \\
        [--candidates 400] [--samples 8] [--temperature 0.7]

Meta-Rewarding and self-consistency train the judge towards the judgments it agrees with most. That
helps only where the judge's errors are random, so that its most common verdict is right more
often than one verdict. This script measures it: M_j (``--judge``, default M1) judges a seeded
sample of the distinct candidates of the iteration that made M_t (``--model``, default 2: M1's own
candidates, ``m2/judgments.jsonl``) once greedily and ``--samples`` times at ``--temperature``,
with the run's judge settings otherwise (template, length, ``judge.continue_unscored``). Against the oracle's graded score of each
candidate it prints how often these scores equal the oracle's: the greedy one, one sampled one,
the most common sampled one (the consensus); and, over the candidates whose sampled scores
differ, the judgment pair a consensus meta-judge would make (a judgment with the most common score
chosen, one with the score farthest from it rejected): how often the chosen score is the closer
to the oracle's, and how often the rejected one is. Nothing is written; the loop never sees the oracle.
"""

from __future__ import annotations

import argparse
import collections
import random
from pathlib import Path

from omegaconf import OmegaConf

from selfreward.data import load_data, make_oracle
from selfreward.generation import load_engine
from selfreward.judge import judge
from selfreward.prompts import load_template
from selfreward.rundir import read_jsonl


def consensus(scores: list[float]) -> tuple[float, float] | None:
    """(the most common score, the score farthest from it) of one candidate's parsed sampled
    scores; ties go to the first sampled. None when fewer than two distinct scores (no pair)."""
    if len(set(scores)) < 2:
        return None
    mode = collections.Counter(scores).most_common(1)[0][0]
    return mode, max(scores, key=lambda s: abs(s - mode))


def consistency_stats(rows: list[dict]) -> dict[str, float]:
    """``rows``: ``{"oracle", "greedy", "sampled"}`` per candidate (scores; ``None`` where the
    oracle could not grade or a judgment did not parse). Candidates without an oracle score or
    without a parsed sampled score are left out; a greedy judgment without a score counts as wrong."""
    n = greedy = one = mode_right = contested = chosen_closer = rejected_closer = 0
    for row in rows:
        truth, sampled = row["oracle"], [s for s in row["sampled"] if s is not None]
        if truth is None or not sampled:
            continue
        n += 1
        greedy += row["greedy"] == truth
        one += sum(s == truth for s in sampled) / len(sampled)
        mode_right += collections.Counter(sampled).most_common(1)[0][0] == truth
        pair = consensus(sampled)
        if pair is not None:
            contested += 1
            chosen, rejected = (abs(s - truth) for s in pair)
            chosen_closer += chosen < rejected
            rejected_closer += rejected < chosen
    if not n:
        raise ValueError("no candidate with an oracle score and a parsed sampled judgment")
    return {
        "candidates": n,
        "greedy score = oracle's": greedy / n,
        "one sampled score = oracle's": one / n,
        "most common sampled score = oracle's": mode_right / n,
        "contested (sampled scores differ)": contested / n,
        "pairs: chosen closer to the oracle": chosen_closer / contested if contested else float("nan"),
        "pairs: rejected closer to the oracle": rejected_closer / contested if contested else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--judge", type=int, default=1, help="the judge: M_j (default M1)")
    parser.add_argument("--model", type=int, default=2,
                        help="the candidates of the iteration that made M_t, m{t}/judgments.jsonl (default 2)")
    parser.add_argument("--candidates", type=int, default=400)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = OmegaConf.load(args.run / "config.yaml")
    oracle = make_oracle(cfg, load_data(args.run / "data", cfg))
    if oracle is None or oracle.score is None:
        parser.error(f"{args.run}: its data source has no graded oracle (the built-in world has one)")
    if cfg.judge.mode != "sample":
        parser.error(f"{args.run}: judge.mode is {cfg.judge.mode!r}; sampled judgments need judge.mode=sample")
    rows = read_jsonl(args.run / f"m{args.model}" / "judgments.jsonl")
    items = list({(r["prompt"], r["response"]): None for r in rows})
    random.Random(args.seed).shuffle(items)
    items = items[: args.candidates]
    engine = load_engine(str(args.run / f"m{args.judge}" / "model"), cfg.model, cfg.generation)
    template = load_template(cfg.judge.template)
    greedy = judge(engine, template, items, OmegaConf.merge(cfg.judge, {"temperature": 0.0, "repeats": 1}),
                   seed=args.seed + 1, desc="greedy")
    sampled = judge(engine, template, items, OmegaConf.merge(
        cfg.judge, {"temperature": args.temperature, "top_p": 1.0, "repeats": args.samples}),
        seed=args.seed + 2, desc="sampled")
    stats = consistency_stats([{"oracle": oracle.score(p, r), "greedy": g["scores"][0], "sampled": s["scores"]}
                               for (p, r), g, s in zip(items, greedy, sampled, strict=True)])
    print(f"M{args.judge} judging the candidates of the iteration that made M{args.model}, {args.run} "
          f"({args.samples} samples at temperature {args.temperature}):")
    for key, value in stats.items():
        print(f"  {key:40s} {value if key == 'candidates' else f'{value:.3f}'}")


if __name__ == "__main__":
    main()
