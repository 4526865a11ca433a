"""One training step from a run's M1 on one iteration's pairs, for several objectives side by side.

    python scripts/compare_training_steps.py runs/oracle_reward/seed101 --pairs runs/oracle_reward/seed101/m2 \\
        dpo:1e-4:2:0 dpo:1e-4:2:1 dpo:1e-4:4:3 rft:3e-4:4

Each spec is ``dpo:LR:EPOCHS:NLL_WEIGHT`` (DPO from M1 against reference M1, with the run's other
DPO settings and ``training.dpo.sft_weight`` = NLL_WEIGHT; 0 is plain DPO) or ``rft:LR:EPOCHS``
(SFT on the iteration's candidates that have the top score, as the loop's ``rft`` objective does:
with oracle scores, the correct ones). Every trained model is measured on the run's held-out prompts, greedy and sampled at the
evaluation temperature, and a markdown table is printed. Use a run made with
``experiment=oracle_reward`` to measure the training step with perfect labels, and a validation
seed (not one of the seeds you report) to tune on. Models go to a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from selfreward.data import load_data
from selfreward.evaluation import make_oracle
from selfreward.generation import Sampling, load_engine
from selfreward.loop import rft_examples
from selfreward.rundir import read_jsonl
from selfreward.training import train_dpo, train_sft


def accuracy(path: str, cfg, prompts: list[str], correct) -> tuple[float, float]:
    engine = load_engine(path, cfg.model, cfg.generation)
    e = cfg.evaluation
    greedy = engine.generate(prompts, Sampling(0.0, 1.0, e.max_new_tokens), seed=1, desc="greedy")
    sampled = engine.generate(prompts, Sampling(e.sampled_temperature, e.top_p, e.max_new_tokens), seed=2,
                              desc="sampled")
    return tuple(statistics.fmean(correct(p, o[0]) for p, o in zip(prompts, outs)) for outs in (greedy, sampled))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--pairs", type=Path, required=True,
                        help="an iteration folder holding pairs.jsonl (and judgments.jsonl for rft)")
    parser.add_argument("specs", nargs="+")
    args = parser.parse_args()

    cfg = OmegaConf.load(args.run_dir / "config.yaml")
    data = load_data(args.run_dir / "data", cfg)
    oracle = make_oracle(cfg, data)
    if oracle is None:
        raise SystemExit("the run's held-out prompts have no oracle: nothing to measure accuracy with")
    prompts = [r["prompt"] for r in data.eval_prompts]
    pairs = read_jsonl(args.pairs / "pairs.jsonl")
    m1 = str(args.run_dir / "m1" / "model")
    print(f"{len(pairs)} pairs from {args.pairs}; {len(prompts)} held-out prompts of {args.run_dir}\n")
    print("| objective | lr | epochs | NLL weight | greedy | sampled | seconds |")
    print("|---|---|---|---|---|---|---|")
    greedy, sampled = accuracy(m1, cfg, prompts, oracle.correct)
    print(f"| M1 | | | | {greedy:.3f} | {sampled:.3f} | |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for k, spec in enumerate(args.specs):
            kind, lr, epochs, *weight = spec.split(":")
            out = Path(tmp) / f"model{k}"
            start = time.perf_counter()
            if kind == "dpo":
                dpo = cfg.training.dpo
                dpo.learning_rate, dpo.epochs, dpo.sft_weight = float(lr), float(epochs), float(weight[0])
                train_dpo(m1, m1, pairs, out, cfg, seed=0)
            elif kind == "rft":
                stage = cfg.training.rft
                stage.learning_rate, stage.epochs = float(lr), float(epochs)
                examples = rft_examples(read_jsonl(args.pairs / "judgments.jsonl"), cfg.judge.max_score)
                train_sft(m1, examples, out, cfg, seed=0, stage_cfg=stage)
            else:
                raise SystemExit(f"unknown spec {spec!r}: use dpo:LR:EPOCHS:NLL_WEIGHT or rft:LR:EPOCHS")
            seconds = time.perf_counter() - start
            greedy, sampled = accuracy(str(out), cfg, prompts, oracle.correct)
            nll = weight[0] if weight else ""
            print(f"| {kind} | {lr} | {epochs} | {nll} | {greedy:.3f} | {sampled:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
