"""Judge template x scoring mode on a run's held-out judge set, side by side.

    python scripts/compare_judges.py runs/default/seed0 --model 1
    python scripts/compare_judges.py runs/default/seed0 --model 3 --templates judge_additive_small judge_multiple_choice

Loads model M_t of a finished run and measures its judging on the run's `data/judge_eval.jsonl`
with every template and scoring mode asked for (`sample`: the mean of `--repeats` sampled
judgments that parse; `expected`: the expected score from the score tokens' probabilities after
one greedy judgment). Prints a markdown table: pairwise accuracy, exact match, Spearman, Kendall
tau, parse-failure rate and judging time. Outputs go to a temporary folder; the run is not changed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from selfreward.data import load_data
from selfreward.evaluation import evaluate_judge
from selfreward.generation import load_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--model", type=int, default=1, help="t of the model M_t to measure")
    parser.add_argument("--templates", nargs="+", default=["judge_additive_small", "judge_multiple_choice"])
    parser.add_argument("--modes", nargs="+", default=["sample", "expected"], choices=["sample", "expected"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cfg = OmegaConf.load(args.run_dir / "config.yaml")
    data = load_data(args.run_dir / "data", cfg)
    engine = load_engine(str(args.run_dir / f"m{args.model}" / "model"), cfg.model, cfg.generation)
    columns = ["pairwise_accuracy", "exact_match", "spearman", "kendall_tau", "parse_failure_rate"]
    print(f"M{args.model} of {args.run_dir}, {len(data.judge_eval)} held-out prompts\n")
    print("| template | mode | " + " | ".join(columns) + " | seconds |")
    print("|---" * (len(columns) + 3) + "|")
    for template in args.templates:
        for mode in args.modes:
            cfg.judge.template, cfg.judge.mode = template, mode
            cfg.judge.repeats = args.repeats if mode == "sample" else 1
            cfg.evaluation.judge_repeats = None
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                result = evaluate_judge(engine, data, cfg, seed=0, out_dir=Path(tmp))
                seconds = time.perf_counter() - start
            cells = [f"{result[f'judge/{c}']:.3f}" for c in columns]
            label = f"{mode} ({cfg.judge.repeats})" if mode == "sample" else mode
            print(f"| {template} | {label} | " + " | ".join(cells) + f" | {seconds:.1f} |")


if __name__ == "__main__":
    main()
