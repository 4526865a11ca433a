"""Head-to-head between two models of a run on its held-out prompts.

    python scripts/head_to_head.py runs/default/seed0 --a 3 --b 1                  # oracle (built-in world)
    python scripts/head_to_head.py runs/default/seed0 --a 3 --b 1 --answers sampled  # the loop's h2h/vs_m1_win_rate_sampled
    python scripts/head_to_head.py runs/default/seed0 --a 3 --b 1 --judge self     # M_a judges, pairwise template
    python scripts/head_to_head.py runs/default/seed0 --a 3 --b 1 --judge /path/to/judge_model

Compares the greedy (or, with `--answers sampled`, the sampled) answers that the run's evaluation
stored for M_a and M_b (`m<t>/eval_policy.jsonl`, the same prompts for every model). `--judge
oracle` compares the built-in world's graded scores (ties count half) and splits the win rate into
0.5 + what the two models' accuracies decide + what partial credit adds where both are wrong
(`selfreward.evaluation.head_to_head_parts`): the accuracy part is exactly half the accuracy gap,
so a 55% win rate asks for ten points of accuracy less what partial credit gives. Any other judge (`self` = M_a, or a model
path) reads both answers with a pairwise A/B template in both orders, the paper's protocol:
a win needs both verdicts, a disagreement is a tie. Mean answer length is printed beside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from selfreward.evaluation import head_to_head_parts, judged_head_to_head
from selfreward.generation import load_engine
from selfreward.prompts import load_template
from selfreward.rundir import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--a", type=int, required=True, help="t of model M_a")
    parser.add_argument("--b", type=int, required=True, help="t of model M_b")
    parser.add_argument("--judge", default="oracle", help="oracle, self, or a judge model's path or hub id")
    parser.add_argument("--answers", choices=("greedy", "sampled"), default="greedy",
                        help="which of the evaluation's stored answers to compare")
    parser.add_argument("--template", default="judge_pairwise")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    rows_a = read_jsonl(args.run_dir / f"m{args.a}" / "eval_policy.jsonl")
    rows_b = read_jsonl(args.run_dir / f"m{args.b}" / "eval_policy.jsonl")
    prompts = [r["prompt"] for r in rows_a]
    if [r["prompt"] for r in rows_b] != prompts:
        raise SystemExit(f"M{args.a} and M{args.b} were evaluated on different prompts")
    answers_a, answers_b = [r[args.answers] for r in rows_a], [r[args.answers] for r in rows_b]
    parts = None
    if args.judge == "oracle":
        from selfreward.data.builtin import is_correct, oracle_score

        scores_a = [oracle_score(p, a) for p, a in zip(prompts, answers_a)]
        scores_b = [oracle_score(p, b) for p, b in zip(prompts, answers_b)]
        result = parts = head_to_head_parts(scores_a, scores_b,
                                            [is_correct(p, a) for p, a in zip(prompts, answers_a)],
                                            [is_correct(p, b) for p, b in zip(prompts, answers_b)])
        result.update(length_a=sum(map(len, answers_a)) / len(answers_a),
                      length_b=sum(map(len, answers_b)) / len(answers_b))
    else:
        cfg = OmegaConf.load(args.run_dir / "config.yaml")
        path = str(args.run_dir / f"m{args.a}" / "model") if args.judge == "self" else args.judge
        engine = load_engine(path, cfg.model, cfg.generation)
        result = judged_head_to_head(engine, load_template(args.template), prompts, answers_a, answers_b,
                                     max_new_tokens=args.max_new_tokens, seed=0)
    print(f"M{args.a} vs M{args.b} on {result['n']} prompts, {args.answers} answers, judge: {args.judge}")
    print(f"win {result['win']:.1%}  tie {result['tie']:.1%}  loss {result['loss']:.1%}  "
          f"win rate (ties half) {result['win_rate']:.1%}")
    if parts:
        print(f"accuracy M{args.a} {parts['accuracy_a']:.1%}, M{args.b} {parts['accuracy_b']:.1%}: win rate = 0.5 "
              f"{parts['accuracy_part']:+.4f} (half the accuracy gap) {parts['partial_credit_part']:+.4f} "
              f"(partial credit where both are wrong)")
    print(f"mean answer length: M{args.a} {result['length_a']:.1f}, M{args.b} {result['length_b']:.1f} characters")


if __name__ == "__main__":
    main()
