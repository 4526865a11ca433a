"""Throughput of the generation engine: batched and length-grouped vs one request at a time,
and the vLLM engine against the HF engine.

    python scripts/bench_generation.py                      # built-in tiny model, CPU
    python scripts/bench_generation.py --requests 256 --batch-sizes 1 16 64 --device cuda
    python scripts/bench_generation.py --vllm               # vLLM vs HF: 200 prompts x 8 samples

Builds the built-in world's tokenizer and base model (random weights: the speed does not depend
on them), then times `HFEngine.generate` on the same prompts at each batch size, in one process,
side by side. Generation runs to `--max-new-tokens` (no early EOS: min_new_tokens is set), so
every setting produces the same number of tokens. Prints new tokens per second and the ratio
to batch size 1.

With `--vllm`: the candidates stage's work, `--requests` prompts (200 unless given) with `--n`
samples each, timed with the HF engine (batch `--hf-batch-size`) and then with the vLLM engine
(`generation.backend=vllm`, model saved to a temporary folder) in the same run; both stop at end of
sequence as in a real run (with random weights nearly every sequence runs to `--max-new-tokens`;
the count that did is printed for both). Engine start-up is printed apart and not in the rate. Where
vLLM does not import in this python, the vLLM half runs with the vLLM environment's python
(`SELFREWARD_VLLM_PYTHON`, else `.venv-vllm/bin/python`; see scripts/install_vllm_cpu.sh).
On CPU run it with few threads on a shared machine, e.g.
`OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind python scripts/bench_generation.py --vllm`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from selfreward.generation import HFEngine, Sampling, VLLMSettings, close_engine, finished
from selfreward.rundir import read_jsonl
from selfreward.data.builtin import (
    WorldConfig,
    build_base_model,
    build_tokenizer,
    build_world,
    tokenizer_corpus,
    write_base_model,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting (the best is kept)")
    parser.add_argument("--vllm", action="store_true", help="time the vLLM engine against the HF engine")
    parser.add_argument("--n", type=int, default=8, help="--vllm: samples per prompt")
    parser.add_argument("--hf-batch-size", type=int, default=64, help="--vllm: the HF engine's batch size")
    parser.add_argument("--vllm-worker", nargs=2, metavar=("MODEL_DIR", "SPEC_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vllm_worker:
        print("RESULT " + json.dumps(time_vllm(*args.vllm_worker)), flush=True)
        return
    if args.vllm:
        compare_vllm(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        build_world(WorldConfig(n_ift=200, n_self_instruct=20, n_eft=200), tmp)
        tokenizer = build_tokenizer(tokenizer_corpus(tmp))
        prompts = [r["prompt"] for r in read_jsonl(Path(tmp) / "ift.jsonl")]
    model = build_base_model(tokenizer, hidden_size=args.hidden_size, num_layers=args.layers,
                             num_heads=4, intermediate_size=3 * args.hidden_size).to(args.device).eval()
    # Never stop early, so that every batch size generates exactly the same number of tokens.
    model.generation_config.min_new_tokens = args.max_new_tokens
    rng = random.Random(0)
    messages = [rng.choice(prompts) for _ in range(args.requests)]
    sampling = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens)
    params = sum(p.numel() for p in model.parameters())
    print(f"model {params / 1e6:.2f} M parameters on {args.device}, {torch.get_num_threads()} threads, "
          f"{args.requests} requests x {args.max_new_tokens} new tokens")

    results = {}
    for batch_size in args.batch_sizes:
        engine = HFEngine(model, tokenizer, batch_size=batch_size)
        engine.generate(messages[:batch_size], sampling, seed=0)  # warm-up
        best = float("inf")
        for r in range(args.repeats):
            start = time.perf_counter()
            engine.generate(messages, sampling, seed=r)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        results[batch_size] = args.requests * args.max_new_tokens / best
    base = results.get(1, next(iter(results.values())))
    print(f"{'batch':>6} {'tokens/s':>10} {'ratio':>7}")
    for batch_size, rate in results.items():
        print(f"{batch_size:>6} {rate:>10.0f} {rate / base:>7.1f}x")


def _full_length(outputs) -> int:
    """How many sequences ran to max_new_tokens (the rest stopped at end of sequence earlier)."""
    return sum(not finished(t) for texts in outputs for t in texts)


def time_vllm(model_dir: str, spec_path: str) -> dict:
    """The vLLM half of --vllm (here or in the vLLM environment's python): start-up and best time."""
    from selfreward.generation import load_tokenizer
    from selfreward.vllm_engine import VLLMEngine

    spec = json.loads(Path(spec_path).read_text())
    tokenizer = load_tokenizer(model_dir)
    start = time.perf_counter()
    engine = VLLMEngine(model_dir, tokenizer, dtype=spec["dtype"], settings=VLLMSettings(**spec["settings"]))
    startup = time.perf_counter() - start
    sampling = Sampling(**spec["sampling"])
    messages, n = spec["messages"], spec["n"]
    engine.generate(messages[:8], sampling, n=n, seed=123)  # warm-up
    best, full = float("inf"), 0
    for r in range(spec["repeats"]):
        start = time.perf_counter()
        outputs = engine.generate(messages, sampling, n=n, seed=r)
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best, full = elapsed, _full_length(outputs)
    close_engine(engine)
    import vllm

    return {"startup_s": startup, "seconds": best, "full_length": full, "version": vllm.__version__}


def _vllm_python() -> str | None:
    named = os.environ.get("SELFREWARD_VLLM_PYTHON")
    path = Path(named) if named else Path(__file__).resolve().parent.parent / ".venv-vllm" / "bin" / "python"
    return str(path) if path.exists() else None


def compare_vllm(args) -> None:
    requests = args.requests if args.requests != 128 else 200
    with tempfile.TemporaryDirectory() as tmp:
        build_world(WorldConfig(n_ift=max(200, requests), n_self_instruct=20, n_eft=200), tmp)
        tokenizer = build_tokenizer(tokenizer_corpus(tmp))
        prompts = [r["prompt"] for r in read_jsonl(Path(tmp) / "ift.jsonl")]
        model = build_base_model(tokenizer, hidden_size=args.hidden_size, num_layers=args.layers, num_heads=4,
                                 intermediate_size=3 * args.hidden_size)
        model_dir = Path(tmp) / "model"
        write_base_model(model_dir, tokenizer, model)
        model = model.to(args.device).eval()
        messages = prompts[:requests]
        sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
        params = sum(p.numel() for p in model.parameters())
        print(f"model {params / 1e6:.2f} M parameters on {args.device}, torch threads {torch.get_num_threads()}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {len(messages)} prompts x {args.n} samples, "
              f"up to {args.max_new_tokens} new tokens, best of {args.repeats}", flush=True)

        # HF engine, as generation.backend=hf builds it.
        engine = HFEngine(model, tokenizer, batch_size=args.hf_batch_size)
        engine.generate(messages[:8], sampling, n=args.n, seed=123)  # warm-up
        hf_best, hf_full = float("inf"), 0
        for r in range(args.repeats):
            start = time.perf_counter()
            outputs = engine.generate(messages, sampling, n=args.n, seed=r)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if elapsed < hf_best:
                hf_best, hf_full = elapsed, _full_length(outputs)
        close_engine(engine)
        del model
        print(f"hf: {hf_best:.1f} s", flush=True)

        # vLLM engine, as generation.backend=vllm builds it (eager on CPU: no compile time).
        spec = {"messages": messages, "n": args.n, "repeats": args.repeats, "dtype": "float32",
                "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                             "max_new_tokens": sampling.max_new_tokens},
                "settings": {"enforce_eager": args.device == "cpu", "max_model_len": 256}}
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        try:
            import vllm  # noqa: F401

            python = None
        except Exception as e:
            python = _vllm_python()
            if python is None:
                sys.exit(f"vLLM does not import here ({e}) and there is no vLLM environment: "
                         "bash scripts/install_vllm_cpu.sh")
        if python is None:
            vl = time_vllm(str(model_dir), str(spec_path))
        else:
            env = dict(os.environ)
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            root = str(Path(__file__).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            done = subprocess.run([python, __file__, "--vllm-worker", str(model_dir), str(spec_path)],
                                  capture_output=True, text=True, env=env)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"the vLLM run failed:\n{done.stderr[-3000:]}")
            vl = json.loads(lines[-1].removeprefix("RESULT "))

    n_seq = len(messages) * args.n
    print(f"{'engine':>8} {'start s':>8} {'generate s':>11} {'sequences/s':>12} {'full length':>12} {'vs hf':>7}")
    print(f"{'hf':>8} {'-':>8} {hf_best:>11.2f} {n_seq / hf_best:>12.0f} {hf_full:>12} {1:>7.2f}x")
    print(f"{'vllm':>8} {vl['startup_s']:>8.1f} {vl['seconds']:>11.2f} {n_seq / vl['seconds']:>12.0f} "
          f"{vl['full_length']:>12} {hf_best / vl['seconds']:>7.2f}x")
    print(f"vLLM {vl['version']} engine vs HF engine (batch {args.hf_batch_size}), {len(messages)} prompts x {args.n} "
          f"samples x up to {args.max_new_tokens} new tokens: {hf_best / vl['seconds']:.2f}x as fast "
          f"(start-up not counted)")

if __name__ == "__main__":
    main()
