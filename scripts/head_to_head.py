"""Head-to-head between two models of a run on its held-out prompts.

    python scripts/head_to_head.py runs/default/seed0 --a 3 --b 1                  # oracle (built-in world)
    python scripts/head_to_head.py runs/default/seed0 --a 3 --b 1 --judge self     # M_a judges, pairwise template
    python scripts/head_to_head.py runs/default/seed0 --a 3 --b 1 --judge /path/to/judge_model

Compares the greedy answers that the run's evaluation stored for M_a and M_b
(`m<t>/eval_policy.jsonl`, the same prompts for every model). `--judge oracle` compares the
built-in world's graded scores (ties count half). Any other judge (`self` = M_a, or a model
path) reads both answers with a pairwise A/B template in both orders, the paper's protocol:
a win needs both verdicts, a disagreement is a tie. Mean answer length is printed beside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from selfreward.evaluation import head_to_head, judged_head_to_head
from selfreward.generation import load_engine
from selfreward.prompts import load_template
from selfreward.rundir import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--a", type=int, required=True, help="t of model M_a")
    parser.add_argument("--b", type=int, required=True, help="t of model M_b")
    parser.add_argument("--judge", default="oracle", help="oracle, self, or a judge model's path or hub id")
    parser.add_argument("--template", default="judge_pairwise")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    rows_a = read_jsonl(args.run_dir / f"m{args.a}" / "eval_policy.jsonl")
    rows_b = read_jsonl(args.run_dir / f"m{args.b}" / "eval_policy.jsonl")
    prompts = [r["prompt"] for r in rows_a]
    answers_a, answers_b = [r["greedy"] for r in rows_a], [r["greedy"] for r in rows_b]
    if args.judge == "oracle":
        from selfreward.data.builtin import oracle_score

        result = head_to_head([oracle_score(p, a) for p, a in zip(prompts, answers_a)],
                              [oracle_score(p, b) for p, b in zip(prompts, answers_b)])
        result.update(length_a=sum(map(len, answers_a)) / len(answers_a),
                      length_b=sum(map(len, answers_b)) / len(answers_b))
    else:
        cfg = OmegaConf.load(args.run_dir / "config.yaml")
        path = str(args.run_dir / f"m{args.a}" / "model") if args.judge == "self" else args.judge
        engine = load_engine(path, cfg.model, cfg.generation)
        result = judged_head_to_head(engine, load_template(args.template), prompts, answers_a, answers_b,
                                     max_new_tokens=args.max_new_tokens, seed=0)
    print(f"M{args.a} vs M{args.b} on {result['n']} prompts, judge: {args.judge}")
    print(f"win {result['win']:.1%}  tie {result['tie']:.1%}  loss {result['loss']:.1%}  "
          f"win rate (ties half) {result['win_rate']:.1%}")
    print(f"mean answer length: M{args.a} {result['length_a']:.1f}, M{args.b} {result['length_b']:.1f} characters")


if __name__ == "__main__":
    main()
