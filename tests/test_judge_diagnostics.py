"""scripts/judge_diagnostics.py's and scripts/judge_consistency.py's numbers, computed by hand on small run folders."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "judge_diagnostics.py"


def _load(script: Path):
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def diagnostics():
    return _load(SCRIPT)


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_choice_rates_by_hand(tmp_path, diagnostics):
    # sort: 3 1 2 -> "1 2 3". Candidates: a wrong "1 2 2" first, then the right answer twice and
    # "3 1 2"; the loop's pair chose the wrong "1 2 2" over "3 1 2".
    # reverse: 5 2 8 -> "8 2 5" under a rule with two pairs: one chosen right, one wrong (counts 1/2).
    # evens: 4 1 6 -> "4 6": no pair, so the prompt is left out.
    _write(tmp_path, "candidates.jsonl", [
        {"prompt": "sort: 3 1 2", "responses": ["1 2 2", "1 2 3", "3 1 2", "1 2 3"]},
        {"prompt": "reverse: 5 2 8", "responses": ["8 2 5", "5 2 8", "8 5", "5 2 8"]},
        {"prompt": "evens: 4 1 6", "responses": ["4 6", "4"]},
    ])
    _write(tmp_path, "pairs.jsonl", [
        {"prompt": "sort: 3 1 2", "chosen": "1 2 2", "rejected": "3 1 2"},
        {"prompt": "reverse: 5 2 8", "chosen": "8 2 5", "rejected": "8 5"},
        {"prompt": "reverse: 5 2 8", "chosen": "5 2 8", "rejected": "8 5"},
    ])
    rates = diagnostics.choice_rates(tmp_path)
    assert rates["prompts"] == 2
    assert rates["the chosen answer (judge's choice)"] == pytest.approx((0 + 1 / 2) / 2)
    # sort: 2 of 4 samples right; reverse: 1 of 4.
    assert rates["a random sample"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    # sort's most frequent answer "1 2 3" is right; reverse's "5 2 8" is wrong.
    assert rates["the most frequent candidate"] == pytest.approx(1 / 2)
    assert rates["any candidate correct"] == 1.0


def test_sample_spread_by_hand(tmp_path, diagnostics):
    # sort: 3 1 2 -> "1 2 3": three distinct answers (" 1 2 3" is the same once stripped), 2 of 4 right,
    # the most sampled "1 2 3" right. evens: 4 1 6 -> "4 6": one answer, all right.
    # reverse: 5 2 8 -> "8 2 5": two answers, none right; "5 2 8" and "8 5" twice each, the first seen wins.
    # "hello" is not one of the world's tasks: left out.
    _write(tmp_path, "candidates.jsonl", [
        {"prompt": "sort: 3 1 2", "responses": ["1 2 2", "1 2 3", "3 1 2", " 1 2 3"]},
        {"prompt": "evens: 4 1 6", "responses": ["4 6", "4 6"]},
        {"prompt": "reverse: 5 2 8", "responses": ["5 2 8", "8 5", "8 5", "5 2 8"]},
        {"prompt": "hello", "responses": ["a", "b"]},
    ])
    spread = diagnostics.sample_spread(tmp_path)
    assert spread["prompts"] == 3
    assert spread["distinct answers"] == pytest.approx((3 + 1 + 2) / 3)
    assert spread["all samples the same"] == pytest.approx(1 / 3)
    assert spread["right and wrong sampled"] == pytest.approx(1 / 3)
    assert spread["samples right"] == pytest.approx((2 / 4 + 1 + 0) / 3)
    assert spread["most sampled answer right"] == pytest.approx(2 / 3)
    _write(tmp_path, "candidates.jsonl", [{"prompt": "hello", "responses": ["a", "b"]}])
    assert diagnostics.sample_spread(tmp_path) == {"prompts": 0}


def test_vote_split_by_hand(tmp_path, diagnostics):
    # One row per sample, as the loop writes judgments.jsonl.
    def rows(prompt, samples):
        return [{"prompt": prompt, "response": r, "score": s, "judgments": []} for r, s in samples]

    _write(tmp_path, "judgments.jsonl",
           # sort: 3 1 2 -> "1 2 3". The wrong "1 2 2" is sampled three times and scored 2; the judge picks
           # the right "1 2 3" (5, once): a disagreement, the majority scored 2, pick right, majority wrong.
           rows("sort: 3 1 2", [("1 2 2", 2.0), ("1 2 3", 5.0), ("1 2 2", 2.0), ("1 2 2", 2.0), ("3 1", 0.0)])
           # evens: 4 1 6 -> "4 6", sampled twice and scored 5: the pick is the majority, both right.
           + rows("evens: 4 1 6", [("4 6", 5.0), ("4", 1.0), ("4 6", 5.0)])
           # unique: 2 2 5 -> "2 5". "2 2 5" scored 4 twice and 3 once (mean 3.67, rounds to 4), "2 5"
           # once at 5: disagreement, majority scored 4, pick right.
           + rows("unique: 2 2 5", [("2 2 5", 4.0), ("2 5", 5.0), ("2 2 5", 4.0), ("2 2 5", 3.0)])
           # sort: 9 8 -> every answer scored 3: no pair, left out; an unparsed score counts for nothing.
           + rows("sort: 9 8", [("8 9", 3.0), ("9 8", 3.0), ("8 9", None)])
           # Not a task of the world: left out.
           + rows("Write a new task.", [("a", 5.0), ("b", 1.0)]))
    split = diagnostics.vote_split(tmp_path)
    assert split == {"agree": [1, 1, 1],
                     "disagree, majority scored 2": [1, 1, 0],
                     "disagree, majority scored 4": [1, 1, 0]}


def test_against_majority_by_hand(tmp_path, diagnostics):
    def rows(prompt, samples):
        return [{"prompt": prompt, "response": r, "score": s, "judgments": []} for r, s in samples]

    _write(tmp_path, "judgments.jsonl",
           # sort: 3 1 2 -> "1 2 3". The wrong "1 2 2" three times (one copy unscored: still the most),
           # the right "1 2 3" once: the pair rejects the majority, chosen right, rejected wrong.
           rows("sort: 3 1 2", [("1 2 2", 2.0), ("1 2 3", 5.0), ("1 2 2", 2.0), ("1 2 2", None)])
           # evens: 4 1 6 -> "4 6". The wrong "4" twice, the wrong "6" once, chosen: both wrong.
           + rows("evens: 4 1 6", [("4", 1.0), ("6", 3.0), ("4", 1.0)])
           # unique: 2 2 5 -> "2 5". The pair's chosen answer is the majority: not counted.
           + rows("unique: 2 2 5", [("2 5", 5.0), ("2 5", 5.0), ("2 2 5", 1.0)]))
    _write(tmp_path, "pairs.jsonl", [
        {"prompt": "sort: 3 1 2", "chosen": "1 2 3", "rejected": "1 2 2"},
        {"prompt": "evens: 4 1 6", "chosen": "6", "rejected": "4"},
        {"prompt": "unique: 2 2 5", "chosen": "2 5", "rejected": "2 2 5"},
    ])
    assert diagnostics.against_majority(tmp_path) == [2, 1, 0, 1]


def test_trace_errors_by_hand(tmp_path, diagnostics):
    # sort: 4 2 2 7 with "2 3 4 7": true trace "response 2 in, 3 out, 4 in, 7 in" and
    # "input 4 kept, 2 kept, 2 missing, 7 kept". Its first judgment misses the "out" and the
    # "missing" (two of eight lookups) and says items yes, as its own trace implies; the second
    # is right but says items yes against its own trace; the third has no score (left out).
    # unique: 5 5 with "5": true trace "response 5 in" and "input 5 kept, 5 repeat"; its judgment
    # copies the input digits wrong (one miscopied line, its lookups not counted) and, its own
    # trace unreadable, is not checked against it. "sort: 1 2" with "x" has no trace, and a
    # judgment without a trace (a plain judge's) adds nothing: both left out.
    wrong = "response 2 in, 3 in, 4 in, 7 in\ninput 4 kept, 2 kept, 2 kept, 7 kept\n" \
            "digits yes, length yes, items yes, order yes, exact yes\nScore: 5"
    right = "response 2 in, 3 out, 4 in, 7 in\ninput 4 kept, 2 kept, 2 missing, 7 kept\n" \
            "digits yes, length yes, items yes, order yes, exact no\nScore: 4"
    _write(tmp_path, "eval_judge.jsonl", [
        {"prompt": "sort: 4 2 2 7", "response": "2 3 4 7", "judgments": [wrong, right, "response 2"],
         "scores": [5, 4, None]},
        {"prompt": "unique: 5 5", "response": "5", "judgments": ["response 5 in\ninput 5 kept\nScore: 5"],
         "scores": [5]},
        {"prompt": "sort: 1 2", "response": "x", "judgments": ["response none\nScore: 0"], "scores": [0]},
        {"prompt": "sort: 2 1", "response": "1 2", "judgments": ["digits yes, length yes, items yes, order yes, "
                                                                  "exact yes\nScore: 5"], "scores": [5]},
    ])
    errors = diagnostics.trace_errors(tmp_path / "eval_judge.jsonl")
    assert errors == {
        "trace": [3, 2], "digits miscopied": [6, 1],
        "response in": [7, 0], "response out": [2, 1], "input kept": [6, 0], "input missing": [2, 1],
        "items verdict against own trace": [2, 1],
    }
    # Verdicts' direction. sort: 4 2 2 7 with "2 3 4 7": the oracle passes digits, length and
    # order and fails items and exact. The wrong-trace judgment says yes to both (2 lenient); the
    # right-trace one says items yes (1 lenient), exact no. "sort: 2 1" with "1 2" passes every
    # check and its trace-less judgment says so. Judgments without a verdict line or a score are
    # left out.
    by_trace, by_check = diagnostics.verdict_errors(tmp_path / "eval_judge.jsonl")
    assert by_trace == {
        "trace wrong": [1, 1, 2, 0], "trace right": [1, 1, 1, 0], "no trace": [1, 0, 0, 0]}
    assert by_check == {
        "digits": [0, 0, 3, 0], "length": [0, 0, 3, 0], "items": [2, 2, 1, 0], "order": [0, 0, 3, 0],
        "exact": [2, 1, 1, 0]}


@pytest.fixture(scope="module")
def consistency():
    return _load(SCRIPT.with_name("judge_consistency.py"))


def test_consistency_stats_by_hand(consistency):
    rows = [
        # Greedy right; samples 5, 5, 4: the consensus 5 is right, the pair (5, 4) has its chosen closer.
        {"oracle": 5, "greedy": 5, "sampled": [5, 5, 4]},
        # Greedy wrong; samples 3, 3, 1, None: the consensus 3 is wrong (oracle 1), and the pair (3, 1)
        # has its rejected score closer: a consensus meta-judge would train the judge away from the truth.
        {"oracle": 1, "greedy": 3, "sampled": [3, 3, 1, None]},
        # All samples agree (4, right): no pair. The greedy judgment has no score: wrong.
        {"oracle": 4, "greedy": None, "sampled": [4, 4]},
        # Equally far: consensus 2 (the first of the tied most common), farthest 4 (the first at distance 2);
        # the oracle's 3 is 1 from both: neither closer.
        {"oracle": 3, "greedy": 2, "sampled": [2, 4, 4, 2]},
        # Left out: no oracle score; no parsed sample.
        {"oracle": None, "greedy": 5, "sampled": [5, 1]},
        {"oracle": 5, "greedy": 5, "sampled": [None]},
    ]
    stats = consistency.consistency_stats(rows)
    assert stats["candidates"] == 4
    assert stats["greedy score = oracle's"] == pytest.approx(1 / 4)
    assert stats["one sampled score = oracle's"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 0) / 4)
    assert stats["most common sampled score = oracle's"] == pytest.approx(2 / 4)
    assert stats["contested (sampled scores differ)"] == pytest.approx(3 / 4)
    assert stats["pairs: chosen closer to the oracle"] == pytest.approx(1 / 3)
    assert stats["pairs: rejected closer to the oracle"] == pytest.approx(1 / 3)
    assert consistency.consensus([2, 4, 4, 2]) == (2, 4)
    assert consistency.consensus([3, 3]) is None
    with pytest.raises(ValueError, match="no candidate"):
        consistency.consistency_stats([{"oracle": None, "greedy": 1, "sampled": [1]}])


def test_judge_consistency_runs_on_a_finished_run(tiny_run):
    out = subprocess.run([sys.executable, str(SCRIPT.with_name("judge_consistency.py")), str(tiny_run),
                          "--judge", "2", "--candidates", "6", "--samples", "3"],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    assert "M2 judging the candidates of the iteration that made M2" in out
    lines = {line.rsplit(None, 1)[0].strip(): float(line.rsplit(None, 1)[1]) for line in out.splitlines()[1:]}
    assert 1 <= lines["candidates"] <= 6
    for key in ("greedy score = oracle's", "one sampled score = oracle's", "most common sampled score = oracle's"):
        assert 0.0 <= lines[key] <= 1.0


def test_judge_heldout_on_a_finished_run(tiny_run, tmp_path):
    """More held-out judge rows judged by M1 of a real run; its own-set number is the loop's metric,
    recomputed from m1/eval_judge.jsonl; a second call reads the first's result back."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # the shared run stays as the other tests read it
    command = [sys.executable, str(SCRIPT.with_name("judge_heldout.py")), str(run), "--models", "1", "--prompts", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    summary = [json.loads(line) for line in (run / "judge_heldout" / "summary.jsonl").read_text().splitlines()]
    assert [(r["model"], r["prompts"]) for r in summary] == [(1, 6)]
    judged = [json.loads(line) for line in (run / "judge_heldout" / "m1" / "eval_judge.jsonl").read_text().splitlines()]
    assert len(judged) == 6 * 4 and len({r["prompt"] for r in judged}) == 6
    assert not {r["prompt"] for r in judged} & {json.loads(line)["prompt"]
                                                 for line in (run / "data" / "judge_eval.jsonl").read_text().splitlines()}
    row = summary[0]
    assert 0.0 <= row["judge/pairwise_accuracy"] <= 1.0 and row["judge/pairwise_accuracy_se"] >= 0.0
    loop = next(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["model"] == 1)
    own = f"own {loop['judge/pairwise_accuracy']:.3f} ± "
    assert own in first and f"extra {row['judge/pairwise_accuracy']:.3f} ± {row['judge/pairwise_accuracy_se']:.3f}" in first
    mtime = (run / "judge_heldout" / "m1" / "eval_judge.jsonl").stat().st_mtime_ns
    second = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    assert second == first
    assert (run / "judge_heldout" / "m1" / "eval_judge.jsonl").stat().st_mtime_ns == mtime
    assert len((run / "judge_heldout" / "summary.jsonl").read_text().splitlines()) == 1
    bad = subprocess.run([*command[:2], str(tmp_path)], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


def test_judge_diagnostics_runs_on_a_finished_run(tiny_run):
    out = subprocess.run([sys.executable, str(SCRIPT), str(tiny_run), "--model", "2"],
                         capture_output=True, text=True, check=True).stdout
    assert "Which candidate is correct" in out and "Per check on the held-out set" in out
    spread = out.split("How M1's samples spread")[1].splitlines()[1].split()
    assert spread[0] == str(tiny_run) and int(spread[1]) > 0 and float(spread[2]) >= 1
    per_check = out.split("Per check on the held-out set")[1].splitlines()
    assert [line.split()[0] for line in per_check[2:5]] == ["M1", "M2", "M3"]  # every evaluated model
    assert all(len(line.split()) == 1 + 3 * 5 for line in per_check[2:5])  # "lenient | harsh" for five checks
