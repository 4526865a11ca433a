"""The self-judge on more held-out prompts than a run's own judge set: a judge measure with less noise.

    python scripts/judge_heldout.py runs/judge_overrule/seed0 [runs/judge_overrule/seed1 ...] \\
        [--models 1 3] [--prompts 1000]

The loop measures each M_t's judge on the world's ``judge_eval.jsonl`` (100 prompts of four
answers on the built-in world): its pairwise accuracy moves by 0.1 on one seed between runs that
differ only slightly, and it is not known how much of that is the 100 prompts. This script draws
``--prompts`` more held-out judge rows from the run's own world (``extra_judge_eval``: prompts
disjoint from every prompt the world holds, answers drawn as the world draws them), has each
model judge them with the run's judge settings (template, length, repeats, temperature,
``judge.continue_unscored``) and the seed the loop's evaluation uses, and prints, per model, the
pairwise accuracy with its standard error over prompts (``pairwise_accuracy_se``) on the run's own
set (from ``m<t>/eval_judge.jsonl``, nothing re-run) and on the larger one. Written to
``<run>/judge_heldout/``: ``m<t>/eval_judge.jsonl`` (the judgments of the last size measured) and
``summary.jsonl`` (one row per model and size; a model already measured at that size is read back,
not judged again), which ``selfreward-report`` puts in its table "The judge on more held-out prompts".
Built-in world only; the loop never reads any of it.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from selfreward.data import SeedData
from selfreward.data.builtin import extra_judge_eval
from selfreward.evaluation import evaluate_judge
from selfreward.generation import close_engine, load_engine
from selfreward.loop import stage_seed
from selfreward.metrics import JudgeGroup, pairwise_accuracy, pairwise_accuracy_se
from selfreward.rundir import HELDOUT_JUDGE, read_jsonl, write_jsonl


def own_set(run: Path, model: int) -> tuple[float, float] | None:
    """Pairwise accuracy and its standard error on the run's own judge set, from the loop's
    ``m<t>/eval_judge.jsonl`` (one row per judged response, in prompt order)."""
    path = run / f"m{model}" / "eval_judge.jsonl"
    if not path.exists():
        return None
    groups: dict[str, tuple[list, list]] = {}
    for row in read_jsonl(path):
        gold, pred = groups.setdefault(row["prompt"], ([], []))
        gold.append(row["gold"])
        pred.append(row["score"])
    judged = [JudgeGroup(gold=gold, pred=pred) for gold, pred in groups.values()]
    return pairwise_accuracy(judged), pairwise_accuracy_se(judged)


def measure(run: Path, model: int, n_prompts: int) -> dict:
    """M_t's judge on ``n_prompts`` extra held-out rows of the run's world; read back if done."""
    summary = run / HELDOUT_JUDGE
    out = summary.parent
    done = read_jsonl(summary) if summary.exists() else []
    for row in done:
        if row["model"] == model and row["prompts"] == n_prompts:
            return row
    cfg = OmegaConf.load(run / "config.yaml")
    rows = extra_judge_eval(cfg, n_prompts)
    engine = load_engine(str(run / f"m{model}" / "model"), cfg.model, cfg.generation)
    try:
        result = evaluate_judge(engine, SeedData(ift=[], eft=[], eval_prompts=[], judge_eval=rows), cfg,
                                seed=stage_seed(cfg.seed, model, "eval"), out_dir=out / f"m{model}")
    finally:
        close_engine(engine)
    row = {"model": model, "prompts": n_prompts, **result}
    write_jsonl(summary, [*done, row])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--models", type=int, nargs="+", default=None,
                        help="which M_t (default: every M_t the loop evaluated)")
    parser.add_argument("--prompts", type=int, default=1000, help="extra held-out judge prompts (default 1000)")
    args = parser.parse_args()
    if args.prompts < 2:
        parser.error(f"--prompts must be at least 2 (a standard error needs two prompts), got {args.prompts}")
    for run in args.runs:
        if not (run / "config.yaml").exists():
            parser.error(f"{run}: not a run directory (no config.yaml)")
        if OmegaConf.load(run / "config.yaml").data.source != "builtin":
            parser.error(f"{run}: extra held-out judge rows need the built-in world (data.source=builtin)")

    by_model: dict[int, list[float]] = {}
    print(f"judge pairwise accuracy ± its standard error over prompts; own set and {args.prompts} extra prompts")
    for run in args.runs:
        # By default the models the loop evaluated (M0, the base model, has no judge to measure).
        models = args.models or sorted(int(p.parent.name[1:]) for p in run.glob("m*/eval_judge.jsonl")
                                       if p.parent.name[1:].isdigit())
        if not models:
            raise SystemExit(f"{run}: no evaluated model (no m<t>/eval_judge.jsonl); name them with --models")
        for model in models:
            if not (run / f"m{model}" / "model").exists():
                raise SystemExit(f"{run}: no m{model}/model")
            own = own_set(run, model)
            row = measure(run, model, args.prompts)
            extra, se = row["judge/pairwise_accuracy"], row["judge/pairwise_accuracy_se"]
            by_model.setdefault(model, []).append(extra)
            own_text = f"{own[0]:.3f} ± {own[1]:.3f}" if own else "(no eval_judge.jsonl)"
            print(f"{run}  M{model}  own {own_text}  extra {extra:.3f} ± {se:.3f}  "
                  f"unparsed {row['judge/parse_failure_rate']:.3f}")
    if len(args.runs) > 1:
        for model, values in sorted(by_model.items()):
            print(f"mean over {len(values)} runs  M{model}  extra {statistics.fmean(values):.3f}")


if __name__ == "__main__":
    main()
