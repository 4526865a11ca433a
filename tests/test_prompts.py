"""Templates and the self-instruction filters."""

import pytest

from selfreward.prompts import fill, filter_prompts, load_template, rouge_l, self_instruct_prompt
from selfreward.rundir import SelfRewardError


def test_rouge_l_by_hand():
    # "sort : 3 1 2" vs "sort : 3 2 1": LCS "sort : 3 1" or "sort : 3 2" = 4 of 5 tokens each side.
    assert rouge_l("sort: 3 1 2", "sort: 3 2 1") == pytest.approx(0.8)
    assert rouge_l("a b c", "a b c") == 1.0
    assert rouge_l("a b", "c d") == 0.0
    # P = 2/2, R = 2/4: F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
    assert rouge_l("a b", "a x b y") == pytest.approx(2 / 3)


def test_filters_count_each_reason():
    seed = ["sort: 3 1 2"]
    candidates = ["", "ab", "x" * 50, "draw an image of 3", "sort: 3 1 2", "sort: 3 2 1", "reverse: 9 8 7 6",
                  "reverse: 9 8 7 6"]
    kept, report = filter_prompts(candidates, seed, min_chars=5, max_chars=40, max_rouge_l=0.7,
                                  banned_keywords=["image"])
    assert kept == ["reverse: 9 8 7 6"]
    assert (report.empty, report.too_short, report.too_long, report.banned_keyword) == (1, 1, 1, 1)
    # "sort: 3 2 1" has ROUGE-L 0.8 with the seed prompt; the second "reverse" repeats a kept one.
    assert (report.exact_duplicate, report.near_duplicate, report.kept) == (2, 1, 1)


def test_near_duplicate_filter_can_be_turned_off():
    kept, _ = filter_prompts(["sort: 3 2 1"], ["sort: 3 1 2"], min_chars=1, max_chars=99, max_rouge_l=1.0)
    assert kept == ["sort: 3 2 1"]


def test_fill_leaves_other_braces_and_fills_once():
    assert fill("{prompt} {x} {response}", prompt="{response}", response="r") == "{response} {x} r"
    with pytest.raises(ValueError, match="no field"):
        fill("no fields", prompt="p")


def test_templates_builtin_and_by_path(tmp_path):
    assert "{response}" in load_template("judge_additive")
    own = tmp_path / "mine.txt"
    own.write_text("Rate {prompt} / {response}\n")
    assert load_template(str(own)) == "Rate {prompt} / {response}"
    with pytest.raises(SelfRewardError, match="judge_additive"):
        load_template("no_such_template")
    assert self_instruct_prompt("Examples:\n{examples}\nNew:", ["a", "b"]) == "Examples:\na\nb\nNew:"


def test_rouge_l_bound_never_below_rouge_l_and_the_filter_keeps_what_brute_force_keeps():
    import random

    from selfreward.prompts import _rouge_l_bound, _rouge_l_words, _words

    rng = random.Random(0)
    texts = [f"{rng.choice(['sort', 'unique'])}: " + " ".join(rng.choice("0123") for _ in range(rng.randint(1, 5)))
             for _ in range(300)]
    for a, b in zip(texts, texts[1:]):
        x, y = tuple(_words(a)), tuple(_words(b))
        assert _rouge_l_bound(x, y) >= _rouge_l_words(x, y) - 1e-12
    seeds, outputs = texts[:100], texts[100:]
    for threshold in (0.5, 0.7, 0.9, 0.99):
        kept, report = filter_prompts(outputs, seeds, min_chars=1, max_chars=99, max_rouge_l=threshold)
        pool, expected = list(seeds), []
        for text in outputs:  # the filter's definition, comparison by comparison
            if text in pool:
                continue
            if any(rouge_l(text, other) > threshold for other in pool):
                continue
            expected.append(text)
            pool.append(text)
        assert kept == expected
        assert report.kept == len(expected)


def test_prompt_filter_benchmark_keeps_what_the_run_kept(tmp_path):
    """scripts/bench_prompt_filter.py on a small run folder: the filter and its every-prompt
    reference keep the same outputs, which are the run's own second-round prompts."""
    import subprocess
    import sys
    from pathlib import Path

    from selfreward.rundir import write_jsonl

    seeds = ["sort: 3 1 2", "unique: 4 4 1"]
    first = ["evens: 2 5 8", "sort: 9 0"]
    outputs = ["sort: 3 1 2", "Sort: 3 1 2\nmore", "evens: 2 5 8 ", "sort: 7 7 1", "x", "sort: 7 7 1", "unique: 5 6"]
    kept, _ = filter_prompts([o.split("\n")[0] for o in outputs], seeds + first, min_chars=5, max_chars=60,
                             max_rouge_l=0.99)
    assert kept == ["sort: 7 7 1", "unique: 5 6"]  # exact and near duplicates (case), too short, repeats gone
    write_jsonl(tmp_path / "data" / "ift.jsonl", [{"prompt": p, "response": "-"} for p in seeds])
    write_jsonl(tmp_path / "m2" / "prompts.jsonl", [{"prompt": p} for p in first])
    write_jsonl(tmp_path / "m3" / "prompts_raw.jsonl", [{"request": "r", "output": o} for o in outputs])
    write_jsonl(tmp_path / "m3" / "prompts.jsonl", [{"prompt": p} for p in kept])
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_prompt_filter.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "same kept prompts: True (2 kept)" in out
    assert "same as the run's m3/prompts.jsonl: True" in out
