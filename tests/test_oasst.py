"""Open Assistant seed data, checked by hand on a small fixture in the oasst1 schema.

tests/fixtures/oasst/train.jsonl (10 trees):

  tree  lang  replies to the root prompt                    IFT  ranked group
  t01   en    3 ranked, listed rank 2, 0, 1; a second turn  yes  ranks [0, 1, 2]
              under the rank-0 reply (a prompter message
              with 2 ranked replies of its own)
  t02   en    2 ranked (rank 1 unreviewed: review_result    yes  [0, 1]
              null, so kept)
  t03   en    1 ranked                                      yes  no: one reply
  t04   en    1 ranked, 1 with rank null                    yes  no: one ranked reply
  t05   en    1 with rank null                              no   no
  t06   de    2 ranked                                      no   no: not English
  t07   en    3 ranked, the rank-1 reply deleted            yes  [0, 2]
  t08   en    root deleted (2 ranked replies)               no   no
  t09   en    root failed review (2 ranked replies)         no   no
  t10   en    2 ranked, listed rank 1, 0                    yes  [0, 1]

So 7 English first-turn prompts (t01-t05, t07, t10), 6 IFT examples (all of those but t05)
and 4 ranked groups (t01, t02, t07, t10, in that order).

tests/fixtures/oasst/validation.jsonl (4 trees): v01 en (2 ranked), v02 en (1 ranked), v03 fr,
v04 en with the same text as t02. Held-out prompt candidates: v01 and v02 (v03 is French, v04
is a train prompt).
"""

import gzip
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest

from selfreward.data import load_data
from selfreward.data.oasst import (
    build_trees,
    eft_from_judgments,
    first_turn_prompts,
    ift_examples,
    load_messages,
    main,
    ranked_groups,
    split_groups,
    write_seed_files,
)
from selfreward.rundir import SelfRewardError, read_jsonl
from conftest import compose_config

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "oasst"

EN_PROMPTS = [
    "What is the capital of France?",  # t01
    "How do I boil an egg?",  # t02
    "Write a haiku about autumn.",  # t03
    "Explain recursion in one sentence.",  # t04
    "Give me one tip for learning the guitar.",  # t05
    "Name three primary colours.",  # t07
    "Suggest a name for a pet goldfish.",  # t10
]
IFT_PROMPTS = [p for p in EN_PROMPTS if p != "Give me one tip for learning the guitar."]
GROUP_PROMPTS = [EN_PROMPTS[0], EN_PROMPTS[1], EN_PROMPTS[5], EN_PROMPTS[6]]
VALIDATION_PROMPTS = {"How many legs does a spider have?", "What does HTTP stand for?"}


@pytest.fixture(scope="module")
def train():
    return load_messages(str(FIXTURE), "train")


@pytest.fixture(scope="module")
def groups(train):
    return ranked_groups(train)


def _score(score):
    return f"The answer is relevant and addresses the question.\nScore: {score}"


def _message(mid, parent, role, text, rank=None, **fields):
    return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "lang": "en",
            "rank": rank, **fields}


# --- Loading and trees -----------------------------------------------------------------------


def test_load_messages_reads_folders_files_and_gzip(tmp_path, train):
    assert len(train) == 33
    assert len(load_messages(str(FIXTURE), "validation")) == 9
    assert load_messages(str(FIXTURE / "train.jsonl"), "ignored for a file") == train
    with gzip.open(tmp_path / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write((FIXTURE / "train.jsonl").read_text(encoding="utf-8"))
    assert load_messages(str(tmp_path)) == train
    assert load_messages(str(tmp_path / "train.jsonl.gz")) == train


def test_load_messages_local_errors(tmp_path):
    with pytest.raises(SelfRewardError, match="has no validation.jsonl or validation.jsonl.gz"):
        load_messages(str(tmp_path), "validation")
    (tmp_path / "train.jsonl").write_text('{"message_id": "a"}\n{"message_id": \n')
    with pytest.raises(SelfRewardError, match=r"train.jsonl:2: not valid JSON"):
        load_messages(str(tmp_path))
    (tmp_path / "train.parquet").write_text("")
    with pytest.raises(SelfRewardError, match="expected a .jsonl or .jsonl.gz file"):
        load_messages(str(tmp_path / "train.parquet"))


def test_load_messages_hub_failure_is_one_clear_error(monkeypatch):
    calls = []

    def unreachable(path, split):
        calls.append((path, split))
        raise ConnectionError("Couldn't reach 'OpenAssistant/oasst1' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(SelfRewardError, match="could not be loaded") as caught:
        load_messages("OpenAssistant/oasst1", "validation")
    assert calls == [("OpenAssistant/oasst1", "validation")]
    message = str(caught.value)
    assert "\n" not in message and "local copy" in message and "validation.jsonl" in message


def test_hub_rows_with_float_ranks(monkeypatch, train):
    # The hub's rank column is float64 (null where unranked); a NaN must read as unranked too.
    rows = [{**m, "rank": None if m["rank"] is None else float(m["rank"])} for m in train]
    unranked = next(i for i, m in enumerate(rows) if m["message_id"] == "t04-a1")
    rows[unranked]["rank"] = float("nan")
    monkeypatch.setattr(datasets, "load_dataset", lambda path, split: datasets.Dataset.from_list(rows))
    hub = load_messages("OpenAssistant/oasst1")
    assert ift_examples(hub) == ift_examples(train)
    assert ranked_groups(hub) == ranked_groups(train)
    assert all(type(r) is int for g in ranked_groups(hub) for r in g["ranks"])


def test_build_trees_skips_deleted_and_failed_review(train):
    trees = build_trees(train)
    # 10 roots less t08 (deleted) and t09 (failed review).
    assert [r["message_tree_id"] for r in trees.roots] == [f"t{i:02d}-p" for i in (1, 2, 3, 4, 5, 6, 7, 10)]
    t07 = next(r for r in trees.roots if r["message_tree_id"] == "t07-p")
    assert [m["message_id"] for m in trees.replies(t07)] == ["t07-a0", "t07-a2"]
    t02 = next(r for r in trees.roots if r["message_tree_id"] == "t02-p")
    assert len(trees.replies(t02)) == 2  # review_result null is kept
    with pytest.raises(SelfRewardError, match="message 2 has no 'parent_id'"):
        build_trees([train[0], {"message_id": "x", "role": "prompter", "text": "hi"}])


# --- IFT and ranked groups -------------------------------------------------------------------


def test_ift_examples_are_english_first_turns_with_their_rank_0_reply(train):
    ift = ift_examples(train)
    assert [r["prompt"] for r in ift] == IFT_PROMPTS
    for row in ift:
        root = next(m for m in train if m["parent_id"] is None and m["text"] == row["prompt"])
        best = [m for m in train if m["parent_id"] == root["message_id"] and m["rank"] == 0]
        assert [(m["role"], m["text"]) for m in best] == [("assistant", row["response"])]


def test_ranked_groups_sorted_best_first(train, groups):
    assert [g["prompt"] for g in groups] == GROUP_PROMPTS
    assert [g["ranks"] for g in groups] == [[0, 1, 2], [0, 1], [0, 2], [0, 1]]
    assert groups[0]["responses"] == [
        "The capital of France is Paris, which is also its largest city.",
        "Paris.",
        "I think it might be Lyon, but I am not sure.",
    ]
    assert groups[3]["responses"][0].startswith("How about Bubbles?")
    # min_responses=3 leaves t01 only (t07 lost a reply to deletion).
    assert [g["prompt"] for g in ranked_groups(train, min_responses=3)] == [GROUP_PROMPTS[0]]
    assert [g["prompt"] for g in ranked_groups(train, min_responses=1)] == IFT_PROMPTS


def test_non_english_and_later_turns_are_excluded(train, groups):
    assert first_turn_prompts(train) == EN_PROMPTS
    prompts = {r["prompt"] for r in ift_examples(train)} | {g["prompt"] for g in groups}
    assert "And what is the capital of Germany?" not in prompts  # t01's second turn
    assert not any("Tokio" in p or "cats" in p or "12 times 12" in p for p in prompts)
    # The German tree is the only one for lang="de".
    assert [r["prompt"] for r in ift_examples(train, lang="de")] == [
        "Wie spät ist es gerade in Tokio, wenn es in Berlin Mittag ist?"
    ]
    assert [g["ranks"] for g in ranked_groups(train, lang="de")] == [[0, 1]]


def test_rank_0_reply_removed_gives_the_next_best():
    messages = [
        _message("p", None, "prompter", "Why is the sea salty?"),
        _message("a0", "p", "assistant", "spam", rank=0, deleted=True),
        _message("a2", "p", "assistant", "Because fish cry.", rank=2),
        _message("a1", "p", "assistant", "Rivers carry dissolved minerals into it.", rank=1),
    ]
    assert ift_examples(messages) == [{"prompt": "Why is the sea salty?",
                                       "response": "Rivers carry dissolved minerals into it."}]
    assert ranked_groups(messages)[0]["ranks"] == [1, 2]


# --- Held-out split --------------------------------------------------------------------------


def test_split_groups_is_deterministic_and_disjoint(groups):
    train_groups, eval_groups = split_groups(groups, 1, seed=0)
    assert (train_groups, eval_groups) == split_groups(groups, 1, seed=0)
    assert len(train_groups) == 3 and len(eval_groups) == 1
    assert {g["prompt"] for g in train_groups}.isdisjoint(g["prompt"] for g in eval_groups)
    assert sorted(g["prompt"] for g in train_groups + eval_groups) == sorted(GROUP_PROMPTS)
    # Input order is kept on both sides.
    assert [g for g in groups if g in train_groups] == train_groups
    # Different seeds hold out different prompts (some of the 4).
    assert len({split_groups(groups, 1, seed=s)[1][0]["prompt"] for s in range(10)}) > 1
    assert split_groups(groups, 0, seed=0) == (groups, [])


def test_split_groups_keeps_a_repeated_prompt_on_one_side():
    rows = [{"prompt": "a", "i": 0}, {"prompt": "b", "i": 1}, {"prompt": "a", "i": 2}, {"prompt": "c", "i": 3}]
    for seed in range(10):
        train_rows, eval_rows = split_groups(rows, 1, seed)
        assert len({r["prompt"] for r in eval_rows}) == 1
        assert {r["prompt"] for r in train_rows}.isdisjoint(r["prompt"] for r in eval_rows)
        assert len(train_rows) + len(eval_rows) == 4
    with pytest.raises(SelfRewardError, match="cannot hold out 4 prompts: there are 3 distinct prompts"):
        split_groups(rows, 4, 0)


# --- EFT filter ------------------------------------------------------------------------------


def test_eft_filter_on_the_fixture_groups(groups):
    judgments = [
        [_score(5), _score(3), _score(1)],  # t01: 5 > 3 > 1 agrees with ranks 0, 1, 2: kept
        [_score(2), _score(4)],  # t02: the rank-0 reply scored lower: dropped
        [_score(4), _score(4)],  # t07: a tie for ranks 0 and 2: dropped
        [_score(4), "Fine answer, I would give it four points."],  # t10: one does not parse: dropped
    ]
    rows = eft_from_judgments(groups, judgments, min_score=0, max_score=5, keep_most_common=10, seed=0)
    assert [(r["prompt"], r["score"]) for r in rows] == [(GROUP_PROMPTS[0], 5), (GROUP_PROMPTS[0], 3),
                                                          (GROUP_PROMPTS[0], 1)]
    assert [r["response"] for r in rows] == groups[0]["responses"]
    assert [r["judgment"] for r in rows] == judgments[0]


@pytest.mark.parametrize(
    "ranks, judgments, kept",
    [
        ([0, 2], [_score(3), _score(2)], True),  # a gap in the ranks changes nothing
        ([0, 1, 2], [_score(5), _score(4), _score(4)], False),  # ranks 1 and 2 tie
        ([0, 1, 2], [_score(5), _score(1), _score(2)], False),  # ranks 1 and 2 swapped
        ([0, 0, 1], [_score(4), _score(4), _score(2)], True),  # equal ranks are not compared
        ([0, 0, 1], [_score(3), _score(4), _score(2)], True),
        ([0, 0, 1], [_score(4), _score(2), _score(2)], False),  # rank 0 must beat rank 1: 2 > 2 fails
        ([0, 1], [_score(5), _score(6)], False),  # 6 is out of range: does not parse
        ([0, 1], [_score(5), "<response>Score: 5</response>\nScore: 1"], True),  # quoted score ignored
        ([0, 1], [_score(5), "<response>Score: 3</response>"], False),  # only a quoted score
    ],
)
def test_eft_agreement_rule(ranks, judgments, kept):
    group = {"prompt": "q", "responses": [f"r{i}" for i in range(len(ranks))], "ranks": ranks}
    rows = eft_from_judgments([group], [judgments], min_score=0, max_score=5, keep_most_common=10, seed=0)
    assert len(rows) == (len(ranks) if kept else 0)


def _scored_groups(score_pairs):
    groups = [{"prompt": f"q{i}", "responses": [f"q{i} best", f"q{i} second"], "ranks": [0, 1]}
              for i in range(len(score_pairs))]
    return groups, [[_score(a), _score(b)] for a, b in score_pairs]


# 6 groups scored (5, 4), 4 scored (4, 3), 2 scored (4, 2): all agree with the ranking.
# Score counts: 4 -> 6 + 4 + 2 = 12 (most common), 5 -> 6 (second), 3 -> 4, 2 -> 2; 24 rows.
DOWNSAMPLE_PAIRS = [(5, 4)] * 6 + [(4, 3)] * 4 + [(4, 2)] * 2


@pytest.mark.parametrize(
    "keep_most_common, fours",
    [(1.5, 9), (1.0, 6), (2.0, 12), (3.0, 12), (0.5, 3), (0.0, 0)],  # fours = min(12, floor(k * 6))
)
def test_eft_downsamples_the_most_common_score(keep_most_common, fours):
    groups, judgments = _scored_groups(DOWNSAMPLE_PAIRS)
    everything = eft_from_judgments(groups, judgments, min_score=0, max_score=5, keep_most_common=100, seed=0)
    rows = eft_from_judgments(groups, judgments, min_score=0, max_score=5,
                              keep_most_common=keep_most_common, seed=0)
    assert Counter(r["score"] for r in rows) == Counter({4: fours, 5: 6, 3: 4, 2: 2} if fours else {5: 6, 3: 4, 2: 2})
    assert len(rows) == 12 + fours
    assert [r for r in everything if r in rows] == rows  # a subsequence: input order kept
    again = eft_from_judgments(groups, judgments, min_score=0, max_score=5,
                               keep_most_common=keep_most_common, seed=0)
    assert again == rows


def test_eft_downsampling_depends_on_the_seed_only():
    groups, judgments = _scored_groups(DOWNSAMPLE_PAIRS)
    kept = [eft_from_judgments(groups, judgments, min_score=0, max_score=5, keep_most_common=1.0, seed=s)
            for s in range(3)]
    assert all(len(rows) == 18 for rows in kept)
    assert len({tuple(r["prompt"] for r in rows if r["score"] == 4) for rows in kept}) > 1


def test_eft_downsampling_ties_and_a_single_score():
    # Counts 4 -> 2, 3 -> 2: a tie for most common goes to the higher score; cap floor(0.5 * 2) = 1.
    groups, judgments = _scored_groups([(4, 3), (4, 3)])
    rows = eft_from_judgments(groups, judgments, min_score=0, max_score=5, keep_most_common=0.5, seed=0)
    assert Counter(r["score"] for r in rows) == Counter({4: 1, 3: 2})
    # One distinct score (equal human ranks, equal scores): nothing to down-sample against.
    group = {"prompt": "q", "responses": ["a", "b"], "ranks": [0, 0]}
    rows = eft_from_judgments([group], [[_score(4), _score(4)]], min_score=0, max_score=5,
                              keep_most_common=0, seed=0)
    assert len(rows) == 2


def test_eft_input_checks(groups):
    with pytest.raises(ValueError, match="3 lists of judgments for 4 groups"):
        eft_from_judgments(groups, [[]] * 3, min_score=0, max_score=5, keep_most_common=1, seed=0)
    with pytest.raises(ValueError, match="group 2: 1 judgments for 2 responses"):
        eft_from_judgments(groups, [[_score(5)] * 3, [_score(5)], [], []], min_score=0, max_score=5,
                           keep_most_common=1, seed=0)
    with pytest.raises(ValueError, match="keep_most_common must be non-negative"):
        eft_from_judgments(groups, [[]] * 4, min_score=0, max_score=5, keep_most_common=-1, seed=0)


# --- Files and the command line --------------------------------------------------------------


def test_write_seed_files_are_a_valid_data_folder(tmp_path, train, groups):
    eft_groups, judge_eval = split_groups(groups, 1, seed=0)
    judgments = [[_score(5 - rank) for rank in g["ranks"]] for g in eft_groups]
    eft = eft_from_judgments(eft_groups, judgments, min_score=0, max_score=5, keep_most_common=1.5, seed=0)
    counts = write_seed_files(tmp_path, ift_examples(train), eft, sorted(VALIDATION_PROMPTS), judge_eval)
    assert counts == {"ift": 6, "eft": len(eft), "eval_prompts": 2, "judge_eval": 1}
    data = load_data(tmp_path, compose_config([]))
    assert (len(data.ift), len(data.eft), len(data.eval_prompts), len(data.judge_eval)) == (6, len(eft), 2, 1)
    assert data.eval_prompts == [{"prompt": p} for p in sorted(VALIDATION_PROMPTS)]
    assert set(data.judge_eval[0]) == {"prompt", "responses", "ranks"}
    assert data.seed_prompts == IFT_PROMPTS


def _read_out(folder):
    return {name: read_jsonl(folder / f"{name}.jsonl") for name in ("ift", "eval_prompts", "judge_eval", "eft_groups")}


def test_cli_with_a_validation_split(tmp_path, capsys):
    main(["--source", str(FIXTURE), "--out", str(tmp_path), "--n-eval", "5", "--n-judge-eval", "1"])
    out = _read_out(tmp_path)
    # Validation offers 2 prompts (v01, v02), fewer than 5: both. 1 of the 4 groups is held out
    # for judge_eval, 3 stay for EFT; IFT is 6 less that held-out prompt.
    assert {r["prompt"] for r in out["eval_prompts"]} == VALIDATION_PROMPTS
    assert [len(out[name]) for name in ("ift", "eval_prompts", "judge_eval", "eft_groups")] == [5, 2, 1, 3]
    held = out["judge_eval"][0]["prompt"]
    assert held in GROUP_PROMPTS and held not in {r["prompt"] for r in out["ift"]}
    assert sorted([held] + [g["prompt"] for g in out["eft_groups"]]) == sorted(GROUP_PROMPTS)
    assert all(set(g) == {"prompt", "responses", "ranks"} for g in out["judge_eval"] + out["eft_groups"])
    assert "ift.jsonl 5, eval_prompts.jsonl 2, judge_eval.jsonl 1, eft_groups.jsonl 3" in capsys.readouterr().out

    main(["--source", str(FIXTURE), "--out", str(tmp_path / "one"), "--n-eval", "1", "--n-judge-eval", "2"])
    out = _read_out(tmp_path / "one")
    assert [len(out[name]) for name in ("ift", "eval_prompts", "judge_eval", "eft_groups")] == [4, 1, 2, 2]


def test_cli_with_one_split_holds_out_train_prompts(tmp_path):
    # A single file: eval prompts are 2 of the 7 English train first turns, left out of everything.
    main(["--source", str(FIXTURE / "train.jsonl"), "--out", str(tmp_path), "--n-eval", "2", "--n-judge-eval", "1"])
    out = _read_out(tmp_path)
    evals = {r["prompt"] for r in out["eval_prompts"]}
    assert len(evals) == 2 and evals <= set(EN_PROMPTS)
    held = evals | {g["prompt"] for g in out["judge_eval"]}
    assert len(out["judge_eval"]) == 1 and not evals & {g["prompt"] for g in out["judge_eval"]}
    assert [r["prompt"] for r in out["ift"]] == [p for p in IFT_PROMPTS if p not in held]
    assert [g["prompt"] for g in out["eft_groups"]] == [p for p in GROUP_PROMPTS if p not in held]
    # The same with a folder holding train.jsonl only.
    shutil.copy(FIXTURE / "train.jsonl", tmp_path / "train.jsonl")
    main(["--source", str(tmp_path), "--out", str(tmp_path / "again"), "--n-eval", "2", "--n-judge-eval", "1"])
    assert _read_out(tmp_path / "again") == out


def test_cli_through_the_hub_loader(tmp_path, monkeypatch):
    def from_fixture(path, split):
        assert path == "OpenAssistant/oasst1"
        return datasets.Dataset.from_list(read_jsonl(FIXTURE / f"{split}.jsonl"))

    monkeypatch.setattr(datasets, "load_dataset", from_fixture)
    main(["--out", str(tmp_path / "hub"), "--n-eval", "5", "--n-judge-eval", "1"])
    main(["--source", str(FIXTURE), "--out", str(tmp_path / "local"), "--n-eval", "5", "--n-judge-eval", "1"])
    assert _read_out(tmp_path / "hub") == _read_out(tmp_path / "local")


def test_cli_errors_write_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--source", str(FIXTURE), "--out", str(tmp_path / "out"), "--n-judge-eval", "541"])
    assert caught.value.code == 1
    assert "selfreward.data.oasst: error: cannot hold out 541 prompts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--source", str(FIXTURE), "--out", str(tmp_path / "out"), "--lang", "xx",
              "--n-judge-eval", "0"])
    assert "no records for" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
