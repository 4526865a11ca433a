"""The built-in default world: synthetic digit-list tasks with a programmatic oracle.

It lets the whole self-rewarding loop run on a laptop CPU with nothing downloaded:

* a family of instruction tasks over single digits, written ``"<task>: d d d"``
  (``sort``, ``unique``, ``evens``; ``reverse`` on request), whose answers are digits separated
  by spaces;
* an oracle that grades any response with an additive five-check rubric
  (``digits``, ``length``, ``items``, ``order``, ``exact``; score 0..5), mirroring the
  additive judge prompt ``judge_additive_small``;
* seed and evaluation data files (:func:`build_world`);
* a byte-level BPE tokenizer trained locally on the world's texts (:func:`build_tokenizer`);
* a tiny randomly initialised Llama model built from a config (:func:`build_base_model`).

The oracle only builds seed data and measures results; the training loop never calls it.

Self-instruction is taught in SFT. The paper's base model writes new prompts from a few-shot
prompt without training, but a tiny random-init model has no such ability, so ``ift.jsonl``
also holds ``n_self_instruct`` demonstrations: the few-shot prompt built from the
``self_instruct_small`` template and some task prompts, answered by a new task prompt.

Data files written by :func:`build_world` (JSON Lines, UTF-8, one object a line):

* ``ift.jsonl``: ``{"prompt", "response"}``, task prompts with correct answers plus the
  self-instruction demonstrations (and, with ``n_meta_judge``, meta-judging demonstrations);
* ``eft.jsonl``: ``{"prompt", "response", "judgment", "score"}``, responses of varied quality
  with the judgment text the model learns to write, balanced over scores;
* ``eval_prompts.jsonl``: ``{"prompt", "answer"}``, held-out prompts;
* ``judge_eval.jsonl``: ``{"prompt", "responses", "scores"}``, held-out prompts with several
  responses and their oracle scores (higher is better);
* ``world.json``: the config used and the number of rows in each file.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from selfreward.prompts import DEFAULT_CHAT_TEMPLATE, fill, load_template, self_instruct_prompt
from selfreward.rundir import read_json, read_jsonl, write_json, write_jsonl

TASKS: dict[str, Callable[[list[str]], list[str]]] = {
    "sort": sorted,
    "reverse": lambda items: items[::-1],
    "unique": lambda items: list(dict.fromkeys(items)),
    "evens": lambda items: [d for d in items if int(d) % 2 == 0],
}

CHECKS = ("digits", "length", "items", "order", "exact")


def _is_subsequence(sub: list[str], seq: list[str]) -> bool:
    rest = iter(seq)
    return all(d in rest for d in sub)


# The task's own property of a response's order, checkable from the prompt and the response
# alone, without writing the answer: adjacent comparisons for sort, a repeat test for unique,
# parity for evens. (reverse has no such shortcut: checking its order is solving it.)
ORDER_CHECKS: dict[str, Callable[[list[str], list[str]], bool]] = {
    "sort": lambda got, items: all(a <= b for a, b in zip(got, got[1:])),
    "reverse": lambda got, items: _is_subsequence(got[::-1], items),
    "unique": lambda got, items: len(set(got)) == len(got),
    "evens": lambda got, items: all(int(d) % 2 == 0 for d in got),
}

JUDGE_TEMPLATE = "judge_additive_small"

_RESPONSE_RE = re.compile(r"[0-9]( [0-9])*")

# transformers and tokenizers are imported where used, so that the oracle imports quickly.
if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast


# --- Tasks and oracle ------------------------------------------------------------------------


def parse_prompt(prompt: str) -> tuple[str, list[str]] | None:
    """Split ``"sort: 3 1 4"`` into ``("sort", ["3", "1", "4"])``; None if not a valid task.

    A prompt is valid when it names a known task and lists single digits, and its answer is
    not empty (an ``evens`` prompt with only odd digits has no answer worth grading).
    """
    task, sep, rest = prompt.strip().partition(":")
    items = rest.split()
    if not sep or task not in TASKS or not items:
        return None
    if not all(len(d) == 1 and d in "0123456789" for d in items):
        return None
    if not TASKS[task](items):
        return None
    return task, items


def answer(prompt: str) -> str | None:
    """The correct answer to a task prompt, or None when the prompt is not a valid task."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        return None
    task, items = parsed
    return " ".join(TASKS[task](items))


def rubric_checks(prompt: str, response: str) -> dict[str, bool] | None:
    """The five additive checks for ``response``, in :data:`CHECKS` order; None if invalid prompt.

    ``digits``: non-empty, only single digits separated by single spaces. The other checks
    require ``digits``: ``length`` (as many items as the answer), ``items`` (the same multiset
    of digits as the answer), ``order`` (the task's order property, :data:`ORDER_CHECKS`:
    ascending for sort, no repeats for unique, all even for evens) and ``exact`` (the answer
    itself).

    Every check but ``exact`` can be made from the prompt and the response without writing the
    answer (for sort, unique and evens), and ``exact`` follows from ``items`` and ``order`` for
    sort. Whether checking is also *easier* than producing for a given model is measured, not
    assumed: ``self_judge/pair_accuracy`` per iteration (for the built-in model the per-token
    checks are, the multiset checks are not; docs/results.md).
    """
    parsed = parse_prompt(prompt)
    if parsed is None:
        return None
    task, items = parsed
    want = TASKS[task](items)
    text = response.strip()
    digits = _RESPONSE_RE.fullmatch(text) is not None
    got = text.split() if digits else []
    return {
        "digits": digits,
        "length": digits and len(got) == len(want),
        "items": digits and sorted(got) == sorted(want),
        "order": digits and ORDER_CHECKS[task](got, items),
        "exact": digits and got == want,
    }


def oracle_score(prompt: str, response: str) -> int | None:
    """The rubric score 0..5 (the number of checks passed), or None for an invalid prompt."""
    checks = rubric_checks(prompt, response)
    return None if checks is None else sum(checks.values())


def is_correct(prompt: str, response: str) -> bool:
    """Whether ``response`` is exactly the answer; False for an invalid prompt."""
    checks = rubric_checks(prompt, response)
    return checks is not None and checks["exact"]


# The judgment's format, shared by judgment_text and fixed_phrases so that the phrases match it.
_VERDICT_SEPARATOR, _SCORE_LINE = ", ", "\nScore: "


def _verdict(name: str, passed: bool) -> str:
    return f"{name} {'yes' if passed else 'no'}"


def judgment_text(checks: dict[str, bool], trace: str | None = None) -> str:
    """The EFT target: each check's verdict, then the total:
    ``"digits yes, length no, items no, order yes, exact no\\nScore: 2"``, after ``trace``
    (:func:`verification_trace`) where one is given.

    The judge checks the response against the prompt; it does not write its own solution first.
    A judge that re-solves the task is right only when its own solution is, and so shares the
    policy's mistakes (no generation-verification gap).
    """
    verdicts = _VERDICT_SEPARATOR.join(_verdict(name, checks[name]) for name in CHECKS)
    head = f"{trace}\n" if trace else ""
    return f"{head}{verdicts}{_SCORE_LINE}{sum(bool(checks[name]) for name in CHECKS)}"


# The trace's format, shared by verification_trace and trace_phrases: each digit's tag (one of
# _TRACE_TAGS), the items joined by the separator, the input's line after the response's.
_TRACE_TAGS = ("in", "out", "extra", "odd", "kept", "missing", "repeat")
_TRACE_SEPARATOR, _TRACE_INPUT_LINE = ", ", "\ninput"


def verification_trace(prompt: str, response: str) -> str | None:
    """A verification trace made of token lookups, written before the verdicts (``world.judge_trace``).

    Each response digit is ``in`` the answer's share of the input, ``out`` (not in the input),
    ``extra`` (one copy more than the input has, or a repeat for ``unique``) or ``odd`` (for
    ``evens``); each input digit is ``kept`` (the response holds that many copies of it),
    ``missing``, ``odd`` (for ``evens``, not wanted) or ``repeat`` (for ``unique``, a copy the
    answer drops). For example ``"sort: 4 2 2 7"``, ``"2 3 4 7"`` gives
    ``"response 2 in, 3 out, 4 in, 7 in\\ninput 4 kept, 2 kept, 2 missing, 7 kept"``.

    Why: the policy's own wrong answers are multiset errors (a digit not in the input, one copy too
    many or too few: all but 1-2% of them on validation seed 100), which this small model cannot
    verify any better than it can solve the task; the trace turns ``items`` into one lookup per
    digit, each a question about the input alone or about earlier copies (docs/results.md). The
    answer is never written. None for an invalid prompt.
    """
    parsed = parse_prompt(prompt)
    if parsed is None:
        return None
    task, items = parsed
    text = response.strip()
    if _RESPONSE_RE.fullmatch(text) is None:
        return "response none"
    have, got = Counter(items), text.split()

    def odd(d: str) -> bool:
        return task == "evens" and int(d) % 2 == 1

    tags, seen = [], Counter()
    for d in got:
        seen[d] += 1
        allowed = 1 if task == "unique" else have[d]
        tag = "out" if d not in have else "odd" if odd(d) else "extra" if seen[d] > allowed else "in"
        tags.append(f"{d} {tag}")
    copies, marks, nth = Counter(got), [], Counter()
    for d in items:
        nth[d] += 1
        if odd(d):
            tag = "odd"
        elif task == "unique" and nth[d] > 1:
            tag = "repeat"
        else:
            tag = "kept" if copies[d] >= (1 if task == "unique" else nth[d]) else "missing"
        marks.append(f"{d} {tag}")
    return f"response {_TRACE_SEPARATOR.join(tags)}{_TRACE_INPUT_LINE} {_TRACE_SEPARATOR.join(marks)}"


# --- Responses of varied quality -------------------------------------------------------------


def _other_digit(rng: random.Random, digit: str) -> str:
    return rng.choice([d for d in "0123456789" if d != digit])


def _replace(rng: random.Random, ans: list[str]) -> list[str]:
    out = list(ans)
    i = rng.randrange(len(out))
    out[i] = _other_digit(rng, out[i])
    return out


def _swap(rng: random.Random, ans: list[str]) -> list[str] | None:
    pairs = [(i, j) for i in range(len(ans)) for j in range(i + 1, len(ans)) if ans[i] != ans[j]]
    if not pairs:
        return None
    i, j = rng.choice(pairs)
    out = list(ans)
    out[i], out[j] = out[j], out[i]
    return out


def _drop(rng: random.Random, ans: list[str]) -> list[str] | None:
    if len(ans) < 2:
        return None
    out = list(ans)
    del out[rng.randrange(len(out))]
    return out


def _add(rng: random.Random, ans: list[str]) -> list[str]:
    out = list(ans)
    out.insert(rng.randrange(len(out) + 1), rng.choice("0123456789"))
    return out


def _shuffle(rng: random.Random, ans: list[str]) -> list[str] | None:
    if len(set(ans)) < 2:
        return None
    out = list(ans)
    while out == ans:
        rng.shuffle(out)
    return out


def _replace_keep_order(rng: random.Random, ans: list[str], task: str) -> list[str]:
    """One item replaced so that the task's order property still holds: the near miss a policy
    makes most (``sort: 4 2 2 7`` -> ``2 3 4 7``), which only the ``items`` check can catch."""
    out = list(ans)
    i = rng.randrange(len(out))
    if task == "evens":
        out[i] = rng.choice([d for d in "02468" if d != out[i]])
    elif task == "unique":
        unused = [d for d in "0123456789" if d not in out]
        out[i] = rng.choice(unused) if unused else out[i]
    else:
        out[i] = _other_digit(rng, out[i])
    return sorted(out) if task == "sort" else out


def _repeat(rng: random.Random, ans: list[str]) -> list[str]:
    """One item written twice in a row (``unique`` that kept a duplicate, a sort that counted one twice)."""
    out = list(ans)
    i = rng.randrange(len(out))
    out.insert(i, out[i])
    return out


def _random_list(rng: random.Random, ans: list[str]) -> list[str]:
    return [rng.choice("0123456789") for _ in range(rng.randint(1, len(ans) + 2))]


# Kinds of response and their weights, tuned so that the oracle scores of a task's responses
# spread over 0..5 (score 4 only arises from a near miss with the right digits, so it is rare).
# Each kind draws from (rng, answer items, task name); most ignore the task.
_MUTATIONS: dict[str, tuple[float, Callable[[random.Random, list[str], str], list[str] | None]]] = {
    "correct": (2.0, lambda rng, ans, task: ans),
    "replace": (1.5, lambda rng, ans, task: _replace(rng, ans)),
    "replace_keep_order": (3.0, _replace_keep_order),
    "repeat": (1.5, lambda rng, ans, task: _repeat(rng, ans)),
    "swap": (3.0, lambda rng, ans, task: _swap(rng, ans)),
    "drop": (1.0, lambda rng, ans, task: _drop(rng, ans)),
    "add": (1.0, lambda rng, ans, task: _add(rng, ans)),
    "shuffle": (1.5, lambda rng, ans, task: _shuffle(rng, ans)),
    "random": (1.5, lambda rng, ans, task: _random_list(rng, ans)),
}
_COPY_WEIGHT = 1.0
_NON_ANSWER_WEIGHT = 2.0


def sample_response(rng: random.Random, prompt: str) -> str:
    """Draw a response of varied quality to a valid task prompt (never an empty string).

    Kinds: the correct answer, one item replaced (anywhere, or so that the task's order property
    still holds), an item repeated, two positions swapped, an item dropped, an item added, the
    answer shuffled, the input copied unchanged, a random digit list, or a
    non-answer (the task name or ``"?"``).
    """
    parsed = parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"not a task prompt of the built-in world: {prompt!r}")
    task, items = parsed
    ans = TASKS[task](items)
    kinds = [*_MUTATIONS, "copy", "non_answer"]
    weights = [w for w, _ in _MUTATIONS.values()] + [_COPY_WEIGHT, _NON_ANSWER_WEIGHT]
    while True:
        kind = rng.choices(kinds, weights=weights)[0]
        if kind == "copy":
            return " ".join(items)
        if kind == "non_answer":
            return rng.choice([task, "?"])
        out = _MUTATIONS[kind][1](rng, ans, task)
        if out is not None:  # None: this kind cannot change this answer, draw another
            return " ".join(out)


# --- Configuration and prompt space ----------------------------------------------------------


@dataclass
class WorldConfig:
    """What :func:`build_world` generates; validated on construction."""

    seed: int = 0
    # reverse is left out by default: checking its order is solving it (no verification gap).
    tasks: list[str] = field(default_factory=lambda: ["sort", "unique", "evens"])
    min_items: int = 3
    max_items: int = 6
    n_ift: int = 1900  # conf/data/builtin.yaml says why these (n_ift, ift_task_weights, n_eft)
    # Relative share of each task among the n_ift task demonstrations, one weight per task in the
    # order of ``tasks``; [] is uniform (as worlds were before this field). Held-out, EFT and
    # self-instruction prompts stay uniform.
    ift_task_weights: list[float] = field(default_factory=lambda: [1.0, 2.0, 0.6])
    n_self_instruct: int = 300
    self_instruct_shots: int = 4
    self_instruct_template: str = "self_instruct_small"
    n_eft: int = 6000
    # EFT judgments start with a verification trace of token lookups (verification_trace); the judge
    # then needs judge.max_new_tokens of about 128 (experiment=judge_trace sets both).
    judge_trace: bool = False
    # EFT rows from the model's own answers (the paper's EFT data are judgments of *model* outputs):
    # the loop's eft stage trains an SFT-on-IFT model, samples eft_own_samples answers to each of
    # n_eft_own fresh prompts, and the rubric labels them (as annotators would), half right and half
    # wrong, next to the n_eft synthetic rows. 0 keeps the synthetic rows only (every file as before).
    n_eft_own: int = 0
    eft_own_samples: int = 4
    # Demonstrations of Meta-Rewarding's meta-judge (selfreward/meta_judge.py): two judgments of
    # one response, the rubric's own and one with some verdicts wrong, and which is right. A tiny
    # random-init model cannot meta-judge without them; 0 leaves every other file unchanged.
    n_meta_judge: int = 0
    meta_judge_template: str = "meta_judge_small"
    n_eval_prompts: int = 500
    n_judge_eval: int = 100
    judge_eval_responses: int = 4

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)  # a tuple or an OmegaConf ListConfig would not serialise
        self.ift_task_weights = [float(w) for w in self.ift_task_weights or []]
        self.validate()

    def ift_weights(self) -> dict[str, float] | None:
        """Each task's IFT weight as {task: weight}; None when uniform (ift_task_weights is [])."""
        return dict(zip(self.tasks, self.ift_task_weights)) if self.ift_task_weights else None

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(
                f"tasks must be distinct names from {list(TASKS)}, got {self.tasks}"
            )
        weights = self.ift_task_weights
        if weights and (len(weights) != len(self.tasks) or min(weights) < 0 or max(weights) <= 0):
            raise ValueError(
                f"ift_task_weights must be one weight >= 0 per task of {self.tasks} (some positive), "
                f"got {weights}; [] draws the tasks uniformly"
            )
        if self.min_items < 1:
            raise ValueError(f"min_items must be at least 1, got {self.min_items}")
        if self.max_items < self.min_items:
            raise ValueError(
                f"max_items ({self.max_items}) must be at least min_items ({self.min_items})"
            )
        for name in ("n_ift", "n_self_instruct", "n_eft", "n_eft_own", "n_meta_judge", "n_eval_prompts",
                     "n_judge_eval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if self.eft_own_samples < 1:
            raise ValueError(f"eft_own_samples must be at least 1, got {self.eft_own_samples}")
        if self.self_instruct_shots < 1:
            raise ValueError(
                f"self_instruct_shots must be at least 1, got {self.self_instruct_shots}"
            )
        if self.n_self_instruct > 0 and self.n_ift < self.self_instruct_shots:
            raise ValueError(
                f"n_ift ({self.n_ift}) must be at least self_instruct_shots "
                f"({self.self_instruct_shots}) to draw self-instruction shots from"
            )
        if self.n_meta_judge > 0 and self.n_eft == 0:
            raise ValueError("n_meta_judge needs n_eft > 0: meta-judging demonstrations use the EFT prompts")
        if self.judge_eval_responses < 2:
            raise ValueError(
                f"judge_eval_responses must be at least 2, got {self.judge_eval_responses}"
            )


def _bucket_size(task: str, length: int) -> int:
    # evens inputs need at least one even digit: all 10^n lists minus the 5^n all-odd ones.
    return 10**length - 5**length if task == "evens" else 10**length


def _distinct_prompts(
    cfg: WorldConfig, rng: random.Random, n: int, *, task_weights: dict[str, float] | None = None,
    seen: set[str] | None = None, used: dict[tuple[str, int], int] | None = None,
) -> list[str]:
    """``n`` distinct task prompts, (task, length) uniform over those not yet exhausted.

    ``task_weights`` makes a task that much more likely (lengths stay uniform within a task);
    ``seen`` and ``used`` carry over between draws, so that consecutive draws are disjoint.
    """
    buckets = [(t, k) for t in cfg.tasks for k in range(cfg.min_items, cfg.max_items + 1)]
    seen = set() if seen is None else seen
    used = {b: 0 for b in buckets} if used is None else used
    space = sum(_bucket_size(t, k) for t, k in buckets) - len(seen)
    if n > space:
        raise ValueError(
            f"the world has only {space + len(seen)} distinct prompts (tasks {cfg.tasks}, "
            f"{cfg.min_items}..{cfg.max_items} items) but the requested disjoint sets need "
            f"{n + len(seen)}: lower the counts or widen tasks/min_items/max_items"
        )
    out: list[str] = []
    while len(out) < n:
        open_buckets = [b for b in buckets if used[b] < _bucket_size(*b)]
        if task_weights is None:
            task, length = rng.choice(open_buckets)
        else:
            weights = [task_weights[t] for t, _ in open_buckets]
            if not any(weights):
                raise ValueError(f"every task with a positive IFT weight is exhausted after {len(out)} prompts")
            task, length = rng.choices(open_buckets, weights=weights)[0]
        items = [rng.choice("0123456789") for _ in range(length)]
        prompt = f"{task}: {' '.join(items)}"
        if prompt in seen or parse_prompt(prompt) is None:
            continue
        seen.add(prompt)
        used[task, length] += 1
        out.append(prompt)
    return out


# --- Data files ------------------------------------------------------------------------------


def _eft_examples(rng: random.Random, prompts: list[str], n: int, trace: bool = False) -> list[dict]:
    """``n`` judged responses (fewer only if some score is too rare), balanced over scores.

    Candidates are drawn round after round over ``prompts`` until every score has its share;
    scores that stay rare cap the others at twice their count.
    """
    share = math.ceil(n / (len(CHECKS) + 1))
    buckets: dict[int, list[dict]] = {s: [] for s in range(len(CHECKS) + 1)}
    seen: set[tuple[str, str]] = set()
    for _ in range(50):  # bounded: in a tiny world some scores cannot occur at all
        if not prompts or all(len(b) >= share for b in buckets.values()):
            break
        for prompt in prompts:
            response = sample_response(rng, prompt)
            checks = rubric_checks(prompt, response)
            score = sum(checks.values())
            if (prompt, response) in seen or len(buckets[score]) >= share:
                continue
            seen.add((prompt, response))
            buckets[score].append(
                {"prompt": prompt, "response": response,
                 "judgment": judgment_text(checks, verification_trace(prompt, response) if trace else None),
                 "score": score}
            )
    present = [b for b in buckets.values() if b]
    cap = 2 * min((len(b) for b in present), default=0)
    # Take round-robin so that trimming to n keeps the scores balanced.
    pools = [b[:cap] for b in present]
    rows: list[dict] = []
    for i in range(max((len(p) for p in pools), default=0)):
        rows.extend(p[i] for p in pools if i < len(p))
    rows = rows[:n]
    rng.shuffle(rows)
    return rows


OWN_PROMPTS = "eft_own_prompts.jsonl"
SEED_EFT = "eft_seed.jsonl"  # the synthetic EFT rows, while the eft stage has not made eft.jsonl


def own_eft_rows(samples: list[tuple[str, list[str]]], n: int, *, seed: int, trace: bool = False) -> list[dict]:
    """EFT rows from a model's own answers: ``samples`` holds (prompt, answers) pairs; each distinct
    single-line answer is labelled with the rubric's judgment (:func:`judgment_text`, with the trace
    if ``trace``), and ``n`` rows are drawn, half of them right answers and half wrong ones (more of
    one kind where the other runs short).

    Why half and half: the model's own answers are mostly right or near misses, the cases the
    synthetic rows (balanced over scores) hold least of; a judge trained on synthetic rows alone
    says ``exact no`` to most right answers (docs/results.md).
    """
    right, wrong, seen = [], [], set()
    for prompt, answers in samples:
        for text in answers:
            text = text.strip()
            if not text or "\n" in text or (prompt, text) in seen:
                continue
            seen.add((prompt, text))
            checks = rubric_checks(prompt, text)
            if checks is None:
                continue
            row = {"prompt": prompt, "response": text, "score": sum(checks.values()),
                   "judgment": judgment_text(checks, verification_trace(prompt, text) if trace else None),
                   "kind": "own"}
            (right if checks["exact"] else wrong).append(row)
    rng = random.Random(seed)
    n_right = min(len(right), max(n // 2, n - len(wrong)))
    rows = rng.sample(right, n_right) + rng.sample(wrong, min(len(wrong), n - n_right))
    rng.shuffle(rows)
    return rows


def own_answer_requests(cfg, data_dir: Path) -> tuple[list[str], int]:
    """The prompts the eft stage's model answers for :func:`eft_with_own_answers`, and how many
    answers each."""
    return [r["prompt"] for r in read_jsonl(Path(data_dir) / OWN_PROMPTS)], _world_config(cfg).eft_own_samples


def eft_with_own_answers(cfg, data_dir: Path, samples: list[tuple[str, list[str]]], seed: int) -> list[dict]:
    """``eft.jsonl``'s rows for the eft stage: the synthetic rows of ``eft_seed.jsonl`` and
    ``n_eft_own`` of the model's own answers, labelled (:func:`own_eft_rows`), shuffled together."""
    world = _world_config(cfg)
    rows = read_jsonl(Path(data_dir) / SEED_EFT)
    rows += own_eft_rows(samples, world.n_eft_own, seed=seed, trace=world.judge_trace)
    random.Random(seed).shuffle(rows)
    return rows


def wrong_judgment(rng: random.Random, checks: dict[str, bool]) -> str:
    """A judgment of the rubric's form with one or two verdicts flipped and the score that follows:
    the mistakes a judge makes when it misreads a check."""
    flipped = dict(checks)
    for name in rng.sample(CHECKS, rng.choice((1, 2))):
        flipped[name] = not flipped[name]
    return judgment_text(flipped)


def _meta_judge_examples(rng: random.Random, prompts: list[str], n: int, template: str) -> list[dict]:
    """``n`` meta-judging demonstrations: a response to one of ``prompts``, its rubric judgment and a
    wrong one in random order, answered ``Winner: A`` or ``Winner: B`` (half each)."""
    rows = []
    for k in range(n):
        prompt = prompts[k % len(prompts)]
        response = sample_response(rng, prompt)
        checks = rubric_checks(prompt, response)
        right, wrong = judgment_text(checks), wrong_judgment(rng, checks)
        right_first = k % 2 == 0
        a, b = (right, wrong) if right_first else (wrong, right)
        rows.append({"prompt": fill(template, prompt=prompt, response=response, judgment_a=a, judgment_b=b),
                     "response": f"Winner: {'A' if right_first else 'B'}", "kind": "meta_judge"})
    rng.shuffle(rows)
    return rows


def _judge_eval_row(rng: random.Random, prompt: str, k: int) -> dict:
    """``k`` distinct responses to ``prompt`` with at least two different oracle scores."""
    for _ in range(1000):
        responses: list[str] = []
        for _ in range(100 * k):
            if len(responses) == k:
                break
            response = sample_response(rng, prompt)
            if response not in responses:
                responses.append(response)
        scores = [oracle_score(prompt, r) for r in responses]
        if len(responses) == k and len(set(scores)) >= 2:
            return {"prompt": prompt, "responses": responses, "scores": scores}
    raise RuntimeError(f"could not draw {k} distinct, differently scored responses to {prompt!r}")


def _world_prompts(cfg: WorldConfig) -> tuple[list[list[str]], Callable[[int], list[str]]]:
    """The world's prompt sets (eval, judge-eval, IFT, EFT, self-instruction targets, own-answer
    prompts), drawn in that order from one stream, and a function drawing more prompts from the
    same stream, disjoint from all of them."""
    # Held-out sets are drawn first so that they do not change when training counts do.
    # One stream of distinct prompts; only the task demonstrations follow ift_task_weights (the
    # held-out sets stay uniform over tasks). Uniform weights draw exactly what one draw would.
    rng, seen = random.Random(cfg.seed), set()
    used = {(t, k): 0 for t in cfg.tasks for k in range(cfg.min_items, cfg.max_items + 1)}

    def draw(n: int, weights: dict[str, float] | None = None) -> list[str]:
        return _distinct_prompts(cfg, rng, n, task_weights=weights, seen=seen, used=used)

    eval_p, judge_p = draw(cfg.n_eval_prompts), draw(cfg.n_judge_eval)
    ift_p = draw(cfg.n_ift, cfg.ift_weights())
    eft_p, new_p = draw(cfg.n_eft), draw(cfg.n_self_instruct)
    own_p = draw(cfg.n_eft_own)  # drawn last: the other files are those of a world without them
    return [eval_p, judge_p, ift_p, eft_p, new_p, own_p], draw


def extra_judge_eval(cfg, n: int) -> list[dict]:
    """``n`` more held-out judge rows like ``judge_eval.jsonl``'s, for a less noisy judge measure.

    Their prompts are drawn (uniform over tasks) after all of the world's own, so they are disjoint
    from every prompt the world holds; their responses come from a stream of their own. The world's
    files are not changed: a run made before this existed can be measured on them. Deterministic
    given ``cfg`` (a :class:`WorldConfig` or a run's config, whose ``data.world`` is used); the
    first ``n`` rows of a larger ``n`` are the rows of the smaller.
    """
    world = cfg if isinstance(cfg, WorldConfig) else _world_config(cfg)
    world.validate()
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    prompts = _world_prompts(world)[1](n)
    rng = random.Random(f"{world.seed}/judge_eval_extra")
    return [_judge_eval_row(rng, p, world.judge_eval_responses) for p in prompts]


def build_world(cfg: WorldConfig, out_dir: Path | str) -> dict:
    """Write the world's data files into ``out_dir`` and return what ``world.json`` holds.

    Deterministic given ``cfg.seed``. The task prompts of the eval, judge-eval, IFT, EFT and
    self-instruction sets are pairwise disjoint, so held-out prompts are never trained on.

    With ``n_eft_own`` the synthetic judgments go to ``eft_seed.jsonl`` and the prompts for the
    model's own answers to ``eft_own_prompts.jsonl``; the loop's ``eft`` stage then writes
    ``eft.jsonl`` (:func:`own_eft_rows`).
    """
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eval_p, judge_p, ift_p, eft_p, new_p, own_p = _world_prompts(cfg)[0]

    # One random stream per file, so that drawing one file's rows never shifts another's.
    template = load_template(cfg.self_instruct_template)
    si_rng = random.Random(f"{cfg.seed}/self_instruct")
    ift = [{"prompt": p, "response": answer(p)} for p in ift_p]
    ift += [
        {"prompt": self_instruct_prompt(template, si_rng.sample(ift_p, cfg.self_instruct_shots)),
         "response": target, "kind": "self_instruct"}
        for target in new_p
    ]
    if cfg.n_meta_judge:
        ift += _meta_judge_examples(random.Random(f"{cfg.seed}/meta_judge"), eft_p, cfg.n_meta_judge,
                                    load_template(cfg.meta_judge_template))
    random.Random(f"{cfg.seed}/ift").shuffle(ift)
    eft = _eft_examples(random.Random(f"{cfg.seed}/eft"), eft_p, cfg.n_eft, trace=cfg.judge_trace)
    evals = [{"prompt": p, "answer": answer(p)} for p in eval_p]
    judge_rng = random.Random(f"{cfg.seed}/judge_eval")
    judge = [_judge_eval_row(judge_rng, p, cfg.judge_eval_responses) for p in judge_p]

    files = {"ift.jsonl": ift, "eft.jsonl": eft, "eval_prompts.jsonl": evals,
             "judge_eval.jsonl": judge}
    if own_p:
        # eft.jsonl is the eft stage's: these synthetic rows plus the labelled own answers.
        files[SEED_EFT] = files.pop("eft.jsonl")
        files[OWN_PROMPTS] = [{"prompt": p} for p in own_p]
    for name, rows in files.items():
        write_jsonl(out / name, rows)
    info = {"config": asdict(cfg), "counts": {name: len(rows) for name, rows in files.items()}}
    write_json(out / "world.json", info)
    return info


# --- Tokenizer and base model ----------------------------------------------------------------


def chat_text(prompt: str, response: str | None = None) -> str:
    """A conversation as :data:`DEFAULT_CHAT_TEMPLATE` renders it, without the EOS token.

    With ``response=None`` it ends with the generation prompt ``"Assistant:\\n"``.
    """
    text = f"User: {prompt}\nAssistant:\n"
    return text if response is None else f"{text}{response}"


def tokenizer_corpus(world_dir: Path | str) -> list[str]:
    """The texts to train the world's tokenizer on: the data files as the model will see them.

    IFT pairs and EFT judge prompts are wrapped as chat turns, and the judge and
    self-instruction templates are added, so that their frequent words become single tokens.
    """
    world = Path(world_dir)
    judge_template = load_template(JUDGE_TEMPLATE)
    config = read_json(world / "world.json")["config"]
    si_template = load_template(config["self_instruct_template"])
    texts = [judge_template, si_template, chat_text("", "")]
    texts += [chat_text(r["prompt"], r["response"]) for r in read_jsonl(world / "ift.jsonl")]
    # Before the eft stage adds the model's own answers, the synthetic rows are in eft_seed.jsonl.
    eft_file = world / SEED_EFT if (world / SEED_EFT).is_file() else world / "eft.jsonl"
    for r in read_jsonl(eft_file):
        judge_prompt = fill(judge_template, prompt=r["prompt"], response=r["response"])
        texts.append(chat_text(judge_prompt, r["judgment"]))
    # The held-out files are left out: nothing about them should shape the model, not even its vocabulary.
    return texts


def fixed_phrases(world_dir: Path | str) -> list[str]:
    """The fixed text of the world's judge turns, each phrase to be read as one token
    (``model.phrase_tokens``): the chat's ``"User: "`` alone and with the judge template's text
    before its first field, the template's text between and after its fields, the chat's
    ``"\nAssistant:\n"``, each check's verdict (``"digits yes, "``, ..., ``"exact no"``) and
    ``"\nScore: "``; likewise the chat turn's start with the self-instruction template's head.

    Why: a judging row of this world is about 98 tokens, two thirds of them text that never
    varies (the rubric, the markup, the verdict words), and M1's SFT is 97.5% judging rows;
    as single tokens the same text is about 45 tokens a row (docs/results.md, "Phrase tokens").
    The judge's prompt and its judgments stay the same text; only how the tiny model reads it
    changes. The model still writes every verdict and the score itself.
    """
    config = read_json(Path(world_dir) / "world.json")["config"]
    user, assistant = chat_text("\0").split("\0")
    # The turn's start alone too, so that a task's first word is the same token in every turn.
    phrases = [user, assistant, _SCORE_LINE]
    for name in (JUDGE_TEMPLATE, config["self_instruct_template"]):
        head, *rest = re.split(r"\{[a-z_]+\}", load_template(name))
        phrases += [user + head, *(piece for piece in rest if piece)]
    # Each verdict with the separator that follows it (the last has none).
    phrases += [_verdict(name, passed) + _VERDICT_SEPARATOR for name in CHECKS[:-1] for passed in (True, False)]
    phrases += [_verdict(CHECKS[-1], passed) for passed in (True, False)]
    return list(dict.fromkeys(phrases))


def trace_phrases() -> list[str]:
    """The verification trace's fixed text, each piece to be read as one token
    (``model.trace_tokens``): every tag with the separator's comma after it (``" in,"``,
    ``" kept,"``, ...) and the input line's head (``"\ninput"``). The digits stay tokens of their own.

    Why: with ``model.phrase_tokens`` the trace is most of a judging row (about 26 of 45 tokens),
    three tokens a digit (``" 5"``, ``" in"``, ``","``); these phrases make it two, a judging row
    about 13% shorter, and the judge's trace the same text (docs/results.md, section "Phrase tokens
    on seeds 0-4; the whole loop in two processes; trace tokens").
    """
    comma = _TRACE_SEPARATOR.rstrip()
    return [f" {tag}{comma}" for tag in _TRACE_TAGS] + [_TRACE_INPUT_LINE]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512, phrases: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``, with ``<pad>``, ``<eos>``, ``<unk>``,
    and each of ``phrases`` as one more token (matched before the BPE splits the text).

    Returns a ``transformers.PreTrainedTokenizerFast`` that pads on the left, carries
    :data:`DEFAULT_CHAT_TEMPLATE` and decodes back to the exact text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        # The default clean-up would turn " ?" into "?" and break exact round trips.
        clean_up_tokenization_spaces=False,
        # Left padding for batched generation; as an init argument it survives saving.
        padding_side="left",
    )
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    # Added tokens are matched in the raw text, longest first, before the byte-level split.
    tokenizer.add_tokens(list(phrases))
    return tokenizer


def build_base_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 384,
    max_position_embeddings: int = 256,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised ``LlamaForCausalLM`` sized for ``tokenizer`` (seeded, tied)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        # There is no BOS token; EOS doubles as BOS wherever a config needs one.
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def write_base_model(
    out_dir: Path | str, tokenizer: PreTrainedTokenizerFast, model: LlamaForCausalLM
) -> None:
    """Save ``model`` (safetensors) and ``tokenizer`` so that ``from_pretrained`` loads them."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# --- As a data source (selfreward.data) ------------------------------------------------------


def check(cfg) -> None:
    """At start: the world's own settings (``data.world``)."""
    from selfreward.config import ConfigError

    try:
        _world_config(cfg)
    except ValueError as e:
        raise ConfigError(f"invalid config: data.world: {e}") from None


def _world_config(cfg) -> WorldConfig:
    from omegaconf import OmegaConf

    world = cfg.data.world
    return world if isinstance(world, WorldConfig) else WorldConfig(**OmegaConf.to_container(world, resolve=True))


def prepare(cfg, data_dir: Path) -> dict:
    """Write the world's four files (and ``world.json``) into ``data_dir``; return counts per file."""
    info = build_world(_world_config(cfg), data_dir)
    return {name.removesuffix(".jsonl"): n for name, n in info["counts"].items()}


def oracle():
    """The world's checker, its graded rubric, and whether a prompt is one of its tasks."""
    from selfreward.data import Oracle

    return Oracle(correct=is_correct, score=oracle_score, valid=lambda prompt: answer(prompt) is not None)


def base_model(cfg, data_dir: Path, out_dir: Path, seed: int) -> dict:
    """The built-in model (``model=tiny``): a tokenizer learnt from the world's files and a
    Llama of the configured sizes, saved in ``out_dir``."""
    m = cfg.model
    phrases = (fixed_phrases(data_dir) if m.phrase_tokens else []) + (trace_phrases() if m.trace_tokens else [])
    tokenizer = build_tokenizer(tokenizer_corpus(data_dir), vocab_size=m.vocab_size, phrases=phrases)
    model = build_base_model(tokenizer, hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads,
                             intermediate_size=m.intermediate_size,
                             max_position_embeddings=m.max_position_embeddings, seed=seed)
    write_base_model(out_dir, tokenizer, model)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer)}
