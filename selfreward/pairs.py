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

    @property
    def tie_rate(self) -> float:
        """Share of prompts with at least two distinct scored candidates that were dropped as ties."""
        eligible = self.prompts - self.too_few_scored
        return self.ties / eligible if eligible else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "tie_rate": self.tie_rate}


def build_pairs(
    groups: list[dict], *, method: str = "best_worst", min_margin: float = 0.0, seed: int = 0,
    allow_truncated: bool = False,
) -> tuple[list[dict], PairStats]:
    """Turn judged candidates into pairs.

    ``groups``: ``[{"prompt": str, "responses": [str], "scores": [float | None]}]``, optionally
    with ``"finished": [bool]``: a candidate cut at ``max_new_tokens`` (``False``) is left out
    (and counted in ``truncated``) unless ``allow_truncated``.

    Candidates with the same text (after stripping whitespace) are one answer: their scores are
    averaged, so judge noise on identical samples can never make an answer both chosen and
    rejected. Then:

    - ``best_worst`` (the paper): chosen = the highest mean score, rejected = the lowest; the
      first candidate wins among equals. The prompt is dropped when fewer than two distinct
      answers have a score, or when the margin is not above ``min_margin`` (a tie when 0).
    - ``random`` (a control): two distinct scored answers drawn at random, chosen/rejected
      assigned at random, so the pair carries no judge signal. Same drop rules except the margin.
    """
    if method not in ("best_worst", "random"):
        raise ValueError(f"pairs.method must be best_worst or random, got {method!r}")
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
        if len(scored) < 2:
            stats.too_few_scored += 1
            continue
        if method == "best_worst":
            # max/min over (score, -index) and (score, index): the first candidate wins ties.
            best = max(scored, key=lambda t: (t[0], -t[1]))
            worst = min(scored, key=lambda t: (t[0], t[1]))
            if best[0] - worst[0] <= min_margin:
                stats.ties += 1
                continue
        else:
            best, worst = rng.sample(scored, 2)
        chosen, rejected = group["responses"][best[1]], group["responses"][worst[1]]
        pairs.append(
            {
                "prompt": group["prompt"],
                "chosen": chosen,
                "rejected": rejected,
                "chosen_score": best[0],
                "rejected_score": worst[0],
                "margin": best[0] - worst[0],
            }
        )
        stats.pairs += 1
    return pairs, stats


def _distinct_scored(responses: list[str], scores: list[float | None]) -> list[tuple[float, int]]:
    """(mean score, index of first occurrence) per distinct scored text, in order of appearance."""
    by_text: dict[str, list] = {}
    for i, (text, score) in enumerate(zip(responses, scores, strict=True)):
        if score is not None:
            by_text.setdefault(text.strip(), [i, []])[1].append(score)
    return [(sum(s) / len(s), first) for first, s in by_text.values()]
