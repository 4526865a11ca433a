"""How the self-judge chooses on the built-in world, from a run's files (nothing is re-run).

    python scripts/judge_diagnostics.py runs/default/seed0 [runs/default/seed1 ...] [--model 2]

For the iteration that made M_t (default M2: M1's own candidates), over the prompts that gave
preference pairs (the loop's own ``pairs.jsonl``, so whatever pair rule the run used):

* how often the chosen answer is correct (the judge's choice; for a rule with several pairs per
  prompt, the share of that prompt's pairs), against a candidate drawn at random (the share of
  samples that are correct) and the most frequent candidate (majority vote, no judge);
* over every prompt of the iteration, how much M_{t-1}'s samples disagree (distinct answers, all
  the same, right and wrong both sampled) and how often a sample and the most sampled answer are right;
* per rubric check and task, how often the judge's verdict agrees with the oracle's, on the
  held-out judge set (synthetic responses, m1/eval_judge.jsonl) and on its own candidates;
* over every prompt that could give a best-vs-worst pair (before ``pairs.majority_agrees`` or
  any other filter), whether the judge's pick is also the policy's most sampled answer, and
  where it is not, how often each of the two is right, by the score the judge gave the
  majority answer (``--tie-break`` should be the run's ``pairs.tie_break``);
* per run, the loop's pairs whose rejected answer is the prompt's most sampled one and whose
  chosen answer is not (with ``pairs.overrule_majority_below`` and ``majority_agrees``, exactly
  the overruled pairs): how often each side is right, and how often both are equally right;
* for a judge that writes a verification trace (``data.world.judge_trace``), M1's and M_t's
  held-out judgments (``m{1,t}/eval_judge.jsonl``): how often each kind of lookup in the trace is
  wrong, and how often the judge's ``items`` verdict departs from what its own trace says;
* for every evaluated M_t, its held-out verdicts' errors by direction (lenient: ``yes`` to a check
  the oracle fails; harsh: ``no`` to one it passes), split by whether its trace is exactly right,
  and per check.
"""

from __future__ import annotations

import argparse
import collections
import statistics
from pathlib import Path

from selfreward.data.builtin import CHECKS, is_correct, parse_prompt, rubric_checks, verification_trace
from selfreward.pairs import build_pairs, judged_groups
from selfreward.rundir import read_jsonl


def choice_rates(folder: Path) -> dict[str, float]:
    """Correct-answer rates of the pairs' chosen answers, a random sample and the majority answer."""
    chosen = collections.defaultdict(list)
    for pair in read_jsonl(folder / "pairs.jsonl"):  # the loop's choice, not re-derived here
        chosen[pair["prompt"]].append(pair["chosen"])
    totals, n = collections.Counter(), 0
    for c in read_jsonl(folder / "candidates.jsonl"):
        prompt, samples = c["prompt"], c["responses"]
        if prompt not in chosen or parse_prompt(prompt) is None:
            continue
        n += 1
        counts = collections.Counter(samples)
        totals["the chosen answer (judge's choice)"] += statistics.fmean(is_correct(prompt, r) for r in chosen[prompt])
        totals["a random sample"] += sum(is_correct(prompt, r) for r in samples) / len(samples)
        totals["the most frequent candidate"] += is_correct(prompt, max(counts, key=counts.get))
        totals["any candidate correct"] += any(is_correct(prompt, r) for r in counts)
    return {k: v / n for k, v in totals.items()} | {"prompts": n}


def sample_spread(folder: Path) -> dict[str, float]:
    """How much the samples of ``folder/candidates.jsonl`` (those of the model the iteration
    started from) disagree with each other, over every prompt that is one of the world's tasks
    (with a pair or not): the mean number of distinct answers (stripped), the share of prompts whose
    samples are all the same answer, the share with both a right and a wrong sample (where an oracle
    pair exists), the share of samples right, and the share of prompts whose most sampled answer is
    right (the first seen wins equal counts). Only ``{"prompts": 0}`` when no prompt is a task."""
    totals, n = collections.Counter(), 0
    for c in read_jsonl(folder / "candidates.jsonl"):
        prompt = c["prompt"]
        if parse_prompt(prompt) is None:
            continue
        n += 1
        counts = collections.Counter(r.strip() for r in c["responses"])
        right = [is_correct(prompt, r) for r in c["responses"]]
        totals["distinct answers"] += len(counts)
        totals["all samples the same"] += len(counts) == 1
        totals["right and wrong sampled"] += 0 < sum(right) < len(right)
        totals["samples right"] += sum(right) / len(right)
        totals["most sampled answer right"] += is_correct(prompt, max(counts, key=counts.get))
    return {k: v / n for k, v in totals.items()} | {"prompts": n} if n else {"prompts": 0}


def _finished_scores(group: dict) -> dict[str, list[float]]:
    """Stripped answer text -> its scored, finished copies' scores, in order of first appearance
    (what ``build_pairs`` counts as one answer's votes)."""
    scores = collections.defaultdict(list)
    for text, score, done in zip(group["responses"], group["scores"], group["finished"], strict=True):
        if score is not None and done:
            scores[text.strip()].append(score)
    return scores


def vote_split(folder: Path, tie_break: str = "frequent") -> dict[str, list[int]]:
    """Group -> [prompts, judge's pick right, majority answer right], from ``judgments.jsonl``.

    The pick is best_worst's chosen answer with ``tie_break``; the majority answer is the scored
    answer with the most scored copies (the first on equal counts). Groups: ``agree`` (the pick
    has as many copies as the majority answer: what ``pairs.majority_agrees`` keeps) and
    ``disagree, majority scored S`` (S rounded to the nearest point). Prompts without a pair, or
    that are not the world's tasks, are left out."""
    split = collections.defaultdict(lambda: [0, 0, 0])
    for g in judged_groups(read_jsonl(folder / "judgments.jsonl")).values():
        if parse_prompt(g["prompt"]) is None:
            continue
        pairs, _ = build_pairs([g], tie_break=tie_break)
        if not pairs:
            continue
        scores = _finished_scores(g)
        copies = collections.Counter({text: len(s) for text, s in scores.items()})
        majority = max(copies, key=copies.get)  # Counter keeps first-seen order: the first wins ties
        pick = pairs[0]["chosen"].strip()
        key = "agree" if copies[pick] >= copies[majority] else \
            f"disagree, majority scored {round(statistics.fmean(scores[majority]))}"
        counts = split[key]
        counts[0] += 1
        counts[1] += is_correct(g["prompt"], pick)
        counts[2] += is_correct(g["prompt"], majority)
    return dict(split)


def against_majority(folder: Path) -> list[int]:
    """[pairs, chosen right, rejected right, both equally right] over the loop's pairs (``pairs.jsonl``)
    whose rejected answer has the most scored copies among the prompt's finished candidates
    (``judgments.jsonl``) and whose chosen answer has fewer; prompts that are not the world's tasks
    are left out."""
    groups = judged_groups(read_jsonl(folder / "judgments.jsonl"))
    counts = [0, 0, 0, 0]
    for pair in read_jsonl(folder / "pairs.jsonl"):
        g = groups[pair["prompt"]]
        if parse_prompt(g["prompt"]) is None:
            continue
        copies = collections.Counter({text: len(s) for text, s in _finished_scores(g).items()})
        most = max(copies.values())
        if copies[pair["rejected"].strip()] == most > copies[pair["chosen"].strip()]:
            chosen, rejected = is_correct(g["prompt"], pair["chosen"]), is_correct(g["prompt"], pair["rejected"])
            counts[0] += 1
            counts[1] += chosen
            counts[2] += rejected
            counts[3] += chosen == rejected
    return counts


def verdicts(judgment: str) -> dict[str, str]:
    """``{check: "yes" | "no" | ...}`` from a judgment's verdict line (the first line of a plain
    judgment, after the trace of a traced one); empty when it has none."""
    line = next((ln for ln in judgment.split("\n") if ln.startswith(CHECKS[0])), "")
    return dict(part.split() for part in line.split(",") if len(part.split()) == 2)


def check_accuracy(path: Path) -> dict[tuple[str, str], float]:
    """(task, check) -> share of the judge's verdicts that agree with the oracle's."""
    hits = collections.defaultdict(lambda: [0, 0])
    for r in read_jsonl(path):
        truth = rubric_checks(r["prompt"], r["response"])
        if truth is None:
            continue
        task = parse_prompt(r["prompt"])[0]
        for judgment in r["judgments"]:
            said = verdicts(judgment)
            for check in CHECKS:
                hits[task, check][0] += 1
                hits[task, check][1] += said.get(check) == ("yes" if truth[check] else "no")
    return {k: ok / total for k, (total, ok) in hits.items()}


def _trace_tags(line: str, head: str) -> list[tuple[str, str]] | None:
    """``"response 2 in, 3 out"`` -> [("2", "in"), ("3", "out")]; None if the line is not of that form."""
    if not line.startswith(head + " "):
        return None
    tags = [part.split() for part in line[len(head) + 1:].split(",")]
    return [(t[0], t[1]) for t in tags] if all(len(t) == 2 for t in tags) else None


def trace_errors(path: Path) -> dict[str, list[int]]:
    """Lookup errors in the verification traces of held-out judgments: key -> [count, wrong].

    Only judgments with a readable score that open with a trace (``response ...``; a judge
    without one adds nothing), of responses that have a trace (digits only). Keys:
    ``"response <tag>"`` / ``"input <tag>"``, each true tag of a trace line whose digits the judge
    copied in order (was the judge's tag the same?); ``"digits miscopied"``, per trace line (its
    digits not the response's or the input's, in order, or the line unreadable); ``"trace"``, per
    judgment (both lines exactly right?); ``"items verdict against own trace"``, per judgment whose
    own trace reads (its ``items`` verdict is not what that trace implies: every response digit
    ``in`` and no input digit ``missing``)."""
    counts = collections.defaultdict(lambda: [0, 0])

    def add(key: str, wrong: bool) -> None:
        counts[key][0] += 1
        counts[key][1] += wrong

    for r in read_jsonl(path):
        truth = verification_trace(r["prompt"], r["response"])
        if truth is None or "\n" not in truth:
            continue
        true_lines = truth.split("\n")
        for judgment, score in zip(r["judgments"], r["scores"], strict=True):
            if score is None or not judgment.startswith("response"):
                continue
            lines = judgment.split("\n")
            add("trace", lines[:2] != true_lines)
            own = []
            for k, head in enumerate(("response", "input")):
                want = _trace_tags(true_lines[k], head)
                got = _trace_tags(lines[k], head) if k < len(lines) else None
                miscopied = got is None or [d for d, _ in got] != [d for d, _ in want]
                add("digits miscopied", miscopied)
                own.append(got)
                if not miscopied:
                    for (_, true_tag), (_, tag) in zip(want, got, strict=True):
                        add(f"{head} {true_tag}", tag != true_tag)
            said = verdicts(judgment).get("items")
            if None not in own and said in ("yes", "no"):
                implied = all(t == "in" for _, t in own[0]) and all(t != "missing" for _, t in own[1])
                add("items verdict against own trace", said != ("yes" if implied else "no"))
    return dict(counts)


def verdict_errors(path: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """The direction of the judge's verdict errors on held-out judgments with a readable score and
    a verdict line naming every check; a lenient verdict says ``yes`` to a check the oracle fails,
    a harsh one ``no`` to a check it passes. Returns two tables, read in one pass:

    * by whether the judgment's verification trace is exactly right (keys ``"trace right"``,
      ``"trace wrong"``, ``"no trace"``): [judgments, any verdict wrong, lenient verdicts, harsh verdicts];
    * per rubric check: [checks the oracle fails, of them said ``yes``, checks the oracle passes,
      of them said ``no``]."""
    by_trace = collections.defaultdict(lambda: [0, 0, 0, 0])
    by_check = {check: [0, 0, 0, 0] for check in CHECKS}
    for r in read_jsonl(path):
        truth = rubric_checks(r["prompt"], r["response"])
        if truth is None:
            continue
        trace = verification_trace(r["prompt"], r["response"])
        for judgment, score in zip(r["judgments"], r["scores"], strict=True):
            said = verdicts(judgment)
            if score is None or set(CHECKS) - set(said):
                continue
            key = "no trace" if not judgment.startswith("response") or trace is None else (
                "trace right" if judgment.split("\n")[:2] == trace.split("\n") else "trace wrong")
            lenient = [said[c] == "yes" and not truth[c] for c in CHECKS]
            harsh = [said[c] != "yes" and truth[c] for c in CHECKS]
            row = by_trace[key]
            row[0] += 1
            row[1] += any(lenient) or any(harsh)
            row[2] += sum(lenient)
            row[3] += sum(harsh)
            for check, is_lenient, is_harsh in zip(CHECKS, lenient, harsh, strict=True):
                counts = by_check[check]
                counts[0 if not truth[check] else 2] += 1
                counts[1] += is_lenient
                counts[3] += is_harsh
    return dict(by_trace), by_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--model", type=int, default=2, help="the iteration that made M_t (default 2)")
    parser.add_argument("--tie-break", default="frequent", choices=("first", "frequent"),
                        help="the runs' pairs.tie_break, for the pick in the vote split (default frequent)")
    args = parser.parse_args()
    rates = [choice_rates(run / f"m{args.model}") for run in args.runs]
    print(f"Which candidate is correct (iteration that made M{args.model}; mean over {len(rates)} runs, range):")
    for key in rates[0]:
        values = [r[key] for r in rates]
        print(f"  {key:32s} {statistics.fmean(values):.3f}  ({min(values):.3f}-{max(values):.3f})")
    print(f"\nHow M{args.model - 1}'s samples spread, every prompt of the iteration (per run): prompts, distinct "
          "answers, all the same, right and wrong sampled, samples right, most sampled right")
    for run in args.runs:
        spread = sample_spread(run / f"m{args.model}")
        if not spread["prompts"]:
            print(f"  {str(run):40s} no prompt of the built-in world's tasks")
            continue
        print(f"  {str(run):40s} {spread['prompts']:6d}  {spread['distinct answers']:.2f}  "
              f"{spread['all samples the same']:.3f}  {spread['right and wrong sampled']:.3f}  "
              f"{spread['samples right']:.3f}  {spread['most sampled answer right']:.3f}")
    held_out = [check_accuracy(run / "m1" / "eval_judge.jsonl") for run in args.runs]
    own = [check_accuracy(run / f"m{args.model}" / "judgments.jsonl") for run in args.runs]
    print("\nVerdicts that agree with the oracle, per check (M1's judge on the held-out set | M"
          f"{args.model - 1}'s judge on its own candidates):")
    keys = sorted({k for r in held_out + own for k in r})
    for key in keys:
        a = [r[key] for r in held_out if key in r]
        b = [r[key] for r in own if key in r]
        print(f"  {key[0]:7s} {key[1]:7s} {statistics.fmean(a) if a else float('nan'):.2f} | "
              f"{statistics.fmean(b) if b else float('nan'):.2f}")
    pooled = collections.defaultdict(lambda: [0, 0, 0])
    for run in args.runs:
        for key, counts in vote_split(run / f"m{args.model}", args.tie_break).items():
            pooled[key] = [a + b for a, b in zip(pooled[key], counts, strict=True)]
    print(f"\nThe judge's pick against the policy's most sampled answer, every prompt with a pair (pooled over "
          f"{len(args.runs)} runs): prompts, pick right, majority answer right")
    for key in sorted(pooled, key=lambda k: (k != "agree", k)):
        n, pick, majority = pooled[key]
        print(f"  {key:30s} {n:6d}  {pick / n:.2f}  {majority / n:.2f}")
    print("\nThe loop's pairs that reject the most sampled answer for a less sampled one (per run): "
          "pairs, chosen right, rejected right, both equally right")
    for run in args.runs:
        n, chosen, rejected, level = against_majority(run / f"m{args.model}")
        rates = f"{chosen / n:.3f}  {rejected / n:.3f}  {level / n:.3f}" if n else "-"
        print(f"  {str(run):40s} {n:6d}  {rates}")
    pooled_traces = []
    for model in sorted({1, args.model}):
        pooled_trace = collections.defaultdict(lambda: [0, 0])
        for run in args.runs:
            for key, (n, wrong) in trace_errors(run / f"m{model}" / "eval_judge.jsonl").items():
                pooled_trace[key][0] += n
                pooled_trace[key][1] += wrong
        pooled_traces.append(pooled_trace)
    models = sorted({int(p.parent.name[1:]) for run in args.runs for p in run.glob("m*/eval_judge.jsonl")})
    print(f"\nThe direction of the verdicts' errors on the held-out set (pooled over {len(args.runs)} runs): "
          "judgments, share with a wrong verdict, lenient and harsh verdicts per judgment")
    pooled_checks = {}
    for model in models:
        pooled_bias = collections.defaultdict(lambda: [0, 0, 0, 0])
        pooled_checks[model] = {check: [0, 0, 0, 0] for check in CHECKS}
        for run in args.runs:
            if (run / f"m{model}" / "eval_judge.jsonl").is_file():
                by_trace, by_check = verdict_errors(run / f"m{model}" / "eval_judge.jsonl")
                for key, row in by_trace.items():
                    pooled_bias[key] = [a + b for a, b in zip(pooled_bias[key], row, strict=True)]
                for check, row in by_check.items():
                    pooled_checks[model][check] = [a + b for a, b in zip(pooled_checks[model][check], row, strict=True)]
        for key in sorted(pooled_bias):
            n, wrong, lenient, harsh = pooled_bias[key]
            print(f"  M{model} {key:12s} {n:6d}  {wrong / n:.2f}  lenient {lenient / n:.2f}  harsh {harsh / n:.2f}")
    print(f"\nPer check on the held-out set (pooled over {len(args.runs)} runs): lenient, the share of checks the "
          "oracle fails that the judge passes | harsh, the share it passes that the judge fails")
    print("  model " + "".join(f"{check:>16s}" for check in CHECKS))
    for model in models:
        cells = [f"{r[1] / r[0] if r[0] else float('nan'):.2f} | {r[3] / r[2] if r[2] else float('nan'):.2f}"
                 for r in pooled_checks[model].values()]
        print(f"  M{model:<4d} " + "".join(f"{c:>16s}" for c in cells))
    if any(pooled_traces):
        header = " | ".join(f"M{m}" for m in sorted({1, args.model}))
        print(f"\nThe verification trace on the held-out set, share wrong (pooled over {len(args.runs)} runs; {header}):")
        for key in sorted({k for p in pooled_traces for k in p}):
            cells = [f"{p[key][1] / p[key][0]:.3f} ({p[key][0]})" if p.get(key) else "-" for p in pooled_traces]
            print(f"  {key:34s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
