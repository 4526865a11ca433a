"""Judge-quality and pair statistics.

The judge metrics follow the Self-Rewarding LM paper (Yuan et al. 2024, section 3): a model
judges every response to a held-out prompt, and its scores are compared with a gold ranking.
Input is a list of groups, one per prompt. A group holds

* ``gold``: the gold quality of each response, higher is better (a human rank ``r`` becomes
  ``-r``, an oracle score stays as it is); ties are allowed;
* ``pred``: the judge's score for each response, ``None`` where no judgment could be parsed.

A group is a :class:`JudgeGroup` or any mapping with ``"gold"`` and ``"pred"`` keys.

Everything here is plain numpy. Metrics that have nothing to average over return ``nan``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JudgeGroup:
    """Gold qualities and judge scores for the responses to one prompt."""

    gold: Sequence[float]
    pred: Sequence[float | None]


Group = JudgeGroup | Mapping[str, Sequence]


def _unpack(group: Group) -> tuple[np.ndarray, np.ndarray]:
    """Gold and predicted scores as float arrays; a ``None`` prediction becomes ``nan``."""
    if isinstance(group, Mapping):
        gold, pred = group["gold"], group["pred"]
    else:
        gold, pred = group.gold, group.pred
    if len(gold) != len(pred):
        raise ValueError(f"a group has {len(gold)} gold values but {len(pred)} predictions")
    pred_array = np.array([np.nan if p is None else float(p) for p in pred], dtype=float)
    return np.asarray(gold, dtype=float), pred_array


def _pair_signs(values: np.ndarray) -> np.ndarray:
    """``sign(values[i] - values[j])`` for every pair ``i < j``; ``nan`` where either is ``nan``."""
    i, j = np.triu_indices(len(values), k=1)
    return np.sign(values[i] - values[j])


def _mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _pair_agreement(groups: Sequence[Group]) -> list[tuple[int, int]]:
    """Per group: (gold-ordered pairs the judge orders the same way, gold-ordered pairs)."""
    counts = []
    for group in groups:
        gold, pred = _unpack(group)
        gold_signs, pred_signs = _pair_signs(gold), _pair_signs(pred)
        ordered = gold_signs != 0
        # A nan sign (a None prediction) compares unequal to everything: a disagreement.
        counts.append((int((pred_signs[ordered] == gold_signs[ordered]).sum()), int(ordered.sum())))
    return counts


def pairwise_accuracy(groups: Sequence[Group]) -> float:
    """Share of gold-ordered response pairs that the judge orders the same way.

    Every pair of responses to the same prompt whose gold values differ counts once. It scores
    1 when the judge's scores are strictly ordered the same way as the gold values and 0
    otherwise: a predicted tie and the opposite order are both disagreements. A pair in which
    either prediction is ``None`` is a disagreement too, so that a judge whose output fails to
    parse cannot look accurate. Pairs tied in gold are left out. ``nan`` if there are no pairs.
    """
    counts = _pair_agreement(groups)
    agree, total = sum(a for a, _ in counts), sum(n for _, n in counts)
    return agree / total if total else float("nan")


def pairwise_accuracy_se(groups: Sequence[Group]) -> float:
    """Standard error of :func:`pairwise_accuracy` over prompts (groups), not over pairs.

    A prompt's pairs share its responses and judgments, so they are not independent draws; the
    prompt is the unit that was sampled. This is the usual ratio-estimator (cluster) standard
    error: with ``a_g`` pairs agreeing out of ``n_g`` in group ``g``, ``p = sum a / sum n`` and
    ``se = sqrt(G / (G - 1) * sum (a_g - p n_g)^2) / sum n`` over the ``G`` groups that have
    gold-ordered pairs. ``nan`` with fewer than two such groups.
    """
    counts = [(a, n) for a, n in _pair_agreement(groups) if n]
    n_groups = len(counts)
    if n_groups < 2:
        return float("nan")
    a, n = (np.asarray(column, dtype=float) for column in zip(*counts))
    p = a.sum() / n.sum()
    return float(np.sqrt(n_groups / (n_groups - 1) * np.sum((a - p * n) ** 2)) / n.sum())


def five_best(groups: Sequence[Group], top: float = 5) -> float:
    """Share of groups whose gold-best response gets the judge's top score ``top``.

    The gold-best response is the one with the unique highest gold value; groups whose highest
    gold value is shared by several responses are left out (as are empty groups). Other
    responses may receive ``top`` as well. A ``None`` prediction for the best response is a
    miss. ``nan`` if no group qualifies.
    """
    hits = []
    for group in groups:
        gold, pred = _unpack(group)
        if len(gold) == 0 or np.sum(gold == gold.max()) > 1:
            continue
        hits.append(float(pred[np.argmax(gold)] == top))
    return _mean_or_nan(hits)


def exact_match(groups: Sequence[Group]) -> float:
    """Share of groups whose predicted ranking equals the gold ranking exactly.

    A group matches when ``sign(pred_i - pred_j) == sign(gold_i - gold_j)`` for every pair
    ``(i, j)`` of its responses: the judge must order each gold-ordered pair the same way and tie
    each gold-tied pair. A group with any ``None`` prediction does not match. Every group
    counts; ``nan`` if there are none.
    """
    matches = []
    for group in groups:
        gold, pred = _unpack(group)
        matched = not np.isnan(pred).any() and np.array_equal(_pair_signs(pred), _pair_signs(gold))
        matches.append(float(matched))
    return _mean_or_nan(matches)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2)[inverse]


def _spearman_single(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks of ``x`` and ``y``.

    ``nan`` when it is undefined: fewer than two values, or either side constant.
    """
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x_arr) != len(y_arr):
        raise ValueError(f"x has {len(x_arr)} values but y has {len(y_arr)}")
    rx, ry = _average_ranks(x_arr), _average_ranks(y_arr)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denominator) if denominator > 0 else float("nan")


def _kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: ``(P - Q) / sqrt((P + Q + T_x) * (P + Q + T_y))``.

    Over all pairs ``i < j``: ``P`` are concordant, ``Q`` discordant, ``T_x`` tied in ``x``
    only and ``T_y`` tied in ``y`` only; pairs tied on both sides count in none of them.
    ``nan`` when it is undefined: fewer than two values, or either side constant.
    """
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x_arr) != len(y_arr):
        raise ValueError(f"x has {len(x_arr)} values but y has {len(y_arr)}")
    sx, sy = _pair_signs(x_arr), _pair_signs(y_arr)
    product = sx * sy
    concordant, discordant = np.sum(product > 0), np.sum(product < 0)
    tied_x_only = np.sum((sx == 0) & (sy != 0))
    tied_y_only = np.sum((sx != 0) & (sy == 0))
    untied = concordant + discordant
    denominator = np.sqrt(float((untied + tied_x_only) * (untied + tied_y_only)))
    return float((concordant - discordant) / denominator) if denominator > 0 else float("nan")


def _mean_group_correlation(
    groups: Sequence[Group], correlation: Callable[[np.ndarray, np.ndarray], float]
) -> float:
    """Mean of ``correlation(pred, gold)`` over the groups where it is defined."""
    values = []
    for group in groups:
        gold, pred = _unpack(group)
        if len(gold) < 2 or np.isnan(pred).any():
            continue
        value = correlation(pred, gold)
        if not np.isnan(value):
            values.append(value)
    return _mean_or_nan(values)


def spearman(groups: Sequence[Group]) -> float:
    """Spearman's rho between judge scores and gold values, averaged over groups.

    Within a group, rho is the Pearson correlation of the average ranks (tied values share the
    mean of their ranks). Only groups where it is defined count: at least two responses, no
    ``None`` prediction, and neither the scores nor the gold values constant. ``nan`` if no
    group qualifies.
    """
    return _mean_group_correlation(groups, _spearman_single)


def kendall_tau(groups: Sequence[Group]) -> float:
    """Kendall's tau-b between judge scores and gold values, averaged over groups.

    Tau-b corrects for ties on either side (see :func:`_kendall_tau_b`). Only groups where it is
    defined count: at least two responses, no ``None`` prediction, and neither the scores nor
    the gold values constant. ``nan`` if no group qualifies.
    """
    return _mean_group_correlation(groups, _kendall_tau_b)


def judge_metrics(groups: Sequence[Group], top: float = 5) -> dict[str, float]:
    """All judge metrics for ``groups`` in one dict (``top``: the highest score, for ``five_best``).

    Keys: ``pairwise_accuracy`` and its standard error over prompts ``pairwise_accuracy_se``,
    ``five_best``, ``exact_match``, ``spearman``, ``kendall_tau``
    (as the functions of the same names), ``parse_failure_rate`` (share of ``None`` predictions
    among all responses, ``nan`` if there are none), ``n_groups`` (number of groups) and
    ``n_pairs`` (number of gold-ordered pairs that ``pairwise_accuracy`` scores).
    """
    unpacked = [_unpack(group) for group in groups]
    n_responses = sum(len(gold) for gold, _ in unpacked)
    n_failures = sum(int(np.isnan(pred).sum()) for _, pred in unpacked)
    n_pairs = sum(int(np.count_nonzero(_pair_signs(gold))) for gold, _ in unpacked)
    return {
        "pairwise_accuracy": pairwise_accuracy(groups),
        "pairwise_accuracy_se": pairwise_accuracy_se(groups),
        "five_best": five_best(groups, top=top),
        "exact_match": exact_match(groups),
        "spearman": spearman(groups),
        "kendall_tau": kendall_tau(groups),
        "parse_failure_rate": n_failures / n_responses if n_responses else float("nan"),
        "n_groups": len(groups),
        "n_pairs": n_pairs,
    }


def win_rate(outcomes: Sequence[float]) -> dict[str, float]:
    """Win, tie and loss shares of pairwise outcomes, and the win rate counting ties as half.

    Each outcome is 1 (win), 0.5 (tie) or 0 (loss); anything else raises ``ValueError``.
    Returns ``{"win", "tie", "loss", "win_rate", "n"}`` where ``win_rate = win + tie / 2``;
    the shares are ``nan`` when there are no outcomes.
    """
    values = np.asarray(outcomes, dtype=float)
    valid = np.isin(values, (0.0, 0.5, 1.0))
    if not valid.all():
        bad = sorted(set(values[~valid].tolist()))
        raise ValueError(f"outcomes must be 1 (win), 0.5 (tie) or 0 (loss); got {bad}")
    n = len(values)
    if n == 0:
        nan = float("nan")
        return {"win": nan, "tie": nan, "loss": nan, "win_rate": nan, "n": 0}
    win, tie, loss = (float(np.mean(values == v)) for v in (1.0, 0.5, 0.0))
    return {"win": win, "tie": tie, "loss": loss, "win_rate": win + tie / 2, "n": n}


def length_bias(
    scores: Sequence[float | None], lengths: Sequence[float], gold: Sequence[float]
) -> float:
    """How much the judge favours longer responses at equal gold quality.

    The three sequences describe the same responses, pooled over all prompts. Responses are
    split into strata of equal gold value; within each stratum, Spearman's rho of judge score
    against length is computed, and the strata are averaged weighted by their size. Responses
    with a ``None`` score are left out first. Strata with fewer than three responses, or with
    constant scores or lengths, are skipped. Positive means longer responses get higher scores
    than equally good shorter ones. ``nan`` if no stratum qualifies.
    """
    if not len(scores) == len(lengths) == len(gold):
        raise ValueError(
            f"got {len(scores)} scores, {len(lengths)} lengths and {len(gold)} gold values"
        )
    parsed = [i for i, s in enumerate(scores) if s is not None]
    score_arr = np.array([scores[i] for i in parsed], dtype=float)
    length_arr = np.asarray(lengths, dtype=float)[parsed]
    gold_arr = np.asarray(gold, dtype=float)[parsed]
    weighted_sum = total_weight = 0.0
    for value in np.unique(gold_arr):
        stratum = gold_arr == value
        size = int(stratum.sum())
        if size < 3:
            continue
        rho = _spearman_single(score_arr[stratum], length_arr[stratum])
        if np.isnan(rho):
            continue
        weighted_sum += size * rho
        total_weight += size
    return weighted_sum / total_weight if total_weight else float("nan")
