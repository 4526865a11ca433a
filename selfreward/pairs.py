"""Preference pairs from judged candidates.

Input: for each prompt its candidates with their mean judge score (``None`` when no judgment
parsed). Output: TRL's ``prompt``/``chosen``/``rejected`` records with the scores kept beside.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass


@dataclass
class PairStats:
    """Why prompts did or did not give a pair."""

    prompts: int = 0
    pairs: int = 0
    ties: int = 0  # best and worst scored the same (or within min_margin)
    too_few_scored: int = 0  # fewer than 2 distinct candidate texts with a parsed score
    truncated: int = 0  # candidates left out because they were cut at max_new_tokens
    shared_best: int = 0  # dropped by unique_best: several distinct answers share the top score
    not_majority: int = 0  # dropped by majority_agrees: the chosen answer is not the most sampled one
    low_vote_share: int = 0  # dropped by min_vote_share: too few of the scored candidates are the chosen answer
    overruled: int = 0  # kept by overrule_majority_below: the judge's pick against a majority it scores low
    below_min_score: int = 0  # distinct answers left out of the pairs by min_score

    @property
    def tie_rate(self) -> float:
        """Share of prompts with at least two distinct scored candidates that were dropped as ties."""
        eligible = self.prompts - self.too_few_scored
        return self.ties / eligible if eligible else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "tie_rate": self.tie_rate}


def overrule_threshold(overrule_majority_below: float, until_iteration: int, iteration: int) -> float:
    """``build_pairs``'s ``overrule_majority_below`` for loop iteration ``iteration`` (1 makes M2):
    the configured value up to ``until_iteration`` (``pairs.overrule_until_iteration``; 0: every
    iteration), then 0 (off). After a round the judge is weaker and the policy's majority answer
    right more often, so a low score on it is more often the judge's error (docs/results.md, "The
    judge overrules a low-scored majority")."""
    return overrule_majority_below if not until_iteration or iteration <= until_iteration else 0.0


def judged_groups(judged: list[dict]) -> dict[str, dict]:
    """The judgments stage's rows (one per sampled candidate) as :func:`build_pairs`'s groups, by
    prompt: ``{"prompt", "responses", "scores", "judgments", "finished"}`` in sampling order."""
    groups: dict[str, dict] = {}
    for row in judged:
        g = groups.setdefault(row["prompt"], {"prompt": row["prompt"], "responses": [], "scores": [], "judgments": [],
                                              "finished": []})
        g["responses"].append(row["response"])
        g["scores"].append(row["score"])
        g["judgments"].append(row["judgments"])
        g["finished"].append(row.get("finished", True))
    return groups


METHODS = ("best_worst", "all_pairs", "length_control", "random")
TIE_BREAKS = ("first", "frequent")


def build_pairs(
    groups: list[dict], *, method: str = "best_worst", min_margin: float = 0.0, rho: float = 0.0, seed: int = 0,
    allow_truncated: bool = False, tie_break: str = "first", unique_best: bool = False,
    majority_agrees: bool = False, min_vote_share: float = 0.0, overrule_majority_below: float = 0.0,
    min_score: float | None = None,
) -> tuple[list[dict], PairStats]:
    """Turn judged candidates into pairs.

    ``groups``: ``[{"prompt": str, "responses": [str], "scores": [float | None]}]``, optionally
    with ``"finished": [bool]``: a candidate cut at ``max_new_tokens`` (``False``) is left out
    (and counted in ``truncated``) unless ``allow_truncated``.

    Candidates with the same text (after stripping whitespace) are one answer: their scores are
    averaged, so judge noise on identical samples can never make an answer both chosen and
    rejected. With ``min_score``, an answer whose mean score is below it takes no part in the
    pairs (``below_min_score``), neither chosen nor rejected nor counted in the vote below, so
    that DPO trains against the worst answer that reached the floor, never a malformed one. (On
    the built-in world the lowest-scored answers often hold the judge's own words,
    ``"3 6 length no,6 9"``; leaving them out neither kept the judge from ending its turn early
    nor helped the answers: docs/results.md, "Rejected answers that hold the judge's words".) A prompt gives no pair when fewer than two distinct answers have a score
    (``too_few_scored``) or, for the rules with a margin, when no two differ by more than
    ``min_margin`` (``ties``; 0 drops exact ties). Then, per prompt:

    - ``best_worst`` (the paper): chosen = the highest mean score, rejected = the lowest. Among
      equal scores ``tie_break`` decides (the paper does not say): ``first``, the first candidate
      wins; ``frequent``, the answer sampled most often wins (then the first): the chosen one is the
      model's most common top-scored answer, the rejected one its most common lowest-scored
      answer. Only the judge's scores rank answers; the counts only order ties. With
      ``unique_best``, a prompt whose top score is shared by several distinct answers gives no
      pair (``shared_best``): the judge did not pick one best answer. On tasks with one right
      answer, two answers at the top mean the judge passed at least one wrong answer. With
      ``majority_agrees``, a prompt gives a pair only when its chosen answer is also sampled at
      least as often as any other scored answer (``not_majority``): the judge and the policy's own
      vote agree (self-consistency, as in Wang et al. 2022). On the built-in world the judge's pick
      is right 0.76-0.92 of the time where they agree and about half the time where they differ
      (docs/results.md, "The judge agrees with the vote"). With ``overrule_majority_below`` (> 0,
      with ``majority_agrees``), such a prompt is kept after all when the most sampled answer's
      score is below that value: the judge rejects the majority rather than doubts its own pick,
      and the pair is the judge's pick against the majority answer (not the lowest-scored one),
      so that DPO pushes down the answer the policy gives most (``overruled``; among equally
      frequent answers, the lowest-scored, then the first). With ``min_vote_share``, a prompt
      gives a pair only when at least that share of its scored candidates (copies counted) are
      its chosen answer (``low_vote_share``): the vote is sure as well as on the judge's side.
    - ``all_pairs``: every two distinct answers whose scores differ by more than ``min_margin``,
      the higher-scored one chosen (in order of first appearance).
    - ``length_control`` (Meta-Rewarding): with ``S_max``, ``S_min`` the prompt's extreme scores,
      chosen = the shortest answer (in characters) scored at least ``(1-rho) S_max + rho S_min``,
      rejected = the longest scored at most ``(1-rho) S_min + rho S_max``; the first wins among
      equal lengths. ``rho=0`` is best-vs-worst with ties broken by length; a pair whose margin
      is not above ``min_margin`` (possible for ``rho >= 0.5``) is dropped as a tie.
    - ``random`` (a control): two distinct scored answers drawn at random, chosen/rejected
      assigned at random, so the pair carries no judge signal. No margin rule.
    """
    if method not in METHODS:
        raise ValueError(f"pairs.method must be one of {', '.join(METHODS)}, got {method!r}")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"pairs.tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
    if tie_break != "first" and method != "best_worst":
        raise ValueError(f"pairs.tie_break={tie_break!r} is a best_worst rule; {method!r} breaks its own ties")
    if not 0 <= min_vote_share <= 1:
        raise ValueError(f"pairs.min_vote_share must be in [0, 1], got {min_vote_share}")
    if overrule_majority_below < 0:
        raise ValueError(f"pairs.overrule_majority_below must be >= 0 (0: off), got {overrule_majority_below}")
    if overrule_majority_below and not majority_agrees:
        raise ValueError("pairs.overrule_majority_below is an exception to pairs.majority_agrees; "
                         "set majority_agrees=true with it")
    for name, on in (("unique_best", unique_best), ("majority_agrees", majority_agrees),
                     ("min_vote_share", min_vote_share > 0)):
        if on and method != "best_worst":
            raise ValueError(f"pairs.{name} is a best_worst rule; {method!r} picks its chosen answers its own way")
    rng = random.Random(seed)
    stats = PairStats()
    pairs = []
    for group in groups:
        stats.prompts += 1
        scores = list(group["scores"])
        if not allow_truncated:
            for i, done in enumerate(group.get("finished") or [True] * len(scores)):
                if not done:
                    scores[i] = None
                    stats.truncated += 1
        scored = _distinct_scored(group["responses"], scores)
        if min_score is not None:
            kept = [t for t in scored if t[0] >= min_score]
            stats.below_min_score += len(scored) - len(kept)
            scored = kept
        if len(scored) < 2:
            stats.too_few_scored += 1
            continue
        top = max(t[0] for t in scored)
        if unique_best and sum(t[0] == top for t in scored) > 1:
            stats.shared_best += 1
            continue
        chosen_rejected = _choose(scored, group["responses"], method, min_margin, rho, rng, tie_break)
        if not chosen_rejected:
            stats.ties += 1
            continue
        most, overruled = max(t[2] for t in scored), False
        if majority_agrees and chosen_rejected[0][0][2] < most:
            majority = min((t for t in scored if t[2] == most), key=lambda t: (t[0], t[1]))
            if majority[0] >= overrule_majority_below:
                stats.not_majority += 1
                continue
            # The judge's pick is never the majority here (it has fewer copies), and it scores at
            # least as high; a tie in score leaves nothing to learn.
            if chosen_rejected[0][0][0] - majority[0] <= min_margin:
                stats.ties += 1
                continue
            chosen_rejected, overruled = [(chosen_rejected[0][0], majority)], True
        if chosen_rejected[0][0][2] < min_vote_share * sum(t[2] for t in scored):
            stats.low_vote_share += 1
            continue
        stats.overruled += overruled
        for best, worst in chosen_rejected:
            pairs.append(
                {
                    "prompt": group["prompt"],
                    "chosen": group["responses"][best[1]],
                    "rejected": group["responses"][worst[1]],
                    "chosen_score": best[0],
                    "rejected_score": worst[0],
                    "margin": best[0] - worst[0],
                }
            )
            stats.pairs += 1
    return pairs, stats


def _choose(scored: list[tuple[float, int]], responses: list[str], method: str, min_margin: float, rho: float,
            rng: random.Random, tie_break: str = "first") -> list[tuple[tuple, tuple]]:
    """The (chosen, rejected) of one prompt's distinct scored answers under ``method``; empty for a tie."""
    if method == "random":
        return [tuple(rng.sample(scored, 2))]
    if method == "all_pairs":
        return [(a, b) if a[0] > b[0] else (b, a)
                for k, a in enumerate(scored) for b in scored[k + 1:] if abs(a[0] - b[0]) > min_margin]
    if method == "best_worst":
        # max/min over (score, [count,] -index) and (score, [-count,] index): ties go to the first
        # candidate, or first to the answer sampled most often.
        frequent = tie_break == "frequent"
        best = max(scored, key=lambda t: (t[0], t[2] if frequent else 0, -t[1]))
        worst = min(scored, key=lambda t: (t[0], -t[2] if frequent else 0, t[1]))
    else:  # length_control
        top, bottom = max(t[0] for t in scored), min(t[0] for t in scored)
        high, low = (1 - rho) * top + rho * bottom, (1 - rho) * bottom + rho * top
        best = min((t for t in scored if t[0] >= high), key=lambda t: (len(responses[t[1]]), t[1]))
        worst = max((t for t in scored if t[0] <= low), key=lambda t: (len(responses[t[1]]), -t[1]))
    return [(best, worst)] if best[0] - worst[0] > min_margin else []


def _distinct_scored(responses: list[str], scores: list[float | None]) -> list[tuple[float, int, int]]:
    """(mean score, index of first occurrence, copies scored) per distinct scored text, in order of appearance."""
    by_text: dict[str, list] = {}
    for i, (text, score) in enumerate(zip(responses, scores, strict=True)):
        if score is not None:
            by_text.setdefault(text.strip(), [i, []])[1].append(score)
    return [(sum(s) / len(s), first, len(s)) for first, s in by_text.values()]
