# python scripts/bench_training.py runs/judge_overrule/seed0 --t 1     # the measurement (about 10 min on 2 CPU cores)
# python scripts/bench_training.py RUN_DIR --t 1 --stages dpo --layouts grouped:2 grouped:2:nll  # NLL-only shortcut
# python scripts/bench_training.py RUN_DIR --t 1 --stages sft --layouts random:1 random:1:b2  # SFT in length buckets
# python scripts/bench_training.py RUN_DIR --t 1 --steps 2 --rounds 1  # smoke test
"""Training throughput side by side: random batches against batches of rows of about one length
(``training.sft.group_by_length``, ``training.dpo.group_by_length``), on one torch thread or more,
for a finished run's two kinds of training stage: M1's SFT (the run's seed data, as the loop
builds it) and iteration t's DPO (the rows the loop trained M_{t+1} on, from ``m<t+1>``).

    python scripts/bench_training.py runs/judge_overrule/seed0 --t 1
    python scripts/bench_training.py runs/judge_overrule/seed0 --t 1 --layouts random:2 grouped:2 --steps 120

Each layout (``SAMPLING:THREADS``, SAMPLING ``random`` or ``grouped``; ``SAMPLING:THREADS:nll``
skips the rejected and reference passes of DPO rows with the chosen answer on both sides,
``training.dpo.nll_only_shortcut=true``, where the others run TRL's own loss on every row;
``SAMPLING:THREADS:bN`` runs each SFT batch in N passes by length, ``training.sft.length_buckets=N``) trains
``--steps`` optimizer steps of the stage's batch size on the same rows (a fixed shuffle of the
stage's rows, its first steps x batch_size), with the run's own settings otherwise, from the same model
(SFT: the run's M0; DPO: M_t against the reference M_t), in this one process. Layouts take turns
(``--rounds`` rounds, each running every layout once), so that a slower period of a shared
machine falls on all of them; the median of each is reported. Printed per stage and layout: the
median seconds of training (the Trainer's own ``train_runtime``: no loading, no saving), the
rows a second, the share of the batches' tokens that are padding (counted from the rows'
lengths and the sampler's batches, not timed) and the speed-up over the first layout.

Batches grouped by length train on other batches, so the trained models differ: this measures
speed only; whether a recipe trains as well with it is a question for the recipe's controls
(docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from selfreward.data import load_data
from selfreward.loop import sft_examples, training_pairs
from selfreward.training import train_dpo, train_sft

SAMPLINGS = {"random": False, "grouped": True}


def parse_layout(text: str) -> tuple[str, int, bool, int]:
    """``SAMPLING:THREADS[:nll|:bN]`` -> (sampling, threads, whether the NLL-only shortcut is on,
    SFT's length buckets)."""
    sampling, _, rest = text.partition(":")
    threads, _, passes = rest.partition(":")
    buckets = int(passes[1:]) if passes[:1] == "b" and passes[1:].isdigit() else 1
    if (sampling not in SAMPLINGS or not threads.isdigit() or int(threads) < 1
            or (passes not in ("", "nll") and buckets < 2)):
        raise argparse.ArgumentTypeError(f"a layout is SAMPLING:THREADS, SAMPLING:THREADS:nll or SAMPLING:THREADS:bN "
                                         f"with SAMPLING one of {sorted(SAMPLINGS)}, THREADS at least 1 and N at least "
                                         f"2, got {text!r}")
    return sampling, int(threads), passes == "nll", buckets


def layout_name(layout: tuple[str, int, bool, int]) -> str:
    sampling, threads, nll, buckets = layout
    return f"{sampling}:{threads}" + (":nll" if nll else "") + (f":b{buckets}" if buckets > 1 else "")


def padding_share(lengths: list[int], batch_size: int, grouped: bool, seed: int, buckets: int = 1) -> float:
    """The share of padding in one epoch's batches of these rows, drawn as the Trainer draws them,
    each batch run in ``buckets`` passes of its rows sorted by length."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator().manual_seed(seed)
    if grouped:
        order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    passes = [part.tolist() for b in batches for part in torch.tensor_split(
        torch.tensor(sorted(lengths[i] for i in b)), min(buckets, len(b)))]
    padded = sum(max(p) * len(p) for p in passes)
    return 1 - sum(lengths) / padded


def train_once(stage: str, run: Path, cfg, rows: list[dict], t: int, grouped: bool, work: Path) -> tuple[float, int]:
    """Train one stage on ``rows``; return the Trainer's ``train_runtime`` in seconds and its steps."""
    cfg.training.sft.group_by_length = cfg.training.dpo.group_by_length = grouped
    out = work / f"{stage}_model"
    if stage == "sft":
        train_sft(str(run / "m0" / "model"), rows, out, cfg, seed=cfg.seed, run_name="bench_sft")
    else:
        model = str(run / f"m{t}" / "model")
        train_dpo(model, model, rows, out, cfg, seed=cfg.seed, run_name="bench_dpo")
    log = [json.loads(line) for line in (work / "training_log.jsonl").read_text().splitlines()]
    last = next(row for row in reversed(log) if "train_runtime" in row)
    return last["train_runtime"], last["step"]


def stage_rows(stage: str, run: Path, cfg, t: int, steps: int) -> tuple[list[dict], int]:
    """The first ``steps`` batches of a fixed shuffle of the stage's rows, and its batch size."""
    if stage == "sft":
        rows, batch = sft_examples(load_data(run / "data", cfg), cfg), cfg.training.sft.batch_size
    else:
        out = run / f"m{t + 1}"
        if not (out / "pairs.jsonl").is_file():
            raise SystemExit(f"{out}/pairs.jsonl does not exist: iteration {t} of {run} has not made its pairs")
        rows, batch = training_pairs(cfg, out, t), cfg.training.dpo.batch_size
    random.Random(0).shuffle(rows)
    return rows[:steps * batch], batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run's folder (its config.yaml, data, m0, m<t>, m<t+1>)")
    parser.add_argument("--t", type=int, default=1, help="the iteration whose DPO rows are trained (default 1)")
    parser.add_argument("--stages", nargs="+", choices=("sft", "dpo"), default=["sft", "dpo"])
    parser.add_argument("--layouts", nargs="+", type=parse_layout, default=None,
                        help="SAMPLING:THREADS, the first is the baseline (default random:1 random:2 grouped:1 grouped:2)")
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps a layout trains (default 80)")
    parser.add_argument("--rounds", type=int, default=3, help="turns each layout takes (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds are at least 1")
    layouts = args.layouts or [(sampling, threads, False, 1) for sampling in SAMPLINGS for threads in (1, 2)]
    cfg = OmegaConf.load(args.run / "config.yaml")
    cfg.training.logging_steps = 10 ** 9
    # One epoch of steps x batch_size rows: --steps optimizer steps (a warmup and a schedule as
    # the stage's own, over those steps).
    cfg.training.sft.epochs = cfg.training.dpo.epochs = 1.0

    results = {}
    for stage in args.stages:
        rows, batch = stage_rows(stage, args.run, cfg, args.t, args.steps)
        # The padding share is that of the same rows through either sampler (the model sees each
        # row with the chat format, which the lengths below include).
        lengths = _lengths(stage, args.run, cfg, rows, args.t)
        times, steps = {layout: [] for layout in layouts}, set()
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for layout in layouts:
                    torch.set_num_threads(layout[1])
                    cfg.training.dpo.nll_only_shortcut = layout[2]
                    cfg.training.sft.length_buckets = layout[3]
                    seconds, done = train_once(stage, args.run, cfg, rows, args.t, SAMPLINGS[layout[0]], Path(tmp))
                    times[layout].append(seconds)
                    steps.add(done)
        base = statistics.median(times[layouts[0]])
        print(f"\n{stage}: {len(rows)} rows, {args.steps} steps of {batch}, median of {args.rounds} rounds")
        print(f"{'layout':<12} {'seconds':>8} {'rows/s':>8} {'padding':>8} {'speed-up':>9}")
        results[stage] = {"steps": sorted(steps)}
        for layout in layouts:
            seconds = statistics.median(times[layout])
            pad = padding_share(lengths, batch, SAMPLINGS[layout[0]], cfg.seed, layout[3] if stage == "sft" else 1)
            name = layout_name(layout)
            print(f"{name:<12} {seconds:>8.1f} {len(rows) / seconds:>8.1f} {pad:>8.1%} {base / seconds:>8.2f}x")
            results[stage][name] = {"seconds": times[layout], "median_s": seconds, "padding": pad,
                                    "speed_up": base / seconds}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _lengths(stage: str, run: Path, cfg, rows: list[dict], t: int) -> list[int]:
    """Each row's tokenized length as the trainer pads it, from the stage's own trainer."""
    from selfreward.generation import load_tokenizer
    from selfreward.training import _load_for_training, dpo_trainer, row_lengths, sft_trainer
    from trl import DPOConfig, SFTConfig

    model_path = str(run / ("m0" if stage == "sft" else f"m{t}") / "model")
    tokenizer = load_tokenizer(model_path, cfg.model.chat_template, cfg.model.trust_remote_code)
    model = _load_for_training(model_path, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(output_dir=tmp, report_to="none", use_cpu=not torch.cuda.is_available())
        if stage == "sft":
            trainer = sft_trainer(model, tokenizer, rows, SFTConfig(**common, completion_only_loss=True,
                                                                    max_length=cfg.training.sft.max_length))
        else:
            trainer = dpo_trainer(model, _load_for_training(model_path, cfg), tokenizer, rows,
                                  DPOConfig(**common, max_length=cfg.training.dpo.max_length))
    return row_lengths(trainer.train_dataset)


if __name__ == "__main__":
    main()
