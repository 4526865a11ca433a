"""Throughput of the generation engine: batched and length-grouped vs one request at a time.

    python scripts/bench_generation.py                      # built-in tiny model, CPU
    python scripts/bench_generation.py --requests 256 --batch-sizes 1 16 64 --device cuda

Builds the built-in world's tokenizer and base model (random weights: the speed does not depend
on them), then times `HFEngine.generate` on the same prompts at each batch size, in one process,
side by side. Generation runs to `--max-new-tokens` (no early EOS: min_new_tokens is set), so
every setting produces the same number of tokens. Prints new tokens per second and the ratio
to batch size 1.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from selfreward.generation import HFEngine, Sampling
from selfreward.rundir import read_jsonl
from selfreward.data.builtin import (
    WorldConfig,
    build_base_model,
    build_tokenizer,
    build_world,
    tokenizer_corpus,
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
