"""Self-instruction's near-duplicate filter: the length-grouped pool against a comparison with
every earlier prompt, on a finished run's second-round outputs.

    python scripts/bench_prompt_filter.py runs/default/seed0
    python scripts/bench_prompt_filter.py runs/default/seed0 --max-rouge-l 0.9 --outputs 1500

Reads the run's ``m3/prompts_raw.jsonl`` (what M1 wrote in the second round), its seed prompts
(``data/ift.jsonl``) and the first round's kept prompts (``m2/prompts.jsonl``), then filters the
outputs twice in one process, side by side: with ``selfreward.prompts.filter_prompts`` and with a
reference that checks ``_rouge_l_bound`` and the LCS against every prompt of the pool in turn (the
filter's definition, as it ran before the pool was grouped by length). Prints both times, their
ratio, and whether the kept prompts are the same (the run's own ``m3/prompts.jsonl`` too, with
the run's settings).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selfreward.loop import _first_line
from selfreward.prompts import _rouge_l_bound, _rouge_l_words, _words, filter_prompts
from selfreward.rundir import read_jsonl


def reference_filter(outputs: list[str], existing: list[str], *, min_chars: int, max_chars: int,
                     max_rouge_l: float) -> list[str]:
    """The kept outputs, each compared with every prompt seen before it (no banned keywords)."""
    seen = {p.strip() for p in existing}
    pool = [tuple(_words(p.strip())) for p in existing]
    kept = []
    for raw in outputs:
        text = raw.strip()
        if not text or not min_chars <= len(text) <= max_chars or text in seen:
            continue
        words = tuple(_words(text))
        if max_rouge_l < 1 and any(_rouge_l_bound(words, other) > max_rouge_l
                                   and _rouge_l_words(words, other) > max_rouge_l for other in pool):
            continue
        kept.append(text)
        seen.add(text)
        pool.append(words)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run with two iterations")
    parser.add_argument("--max-rouge-l", type=float, default=0.99, help="the threshold (the schema's 0.99)")
    parser.add_argument("--min-chars", type=int, default=5)
    parser.add_argument("--max-chars", type=int, default=60)
    parser.add_argument("--outputs", type=int, help="only the first N outputs")
    args = parser.parse_args()

    outputs = [_first_line(r["output"]) for r in read_jsonl(args.run_dir / "m3" / "prompts_raw.jsonl")]
    outputs = outputs[: args.outputs] if args.outputs else outputs
    existing = ([r["prompt"] for r in read_jsonl(args.run_dir / "data" / "ift.jsonl")]
                + [r["prompt"] for r in read_jsonl(args.run_dir / "m2" / "prompts.jsonl")])
    settings = dict(min_chars=args.min_chars, max_chars=args.max_chars, max_rouge_l=args.max_rouge_l)

    start = time.perf_counter()
    kept, _ = filter_prompts(outputs, existing, **settings)
    grouped = time.perf_counter() - start
    start = time.perf_counter()
    expected = reference_filter(outputs, existing, **settings)
    every = time.perf_counter() - start

    print(f"{len(outputs)} outputs against {len(existing)} earlier and seed prompts, max_rouge_l {args.max_rouge_l}")
    print(f"every prompt in turn: {every:.2f} s; grouped by length: {grouped:.3f} s; ratio {every / grouped:.0f}x")
    print(f"same kept prompts: {kept == expected} ({len(kept)} kept)")
    if args.outputs is None and args.max_rouge_l == 0.99 and (args.run_dir / "m3" / "prompts.jsonl").exists():
        run_kept = [r["prompt"] for r in read_jsonl(args.run_dir / "m3" / "prompts.jsonl")]
        print(f"same as the run's m3/prompts.jsonl: {kept == run_kept}")


if __name__ == "__main__":
    main()
