# OMP_NUM_THREADS=1 python scripts/bench_iteration.py --threads 1    # the measurement (about 9 min on 2 CPU cores)
# python scripts/bench_iteration.py --quick --threads 1                # smoke test, well under a minute
"""One self-rewarding iteration, timed stage by stage: this framework against a naive pipeline.

    python scripts/bench_iteration.py --threads 1
    python scripts/bench_iteration.py --quick --threads 1
    python scripts/bench_iteration.py --requests 400 --eval-prompts 200 --set model.hidden_size=256

Setup (not timed): the built-in world, its base model and M1 (SFT) are made by the framework's
own loop (``loop.run`` with ``iterations=0``), with the sizes below. Then, in one process, side
by side on the same M1:

framework  ``loop.run`` resumes the run with ``iterations=1``: prompts, candidates, judgments,
           pairs, DPO and M2's evaluation, exactly as ``selfreward`` runs them (the times are the
           stages' own, from ``m2/metrics.json``).
naive      the same stages done the obvious way on the same model: one ``model.generate`` call
           per generated text (each self-instruction request, each of the N candidates, each of
           the k judgments, each evaluation answer and judgment; KV cache on, as HF's default),
           every candidate judged (no pooling of identical candidates), DPO with TRL's
           ``DPOTrainer`` and the reference model's forward pass at every step
           (``precompute_ref_log_probs=False``), the same hyperparameters.

Both do the same work: the naive pipeline uses the framework's requests (same seed), then the
framework's kept prompts for its candidates, the framework's candidates for its judgments and
the framework's pairs for DPO (same number of DPO steps), so every stage has the same inputs;
the counts are printed. The post-processing (prompt filters, score parsing, pair building,
metrics) is the framework's own in both: only how the model is run differs.

Prints the wall and CPU seconds per stage, the ratio naive / framework per stage and in total
(the CPU ratio is the check on a shared machine, where the wall clock also counts the others'
load), each stage's share of the framework's CPU seconds, and two measurements of what limits
the ratio:

- the share of the prompts stage spent in the prompt filters, which both pipelines run alike;
- ``--what-if ROUNDS`` (on by default): the framework's DPO stage (``training.train_dpo``,
  unchanged) timed again as it is and with TRL's ``precompute_ref_log_probs=True`` (a speed-up
  the framework does not use today), alternately, the best of ROUNDS each.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
STAGES = ("prompts", "candidates", "judgments", "pairs", "dpo", "eval")

# --quick: a smoke test of the machinery (about the tests' tiny run), seconds per pipeline.
QUICK = dict(requests=16, candidates=4, repeats=2, eval_prompts=8, judge_eval=4, n_ift=200, n_eft=200,
             sft_epochs=4, dpo_epochs=1, smoke=True)
# The default measurement: the default config (model=tiny, N=8, 3 judgments, 4 DPO epochs) with
# fewer requests and held-out items, so that the naive pipeline finishes in minutes.
FULL = dict(requests=128, candidates=None, repeats=None, eval_prompts=64, judge_eval=16, n_ift=1600, n_eft=2000,
            sft_epochs=2, dpo_epochs=None, smoke=False)


def overrides(args) -> list[str]:
    size = QUICK if args.quick else FULL
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else size[name]  # noqa: E731
    # The schema's plain values (recipe=none), as the benchmark was measured: the built-in recipe
    # runs in two processes, and this benchmark times one.
    out = ["experiment=smoke"] if size["smoke"] else ["recipe=none"]
    out += [
        "experiment_name=bench", "iterations=0", f"seed={args.seed}",
        f"prompts.n_requests={pick('requests')}",
        f"data.world.n_eval_prompts={pick('eval_prompts')}",
        f"data.world.n_judge_eval={pick('judge_eval')}",
        f"data.world.n_ift={pick('n_ift')}",
        f"data.world.n_eft={pick('n_eft')}",
        f"training.sft.epochs={pick('sft_epochs')}",
    ]
    if size["smoke"]:
        out.append("data.world.n_self_instruct=40")
    for key, name in (("generation.n_candidates", "candidates"), ("judge.repeats", "repeats"),
                      ("training.dpo.epochs", "dpo_epochs")):
        if pick(name) is not None:
            out.append(f"{key}={pick(name)}")
    if args.threads:
        out.append(f"threads={args.threads}")
    return out + list(args.set)


def compose(overrides_: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    from selfreward.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides_)


class NaiveEngine:
    """The Engine protocol done the obvious way: one ``generate`` call per generated text."""

    def __init__(self, model, tokenizer):
        from selfreward import chat

        self.model, self.tokenizer = model, tokenizer
        self.eos_token_ids = chat.stop_ids(tokenizer, model.generation_config)
        self.calls = 0

    @torch.inference_mode()
    def generate(self, messages, sampling, *, n=1, seed=0, desc="generate"):
        from selfreward import chat
        from selfreward.generation import Completion

        torch.manual_seed(seed)
        greedy = sampling.temperature <= 0
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_token_ids)
        if greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        stops = torch.tensor(self.eos_token_ids)
        outputs = []
        for message in messages:
            ids = torch.tensor([chat.prompt_ids(self.tokenizer, message)])
            texts = []
            for _ in range(n):
                new = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)[0, ids.shape[1]:]
                self.calls += 1
                texts.append(Completion(self.tokenizer.decode(new, skip_special_tokens=True),
                                        bool(torch.isin(new, stops).any())))
            outputs.append(texts)
        return outputs

    @torch.inference_mode()
    def continuation_logprobs(self, messages, prefixes, continuations):
        from selfreward import chat

        result = []
        for message, prefix in zip(messages, prefixes, strict=True):
            context = chat.prompt_ids(self.tokenizer, message) + self.tokenizer.encode(prefix, add_special_tokens=False)
            row = []
            for cont in continuations:
                target = self.tokenizer.encode(cont, add_special_tokens=False)
                ids = torch.tensor([context + target])
                logp = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), dim=-1)
                row.append(sum(logp[len(context) - 1 + i, t].item() for i, t in enumerate(target)))
            result.append(row)
        return result


def naive_dpo(model_path: str, pairs: list[dict], out_dir: Path, cfg, seed: int) -> int:
    """TRL's DPOTrainer, straight: the policy and a reference copy of it, the reference's forward
    pass at every step (TRL's default), the configured hyperparameters. Returns the steps."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from selfreward.generation import load_tokenizer

    tokenizer = load_tokenizer(model_path, cfg.model.chat_template)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    ref_model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    d = cfg.training.dpo
    args = DPOConfig(
        output_dir=str(out_dir / "trainer"), learning_rate=d.learning_rate, lr_scheduler_type=d.lr_scheduler_type,
        warmup_steps=d.warmup_ratio, num_train_epochs=d.epochs, per_device_train_batch_size=d.batch_size,
        gradient_accumulation_steps=d.gradient_accumulation_steps, weight_decay=d.weight_decay,
        max_length=d.max_length, beta=d.beta, loss_type=[d.loss_type, "sft"] if d.sft_weight else [d.loss_type],
        loss_weights=[1.0, d.sft_weight] if d.sft_weight else None, precompute_ref_log_probs=False,
        save_strategy="no", report_to="none", seed=seed, data_seed=seed, use_cpu=True, disable_tqdm=True,
        logging_steps=cfg.training.logging_steps,
    )
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    assistant = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    dataset = Dataset.from_list([{"prompt": user(p["prompt"]), "chosen": assistant(p["chosen"]),
                                  "rejected": assistant(p["rejected"])} for p in pairs])
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    trainer.train()
    model.save_pretrained(str(out_dir / "model"))
    tokenizer.save_pretrained(str(out_dir / "model"))
    return trainer.state.global_step


def run_naive(cfg, run_dir: Path, out: Path) -> tuple[dict, dict, dict]:
    """The naive pipeline's stages on M1 of ``run_dir``, each on the framework's inputs; the
    wall and CPU seconds per stage and the work done."""
    from transformers import AutoModelForCausalLM

    from selfreward.data import load_data, make_oracle
    from selfreward.evaluation import evaluate_judge, evaluate_policy, evaluate_position_bias
    from selfreward.generation import load_tokenizer
    from selfreward.judge import judge
    from selfreward.loop import stage_seed, write_candidates, write_pairs, write_prompts
    from selfreward.prompts import load_template
    from selfreward.rundir import SelfRewardError, read_jsonl, write_jsonl

    data = load_data(run_dir / "data", cfg)
    oracle = make_oracle(cfg, data)
    m1 = str(run_dir / "m1" / "model")
    framework = run_dir / "m2"
    out.mkdir(parents=True, exist_ok=True)
    times, cpu, work = {}, {}, {}

    def timed(stage, fn):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times[stage], cpu[stage] = time.perf_counter() - start, time.process_time() - start_cpu
        print(f"  naive {stage}: {times[stage]:.1f} s", file=sys.stderr, flush=True)
        return result

    def load(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        return NaiveEngine(model, load_tokenizer(path, cfg.model.chat_template))

    # Prompts: the framework's requests (same seed), one generate call each, the same filters.
    def prompts():
        engine = load(m1)
        info = write_prompts(engine, data, cfg, seed=stage_seed(cfg.seed, 2, "prompts"), out=out, earlier=[],
                             oracle=oracle)
        return engine, info
    engine, info = timed("prompts", prompts)
    work["prompts"] = f"{info['requests']} requests, {info['count']} kept ({engine.calls} generate calls)"
    # The later stages start from the framework's outputs, so that both do the same work.
    shutil.copy(out / "prompts.jsonl", out / "prompts_naive.jsonl")
    shutil.copy(framework / "prompts.jsonl", out / "prompts.jsonl")

    calls = engine.calls
    info = timed("candidates", lambda: write_candidates(engine, cfg, seed=stage_seed(cfg.seed, 2, "candidates"),
                                                        out=out))
    work["counts"] = {"prompts": info["prompts"], "candidates": info["candidates"]}
    work["candidates"] = f"{info['prompts']} prompts x {cfg.generation.n_candidates} = {info['candidates']} " \
                         f"({engine.calls - calls} generate calls)"

    # Judgments: every candidate, copies included, judge.repeats sampled judgments each.
    candidates = read_jsonl(framework / "candidates.jsonl")

    def judgments():
        items = [(c["prompt"], r) for c in candidates for r in c["responses"]]
        finished = [f for c in candidates for f in c["finished"]]
        records = judge(engine, load_template(cfg.judge.template), items, cfg.judge,
                        seed=stage_seed(cfg.seed, 2, "judgments"), desc="naive judge")
        write_jsonl(out / "judgments.jsonl", [
            {"prompt": p, "response": r, "finished": f, "judgments": rec["judgments"], "scores": rec["scores"],
             "score": rec["score"]} for (p, r), f, rec in zip(items, finished, records)])
        return len(items), sum(len(rec["judgments"]) for rec in records)
    calls = engine.calls
    n_items, n_judgments = timed("judgments", judgments)
    work["judgments"] = f"{n_items} candidates judged, {n_judgments} judgments ({engine.calls - calls} generate calls)"

    def pairs_stage():
        try:
            return write_pairs(cfg, seed=stage_seed(cfg.seed, 2, "pairs"), out=out, model=2)["count"]
        except SelfRewardError:  # no pair from its own judgments: DPO trains on the framework's anyway
            return 0
    n_pairs = timed("pairs", pairs_stage)
    work["pairs"] = f"{n_pairs} pairs from its own judgments (DPO trains on the framework's)"
    del engine

    pairs = read_jsonl(framework / "pairs.jsonl")
    steps = timed("dpo", lambda: naive_dpo(m1, pairs, out, cfg, stage_seed(cfg.seed, 2, "dpo")))
    work["dpo"] = f"{len(pairs)} pairs, {steps} steps"
    work["counts"].update(pairs=len(pairs), dpo_steps=steps)

    def evaluate():
        engine = load(str(out / "model"))
        seed = stage_seed(cfg.seed, 2, "eval")
        evaluate_judge(engine, data, cfg, seed=seed, out_dir=out)
        if cfg.evaluation.position_bias:
            evaluate_position_bias(engine, data, cfg, seed=seed + 2, out_dir=out)
        evaluate_policy(engine, data, cfg, oracle, seed=seed + 1, out_dir=out)
        return engine.calls
    work["eval"] = f"{timed('eval', evaluate)} generate calls"
    return times, cpu, work


def framework_work(run_dir: Path) -> dict:
    from selfreward.rundir import read_done, read_jsonl

    m2 = run_dir / "m2"
    info = {s: read_done(m2, s) for s in STAGES[:-1]}
    eval_items = len(read_jsonl(m2 / "eval_judge.jsonl")), len(read_jsonl(m2 / "eval_policy.jsonl"))
    return {
        "counts": {"prompts": info["candidates"]["prompts"], "candidates": info["candidates"]["candidates"],
                   "pairs": info["pairs"]["count"], "dpo_steps": info["dpo"]["steps"]},
        "prompts": f"{info['prompts']['requests']} requests, {info['prompts']['count']} kept",
        "candidates": f"{info['candidates']['prompts']} prompts, {info['candidates']['candidates']} candidates",
        "judgments": f"{info['judgments']['distinct_candidates']} distinct candidates judged, "
                     f"{info['judgments']['judgments']} judgments",
        "pairs": f"{info['pairs']['count']} pairs",
        "dpo": f"{info['dpo']['steps']} steps",
        "eval": f"{eval_items[0]} held-out responses judged, {eval_items[1]} prompts answered greedy + sampled",
    }


def dpo_what_if(cfg, run_dir: Path, out: Path, rounds: int) -> dict:
    """The framework's own DPO stage (``training.train_dpo``, unchanged) as it is and with TRL's
    ``precompute_ref_log_probs=True``, alternately, ``rounds`` times each; the best wall and CPU
    seconds of each."""
    import trl

    from selfreward.loop import stage_seed
    from selfreward.rundir import read_jsonl
    from selfreward.training import train_dpo

    m1 = str(run_dir / "m1" / "model")
    pairs = read_jsonl(run_dir / "m2" / "pairs.jsonl")
    original = trl.DPOConfig
    best = {"as_is": [float("inf")] * 2, "precompute": [float("inf")] * 2}
    for _ in range(rounds):
        for name in best:
            if name == "precompute":
                trl.DPOConfig = functools.partial(original, precompute_ref_log_probs=True)
            try:
                wall, cpu = time.perf_counter(), time.process_time()
                train_dpo(m1, m1, pairs, out / name / "model", cfg, seed=stage_seed(cfg.seed, 2, "dpo"))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            finally:
                trl.DPOConfig = original
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
    return best


def prompt_filter_seconds(cfg, run_dir: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the framework's prompt filters (``prompts.filter_prompts``, run by
    both pipelines) on the framework's self-instruction outputs of this iteration."""
    from selfreward.data import load_data
    from selfreward.prompts import filter_prompts
    from selfreward.rundir import read_jsonl

    p = cfg.prompts
    pool = load_data(run_dir / "data", cfg).seed_prompts
    outputs = [r["output"] for r in read_jsonl(run_dir / "m2" / "prompts_raw.jsonl")]
    texts = [next((line.strip() for line in o.splitlines() if line.strip()), "") if p.first_line_only
             else o.strip() for o in outputs]
    wall, cpu = time.perf_counter(), time.process_time()
    filter_prompts(texts, pool, min_chars=p.min_chars, max_chars=p.max_chars, max_rouge_l=p.max_rouge_l,
                   banned_keywords=p.banned_keywords)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the benchmark")
    parser.add_argument("--requests", type=int, help="self-instruction requests (prompts.n_requests)")
    parser.add_argument("--candidates", type=int, help="candidates per prompt (generation.n_candidates)")
    parser.add_argument("--repeats", type=int, help="judgments per candidate (judge.repeats)")
    parser.add_argument("--eval-prompts", type=int, help="held-out prompts (data.world.n_eval_prompts)")
    parser.add_argument("--judge-eval", type=int, help="held-out ranked prompts (data.world.n_judge_eval)")
    parser.add_argument("--n-ift", type=int, help="seed IFT examples for M1 (setup)")
    parser.add_argument("--n-eft", type=int, help="seed EFT examples for M1 (setup)")
    parser.add_argument("--sft-epochs", type=int, help="SFT epochs for M1 (setup)")
    parser.add_argument("--dpo-epochs", type=int, help="DPO epochs (training.dpo.epochs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (config key threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--what-if", type=int, metavar="ROUNDS",
                        help="time the framework's DPO as it is and with precompute_ref_log_probs=True, "
                             "alternately, this many rounds each (0: skip; default 2, 1 with --quick)")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.what_if is None:
        args.what_if = 1 if args.quick else 2

    import logging
    import os

    os.environ.setdefault("WANDB_MODE", "disabled")
    # Both pipelines train in this process (the loop would otherwise launch DPO as a process of its own).
    os.environ.pop("SELFREWARD_TRAIN_LAUNCHER", None)
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()

    import selfreward.loop as loop

    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_iteration_"))
    run_dir = work_dir / "run"
    over = overrides(args)
    cfg = compose(over)
    print(f"overrides: {' '.join(over)}")

    start = time.perf_counter()
    loop.run(cfg, run_dir)  # data, base model, M1 (SFT) and its evaluation: not timed
    setup = time.perf_counter() - start

    # The framework: loop.run resumes with one iteration. Its stages record their wall seconds
    # (m2/metrics.json); their CPU seconds are read around each stage here.
    fw_cpu = {}
    run_stage = loop.run_stage

    def cpu_timed_stage(folder, stage, fn, **kwargs):
        def wrapped():
            start_cpu = time.process_time()
            try:
                return fn()
            finally:
                if Path(folder).name == "m2":
                    fw_cpu[stage] = time.process_time() - start_cpu
        return run_stage(folder, stage, wrapped, **kwargs)

    cfg1 = compose([*over, "iterations=1"])
    loop.run_stage = cpu_timed_stage
    try:
        start = time.perf_counter()
        loop.run(cfg1, run_dir)  # iteration 1 and M2's evaluation: the framework's stages
        framework_wall = time.perf_counter() - start
    finally:
        loop.run_stage = run_stage
    metrics = json.loads((run_dir / "m2" / "metrics.json").read_text())
    fw = {s: metrics[f"time/{s}_s"] for s in STAGES}

    naive, naive_cpu, naive_work = run_naive(cfg1, run_dir, work_dir / "naive")
    filter_s = prompt_filter_seconds(cfg1, run_dir)
    what_if = dpo_what_if(cfg1, run_dir, work_dir / "what_if", args.what_if) if args.what_if else None

    from transformers import AutoModelForCausalLM

    m1_model = AutoModelForCausalLM.from_pretrained(str(run_dir / "m1" / "model"))
    model_cfg, params = m1_model.config, sum(p.numel() for p in m1_model.parameters())
    print(f"\nmodel: {cfg.model.name_or_path} ({params / 1e6:.2f} M parameters, hidden {model_cfg.hidden_size}, "
          f"{model_cfg.num_hidden_layers} layers), {torch.get_num_threads()} torch threads, generation batch size "
          f"{cfg.generation.batch_size}; setup (M1, not timed) {setup:.0f} s, framework loop.run wall "
          f"{framework_wall:.1f} s")
    print("\nwork per stage (framework | naive):")
    fw_work = framework_work(run_dir)
    for s in STAGES:
        print(f"  {s:<11} {fw_work[s]} | {naive_work[s]}")
    total_fw, total_naive = sum(fw.values()), sum(naive.values())
    total_fw_cpu, total_naive_cpu = sum(fw_cpu[s] for s in STAGES), sum(naive_cpu.values())
    print(f"\n{'stage':<11} {'framework_s':>12} {'naive_s':>10} {'ratio':>8}   {'framework_cpu_s':>16} "
          f"{'naive_cpu_s':>12} {'cpu_ratio':>10}   {'framework_share':>15}")
    for s in STAGES:
        print(f"{s:<11} {fw[s]:>12.2f} {naive[s]:>10.2f} {naive[s] / fw[s]:>7.1f}x   {fw_cpu[s]:>16.2f} "
              f"{naive_cpu[s]:>12.2f} {naive_cpu[s] / fw_cpu[s]:>9.1f}x   {fw_cpu[s] / total_fw_cpu:>14.0%}")
    print(f"{'total':<11} {total_fw:>12.2f} {total_naive:>10.2f} {total_naive / total_fw:>7.1f}x   "
          f"{total_fw_cpu:>16.2f} {total_naive_cpu:>12.2f} {total_naive_cpu / total_fw_cpu:>9.1f}x   {1:>14.0%}")
    print(f"\nprompts: the prompt filters (prompts.filter_prompts, the same code in both pipelines) take "
          f"{filter_s[0]:.2f} s ({filter_s[1]:.2f} s CPU) of each prompts stage")
    result = {
        "overrides": over, "threads": torch.get_num_threads(), "setup_s": setup, "framework_s": fw,
        "naive_s": naive, "ratio": {s: naive[s] / fw[s] for s in STAGES}, "total_ratio": total_naive / total_fw,
        "framework_cpu_s": fw_cpu, "naive_cpu_s": naive_cpu, "total_cpu_ratio": total_naive_cpu / total_fw_cpu,
        "prompt_filter_s": filter_s[0], "work": {"framework": fw_work, "naive": naive_work}}
    if what_if is not None:
        (a, a_cpu), (b, b_cpu) = what_if["as_is"], what_if["precompute"]
        dpo_then = fw["dpo"] * b / a
        print(f"what-if, DPO: the framework's train_dpo again, best of {args.what_if}: as it is {a:.2f} s "
              f"({a_cpu:.2f} s CPU), with TRL precompute_ref_log_probs=True {b:.2f} s ({b_cpu:.2f} s CPU): "
              f"{a / b:.2f}x; the total ratio with it would be {total_naive / (total_fw - fw['dpo'] + dpo_then):.1f}x")
        result["what_if_dpo_s"] = {"as_is": a, "precompute_ref_log_probs": b}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if not args.workdir:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
