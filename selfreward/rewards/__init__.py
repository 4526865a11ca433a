"""Rewards: where the scores of the candidates come from.

The interface, for every source::

    score(groups, ctx, **params) -> list[list[Scored]]

``groups`` is a list of ``(prompt, responses)``, the N candidates sampled for each prompt
(copies included, since some sources count them); the result holds one :class:`Scored` per
response, in the same order. ``ctx`` (:class:`Context`) gives what a source may need at run time:
the whole config, a seed, the current model M_t, any other model by path, the data source's
oracle, the seed data and the run directory. ``params`` are the other keys of the ``reward`` config.

A source is one module here with such a ``score`` function (and, if it has values to check,
``check(cfg)`` raising :class:`selfreward.config.ConfigError`) plus one file in ``conf/reward/``
naming it with Hydra's ``_target_``::

    _target_: selfreward.rewards.likelihood.score
    length_normalised: true

The loop's ``judgments`` stage calls the configured source once per iteration and writes one
row per candidate to ``judgments.jsonl`` (:func:`as_row`); pairs, metrics, the report and W&B read
only those rows: ``score`` (``None`` = unscored, never a preference), ``judgments`` (the judge's
texts, if any) and ``scores`` (each judgment's parsed score, ``None`` where it did not parse).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from selfreward.rundir import SelfRewardError

Group = tuple[str, list[str]]


@dataclass
class Scored:
    """One response's reward."""

    score: float | None  # None: the source could not score it (it then makes no pair)
    judgments: list[str] = field(default_factory=list)  # the judge's texts, where there is a judge
    scores: list[float | None] = field(default_factory=list)  # each judgment's parsed score (None: no parse)
    details: dict = field(default_factory=dict)  # the source's own fields, written beside (JSON values)


@dataclass
class Context:
    """What a reward source may use at run time (all loaded lazily by the loop)."""

    cfg: Any  # the whole config (judge settings, model settings)
    seed: int  # the stage's seed
    policy: Callable[[], Any] = None  # the current model M_t's engine
    engine: Callable[[str], Any] = None  # the engine of a model folder (the loop keeps one loaded)
    oracle: Any = None  # the data source's oracle (selfreward.data.Oracle), or None
    data: Any = None  # the seed data (selfreward.data.SeedData)
    run_dir: Any = None  # the run directory (a source may keep a stage of its own there)


def per_distinct(groups: list[Group], score_items: Callable[[list[tuple[str, str]]], list[Scored]]
                 ) -> list[list[Scored]]:
    """Score each distinct ``(prompt, response)`` once with ``score_items`` and share the result
    among its copies: a confident model samples the same answer several times, and judging it
    once saves work and keeps the copies' scores equal (so a copy can never be both chosen and
    rejected)."""
    items = [(p, r) for p, responses in groups for r in responses]
    distinct = list(dict.fromkeys(items))
    scored = score_items(distinct)
    if len(scored) != len(distinct):
        raise SelfRewardError(f"a reward gave {len(scored)} scores for {len(distinct)} candidates")
    by_item = dict(zip(distinct, scored))
    return [[by_item[(p, r)] for r in responses] for p, responses in groups]


def reward_function(cfg) -> Callable[..., list[list[Scored]]]:
    """The configured source as ``f(groups, ctx)`` (Hydra's ``instantiate`` of ``cfg.reward``,
    partially applied to its parameters)."""
    from hydra.utils import instantiate

    return instantiate(cfg.reward, _partial_=True)


def score_groups(cfg, groups: list[Group], ctx: Context) -> list[list[Scored]]:
    """Run the configured source and check that it gave one :class:`Scored` per response."""
    result = reward_function(cfg)(groups, ctx)
    target = cfg.reward._target_
    if len(result) != len(groups) or any(len(s) != len(r) for s, (_, r) in zip(result, groups)):
        raise SelfRewardError(f"reward {target} did not give one score per candidate")
    for row in result:
        for s in row:
            if not isinstance(s, Scored):
                raise SelfRewardError(f"reward {target} gave {type(s).__name__}, not Scored")
    return result


def as_row(prompt: str, response: str, finished: bool, scored: Scored) -> dict:
    """A ``judgments.jsonl`` row: the candidate, its score, the judge's texts and parsed scores,
    and the source's own fields."""
    return {"prompt": prompt, "response": response, "finished": finished, **scored.details,
            "judgments": scored.judgments, "scores": scored.scores, "score": scored.score}


def check_reward(cfg) -> None:
    """``reward._target_`` names a function whose parameters are the other ``reward`` keys, and
    the source's own ``check(cfg)`` passes; raises :class:`selfreward.config.ConfigError`."""
    import importlib

    from selfreward.config import ConfigError

    target = cfg.reward.get("_target_")
    module_name, _, name = str(target).rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"invalid config: reward._target_={target!r}; allowed: the dotted path of a reward "
                          f"function such as selfreward.rewards.self_judge.score (conf/reward/)") from None
    from omegaconf import OmegaConf

    unset = [k for k in cfg.reward if OmegaConf.is_missing(cfg.reward, k)]
    if unset:
        raise ConfigError(f"invalid config: reward.{unset[0]} is not set; {target} needs it (reward.{unset[0]}=...)")
    params = {k: v for k, v in cfg.reward.items() if k != "_target_"}
    accepted = list(inspect.signature(fn).parameters.values())[2:]  # after (groups, ctx)
    names = [p.name for p in accepted]
    unknown = [k for k in params if k not in names]
    if unknown:
        raise ConfigError(f"invalid config: reward.{unknown[0]} is not a parameter of {target}; allowed: "
                          f"{', '.join(names) if names else 'no parameters'}")
    missing = [p.name for p in accepted if p.default is inspect.Parameter.empty and p.name not in params]
    if missing:
        raise ConfigError(f"invalid config: reward.{missing[0]} is not set; {target} needs it")
    check = getattr(importlib.import_module(module_name), "check", None)
    if check is not None:
        check(cfg)
