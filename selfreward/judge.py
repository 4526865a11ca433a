"""LLM-as-a-Judge: the model scores (prompt, response) pairs with a rubric template.

A judgment counts only if it parses. A candidate's score is the mean of its parsed
judgments; a candidate with none has no score (``None``): it is never scored 0 and so can
never become the rejected answer of a pair because the judge failed to answer.
"""

from __future__ import annotations

import math
import re
import statistics

from selfreward.generation import Completion, Engine, Sampling, finished
from selfreward.prompts import fill

# A judge may quote the response back; what is quoted must not decide the parse.
_QUOTED = re.compile(r"<response>.*?(?:</response>|\Z)", re.DOTALL)
# A verdict line once markdown emphasis is removed: "Score: N", or "Score: N/max_score", an
# optional full stop; N in ASCII digits (int() would also read other scripts' digits).
_VERDICT = re.compile(r"Score:[ \t]*([+-]?[0-9]+)(?:[ \t]*/[ \t]*([0-9]+))?\.?", re.ASCII)


def _lines(text: str) -> list[str]:
    """Lines whatever their ends (LF, CRLF, CR), stripped, without markdown emphasis (* and _)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [line.replace("*", "").replace("_", "").strip() for line in text.split("\n")]


def parse_score(judgment: str, min_score: int = 0, max_score: int = 5, response: str | None = None) -> int | None:
    """The score on the judgment's last ``Score:`` line, or ``None``.

    Accepted, on a line of its own: ``Score: 4``, ``**Score: 4**``, ``**Score:** 4``,
    ``Score: 4.``, and ``Score: 4/5`` where 5 is ``max_score``; line ends LF, CRLF or CR. The
    last line that starts with ``Score:`` decides; it gives ``None`` when it holds anything else
    (``4.5``, ``four``, ``4/10``, digits of other scripts), or a number outside
    ``[min_score, max_score]``. A line in which ``Score:`` does not start it (quoted, ``> Score:``,
    ``"Score: 5"``, in a sentence) is not a verdict.

    The response's own text never decides: text inside ``<response>...</response>`` is
    ignored, and when ``response`` is given, a last verdict line that is also a line of the
    response (a response that closes its own ``</response>`` early and scores itself, copied
    back by the judge) gives ``None``.
    """
    verdicts = [line for line in _lines(_QUOTED.sub("", judgment)) if line.startswith("Score:")]
    if not verdicts:
        return None
    last = verdicts[-1]
    if response is not None and last in _lines(response):
        return None
    match = _VERDICT.fullmatch(last)
    if match is None or (match.group(2) is not None and int(match.group(2)) != max_score):
        return None
    score = int(match.group(1))
    return score if min_score <= score <= max_score else None


_WINNER_LINE = re.compile(r"^[ \t]*Winner:[ \t]*(\S+)[ \t]*$", re.MULTILINE)
_QUOTED_PAIR = re.compile(r"<response_([ab])>.*?(?:</response_\1>|\Z)", re.DOTALL)


def parse_winner(judgment: str) -> str | None:
    """``"A"`` or ``"B"`` from the judgment's last ``Winner: X`` line (quoted responses ignored)."""
    matches = _WINNER_LINE.findall(_QUOTED_PAIR.sub("", judgment))
    return matches[-1] if matches and matches[-1] in ("A", "B") else None


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


def score_prefix(judgment: str) -> str:
    """The judgment up to its last ``Score:`` (outside quoted text), where the score token goes;
    a judgment without one gets a ``Score:`` line appended."""
    quoted = [m.span() for m in _QUOTED.finditer(judgment)]
    starts = [m for m in re.finditer(r"^[ \t]*Score:", judgment, re.MULTILINE)
              if not any(a <= m.start() < b for a, b in quoted)]
    if starts:
        return judgment[: starts[-1].end()]
    return judgment.rstrip() + "\nScore:"


def _score_logprobs(engine: Engine, messages: list[str], judgments: list[str], values: list[int]) -> list[list[float]]:
    """For each judgment, the log-probability of each " N" of ``values`` after its ``Score:``."""
    return engine.continuation_logprobs(messages, [score_prefix(j) for j in judgments], [f" {v}" for v in values])


def completed_scores(engine: Engine, messages: list[str], judgments: list[str], min_score: int,
                     max_score: int) -> list[int]:
    """The score each judgment's judge finds most likely after its ``Score:`` (appended where it has
    none): a score for judgments that stopped or were cut before writing a readable one."""
    values = list(range(min_score, max_score + 1))
    return [values[max(range(len(values)), key=lp.__getitem__)]
            for lp in _score_logprobs(engine, messages, judgments, values)]


def expected_scores(engine: Engine, messages: list[str], judgments: list[str], min_score: int,
                    max_score: int) -> list[dict]:
    """The expected score under the judge's own distribution over the score tokens.

    After each judgment's ``Score:`` the log-probability of every " N" in range is read, the
    probabilities are renormalised over the range, and the score is their mean: one judgment
    instead of k samples, and never a parse failure.
    """
    values = list(range(min_score, max_score + 1))
    records = []
    for lp in _score_logprobs(engine, messages, judgments, values):
        top = max(lp)
        weights = [math.exp(x - top) for x in lp]
        probs = [w / sum(weights) for w in weights]
        mean = sum(v * p for v, p in zip(values, probs))
        spread = math.sqrt(sum(p * (v - mean) ** 2 for v, p in zip(values, probs)))
        records.append({"score": mean, "score_std": spread, "score_probs": probs})
    return records


def continue_unscored(engine: Engine, messages: list[str], texts: list[str], responses: list[str], cfg, *,
                      seed: int, desc: str = "continue judgments") -> tuple[list[str], list[int]]:
    """Judgments that ended (the judge's own end of turn, not ``max_new_tokens``) without a
    readable score, continued from where they stopped with the end of turn barred from the first
    new token, up to ``cfg.continue_unscored`` times each, until a score reads; each go may write
    up to ``cfg.max_new_tokens`` more. Returns the texts (continued ones extended) and how many
    times each was continued.

    Why: a judge that has drifted in training often ends its turn in the middle of its verdicts
    (after ``length yes,``) or just before its ``Score:`` line; the paper drops such judgments,
    which can leave most candidates unscored. Continuing lets the judge write the rest itself;
    :func:`completed_scores` instead guesses the score from what was written.
    """
    texts = list(texts)
    continued = [0] * len(texts)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens, min_new_tokens=1)

    def unscored(i: int) -> bool:
        return finished(texts[i]) and parse_score(texts[i], cfg.min_score, cfg.max_score, responses[i]) is None

    pending = [i for i in range(len(texts)) if unscored(i)]
    for attempt in range(cfg.continue_unscored):
        if not pending:
            break
        outputs = engine.generate([messages[i] for i in pending], sampling, seed=seed + attempt + 1,
                                  desc=desc, prefixes=[str(texts[i]) for i in pending])
        for i, (more,) in zip(pending, outputs):
            texts[i] = Completion(str(texts[i]) + str(more), finished(more))
            continued[i] += 1
        # Only a text just continued can have changed: the others keep their verdict.
        pending = [i for i in pending if unscored(i)]
    return texts, continued


def judge(engine: Engine, template: str, items: list[tuple[str, str]], cfg, *, repeats: int | None = None,
          seed: int, desc: str = "judge") -> list[dict]:
    """Judge each (prompt, response) with the settings of ``cfg`` (a ``JudgeConfig``).

    ``cfg.mode == "sample"``: ``repeats`` (default ``cfg.repeats``) sampled judgments each; the
    record holds the raw texts, their parsed scores (``None`` where one did not parse) and
    :func:`summarise`'s mean and spread. With ``cfg.continue_unscored`` a judgment that ended
    without a readable score is first continued (:func:`continue_unscored`; ``judgment_continued``
    counts how often). With ``cfg.complete_score`` a judgment that still parsed to nothing gets
    :func:`completed_scores`' score instead (``score_completed`` marks which).
    ``cfg.mode == "expected"``: one greedy judgment each, scored by :func:`expected_scores`.
    """
    repeats = cfg.repeats if repeats is None else repeats
    messages = [judge_message(template, p, r) for p, r in items]
    if cfg.mode == "expected":
        texts = [o[0] for o in engine.generate(messages, Sampling(0.0, 1.0, cfg.max_new_tokens), seed=seed,
                                               desc=desc)]
        expected = expected_scores(engine, messages, texts, cfg.min_score, cfg.max_score)
        return [{"judgments": [t], "judgment_finished": [finished(t)], "scores": [e["score"]], "n_parsed": 1,
                 "n_failed": 0, **e} for t, e in zip(texts, expected)]
    if cfg.mode != "sample":
        raise ValueError(f"judge.mode must be sample or expected, got {cfg.mode!r}")
    if repeats < 1:
        raise ValueError(f"judge.repeats must be at least 1, got {repeats}")
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    outputs = engine.generate(messages, sampling, n=repeats, seed=seed, desc=desc)
    continued = None
    if cfg.continue_unscored:
        flat, continued = continue_unscored(
            engine, [m for m in messages for _ in range(repeats)], [t for texts in outputs for t in texts],
            [r for _, r in items for _ in range(repeats)], cfg, seed=seed, desc=f"{desc}: continue")
        outputs = [flat[i * repeats : (i + 1) * repeats] for i in range(len(messages))]
        continued = [continued[i * repeats : (i + 1) * repeats] for i in range(len(messages))]
    scores = [[parse_score(t, cfg.min_score, cfg.max_score, response) for t in texts]
              for (_, response), texts in zip(items, outputs)]
    unread = [(i, k) for i, row in enumerate(scores) for k, s in enumerate(row) if s is None]
    if cfg.complete_score and unread:
        completed = completed_scores(engine, [messages[i] for i, _ in unread], [outputs[i][k] for i, k in unread],
                                     cfg.min_score, cfg.max_score)
        for (i, k), score in zip(unread, completed):
            scores[i][k] = score
    unread_at = set(unread) if cfg.complete_score else set()
    records = []
    for i, texts in enumerate(outputs):
        # judgment_finished: false marks a judgment cut at judge.max_new_tokens.
        record = {"judgments": texts, "judgment_finished": [finished(t) for t in texts], "scores": scores[i],
                  **summarise(scores[i])}
        if continued is not None:  # how many times each judgment was continued
            record["judgment_continued"] = continued[i]
        if cfg.complete_score:  # which scores were completed (not read from the judgment's text)
            record["score_completed"] = [(i, k) in unread_at for k in range(len(texts))]
        records.append(record)
    return records


def pairwise_verdicts(engine: Engine, template: str, triples: list[tuple[str, str, str]], *, max_new_tokens: int,
                      seed: int, desc: str = "pairwise judge") -> list[tuple[str | None, str | None]]:
    """For each (prompt, x, y), the greedy verdicts with x shown first and with y shown first."""
    messages = []
    for prompt, x, y in triples:
        messages.append(fill(template, prompt=prompt, response_a=x, response_b=y))
        messages.append(fill(template, prompt=prompt, response_a=y, response_b=x))
    texts = [o[0] for o in engine.generate(messages, Sampling(0.0, 1.0, max_new_tokens), seed=seed, desc=desc)]
    winners = [parse_winner(t) for t in texts]
    return list(zip(winners[0::2], winners[1::2]))


def seed_judgment_pairs(engine: Engine, template: str, rows: list[dict], cfg, *, seed: int,
                        desc: str = "judge seed EFT rows") -> tuple[list[dict], dict]:
    """Judgment pairs from seed judging (EFT) rows, each ``{"prompt", "response", "judgment", "score"}``.

    The model judges every row's (prompt, response) once with the settings of ``cfg`` (a
    ``JudgeConfig``); where its score is not the row's (a judgment without a readable score
    included), the pair (the row's judgment chosen, its own rejected) on the filled judge prompt is
    returned, with ``eft_pairs/*`` counts: rows judged, the share where the scores agree, pairs.
    """
    records = judge(engine, template, [(r["prompt"], r["response"]) for r in rows], cfg, repeats=1, seed=seed,
                    desc=desc)
    pairs = [{"prompt": judge_message(template, row["prompt"], row["response"]), "chosen": row["judgment"],
              "rejected": record["judgments"][0], "task_prompt": row["prompt"], "response": row["response"],
              "chosen_score": row["score"], "rejected_score": record["scores"][0]}
             for row, record in zip(rows, records) if record["scores"][0] != row["score"]]
    return pairs, {
        "eft_pairs/judged": len(rows),
        "eft_pairs/agreement": (len(rows) - len(pairs)) / len(rows) if rows else None,
        "eft_pairs/unread": sum(p["rejected_score"] is None for p in pairs),
        "eft_pairs/pairs": len(pairs),
    }
