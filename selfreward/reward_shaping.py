"""Reward shaping around any reward source: InfAlign's CTRL (Balashankar et al. 2024).

``reward_shaping.method=ctrl`` turns the configured reward ``r`` into a shaped one, prompt by
prompt, in two steps:

1. **Calibrate**: ``C(x, y) = P[r(x, z) < r(x, y)] + 0.5 P[r(x, z) = r(x, y)]`` over ``z`` drawn
   from the reference policy, estimated from ``k`` samples of M_t (the model the iteration starts
   from) for the same prompt, with the generation settings, scored by the same reward;
2. **Transform**: ``sign(t) * exp(t * C)``. With ``t > 0`` (Best-of-N) it is convex, stretching
   the top quantiles apart; with ``t < 0`` (Worst-of-N) it is ``-exp(-|t| C)``, concave, stretching
   the bottom ones. The sign keeps the shaped reward increasing in the reward for both: plain
   ``exp(t C)`` with ``t < 0`` would rank worse answers higher.

The loop's ``judgments`` stage applies it after the source has scored the candidates: a
candidate's ``score`` becomes the shaped value, its raw reward and quantile are kept beside it
(``raw_score``, ``quantile`` in ``judgments.jsonl``) and the reference samples with their rewards
go to ``reference.jsonl``.
"""

from __future__ import annotations

import math
from dataclasses import replace

from selfreward.generation import Sampling
from selfreward.rewards import Context, Group, Scored, score_groups


def calibrate(value: float, reference: list[float]) -> float:
    """The share of ``reference`` rewards below ``value``, ties counting half (a quantile in [0, 1])."""
    below = sum(r < value for r in reference)
    ties = sum(r == value for r in reference)
    return (below + 0.5 * ties) / len(reference)


def transform(quantile: float, t: float) -> float:
    """``sign(t) * exp(t * quantile)``: increasing in the quantile for either sign of ``t``."""
    return math.copysign(math.exp(t * quantile), t)


def ctrl_scores(scored: list[list[Scored]], reference: list[list[float | None]], t: float) -> list[list[Scored]]:
    """Each candidate's shaped reward, from the rewards of its prompt's reference samples.

    A reference sample the source could not score (``None``) is left out of the quantile; a
    candidate without a reward, or whose prompt has no scored reference sample, gets ``None``
    (it then makes no pair). The raw reward and the quantile are kept in ``details``.
    """
    shaped = []
    for row, ref in zip(scored, reference, strict=True):
        values = [r for r in ref if r is not None]
        out = []
        for s in row:
            q = calibrate(s.score, values) if s.score is not None and values else None
            out.append(replace(s, score=None if q is None else transform(q, t),
                               details={**s.details, "raw_score": s.score, "quantile": q}))
        shaped.append(out)
    return shaped


def shape(cfg, groups: list[Group], scored: list[list[Scored]], ctx: Context) -> tuple[list[list[Scored]], list[dict]]:
    """The configured shaping of ``scored`` (the source's rewards of ``groups``) and the reference
    rows to write (``[]`` with ``reward_shaping.method=none``, which returns ``scored`` as it is)."""
    rs = cfg.reward_shaping
    if rs.method == "none":
        return scored, []
    g = cfg.generation
    prompts = [p for p, _ in groups]
    samples = ctx.policy().generate(prompts, Sampling(g.temperature, g.top_p, g.max_new_tokens), n=rs.k,
                                    seed=ctx.seed, desc="reference samples")
    reference = score_groups(cfg, [(p, list(o)) for p, o in zip(prompts, samples)], ctx)
    rows = [{"prompt": p, "responses": list(o), "scores": [s.score for s in ref]}
            for p, o, ref in zip(prompts, samples, reference)]
    return ctrl_scores(scored, [r["scores"] for r in rows], rs.t), rows
