"""The paper's seed data from Open Assistant (``OpenAssistant/oasst1``).

oasst1 holds one row per message; messages form conversation trees: a root prompter message,
assistant replies as its children (siblings ranked by humans, ``rank`` 0 = best, null when
unranked), then further turns. Yuan et al. build M1's seed data from it:

- IFT (:func:`ift_examples`): English first turns only, each with its best-ranked reply.
- EFT (:func:`ranked_groups`, then :func:`eft_from_judgments`): first-turn prompts with several
  ranked replies. The SFT model judges every reply; a prompt's judgments are kept only when
  their scores agree with the human ranking, and the most common score is down-sampled.
- The held-out judge set (``judge_eval.jsonl``): ranked groups split off the EFT groups
  (:func:`split_groups`).

The command line prepares a folder for ``data=files``::

    python -m selfreward.data.oasst --source OpenAssistant/oasst1 --out data/oasst \\
        [--n-eval 253] [--n-judge-eval 541] [--lang en] [--seed 0]

It writes ``ift.jsonl``, ``judge_eval.jsonl``, ``eval_prompts.jsonl`` and ``eft_groups.jsonl``:

- ``eval_prompts.jsonl``: up to ``--n-eval`` first-turn prompts sampled from the ``validation``
  split, leaving out any text that is also a train first-turn prompt. A source with one split
  only (a single file, or a folder without ``validation.jsonl[.gz]``) gives exactly ``--n-eval``
  train first-turn prompts instead, and these are then left out of everything else.
- ``judge_eval.jsonl``: ``--n-judge-eval`` ranked groups held out from the train groups.
- ``eft_groups.jsonl``: the other ranked groups, ``{"prompt", "responses", "ranks"}``.
- ``ift.jsonl``: the IFT examples, without the prompts of ``judge_eval.jsonl`` and
  ``eval_prompts.jsonl``, so that M1 is never trained on a held-out prompt's best answer.

What it does not do:

- It does not write ``eft.jsonl``: EFT needs an SFT model (trained on ``ift.jsonl``) to judge
  every reply in ``eft_groups.jsonl``, which is done elsewhere. Pass those judgment texts to
  :func:`eft_from_judgments` and write its rows as ``eft.jsonl`` (or call
  :func:`write_seed_files`); until then the folder is not a complete ``data=files`` source.
- It reads oasst1's message table only (the ``datasets`` splits, or those rows saved as JSON
  Lines), not the nested ``*.trees.jsonl`` export.
- It uses first turns only; later turns of a conversation are ignored.
- It does not clean, truncate or deduplicate texts (held-out prompts are compared by exact text).
- It does not reproduce the paper's counts (about 3,200 IFT, 1,630 / 541 EFT): those depend on
  details the paper does not give.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from selfreward.rundir import SelfRewardError, read_jsonl, write_jsonl

HUB_ID = "OpenAssistant/oasst1"
_SUFFIXES = (".jsonl", ".jsonl.gz")
_REQUIRED = ("message_id", "parent_id", "role", "text")


# --- Loading ---------------------------------------------------------------------------------


def load_messages(source: str, split: str = "train") -> list[dict]:
    """The messages of one split of oasst1 (or of a local copy in its schema).

    ``source`` is a local ``.jsonl`` / ``.jsonl.gz`` file (read whatever ``split`` says), a
    local folder holding ``<split>.jsonl`` or ``<split>.jsonl.gz``, or else a dataset id for
    ``datasets.load_dataset`` (such as ``OpenAssistant/oasst1``), which needs the network.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        split_path = _split_file(path, split)
        if split_path is None:
            raise SelfRewardError(f"{path} has no {split}.jsonl or {split}.jsonl.gz")
        return read_jsonl(split_path)
    if path.is_file():
        if not path.name.endswith(_SUFFIXES):
            raise SelfRewardError(f"{path}: expected a .jsonl or .jsonl.gz file of oasst1 messages")
        return read_jsonl(path)
    return _load_dataset(source, split)


def _split_file(folder: Path, split: str) -> Path | None:
    for suffix in _SUFFIXES:
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    return None


def _has_split(source: str, split: str) -> bool:
    """Whether ``source`` offers ``split``: a file is one split only, a dataset id is assumed to."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _split_file(path, split) is not None
    return not path.is_file()


def _load_dataset(source: str, split: str) -> list[dict]:
    try:
        import datasets

        return datasets.load_dataset(source, split=split).to_list()
    except Exception as e:  # any failure (network, name, split) gets the same advice
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SelfRewardError(
            f"the dataset {source!r} (split {split!r}) could not be loaded ({reason}); "
            f"without access to the Hugging Face hub, pass a local copy instead: a folder with "
            f"{split}.jsonl or {split}.jsonl.gz in the oasst1 schema"
        ) from e


# --- Trees -----------------------------------------------------------------------------------


@dataclass
class Trees:
    """Kept messages indexed by parent.

    ``roots`` are the messages without a parent, ``children`` maps a ``message_id`` to its
    kept replies; both keep the input order.
    """

    roots: list[dict]
    children: dict[str, list[dict]]

    def replies(self, message: dict) -> list[dict]:
        return self.children.get(message["message_id"], [])


def build_trees(messages: Iterable[dict]) -> Trees:
    """Index ``messages`` by parent, leaving out deleted ones and those that failed review.

    A message is left out when ``deleted`` is true or ``review_result`` is ``False`` (a missing
    or null field keeps it). The replies of a left-out message are unreachable from its root,
    so they drop out with it.
    """
    roots: list[dict] = []
    children: dict[str, list[dict]] = defaultdict(list)
    for number, message in enumerate(messages, 1):
        for key in _REQUIRED:
            if key not in message:
                raise SelfRewardError(f"message {number} has no {key!r} (expected the oasst1 schema)")
        if message.get("deleted") or message.get("review_result") is False:
            continue
        if message["parent_id"] is None:
            roots.append(message)
        else:
            children[message["parent_id"]].append(message)
    return Trees(roots, dict(children))


def _rank(message: dict) -> int | None:
    """A message's rank as an int, or None when unranked (null, or NaN in a float column)."""
    rank = message.get("rank")
    if rank is None or (isinstance(rank, float) and math.isnan(rank)):
        return None
    return int(rank)


def _first_turns(messages: Iterable[dict], lang: str) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """``(prompt, [(rank, reply), ...])`` for each kept root prompt in ``lang``, in input order.

    Only the kept assistant replies with a rank are listed, best (lowest rank) first. The
    language is the root's ``lang``.
    """
    trees = build_trees(messages)
    for root in trees.roots:
        if root["role"] != "prompter" or root.get("lang") != lang:
            continue
        ranked = [(rank, m["text"]) for m in trees.replies(root)
                  if m["role"] == "assistant" and (rank := _rank(m)) is not None]
        yield root["text"], sorted(ranked, key=lambda item: item[0])


def first_turn_prompts(messages: Iterable[dict], lang: str = "en") -> list[str]:
    """The distinct texts of the kept root prompts in ``lang``, ranked replies or not."""
    return list(dict.fromkeys(prompt for prompt, _ in _first_turns(messages, lang)))


def ift_examples(messages: Iterable[dict], lang: str = "en") -> list[dict]:
    """The paper's IFT data: ``{"prompt", "response"}`` for each first turn in ``lang``.

    The response is the best-ranked kept reply: rank 0, unless that reply was deleted or failed
    review, when the next best kept one. Roots with no ranked reply give nothing.
    """
    return [{"prompt": prompt, "response": replies[0][1]}
            for prompt, replies in _first_turns(messages, lang) if replies]


def ranked_groups(messages: Iterable[dict], lang: str = "en", min_responses: int = 2) -> list[dict]:
    """First-turn prompts in ``lang`` with at least ``min_responses`` ranked replies.

    Each group is ``{"prompt", "responses": [...], "ranks": [...]}`` sorted best first, with
    the ranks as given (0 = best; a gap remains where a ranked reply was left out).
    """
    if min_responses < 1:
        raise ValueError(f"min_responses must be at least 1, got {min_responses}")
    return [{"prompt": prompt, "responses": [text for _, text in replies], "ranks": [rank for rank, _ in replies]}
            for prompt, replies in _first_turns(messages, lang) if len(replies) >= min_responses]


def split_groups(groups: Sequence[dict], n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out ``n_eval`` distinct prompts: ``(train_groups, eval_groups)``, input order kept.

    The held-out prompts are drawn with ``random.Random(seed)`` from the distinct prompt texts;
    every group with a held-out prompt goes to eval (more than ``n_eval`` groups when prompts
    repeat), so no prompt is on both sides.
    """
    prompts = list(dict.fromkeys(g["prompt"] for g in groups))
    if not 0 <= n_eval <= len(prompts):
        raise SelfRewardError(f"cannot hold out {n_eval} prompts: there are {len(prompts)} distinct prompts")
    held = set(random.Random(seed).sample(prompts, n_eval))
    return [g for g in groups if g["prompt"] not in held], [g for g in groups if g["prompt"] in held]


# --- EFT -------------------------------------------------------------------------------------


def eft_from_judgments(
    groups: Sequence[dict],
    judgments: Sequence[Sequence[str]],
    *,
    min_score: int,
    max_score: int,
    keep_most_common: float,
    seed: int,
) -> list[dict]:
    """The paper's EFT filter: ``{"prompt", "response", "judgment", "score"}`` rows.

    ``judgments[i][j]`` judges ``groups[i]["responses"][j]``. A group's rows are kept only when

    - every judgment parses (:func:`selfreward.judge.parse_score` within ``[min_score, max_score]``), and
    - the scores agree with the human ranking: for every two responses with different ranks,
      the better-ranked one (lower rank) has a strictly higher score. Equal scores for different
      ranks disagree; responses with equal ranks are not compared.

    Then the most common score among the kept rows (on a tie in count, the higher score) is
    down-sampled to at most ``floor(keep_most_common * n)`` rows, ``n`` being the count of the
    second most common score: rows of that score are dropped at random (``random.Random(seed)``).
    With fewer than two distinct scores nothing is down-sampled. Rows keep the input order.
    """
    # Imported here: selfreward.judge pulls in torch, which the command line does not need.
    from selfreward.judge import parse_score

    if len(judgments) != len(groups):
        raise ValueError(f"{len(judgments)} lists of judgments for {len(groups)} groups")
    if keep_most_common < 0:
        raise ValueError(f"keep_most_common must be non-negative, got {keep_most_common}")
    rows = []
    for number, (group, texts) in enumerate(zip(groups, judgments), 1):
        if len(texts) != len(group["responses"]):
            raise ValueError(f"group {number}: {len(texts)} judgments for {len(group['responses'])} responses")
        scores = [parse_score(text, min_score, max_score, response) for text, response in zip(texts, group["responses"])]
        if None in scores or not _agrees(scores, group["ranks"]):
            continue
        rows += [{"prompt": group["prompt"], "response": response, "judgment": text, "score": score}
                 for response, text, score in zip(group["responses"], texts, scores)]
    return _downsample_most_common(rows, keep_most_common, seed)


def _agrees(scores: Sequence[int], ranks: Sequence[int]) -> bool:
    n = len(scores)
    return all(scores[a] > scores[b] for a in range(n) for b in range(n) if ranks[a] < ranks[b])


def _downsample_most_common(rows: list[dict], keep_most_common: float, seed: int) -> list[dict]:
    counts = Counter(row["score"] for row in rows)
    if len(counts) < 2:
        return rows
    (top, top_count), (_, second_count) = sorted(counts.items(), key=lambda kv: (-kv[1], -kv[0]))[:2]
    cap = math.floor(keep_most_common * second_count + 1e-9)  # 1e-9: 0.7 * 10 must give 7
    if top_count <= cap:
        return rows
    top_rows = [i for i, row in enumerate(rows) if row["score"] == top]
    dropped = set(random.Random(seed).sample(top_rows, top_count - cap))
    return [row for i, row in enumerate(rows) if i not in dropped]


# --- Files -----------------------------------------------------------------------------------


def write_seed_files(
    out_dir: str | Path,
    ift: Sequence[dict],
    eft: Sequence[dict],
    eval_prompts: Sequence[str],
    judge_eval: Sequence[dict],
) -> dict[str, int]:
    """Write the four files of the seed-data contract (:mod:`selfreward.data`); return counts.

    ``ift``, ``eft`` and ``judge_eval`` rows are written as given (from :func:`ift_examples`,
    :func:`eft_from_judgments` and :func:`ranked_groups`); ``eval_prompts`` are prompt texts.
    """
    files = {"ift": ift, "eft": eft, "eval_prompts": [{"prompt": p} for p in eval_prompts],
             "judge_eval": judge_eval}
    for name, rows in files.items():
        write_jsonl(Path(out_dir) / f"{name}.jsonl", rows)
    return {name: len(rows) for name, rows in files.items()}


def prepare_oasst(
    source: str,
    out_dir: str | Path,
    *,
    n_eval: int = 253,
    n_judge_eval: int = 541,
    lang: str = "en",
    seed: int = 0,
) -> dict[str, int]:
    """Write ``ift``, ``eval_prompts``, ``judge_eval`` and ``eft_groups`` (``.jsonl``) to ``out_dir``.

    The module docstring says how each is chosen. Nothing is written when one would be empty.
    Returns the row count of each file.
    """
    train = load_messages(source, "train")
    train_prompts = first_turn_prompts(train, lang)
    if _has_split(source, "validation"):
        seen = set(train_prompts)
        pool = [p for p in first_turn_prompts(load_messages(source, "validation"), lang) if p not in seen]
        n_eval = min(n_eval, len(pool))
    else:
        pool = train_prompts
    _, held_out = split_groups([{"prompt": p} for p in pool], n_eval, seed)
    eval_prompts = [row["prompt"] for row in held_out]
    eval_set = set(eval_prompts)

    groups = [g for g in ranked_groups(train, lang) if g["prompt"] not in eval_set]
    eft_groups, judge_eval = split_groups(groups, n_judge_eval, seed)
    excluded = eval_set | {g["prompt"] for g in judge_eval}
    ift = [row for row in ift_examples(train, lang) if row["prompt"] not in excluded]

    files = {"ift": ift, "eval_prompts": [{"prompt": p} for p in eval_prompts],
             "judge_eval": judge_eval, "eft_groups": eft_groups}
    for name, rows in files.items():
        if not rows:
            raise SelfRewardError(f"{source}: no records for {name}.jsonl (lang {lang!r}, "
                                  f"n_eval {n_eval}, n_judge_eval {n_judge_eval})")
    for name, rows in files.items():
        write_jsonl(Path(out_dir) / f"{name}.jsonl", rows)
    return {name: len(rows) for name, rows in files.items()}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m selfreward.data.oasst``: see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m selfreward.data.oasst",
        description="Prepare the paper's seed data from Open Assistant (oasst1). Writes ift.jsonl, "
                    "eval_prompts.jsonl, judge_eval.jsonl and eft_groups.jsonl; eft.jsonl needs an "
                    "SFT model's judgments of eft_groups.jsonl (selfreward.data.oasst.eft_from_judgments).",
    )
    parser.add_argument("--source", default=HUB_ID,
                        help="a dataset id for datasets.load_dataset, a folder with train.jsonl[.gz] "
                             "(and validation.jsonl[.gz]), or one .jsonl[.gz] file (default %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write")
    parser.add_argument("--n-eval", type=int, default=253,
                        help="held-out prompts for eval_prompts.jsonl (at most, from validation) (default %(default)s)")
    parser.add_argument("--n-judge-eval", type=int, default=541,
                        help="ranked groups held out for judge_eval.jsonl (default %(default)s)")
    parser.add_argument("--lang", default="en", help="language of the first turns kept (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out draws (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        counts = prepare_oasst(args.source, args.out, n_eval=args.n_eval, n_judge_eval=args.n_judge_eval,
                               lang=args.lang, seed=args.seed)
    except SelfRewardError as e:
        print(f"selfreward.data.oasst: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    summary = ", ".join(f"{name}.jsonl {count}" for name, count in counts.items())
    print(f"wrote {args.out}: {summary}; eft.jsonl still needs an SFT model's judgments of eft_groups.jsonl")


if __name__ == "__main__":
    main()


# --- As a data source (selfreward.data) ------------------------------------------------------


def check(cfg) -> None:
    """At start: a local ``data.oasst.source`` is a folder (a hub id is looked up when the data
    stage runs)."""
    from selfreward.config import ConfigError

    source = cfg.data.oasst.source
    if source.startswith((".", "/", "~")) and not Path(source).expanduser().is_dir():
        raise ConfigError(f"invalid config: data.oasst.source={source!r} is not a folder "
                          f"(a hub id, or a folder with train.jsonl[.gz] and validation.jsonl[.gz])")


def prepare(cfg, data_dir: Path) -> dict:
    """``ift``, ``eval_prompts``, ``judge_eval`` and ``eft_groups``; the loop's ``eft`` stage turns
    the groups into ``eft.jsonl`` with an SFT model's judgments (:func:`eft_from_judgments`)."""
    o = cfg.data.oasst
    return prepare_oasst(o.source, data_dir, n_eval=o.n_eval, n_judge_eval=o.n_judge_eval, lang=o.lang,
                         seed=cfg.seed)
