"""The self-rewarding loop: SFT gives M1, then each iteration t turns M_t into M_{t+1}.

Run directory (one folder per model; every stage writes its files, then ``<stage>.done``)::

    config.yaml          the resolved config; a rerun with a different one stops
    environment.jsonl    one line per start: CPU, torch's kernels, threads, library versions
    metrics.jsonl        one line per model M_t
    data/                seed and held-out data (data.done)
    m0/model/            the built-in base model (builtin only; base.done)
    m1/                  model/ (SFT), sft.done, eval_*.jsonl, eval.done; reward_model/ with reward=reward_model
    m2/                  made by M1: prompts.jsonl, candidates.jsonl, judgments.jsonl, pairs.jsonl,
                         then model/ (DPO), and M2's measurements
    m3/ ...

Every stage draws its randomness from a seed derived from (run seed, model, stage), so a run
that is stopped and started again gives the same files as one that ran straight through.

Each stage is a plain function ``(cfg, run_dir, t) -> info`` (``stage_data`` ... ``stage_eval``
below) with files in and files out; :func:`run` calls them in order, and ``python -m
selfreward.stages`` runs any one of them in a process of its own (:mod:`selfreward.stages`).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import random
import shlex
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from selfreward import distributed
from selfreward.config import SELF_REPLAY_KINDS, ConfigError, validate
from selfreward.data import (
    EFT_GROUPS,
    Oracle,
    SeedData,
    base_model,
    eft_from_judgments,
    eft_stage_input,
    eft_with_own_answers,
    load_data,
    make_oracle,
    own_answer_requests,
    prepare_data,
)
from selfreward.evaluation import (
    evaluate_best_of_n,
    evaluate_judge,
    evaluate_policy,
    evaluate_position_bias,
    head_to_head,
    self_judge_quality,
)
from selfreward.generation import Engine, Sampling, check_model_path, close_engine, finished, load_engine
from selfreward.judge import judge, judge_message, seed_judgment_pairs
from selfreward.meta_judge import write_judge_pairs
from selfreward.pairs import build_pairs, judged_groups, overrule_threshold
from selfreward.reward_shaping import shape
from selfreward.rewards import Context, as_row, score_groups
from selfreward.prompts import filter_prompts, load_template, sample_shots, self_instruct_prompt
from selfreward.rundir import (
    SelfRewardError,
    done_path,
    is_done,
    lock_run_dir,
    read_done,
    read_json,
    read_jsonl,
    record_environment,
    run_stage,
    write_json,
    write_jsonl,
    write_text,
)
from selfreward.tracking import Tracker
from selfreward.training import (dpo_epochs, dpo_groups_by_length, iteration_lr_scale, iteration_value, train_dpo,
                                 train_sft)

log = logging.getLogger(__name__)

# Keys that may change between a run and its resumption without changing its results.
RESUMABLE_KEYS = ("iterations", "logger", "threads")

# How the loop starts its training stages, when set: a command that runs a Python module, e.g.
# "accelerate launch --num_processes 8" or "python". Each training stage (sft, dpo, sft_best, rft)
# then runs as `<command> -m selfreward.stages STAGE ...` in processes of its own, which free their
# GPU memory when they end. How a run is launched is no part of its config: results do not depend on
# it (one process gives the same files), and a run may resume under another launcher.
TRAIN_LAUNCHER = "SELFREWARD_TRAIN_LAUNCHER"


def stage_seed(seed: int, model: int, stage: str) -> int:
    """A seed for one stage, independent of which stages ran in this process."""
    digest = hashlib.sha256(f"{seed}/{model}/{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31)


def check_config(cfg, run_dir: Path, *, write: bool = True) -> None:
    """Save the resolved config (when ``write``), or check that a resumed run uses the same one."""
    current = OmegaConf.to_container(cfg, resolve=True)
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        if write:
            write_text(path, yaml.safe_dump(current, sort_keys=False))
        return
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path} cannot be read ({str(e).splitlines()[0]}); the run directory is damaged, "
                          f"pick another hydra.run.dir") from None
    changes = [
        f"{key}: {old!r} -> {new!r}"
        for key, old, new in _diff(_with_new_defaults(_upgrade(saved)), current)
        if key.split(".")[0] not in RESUMABLE_KEYS
    ]
    if changes:
        more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
        raise ConfigError(
            f"{run_dir} holds a run made with another config ({changes[0]}{more}); "
            f"resume it with the same config, or pick another hydra.run.dir"
        )


def _upgrade(saved):
    """A config saved before the reward interface, as it reads now: ``judge.source`` became
    ``reward`` (model: the self-judge, oracle: the oracle) and ``pairs.rho`` came with its
    default, so that those runs resume."""
    if not isinstance(saved, dict) or "reward" in saved or "source" not in (saved.get("judge") or {}):
        return saved
    name = "oracle" if saved["judge"]["source"] == "oracle" else "self_judge"
    saved = {**saved, "judge": {k: v for k, v in saved["judge"].items() if k != "source"}}
    saved["reward"] = {"_target_": f"selfreward.rewards.{name}.score"}
    saved["pairs"] = {**saved.get("pairs", {}), "rho": saved.get("pairs", {}).get("rho", 0.0)}
    return saved


# Keys that arrived with a default other than what older versions did, and the value that says
# what they did: worlds were drawn uniformly over tasks before ift_task_weights.
BEFORE_THE_KEY = {"data.world.ift_task_weights": []}


def _with_new_defaults(saved):
    """A config saved by an older version, with every key added since at its default, so that
    those runs resume. Keys only ever arrive with a default that keeps the old behaviour (reward
    shaping off, no Best-of-N, no meta-judge, no precomputed reference log-probs, the vLLM
    settings unused by the HF backend); a key the saved config *has* is never changed here. The
    reward's parameters are the reward function's own and are left as saved. A key whose default
    does not keep the old behaviour takes its value from :data:`BEFORE_THE_KEY` instead."""
    if not isinstance(saved, dict):
        return saved
    from selfreward.config import Config

    def fill(node, defaults, path=""):
        if not isinstance(node, dict) or not isinstance(defaults, dict) or path == "reward":
            return node
        merged = {k: fill(v, defaults.get(k), f"{path}.{k}" if path else k) for k, v in node.items()}
        merged.update({k: BEFORE_THE_KEY.get(f"{path}.{k}" if path else k, v)
                       for k, v in defaults.items() if k not in node})
        return merged

    return fill(saved, OmegaConf.to_container(OmegaConf.structured(Config)))


def _diff(old, new, prefix: str = ""):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from _diff(old.get(key), new.get(key), f"{prefix}{key}.")
    elif old != new:
        yield prefix.rstrip("."), old, new


class _Models:
    """Loads a model's engine when a stage first needs it, and frees it before training."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.path: str | None = None
        self.engine: Engine | None = None

    def get(self, path: str) -> Engine:
        if self.path != path:
            self.free()
            # Under a launch of several processes, each generates its share (selfreward.distributed).
            self.engine = distributed.shard(load_engine(path, self.cfg.model, self.cfg.generation))
            self.path = path
        return self.engine

    def free(self) -> None:
        # vLLM holds its GPU memory in its own engine process until it is shut down.
        close_engine(self.engine)
        self.engine, self.path = None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _prompt_text(output: str, cfg) -> str:
    """What self-instruction keeps of the writer's output before filtering."""
    return _first_line(output) if cfg.prompts.first_line_only else output.strip()


def _draw(rng: random.Random, rows: list, k: int) -> list:
    """``k`` of ``rows`` drawn with ``rng``; all of them when there are no more than ``k``."""
    return rng.sample(rows, k) if k < len(rows) else rows


# Below this share of requests kept, self-instruction has likely collapsed (a model after a large
# DPO round was seen writing "sort::::" to all 6,000 requests, 4 kept): warn, since the round
# goes on with whatever was kept.
LOW_KEPT_SHARE = 0.1
# Above this share of judgments without a readable score, the self-judge has likely broken (a
# judge_trace model after a large DPO round wrote "response 2 in no no no ..." to 36% of its
# held-out judgments, then Score: 0 to nearly all): warn, since the round goes on.
HIGH_UNREAD_SHARE = 0.2


def prompt_requests(cfg, t: int) -> int:
    """Self-instruction requests in iteration t (t >= 1): ``prompts.iteration_requests[t-1]`` where
    the list reaches that far, else ``prompts.n_requests``."""
    return int(iteration_value(cfg.prompts.iteration_requests, t, cfg.prompts.n_requests))


def write_prompts(engine: Engine, data: SeedData, cfg, *, seed: int, out: Path, earlier: list[str],
                  oracle: Oracle | None = None, n_requests: int | None = None) -> dict:
    """Self-instruction: ``n_requests`` (default ``prompts.n_requests``) k-shot requests built from
    seed prompts; the outputs, filtered."""
    p = cfg.prompts
    pool = data.seed_prompts
    if not pool:
        raise SelfRewardError("no seed prompts to draw self-instruction examples from (ift.jsonl)")
    rng = random.Random(seed)
    template = load_template(p.template)
    n_requests = p.n_requests if n_requests is None else n_requests
    requests = [self_instruct_prompt(template, sample_shots(rng, pool, p.shots)) for _ in range(n_requests)]
    outputs = engine.generate(requests, Sampling(p.temperature, p.top_p, p.max_new_tokens), seed=seed,
                              desc="write prompts")
    texts = [_prompt_text(o[0], cfg) for o in outputs]
    kept, report = filter_prompts(texts, pool + earlier, min_chars=p.min_chars, max_chars=p.max_chars,
                                  max_rouge_l=p.max_rouge_l, banned_keywords=p.banned_keywords)
    if len(kept) < LOW_KEPT_SHARE * len(requests):
        log.warning("self-instruction kept only %d prompts of %d requests (%d exact duplicates, %d near "
                    "duplicates): the model may have lost its prompt writing; see %s", len(kept), len(requests),
                    report.exact_duplicate, report.near_duplicate, out / "prompts_raw.jsonl")
    if p.max_prompts is not None:
        kept = kept[: p.max_prompts]
    write_jsonl(out / "prompts_raw.jsonl", [{"request": r, "output": o[0]} for r, o in zip(requests, outputs)])
    write_jsonl(out / "prompts.jsonl", [{"prompt": k} for k in kept])
    info = {**vars(report), "count": len(kept), "requests": len(requests)}
    if oracle is not None and oracle.valid is not None:
        # Measured with the oracle, never used by the loop: how many prompts are real tasks.
        info["valid_rate"] = sum(oracle.valid(k) for k in kept) / len(kept) if kept else 0.0
    return info


def write_candidates(engine: Engine, cfg, *, seed: int, out: Path) -> dict:
    """N sampled responses for each new prompt."""
    g = cfg.generation
    prompts = [r["prompt"] for r in read_jsonl(out / "prompts.jsonl")]
    if not prompts:
        raise SelfRewardError(f"{out}: self-instruction kept no prompts; see prompts_raw.jsonl")
    outputs = engine.generate(prompts, Sampling(g.temperature, g.top_p, g.max_new_tokens), n=g.n_candidates,
                              seed=seed, desc="sample candidates")
    # finished: false marks a candidate cut at max_new_tokens (it stays out of the pairs by default).
    write_jsonl(out / "candidates.jsonl", [{"prompt": p, "responses": o, "finished": [finished(t) for t in o]}
                                           for p, o in zip(prompts, outputs)])
    flags = [finished(t) for o in outputs for t in o]
    return {"prompts": len(prompts), "candidates": len(flags),
            "truncation_rate": flags.count(False) / len(flags) if flags else 0.0}


def write_judgments(ctx: Context, cfg, *, out: Path) -> dict:
    """Every candidate scored by the configured reward (``cfg.reward``; the method's default: M_t
    judges itself), shaped by ``cfg.reward_shaping`` (CTRL: the reference samples go to
    ``reference.jsonl``), one row per candidate in ``judgments.jsonl``."""
    candidates = read_jsonl(out / "candidates.jsonl")
    groups = [(c["prompt"], c["responses"]) for c in candidates]
    scored, reference = shape(cfg, groups, score_groups(cfg, groups, ctx), ctx)
    if reference:
        write_jsonl(out / "reference.jsonl", reference)
    rows = [as_row(c["prompt"], r, done, s)
            for c, row in zip(candidates, scored)
            for r, done, s in zip(c["responses"], c.get("finished") or [True] * len(c["responses"]), row)]
    write_jsonl(out / "judgments.jsonl", rows)
    # Counted once per distinct candidate: copies share one scoring (rewards.per_distinct).
    distinct = {(r["prompt"], r["response"]): s for r, s in zip(rows, (s for row in scored for s in row))}
    judgments = [x for s in distinct.values() for x in s.scores]  # the judgments actually made
    parsed = [x for x in judgments if x is not None]
    # judge.complete_score's scores count as parse failures here, so that runs with and without compare.
    completed = sum(c for s in distinct.values() for c in s.details.get("score_completed", []))
    cut = [not d for s in distinct.values() for d in s.details.get("judgment_finished", [])]
    # judge.continue_unscored: judgments continued at least once (their scores, if any, are the judge's own).
    continued = sum(c > 0 for s in distinct.values() for c in s.details.get("judgment_continued", []))
    # The source's own scores (before any shaping), so that runs with and without shaping compare.
    raw = [s.details.get("raw_score", s.score) for s in distinct.values()]
    values = [v for v in raw if v is not None]
    unread = len(judgments) - len(parsed) + completed
    if judgments and unread > HIGH_UNREAD_SHARE * len(judgments):
        log.warning("the judge left %d of %d judgments without a readable score%s: it may have lost its judging; "
                    "see %s", unread, len(judgments), f" ({completed} completed)" if completed else "",
                    out / "judgments.jsonl")
    return {
        "truncation_rate": sum(cut) / len(cut) if cut else 0.0,
        "distinct_candidates": len(distinct),
        "judgments": len(judgments),
        # None for a reward without judgments (oracle, likelihood, ...): nothing could fail to parse.
        "parse_failure_rate": unread / len(judgments) if judgments else None,
        **({"completed_scores": completed} if cfg.judge.complete_score else {}),
        **({"continued_judgments": continued} if cfg.judge.continue_unscored else {}),
        # With a judge, the mean of its parsed judgments (as before the reward interface, so that
        # runs compare); without one, the mean of the candidates' scores.
        "mean_score": (sum(parsed) / len(parsed) if parsed else None) if judgments else
                      (sum(values) / len(values) if values else None),
        "unscored_candidates": sum(r["score"] is None for r in rows),
    }


def write_pairs(cfg, *, seed: int, out: Path, model: int, oracle: Oracle | None = None) -> dict:
    """Preference pairs from the judged candidates; an iteration without pairs stops the run."""
    judged = read_jsonl(out / "judgments.jsonl")
    groups = judged_groups(judged)
    pairs, stats = build_pairs(list(groups.values()), method=cfg.pairs.method, min_margin=cfg.pairs.min_margin,
                               rho=cfg.pairs.rho, seed=seed, allow_truncated=cfg.pairs.allow_truncated,
                               tie_break=cfg.pairs.tie_break, unique_best=cfg.pairs.unique_best,
                               majority_agrees=cfg.pairs.majority_agrees,
                               min_vote_share=cfg.pairs.min_vote_share,
                               overrule_majority_below=overrule_threshold(
                                   cfg.pairs.overrule_majority_below, cfg.pairs.overrule_until_iteration, model - 1),
                               min_score=cfg.pairs.min_score)
    if not pairs:
        raise SelfRewardError(
            f"iteration {model - 1} made no preference pairs from {stats.prompts} prompts "
            f"({stats.ties} ties, "
            + (f"{stats.shared_best} with a top score shared (pairs.unique_best), " if cfg.pairs.unique_best else "")
            + (f"{stats.not_majority} whose chosen answer is not the most sampled (pairs.majority_agrees), "
               if cfg.pairs.majority_agrees else "")
            + (f"{stats.low_vote_share} whose chosen answer is under {cfg.pairs.min_vote_share} of the scored "
               f"candidates (pairs.min_vote_share), " if cfg.pairs.min_vote_share else "")
            + (f"{stats.below_min_score} answers scored below pairs.min_score={cfg.pairs.min_score} left out, "
               if cfg.pairs.min_score is not None else "")
            + f"{stats.too_few_scored} with fewer than 2 distinct scored candidates, "
            f"{stats.truncated} candidates cut at generation.max_new_tokens left out); "
            f"see {out / 'judgments.jsonl'}"
        )
    # Keep the judge's text beside each pair for inspection (TRL reads only prompt/chosen/rejected).
    for pair in pairs:
        g = groups[pair["prompt"]]
        pair["chosen_judgments"] = g["judgments"][g["responses"].index(pair["chosen"])]
        pair["rejected_judgments"] = g["judgments"][g["responses"].index(pair["rejected"])]
    write_jsonl(out / "pairs.jsonl", pairs)
    lengths = [(len(p["chosen"]), len(p["rejected"])) for p in pairs]
    # Where an oracle grades answers, how right the judge was on these very pairs (measured
    # after the pairs are made; nothing above reads it).
    quality = self_judge_quality(pairs, judged, oracle.score, oracle.correct) if oracle and oracle.score else {}
    return {
        **stats.as_dict(),
        **quality,
        "count": len(pairs),
        "mean_margin": sum(p["margin"] for p in pairs) / len(pairs),
        "chosen_length": sum(c for c, _ in lengths) / len(lengths),
        "rejected_length": sum(r for _, r in lengths) / len(lengths),
    }


def rft_examples(judged: list[dict], top_score: float) -> list[dict]:
    """Rejection sampling: the ``{"prompt", "completion"}`` of every judged candidate scored at least
    ``top_score``, once per distinct (prompt, answer), since copies of a sample would weigh it more."""
    top = {(r["prompt"], r["response"].strip()): {"prompt": r["prompt"], "completion": r["response"]}
           for r in judged if r["score"] is not None and r["score"] >= top_score}
    return list(top.values())


def judging_examples(rows: list[dict], cfg) -> list[dict]:
    """EFT rows as SFT examples: the filled judge template -> the judgment."""
    template = load_template(cfg.judge.template)
    return [{"prompt": judge_message(template, r["prompt"], r["response"]), "completion": r["judgment"]} for r in rows]


def sft_examples(data: SeedData, cfg) -> list[dict]:
    """IFT pairs as they are, EFT rows as (filled judge template -> judgment), each
    ``training.sft_judge_repeats`` times."""
    ift = [{"prompt": r["prompt"], "completion": r["response"]} for r in data.ift]
    return ift + judging_examples(data.eft, cfg) * cfg.training.sft_judge_repeats


def eft_replay_examples(data: SeedData, cfg, seed: int) -> list[dict]:
    """``training.eft_replay_rows`` seed EFT rows (all of them when there are fewer), drawn with
    ``seed``, as SFT examples (filled judge template -> judgment)."""
    return judging_examples(_draw(random.Random(seed), data.eft, cfg.training.eft_replay_rows), cfg)


def self_replay_examples(out: Path, cfg, seed: int) -> list[dict]:
    """``training.self_replay_rows`` rows of M_t's own work in the round whose files are in ``out``
    (drawn with ``seed``; all of a kind when it has fewer), an equal share of each kind named in
    ``training.self_replay_kinds`` (the first named takes the remainder): ``prompts``, the prompts
    it wrote that the loop kept, as (its self-instruction request -> the prompt); ``judgments``,
    its judgments of the chosen and rejected answers of the round's pairs, as (filled judge
    template -> its first judgment); ``answers``, the pairs' chosen answers, as (prompt -> chosen).
    Kinds are drawn in that order from one generator."""
    n = cfg.training.self_replay_rows
    kinds = list(cfg.training.self_replay_kinds)
    share = {kind: n // len(kinds) for kind in kinds}
    share[kinds[0]] += n - len(kinds) * (n // len(kinds))
    pairs = read_jsonl(out / "pairs.jsonl")
    rng = random.Random(seed)
    rows = []
    for kind in SELF_REPLAY_KINDS:  # a fixed draw order, whatever the order named
        if kind in share:
            rows += _SELF_REPLAY_POOLS[kind](out, pairs, share[kind], rng, cfg)
    return rows


def _replay_prompts(out: Path, pairs: list[dict], k: int, rng: random.Random, cfg) -> list[dict]:
    """k of (request -> prompt) for the prompts the loop kept, each from the request that wrote it first."""
    kept = {r["prompt"] for r in read_jsonl(out / "prompts.jsonl")}
    written: dict[str, dict] = {}
    for r in read_jsonl(out / "prompts_raw.jsonl"):
        text = _prompt_text(r["output"], cfg)
        if text in kept and text not in written:
            written[text] = {"prompt": r["request"], "completion": text}
    return _draw(rng, list(written.values()), k)


def _replay_judgments(out: Path, pairs: list[dict], k: int, rng: random.Random, cfg) -> list[dict]:
    """k of (filled judge template -> first judgment) for the pairs' distinct chosen and rejected answers."""
    judged = {}
    for p in pairs:
        for side in ("chosen", "rejected"):
            if p.get(f"{side}_judgments"):
                judged[(p["prompt"], p[side])] = {"prompt": p["prompt"], "response": p[side],
                                                  "judgment": p[f"{side}_judgments"][0]}
    return judging_examples(_draw(rng, list(judged.values()), k), cfg)


def _replay_answers(out: Path, pairs: list[dict], k: int, rng: random.Random, cfg) -> list[dict]:
    """k of (prompt -> chosen answer), one per pair. Rehearsing prompt writing alone (its digit
    strings have repeats) made M2 repeat digits in its answers (docs/results.md, "A fixed prompt writer")."""
    answers = list({p["prompt"]: {"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs}.values())
    return _draw(rng, answers, k)


_SELF_REPLAY_POOLS = {"prompts": _replay_prompts, "judgments": _replay_judgments, "answers": _replay_answers}


def _sft_on_ift(base_path: str, tokenizer_path: str, data_dir: Path, m1: Path, cfg) -> dict:
    """The eft stage's SFT-on-IFT model, in ``m1/ift_model``."""
    ift = [{"prompt": r["prompt"], "completion": r["response"]} for r in read_jsonl(data_dir / "ift.jsonl")]
    return train_sft(base_path, ift, m1 / "ift_model", cfg, tokenizer_path=tokenizer_path,
                     seed=stage_seed(cfg.seed, 1, "ift_sft"), report_to=_report_to(cfg), run_name="sft-ift")


def build_eft(base_path: str, tokenizer_path: str, data_dir: Path, m1: Path, models: _Models, cfg) -> dict:
    """The paper's EFT data: an SFT-on-IFT model judges human-ranked answers; judgments whose
    score order agrees with the human ranking are kept, the most common score down-sampled."""
    info = _sft_on_ift(base_path, tokenizer_path, data_dir, m1, cfg)
    groups = read_jsonl(data_dir / EFT_GROUPS)
    items = [(g["prompt"], r) for g in groups for r in g["responses"]]
    records = judge(models.get(str(m1 / "ift_model")), load_template(cfg.judge.template), items, cfg.judge,
                    repeats=1, seed=stage_seed(cfg.seed, 1, "eft_judge"), desc="EFT judgments")
    models.free()
    texts, k = [], 0
    for g in groups:
        texts.append([r["judgments"][0] for r in records[k : k + len(g["responses"])]])
        k += len(g["responses"])
    eft = eft_from_judgments(groups, texts, min_score=cfg.judge.min_score, max_score=cfg.judge.max_score,
                             keep_most_common=cfg.data.oasst.keep_most_common, seed=cfg.seed)
    if not eft:
        raise SelfRewardError(f"no EFT example: the SFT model's judgments of {len(groups)} ranked prompts never "
                              f"agreed with the human ranking (see {m1 / 'ift_model'})")
    write_jsonl(data_dir / "eft.jsonl", eft)
    return {"eft": len(eft), "groups": len(groups), "ift_sft_loss": info["train_loss"]}


def build_eft_from_own_answers(base_path: str, tokenizer_path: str, data_dir: Path, m1: Path, models: _Models,
                               cfg) -> dict:
    """EFT data from the model's own answers (the built-in world's ``n_eft_own``): an SFT-on-IFT
    model answers the prompts of ``eft_own_prompts.jsonl`` (as many answers each as the source
    asks, with the candidate sampling settings) and the source labels them into ``eft.jsonl``."""
    info = _sft_on_ift(base_path, tokenizer_path, data_dir, m1, cfg)
    prompts, n = own_answer_requests(cfg, data_dir)
    g = cfg.generation
    answers = models.get(str(m1 / "ift_model")).generate(
        prompts, Sampling(g.temperature, g.top_p, g.max_new_tokens), n=n, seed=stage_seed(cfg.seed, 1, "eft_answers"),
        desc="EFT answers")
    models.free()
    eft = eft_with_own_answers(cfg, data_dir, list(zip(prompts, answers)), seed=stage_seed(cfg.seed, 1, "eft_rows"))
    write_jsonl(data_dir / "eft.jsonl", eft)
    own = sum(r.get("kind") == "own" for r in eft)
    return {"eft": len(eft), "eft_own": own, "eft_prompts": len(prompts), "ift_sft_loss": info["train_loss"]}


def _base_paths(cfg, run_dir: Path) -> tuple[str, str]:
    """The model SFT starts from and its tokenizer (the built-in one is made by stage ``base``)."""
    if cfg.model.name_or_path != "builtin":
        return cfg.model.name_or_path, cfg.model.tokenizer or cfg.model.name_or_path
    path = str(Path(run_dir) / "m0" / "model")
    return path, path


def base_model_path(cfg, run_dir: Path, data_dir: Path) -> tuple[str, str, dict]:
    """The model SFT starts from, its tokenizer, and the base stage's info."""
    path, tokenizer = _base_paths(cfg, run_dir)
    if cfg.model.name_or_path != "builtin":
        check_model_path(path)
        check_model_path(tokenizer)
        return path, tokenizer, {}
    # model=tiny: the data source makes its own base model (config.validate: it can).
    folder = run_dir / "m0"
    info = run_stage(folder, "base", lambda: base_model(cfg, data_dir, folder / "model",
                                                         stage_seed(cfg.seed, 0, "base")))
    return path, tokenizer, info


def _report_to(cfg) -> str:
    return "wandb" if cfg.logger.backend == "wandb" and cfg.logger.report_training else "none"


def run(cfg, run_dir: str | Path) -> list[dict]:
    """Run (or resume) the whole experiment in ``run_dir``; return the metrics rows.

    Under a launch of several processes (``selfreward processes=N`` starts one: ``accelerate launch
    --config_file conf/accelerate/ddp.yml --num_processes N -m selfreward.cli processes=N ...``;
    ``cfg.processes`` must be the launch's process count) every process runs the loop, each stage together as
    ``python -m selfreward.stages`` runs it under such a launch (:mod:`selfreward.distributed`:
    generation sharded, training under accelerate); the first process makes the run directory,
    holds its lock and writes every file."""
    run_dir = Path(run_dir)
    validate(cfg)  # before anything is written: a bad value never touches an existing run
    check_config(cfg, run_dir, write=False)
    if distributed.world_size() != cfg.processes:
        # The sampled files depend on the process count, so the run's config must say it truly.
        if distributed.world_size() == 1:
            raise ConfigError(f"processes={cfg.processes} but this is one process: the `selfreward` command starts "
                              f"them itself (or launch {cfg.processes} with `accelerate launch --num_processes "
                              f"{cfg.processes} -m selfreward.cli processes={cfg.processes} ...`)")
        raise ConfigError(f"this launch has {distributed.world_size()} processes but processes={cfg.processes}; "
                          f"pass processes={distributed.world_size()} (the samples depend on the count)")
    distributed.init()  # a launch of several processes: join its process group (nothing in one process)
    if not distributed.is_main():
        # The first process makes the folder, takes the lock and writes the config, then says so.
        if not distributed.broadcast(None):
            raise SelfRewardError("the launch's first process stopped before the run started (its message says why)")
        return _run(cfg, run_dir)
    started = False
    try:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SelfRewardError(f"cannot create the run directory {run_dir}: {e.strerror}") from None
        with lock_run_dir(run_dir):
            check_config(cfg, run_dir)
            started = distributed.broadcast(True)
            return _run(cfg, run_dir)
    finally:
        if not started:
            distributed.broadcast(False)  # the other processes of a launch stop too, instead of waiting


def _run(cfg, run_dir: Path) -> list[dict]:
    """The loop: the stages below, in order, sharing one :class:`Resources` (one model loaded at a time)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    record_environment(run_dir, "selfreward")
    res = Resources(cfg, run_dir, train_launcher=os.environ.get(TRAIN_LAUNCHER) or None)
    try:
        res.tracker  # noqa: B018 - W&B starts with the run, so that TRL's SFT curves land in it
        for stage in M1_STAGES:
            stage(cfg, run_dir, res=res)
        rows = [stage_eval(cfg, run_dir, 1, res=res)]
        for t in range(1, cfg.iterations + 1):
            for stage in ITERATION_STAGES:
                stage(cfg, run_dir, t, res=res)
            rows.append(stage_eval(cfg, run_dir, t + 1, res=res))
        return rows
    finally:
        res.close()


# The stages. Each is a plain function ``(cfg, run_dir, t) -> info`` that reads the files of the
# stages before it and writes its own, then its ``<stage>.done`` marker (``rundir.run_stage``): a
# finished stage returns its recorded info without running again. Run on their own (a process
# each: ``python -m selfreward.stages``), they give the files the loop gives. ``res`` shares the
# loaded model, the seed data, the oracle and the W&B run between the stages of one process;
# without it a stage makes its own and frees them at the end. The caller holds the run's lock.


class MissingInput(SelfRewardError):
    """A stage was asked to run before the stage that writes its input finished."""


class Resources:
    """What the stages of one process share, each made when a stage first asks for it: the
    loaded model (:class:`_Models`, one at a time), the seed data, the oracle and the tracker.
    ``train_launcher`` (see :data:`TRAIN_LAUNCHER`) runs the training stages in processes of their own."""

    def __init__(self, cfg, run_dir: str | Path, train_launcher: str | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.train_launcher = train_launcher
        self.models = _Models(cfg)
        self._data: SeedData | None = None
        self._oracle: Oracle | None = None
        self._tracker: Tracker | None = None

    @property
    def data(self) -> SeedData:
        if self._data is None:
            self._data = load_data(self.run_dir / "data", self.cfg)
            self._oracle = make_oracle(self.cfg, self._data)
        return self._data

    @property
    def oracle(self) -> Oracle | None:
        self.data  # noqa: B018 - the oracle is made with the data
        return self._oracle

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            # W&B from the main process only: the others of a launch log nowhere.
            cfg = self.cfg if distributed.is_main() else OmegaConf.merge(self.cfg, {"logger": {"backend": "none"}})
            self._tracker = Tracker(cfg, self.run_dir)
        return self._tracker

    def close(self) -> None:
        self.models.free()
        if self._tracker is not None:
            self._tracker.finish()


@contextmanager
def _resources(cfg, run_dir: Path, res: Resources | None) -> Iterator[Resources]:
    if res is not None:
        yield res
        return
    res = Resources(cfg, run_dir)
    try:
        yield res
    finally:
        res.close()


def _own_process(res: Resources, stage: str, folder: Path, t: int | None = None) -> dict:
    """Run training stage ``stage`` as ``<res.train_launcher> -m selfreward.stages STAGE`` (this
    process holds the run's lock and keeps its W&B run), then return the info its marker records."""
    command = [*shlex.split(res.train_launcher), "-m", "selfreward.stages", stage, "--run-dir", str(res.run_dir),
               "--no-lock", *(["--t", str(t)] if t is not None else [])]
    if res.cfg.threads:
        command.append(f"threads={res.cfg.threads}")
    res.models.free()  # the training processes get the device's memory
    log.info("stage %s in its own process: %s", stage, shlex.join(command))
    code = subprocess.run(command).returncode
    if code != 0 or not is_done(folder, stage):
        raise SelfRewardError(f"stage {stage} failed in its own process (exit code {code}; its messages are "
                              f"above): {shlex.join(command)}")
    return read_done(folder, stage)


def _need(run_dir: Path, stage: str, needed: Path, folder: Path, done_by: str, command: str) -> None:
    """Stop, naming the missing input ``needed``, unless stage ``done_by`` has finished in ``folder``."""
    if not is_done(folder, done_by):
        marker = done_path(folder, done_by).relative_to(run_dir)
        name, _, t = command.partition(" ")
        raise MissingInput(f"stage {stage} needs {needed}, written by stage {done_by}, which has not finished in "
                           f"{run_dir} (no {marker}); run it first: "
                           f"python -m selfreward.stages {name} --run-dir {run_dir}{' ' + t if t else ''}")


def _need_model(cfg, run_dir: Path, stage: str, t: int) -> None:
    """M_t must exist: M1 from SFT, later ones from iteration t-1's training stage."""
    if t < 1:
        raise SelfRewardError(f"stage {stage}: t={t}; allowed: an integer >= 1 (M1 is the first model)")
    if t == 1:
        _need(run_dir, stage, run_dir / "m1" / "model", run_dir / "m1", "sft", "sft")
    else:
        objective = cfg.training.objective
        _need(run_dir, stage, run_dir / f"m{t}" / "model", run_dir / f"m{t}", objective, f"{objective} --t {t - 1}")


def _need_data(cfg, run_dir: Path, stage: str) -> None:
    _need(run_dir, stage, run_dir / "data", run_dir / "data", "data", "data")
    if eft_stage_input(run_dir / "data"):
        _need(run_dir, stage, run_dir / "data" / "eft.jsonl", run_dir / "m1", "eft", "eft")


def stage_data(cfg, run_dir: str | Path, t: int | None = None, *, res: Resources | None = None) -> dict:
    """Seed and held-out data into ``data/`` (``t`` is not used)."""
    data_dir = Path(run_dir) / "data"
    return run_stage(data_dir, "data", lambda: prepare_data(cfg, data_dir))


def stage_base(cfg, run_dir: str | Path, t: int | None = None, *, res: Resources | None = None) -> dict:
    """The built-in base model into ``m0/model`` (``{}`` for a model named by ``model.name_or_path``,
    which is only checked)."""
    run_dir = Path(run_dir)
    if cfg.model.name_or_path == "builtin" and not is_done(run_dir / "m0", "base"):
        _need(run_dir, "base", run_dir / "data", run_dir / "data", "data", "data")
    return base_model_path(cfg, run_dir, run_dir / "data")[2]


def stage_eft(cfg, run_dir: str | Path, t: int | None = None, *, res: Resources | None = None) -> dict:
    """``data/eft.jsonl`` made with an SFT-on-IFT model, for a data source that asks for it: the
    paper's EFT data from the model's judgments of ranked answers (``data/eft_groups.jsonl``, as
    ``data=oasst``) or the model's own answers labelled by the source (``data/eft_own_prompts.jsonl``,
    the built-in world's ``n_eft_own``); ``{}`` otherwise."""
    run_dir = Path(run_dir)
    data_dir, m1 = run_dir / "data", run_dir / "m1"
    if is_done(m1, "eft"):
        return read_done(m1, "eft")
    _need(run_dir, "eft", data_dir, data_dir, "data", "data")
    kind = eft_stage_input(data_dir)
    if kind is None:
        return {}
    build = build_eft if kind == EFT_GROUPS else build_eft_from_own_answers
    if cfg.model.name_or_path == "builtin":
        _need(run_dir, "eft", run_dir / "m0" / "model", run_dir / "m0", "base", "base")
    base, tokenizer = _base_paths(cfg, run_dir)
    with _resources(cfg, run_dir, res) as res:
        if _report_to(cfg) == "wandb":
            res.tracker  # noqa: B018 - TRL's curves join the run's W&B run
        return run_stage(m1, "eft", lambda: build(base, tokenizer, data_dir, m1, res.models, cfg), parallel=True)


def stage_sft(cfg, run_dir: str | Path, t: int | None = None, *, res: Resources | None = None) -> dict:
    """M1: supervised fine-tuning of the base model on the seed IFT + EFT data (``t`` is not used)."""
    run_dir = Path(run_dir)
    m1 = run_dir / "m1"
    if not is_done(m1, "sft"):
        _need_data(cfg, run_dir, "sft")
        if cfg.model.name_or_path == "builtin":
            _need(run_dir, "sft", run_dir / "m0" / "model", run_dir / "m0", "base", "base")
    base, tokenizer = _base_paths(cfg, run_dir)
    with _resources(cfg, run_dir, res) as res:
        if res.train_launcher and not is_done(m1, "sft"):
            return _own_process(res, "sft", m1)

        def sft() -> dict:
            if _report_to(cfg) == "wandb":
                res.tracker  # noqa: B018 - TRL's curves join the run's W&B run
            return train_sft(base, sft_examples(res.data, cfg), m1 / "model", cfg, tokenizer_path=tokenizer,
                             seed=stage_seed(cfg.seed, 1, "sft"), report_to=_report_to(cfg), run_name="sft")
        return run_stage(m1, "sft", sft, parallel=True)


def stage_prompts(cfg, run_dir: str | Path, t: int, *, res: Resources | None = None) -> dict:
    """Iteration t, self-instruction: M_t (or ``prompts.writer``: M1, or a model of its own) writes new
    prompts into ``m{t+1}/prompts.jsonl``, filtered against the seed prompts and those of earlier
    iterations."""
    run_dir = Path(run_dir)
    out, model = run_dir / f"m{t + 1}", t + 1
    if not is_done(out, "prompts"):
        if cfg.prompts.writer in ("current", "m1"):  # a writer of its own is checked at the start
            _need_model(cfg, run_dir, "prompts", t if cfg.prompts.writer == "current" else 1)
        _need_data(cfg, run_dir, "prompts")
        for k in range(2, model):
            _need(run_dir, "prompts", run_dir / f"m{k}" / "prompts.jsonl", run_dir / f"m{k}", "prompts",
                  f"prompts --t {k - 1}")
    current = str(run_dir / f"m{t}" / "model")
    with _resources(cfg, run_dir, res) as res:
        def prompts() -> dict:
            writer = {"current": current, "m1": str(run_dir / "m1" / "model")}.get(cfg.prompts.writer, cfg.prompts.writer)
            earlier = [r["prompt"] for k in range(2, model) for r in read_jsonl(run_dir / f"m{k}" / "prompts.jsonl")]
            return write_prompts(res.models.get(writer), res.data, cfg, seed=stage_seed(cfg.seed, model, "prompts"),
                                 out=out, earlier=earlier, oracle=res.oracle, n_requests=prompt_requests(cfg, t))
        return run_stage(out, "prompts", prompts, parallel=True)


def stage_candidates(cfg, run_dir: str | Path, t: int, *, res: Resources | None = None) -> dict:
    """Iteration t: M_t samples N candidates for each prompt into ``m{t+1}/candidates.jsonl``."""
    run_dir = Path(run_dir)
    out, model = run_dir / f"m{t + 1}", t + 1
    if not is_done(out, "candidates"):
        _need_model(cfg, run_dir, "candidates", t)
        _need(run_dir, "candidates", out / "prompts.jsonl", out, "prompts", f"prompts --t {t}")
    with _resources(cfg, run_dir, res) as res:
        return run_stage(out, "candidates", lambda: write_candidates(
            res.models.get(str(run_dir / f"m{t}" / "model")), cfg, seed=stage_seed(cfg.seed, model, "candidates"),
            out=out), parallel=True)


def stage_judgments(cfg, run_dir: str | Path, t: int, *, res: Resources | None = None) -> dict:
    """Iteration t: every candidate scored by the configured reward into ``m{t+1}/judgments.jsonl``."""
    run_dir = Path(run_dir)
    out, model = run_dir / f"m{t + 1}", t + 1
    if not is_done(out, "judgments"):
        _need_model(cfg, run_dir, "judgments", t)
        _need_data(cfg, run_dir, "judgments")
        _need(run_dir, "judgments", out / "candidates.jsonl", out, "candidates", f"candidates --t {t}")
    current = str(run_dir / f"m{t}" / "model")
    with _resources(cfg, run_dir, res) as res:
        return run_stage(out, "judgments", lambda: write_judgments(
            Context(cfg, stage_seed(cfg.seed, model, "judgments"), policy=lambda: res.models.get(current),
                    engine=res.models.get, oracle=res.oracle, data=res.data, run_dir=run_dir),
            cfg, out=out), parallel=True)


def stage_pairs(cfg, run_dir: str | Path, t: int, *, res: Resources | None = None) -> dict:
    """Iteration t: preference pairs from the judged candidates into ``m{t+1}/pairs.jsonl``."""
    run_dir = Path(run_dir)
    out, model = run_dir / f"m{t + 1}", t + 1
    if not is_done(out, "pairs"):
        _need_data(cfg, run_dir, "pairs")
        _need(run_dir, "pairs", out / "judgments.jsonl", out, "judgments", f"judgments --t {t}")
    with _resources(cfg, run_dir, res) as res:
        return run_stage(out, "pairs", lambda: write_pairs(
            cfg, seed=stage_seed(cfg.seed, model, "pairs"), out=out, model=model, oracle=res.oracle))


def eft_pairs_rows(cfg, t: int) -> int:
    """Seed EFT rows M_t judges in iteration t (t >= 1): ``training.eft_pairs_rows`` times
    ``training.eft_pairs_rows_decay`` to the power t-1, rounded (decay 0: the first round only)."""
    return round(cfg.training.eft_pairs_rows * cfg.training.eft_pairs_rows_decay ** (t - 1))


def judge_pairs_enabled(cfg, t: int) -> bool:
    """Whether iteration t has a judge_pairs stage: the meta-judge's pairs, the seed EFT rows' or both."""
    return bool(cfg.meta_judge.enabled or eft_pairs_rows(cfg, t))


def write_eft_pairs(engine: Engine, data: SeedData, cfg, *, n_rows: int, seed: int, out: Path) -> dict:
    """``n_rows`` seed EFT rows (drawn with ``seed``) judged by M_t into ``out/eft_pairs.jsonl``:
    the pairs where its score is not the seed row's (:func:`selfreward.judge.seed_judgment_pairs`).
    With ``training.eft_pairs_anchors`` A, also ``out/eft_anchors.jsonl``: A rows per pair (as
    many as there are) drawn from those where its score was the seed's, each its seed judgment
    on both sides of a pair (trained by DPO's NLL term only). Returns their counts."""
    template = load_template(cfg.judge.template)
    rows = _draw(random.Random(seed), data.eft, n_rows)
    pairs, info = seed_judgment_pairs(engine, template, rows, cfg.judge, seed=seed)
    write_jsonl(out / "eft_pairs.jsonl", pairs)
    if cfg.training.eft_pairs_anchors:
        erred = {(p["task_prompt"], p["response"]) for p in pairs}
        agreed = [r for r in rows if (r["prompt"], r["response"]) not in erred]
        k = min(len(agreed), round(cfg.training.eft_pairs_anchors * len(pairs)))
        anchors = [{"prompt": judge_message(template, r["prompt"], r["response"]), "chosen": r["judgment"],
                    "rejected": r["judgment"], "task_prompt": r["prompt"], "response": r["response"],
                    "chosen_score": r["score"]} for r in random.Random(seed + 1).sample(agreed, k)]
        write_jsonl(out / "eft_anchors.jsonl", anchors)
        info["eft_pairs/anchors"] = len(anchors)
    return info


def stage_judge_pairs(cfg, run_dir: str | Path, t: int, *, res: Resources | None = None) -> dict:
    """Iteration t, pairs for the judge prompt that DPO trains on with the response pairs. With
    ``meta_judge.enabled``: M_t meta-judges its own contested judgments into
    ``m{t+1}/judge_pairs.jsonl`` (Meta-Rewarding, :mod:`selfreward.meta_judge`); with
    ``training.eft_pairs_rows`` (scaled each round by ``training.eft_pairs_rows_decay``): M_t judges
    that many seed EFT rows into ``m{t+1}/eft_pairs.jsonl`` (:func:`write_eft_pairs`). Without either it does
    nothing and writes nothing."""
    if not judge_pairs_enabled(cfg, t):
        return {}
    run_dir = Path(run_dir)
    out, model = run_dir / f"m{t + 1}", t + 1
    current = str(run_dir / f"m{t}" / "model")
    if not is_done(out, "judge_pairs"):
        _need_model(cfg, run_dir, "judge_pairs", t)
        _need_data(cfg, run_dir, "judge_pairs")
        if cfg.meta_judge.enabled:
            _need(run_dir, "judge_pairs", out / "judgments.jsonl", out, "judgments", f"judgments --t {t}")
    with _resources(cfg, run_dir, res) as res:

        def judge_pairs() -> dict:
            info, engine = {}, res.models.get(current)
            if cfg.meta_judge.enabled:
                oracle = res.oracle
                info.update(write_judge_pairs(engine, cfg, seed=stage_seed(cfg.seed, model, "judge_pairs"), out=out,
                                              score=oracle.score if oracle else None))
            if n_rows := eft_pairs_rows(cfg, t):
                info.update(write_eft_pairs(engine, res.data, cfg, n_rows=n_rows,
                                            seed=stage_seed(cfg.seed, model, "eft_pairs"), out=out))
            return info

        return run_stage(out, "judge_pairs", judge_pairs, parallel=True)


def training_pairs(cfg, out: Path, t: int) -> list[dict]:
    """What iteration t's DPO trains on: the response pairs, with the meta-judge its judgment pairs
    too, and with ``training.eft_pairs_rows`` (in that iteration) the seed EFT rows' judgment pairs
    (with ``training.eft_pairs_push=false``, their seed judgments on both sides) and with
    ``training.eft_pairs_anchors`` the rows it judged as the seed did (:func:`write_eft_pairs`)."""
    pairs = read_jsonl(out / "pairs.jsonl")
    if cfg.meta_judge.enabled:
        pairs += read_jsonl(out / "judge_pairs.jsonl")
    if eft_pairs_rows(cfg, t):
        judged = read_jsonl(out / "eft_pairs.jsonl")
        if not cfg.training.eft_pairs_push:
            # TRL trains its NLL term on a pair's chosen side only: with the seed judgment on both
            # sides the preference term is the same on both and its gradient zero, so the row
            # is supervised fine-tuning inside the same DPO steps (no second trainer, same schedule).
            judged = [{**p, "rejected": p["chosen"]} for p in judged]
        pairs += judged
        if cfg.training.eft_pairs_anchors:
            pairs += read_jsonl(out / "eft_anchors.jsonl")
    return pairs


def stage_train(cfg, run_dir: str | Path, t: int, *, res: Resources | None = None) -> dict:
    """Iteration t: M_{t+1} into ``m{t+1}/model`` by ``training.objective``: DPO on the pairs
    (the stage and marker named ``dpo``), SFT on the chosen answers (``sft_best``) or on the
    top-scored candidates (``rft``); then, with ``training.eft_replay_rows`` and/or
    ``training.self_replay_rows``, one SFT of the new model on that many seed EFT rows and rows of
    M_t's own work in the round (its loss curve in ``eft_replay_log.jsonl``)."""
    run_dir = Path(run_dir)
    out, model = run_dir / f"m{t + 1}", t + 1
    objective = cfg.training.objective
    current = str(run_dir / f"m{t}" / "model")
    if not is_done(out, objective):
        _need_model(cfg, run_dir, objective, t)
        _need_model(cfg, run_dir, objective, 1)  # the DPO reference with training.dpo.reference=sft
        _need(run_dir, objective, out / "pairs.jsonl", out, "pairs", f"pairs --t {t}")
        if cfg.training.self_replay_rows:
            _need(run_dir, objective, out / "prompts_raw.jsonl", out, "prompts", f"prompts --t {t}")
        if cfg.training.eft_replay_rows:
            _need_data(cfg, run_dir, objective)
        if cfg.meta_judge.enabled:
            _need(run_dir, objective, out / "judge_pairs.jsonl", out, "judge_pairs", f"judge_pairs --t {t}")
        if eft_pairs_rows(cfg, t):
            _need(run_dir, objective, out / "eft_pairs.jsonl", out, "judge_pairs", f"judge_pairs --t {t}")
            if cfg.training.eft_pairs_anchors:
                _need(run_dir, objective, out / "eft_anchors.jsonl", out, "judge_pairs", f"judge_pairs --t {t}")
    reference = current if cfg.training.dpo.reference == "previous" else str(run_dir / "m1" / "model")
    lr_scale = iteration_lr_scale(cfg.training, t)

    with _resources(cfg, run_dir, res) as res:
        models = res.models

        def dpo() -> dict:
            models.free()
            return train_dpo(current, reference, training_pairs(cfg, out, t), out / "model", cfg,
                             seed=stage_seed(cfg.seed, model, "dpo"), report_to=_report_to(cfg),
                             run_name=f"dpo-m{model}", lr_scale=lr_scale,
                             group_by_length=dpo_groups_by_length(cfg.training.dpo, t),
                             epochs=dpo_epochs(cfg.training.dpo, t))

        def sft_best() -> dict:
            models.free()
            chosen = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in read_jsonl(out / "pairs.jsonl")]
            return train_sft(current, chosen, out / "model", cfg, seed=stage_seed(cfg.seed, model, "sft_best"),
                             stage_cfg=cfg.training.sft_best, report_to=_report_to(cfg),
                             run_name=f"sft-best-m{model}", lr_scale=lr_scale)

        def rft() -> dict:
            models.free()
            unique = rft_examples(read_jsonl(out / "judgments.jsonl"), cfg.judge.max_score)
            if not unique:
                raise SelfRewardError(f"iteration {t}: no candidate got the top score {cfg.judge.max_score}; "
                                      f"rejection-sampling fine-tuning has nothing to train on "
                                      f"({out / 'judgments.jsonl'})")
            result = train_sft(current, unique, out / "model", cfg, seed=stage_seed(cfg.seed, model, "rft"),
                               stage_cfg=cfg.training.rft, report_to=_report_to(cfg), run_name=f"rft-m{model}",
                               lr_scale=lr_scale)
            return {**result, "examples": len(unique)}

        def replayed(train) -> Callable[[], dict]:
            if not (cfg.training.eft_replay_rows or cfg.training.self_replay_rows):
                return train

            def train_then_replay() -> dict:
                info = train()
                # Why not TRL: no trainer of its mixes SFT rows into DPO; a short SFT after the
                # round's training, from its model into the same folder, keeps the stage one unit
                # (a crash before the marker redoes both, bit-identically).
                seed_rows = own = []
                if cfg.training.eft_replay_rows:
                    seed_rows = eft_replay_examples(res.data, cfg, stage_seed(cfg.seed, model, "eft_replay"))
                if cfg.training.self_replay_rows:
                    own = self_replay_examples(out, cfg, stage_seed(cfg.seed, model, "self_replay"))
                replay = train_sft(str(out / "model"), seed_rows + own, out / "model", cfg,
                                   seed=stage_seed(cfg.seed, model, "eft_replay_sft"),
                                   stage_cfg=cfg.training.eft_replay, report_to=_report_to(cfg),
                                   run_name=f"eft-replay-m{model}", log_name="eft_replay_log.jsonl")
                counts = {"eft_replay_rows": len(seed_rows)} if cfg.training.eft_replay_rows else {}
                if cfg.training.self_replay_rows:
                    counts["self_replay_rows"] = len(own)
                return {**info, **counts, "eft_replay_loss": replay["train_loss"], "eft_replay_steps": replay["steps"]}
            return train_then_replay

        train = replayed({"dpo": dpo, "sft_best": sft_best, "rft": rft}[objective])
        if res.train_launcher and not is_done(out, objective):
            return _own_process(res, objective, out, t)
        if _report_to(cfg) == "wandb" and not is_done(out, objective):
            res.tracker  # noqa: B018 - TRL's curves join the run's W&B run
        return run_stage(out, objective, train, parallel=True)


def stage_eval(cfg, run_dir: str | Path, t: int, *, res: Resources | None = None) -> dict:
    """M_t's held-out measurements (``m{t}/eval*.json[l]``, once), then its metrics row: written to
    ``m{t}/metrics.json``, ``metrics.jsonl`` rebuilt, logged; returns the row. The row's counts and
    times are read from the markers of the stages that made M_t."""
    run_dir = Path(run_dir)
    folder = run_dir / f"m{t}"
    _need_model(cfg, run_dir, "eval", t)
    if t == 1:
        done = [(run_dir / "data", "data"), (run_dir / "m0", "base"), (folder, "eft"), (folder, "sft")]
        info = {stage: read_done(where, stage) for where, stage in done if is_done(where, stage)}
        counts, sample_pairs = {}, None
    else:
        stages = ("prompts", "candidates", "judgments", "pairs", *(("judge_pairs",) if judge_pairs_enabled(cfg, t - 1) else ()),
                  cfg.training.objective)
        info = {stage: read_done(folder, stage) for stage in stages}
        counts = _iteration_counts(info)
        sample_pairs = read_jsonl(folder / "pairs.jsonl")
    times = {stage: i["seconds"] for stage, i in info.items()}
    with _resources(cfg, run_dir, res) as res:
        return _measure(t, folder, res, cfg, times, counts, sample_pairs=sample_pairs)


M1_STAGES = (stage_data, stage_base, stage_eft, stage_sft)
ITERATION_STAGES = (stage_prompts, stage_candidates, stage_judgments, stage_pairs, stage_judge_pairs, stage_train)


def _iteration_counts(info: dict) -> dict:
    """The metrics row's counts of the iteration that made a model, from its stages' infos."""
    counts = {
        "prompts/count": info["prompts"]["count"],
        "pairs/count": info["pairs"]["count"],
        "pairs/tie_rate": info["pairs"]["tie_rate"],
        "pairs/mean_margin": info["pairs"]["mean_margin"],
        "pairs/chosen_length": info["pairs"]["chosen_length"],
        "pairs/rejected_length": info["pairs"]["rejected_length"],
        "self_judge/parse_failure_rate": info["judgments"]["parse_failure_rate"],
        "self_judge/mean_score": info["judgments"]["mean_score"],
        # Shares cut at max_new_tokens: candidates (left out of the pairs by default) and judgments.
        "candidates/truncation_rate": info["candidates"].get("truncation_rate"),
        "self_judge/truncation_rate": info["judgments"].get("truncation_rate"),
    }
    counts.update({k: v for k, v in info["pairs"].items() if k.startswith("self_judge/")})
    counts.update({k: v for k, v in info.get("judge_pairs", {}).items() if k.startswith(("meta_judge/", "eft_pairs/"))})
    if "completed_scores" in info["judgments"]:  # judge.complete_score
        counts["self_judge/completed_scores"] = info["judgments"]["completed_scores"]
    if "continued_judgments" in info["judgments"]:  # judge.continue_unscored
        counts["self_judge/continued_judgments"] = info["judgments"]["continued_judgments"]
    if "valid_rate" in info["prompts"]:
        counts["prompts/valid_rate"] = info["prompts"]["valid_rate"]
    return counts


def _measure(model: int, folder: Path, res: Resources, cfg, times: dict, counts: dict,
             sample_pairs: list[dict] | None = None) -> dict:
    """Evaluate M_t (once), write its metrics row, rewrite metrics.jsonl and log."""
    path = str(folder / "model")
    models = res.models

    def evaluate() -> dict:
        data, oracle = res.data, res.oracle
        engine = models.get(path)
        seed = stage_seed(cfg.seed, model, "eval")
        result = evaluate_judge(engine, data, cfg, seed=seed, out_dir=folder)
        if cfg.evaluation.position_bias:
            result.update(evaluate_position_bias(engine, data, cfg, seed=seed + 2, out_dir=folder))
        result.update(evaluate_policy(engine, data, cfg, oracle, seed=seed + 1, out_dir=folder))
        if cfg.evaluation.best_of_n:  # last: a reward with a model of its own may swap M_t out
            ctx = Context(cfg, seed + 3, policy=lambda: models.get(path), engine=models.get, oracle=oracle,
                          data=data, run_dir=folder.parent)
            result.update(evaluate_best_of_n(engine, data, cfg, oracle, ctx, seed=seed + 4, out_dir=folder))
        write_json(folder / "eval.json", result)
        return {}

    eval_info = run_stage(folder, "eval", evaluate, parallel=True)
    row = {
        "model": model,
        **read_json(folder / "eval.json"),
        **_versus_m1(folder),
        "prompts/count": None,
        "pairs/count": None,
        "pairs/tie_rate": None,
        **counts,
        **{f"time/{stage}_s": seconds for stage, seconds in {**times, "eval": eval_info["seconds"]}.items()},
    }
    write_json(folder / "metrics.json", row)
    _rewrite_metrics(folder.parent)
    res.tracker.log_model(row, sample_pairs)
    return row


def _versus_m1(folder: Path) -> dict:
    """Head-to-head of this model against M1 on the same held-out prompts, judged by the oracle's
    graded score (ties count half); empty when there is no graded oracle or this is M1."""
    first = folder.parent / "m1" / "eval_policy.jsonl"
    if folder.name == "m1" or not first.is_file():
        return {}
    mine, base = read_jsonl(folder / "eval_policy.jsonl"), read_jsonl(first)
    if "greedy_score" not in base[0]:
        return {}
    result = {}
    for mode, suffix in (("greedy", ""), ("sampled", "_sampled")):
        h2h = head_to_head([r[f"{mode}_score"] for r in mine], [r[f"{mode}_score"] for r in base])
        result.update({f"h2h/vs_m1_{k}{suffix}": h2h[k] for k in ("win_rate", "win", "tie", "loss")})
    return result


def _rewrite_metrics(run_dir: Path) -> None:
    """metrics.jsonl is rebuilt from each model's metrics.json, so a resume never duplicates lines."""
    rows = []
    k = 1
    while (run_dir / f"m{k}" / "metrics.json").is_file():
        rows.append(read_json(run_dir / f"m{k}" / "metrics.json"))
        k += 1
    write_jsonl(run_dir / "metrics.jsonl", rows)
