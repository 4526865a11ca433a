"""LLM-as-a-Judge: the model scores (prompt, response) pairs with a rubric template.

A judgment counts only if it parses. A candidate's score is the mean of its parsed
judgments; a candidate with none has no score (``None``): it is never scored 0 and so can
never become the rejected answer of a pair because the judge failed to answer.
"""

from __future__ import annotations

import re
import statistics

from selfreward.generation import Engine, Sampling
from selfreward.prompts import fill

# A whole line "Score: N". Only the judgment's last such line decides.
_SCORE_LINE = re.compile(r"^[ \t]*Score:[ \t]*(\S+)[ \t]*$", re.MULTILINE)
# A judge may quote the response back; what is quoted must not decide the parse.
_QUOTED = re.compile(r"<response>.*?(?:</response>|\Z)", re.DOTALL)


def parse_score(judgment: str, min_score: int = 0, max_score: int = 5) -> int | None:
    """The integer on the judgment's last ``Score: N`` line, or ``None``.

    ``None`` when there is no such line, when the last one does not hold a plain integer, or
    when the integer is outside ``[min_score, max_score]``. Text inside ``<response>...</response>``
    is ignored, so a response that contains "Score: 5" cannot score itself.
    """
    matches = _SCORE_LINE.findall(_QUOTED.sub("", judgment))
    if not matches:
        return None
    value = matches[-1]
    if not re.fullmatch(r"[+-]?\d+", value):
        return None
    score = int(value)
    return score if min_score <= score <= max_score else None


def judge_message(template: str, prompt: str, response: str) -> str:
    """The judge's user message: the template filled with the prompt and the response."""
    return fill(template, prompt=prompt, response=response)


def summarise(scores: list[int | None]) -> dict:
    """Mean and spread of the judgments that parsed, and how many did not."""
    parsed = [s for s in scores if s is not None]
    return {
        "score": statistics.fmean(parsed) if parsed else None,
        "score_std": statistics.pstdev(parsed) if len(parsed) > 1 else (0.0 if parsed else None),
        "n_parsed": len(parsed),
        "n_failed": len(scores) - len(parsed),
    }


def judge(
    engine: Engine,
    template: str,
    items: list[tuple[str, str]],
    sampling: Sampling,
    *,
    repeats: int,
    min_score: int,
    max_score: int,
    seed: int,
    desc: str = "judge",
) -> list[dict]:
    """Judge each (prompt, response) ``repeats`` times.

    Returns one record per item: the raw judgment texts, their parsed scores (``None`` where a
    judgment did not parse) and :func:`summarise`'s mean score and spread.
    """
    if repeats < 1:
        raise ValueError(f"judge.repeats must be at least 1, got {repeats}")
    messages = [judge_message(template, p, r) for p, r in items]
    outputs = engine.generate(messages, sampling, n=repeats, seed=seed, desc=desc)
    records = []
    for texts in outputs:
        scores = [parse_score(t, min_score, max_score) for t in texts]
        records.append({"judgments": texts, "scores": scores, **summarise(scores)})
    return records
