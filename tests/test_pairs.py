"""Pair building on hand-computed cases."""

import math

import pytest

from selfreward.pairs import build_pairs, overrule_threshold


def group(prompt, responses, scores):
    return {"prompt": prompt, "responses": responses, "scores": scores}


def test_best_vs_worst_with_failed_parses_and_ties():
    groups = [
        # best 4.5 (b), worst 1.0 (d); c has no score and must not become the rejected one.
        group("p1", ["a", "b", "c", "d"], [3.0, 4.5, None, 1.0]),
        # all equal: a tie, dropped.
        group("p2", ["a", "b", "c"], [2.0, 2.0, 2.0]),
        # one scored candidate only: dropped.
        group("p3", ["a", "b"], [None, 5.0]),
        # equal best scores: the first one is chosen; equal worst: the first one is rejected.
        group("p4", ["a", "b", "c", "d"], [5.0, 5.0, 0.0, 0.0]),
    ]
    pairs, stats = build_pairs(groups)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("p1", "b", "d"), ("p4", "a", "c")]
    assert pairs[0]["margin"] == 3.5 and pairs[0]["chosen_score"] == 4.5 and pairs[0]["rejected_score"] == 1.0
    assert (stats.prompts, stats.pairs, stats.ties, stats.too_few_scored) == (4, 2, 1, 1)
    # Tie rate over prompts with 2+ scored candidates: 1 tie / 3 eligible.
    assert stats.tie_rate == pytest.approx(1 / 3)


def test_min_margin_and_identical_texts():
    groups = [group("p", ["x", "y"], [3.0, 2.5]), group("q", ["same", "same "], [5.0, 1.0])]
    pairs, stats = build_pairs(groups, min_margin=0.5)
    # margin 0.5 is not above 0.5: a tie; identical texts (after stripping) are one answer.
    assert pairs == [] and stats.ties == 1 and stats.too_few_scored == 1


def test_identical_texts_pool_their_scores():
    # "a" was sampled twice and judged 5 and 1 (noise): one answer scoring 3. The pair is then
    # b (4) over a (3), never a over itself.
    pairs, _ = build_pairs([group("p", ["a", "b", "a"], [5.0, 4.0, 1.0])])
    assert [(p["chosen"], p["rejected"], p["chosen_score"], p["rejected_score"]) for p in pairs] == [("b", "a", 4.0, 3.0)]


def test_a_failed_parse_is_never_rejected():
    # The unscored candidate "broken" would be the worst if a failure counted as 0.
    pairs, _ = build_pairs([group("p", ["broken", "ok", "great"], [None, 2.0, 4.0])])
    assert pairs[0]["rejected"] == "ok"


def test_random_pairs_are_seeded_and_ignore_scores():
    groups = [group(f"p{i}", ["a", "b", "c", "d"], [4.0, 3.0, 2.0, 1.0]) for i in range(200)]
    first, _ = build_pairs(groups, method="random", seed=1)
    again, _ = build_pairs(groups, method="random", seed=1)
    assert first == again
    # A random pair puts the better answer first about half the time.
    better_first = sum(p["chosen_score"] > p["rejected_score"] for p in first) / len(first)
    assert 0.35 < better_first < 0.65


def test_no_eligible_prompts_gives_nan_tie_rate():
    _, stats = build_pairs([group("p", ["a"], [None])])
    assert math.isnan(stats.tie_rate)


def test_unknown_method():
    with pytest.raises(ValueError, match="pairs.method"):
        build_pairs([], method="max_random")


def test_rft_examples_keep_each_top_scored_answer_once():
    from selfreward.loop import rft_examples

    judged = [
        {"prompt": "p", "response": "a", "score": 5.0},
        {"prompt": "p", "response": "a ", "score": 5.0},  # the same answer with a trailing space
        {"prompt": "p", "response": "b", "score": 4.0},  # below the top score
        {"prompt": "p", "response": "c", "score": None},  # no judgment parsed
        {"prompt": "q", "response": "a", "score": 5.0},  # the same text for another prompt counts
    ]
    assert rft_examples(judged, 5) == [{"prompt": "p", "completion": "a "}, {"prompt": "q", "completion": "a"}]


def test_truncated_candidates_are_left_out_unless_allowed():
    # "long..." scored highest but was cut at max_new_tokens; "cut" lowest, also cut.
    g = {**group("p", ["ok", "long...", "meh", "cut"], [3.0, 5.0, 2.0, 0.0]), "finished": [True, False, True, False]}
    pairs, stats = build_pairs([g])
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("ok", "meh")]
    assert stats.truncated == 2 and stats.as_dict()["truncated"] == 2
    pairs, stats = build_pairs([g], allow_truncated=True)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("long...", "cut")] and stats.truncated == 0
    # Only one finished candidate left: no pair, counted as too few scored.
    g = {**group("q", ["a", "b"], [4.0, 1.0]), "finished": [True, False]}
    pairs, stats = build_pairs([g])
    assert pairs == [] and (stats.too_few_scored, stats.truncated) == (1, 1)


def test_all_pairs_above_the_margin():
    groups = [
        # Distinct answers a=4, b=2, c=1 (a's copy averages in: (4 + 4) / 2); d unscored.
        group("p1", ["a", "b", "c", "a", "d"], [4.0, 2.0, 1.0, 4.0, None]),
        group("p2", ["a", "b"], [3.0, 3.0]),  # a tie: no pair
    ]
    pairs, stats = build_pairs(groups, method="all_pairs")
    assert [(p["chosen"], p["rejected"], p["margin"]) for p in pairs] == [("a", "b", 2.0), ("a", "c", 3.0),
                                                                          ("b", "c", 1.0)]
    assert (stats.prompts, stats.pairs, stats.ties, stats.too_few_scored) == (2, 3, 1, 0)
    # With a margin of 1 the pair b-c (margin 1, not above) is left out.
    pairs, _ = build_pairs(groups, method="all_pairs", min_margin=1.0)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "b"), ("a", "c")]
    # The lower-scored answer first in the group is still the rejected one.
    pairs, _ = build_pairs([group("p", ["low", "high"], [1.0, 2.0])], method="all_pairs")
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("high", "low")


def test_length_control_by_hand():
    # Scores 5, 4.5, 4, 1, 0 with S_max = 5, S_min = 0.
    responses = ["long best answer", "mid ok", "short", "longest of the poor ones", "bad"]
    g = group("p", responses, [5.0, 4.5, 4.0, 1.0, 0.0])
    # rho = 0: chosen among scores >= 5 (only the first), rejected among <= 0 (only "bad").
    pairs, _ = build_pairs([g], method="length_control", rho=0.0)
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("long best answer", "bad")
    # rho = 0.2: chosen among scores >= 0.8*5 + 0.2*0 = 4 (the shortest of 5, 4.5, 4 is "short"),
    # rejected among <= 0.8*0 + 0.2*5 = 1 (the longest of 1 and 0).
    pairs, _ = build_pairs([g], method="length_control", rho=0.2)
    assert (pairs[0]["chosen"], pairs[0]["rejected"], pairs[0]["margin"]) == ("short", "longest of the poor ones", 3.0)
    # rho = 0.1: the threshold 4.5 leaves "mid ok" (6 characters) as the shortest top answer.
    pairs, _ = build_pairs([g], method="length_control", rho=0.1)
    assert pairs[0]["chosen"] == "mid ok"


def test_length_control_drops_a_pair_whose_margin_is_not_above_min_margin():
    # rho = 1 makes every answer eligible on both sides: the shortest ("a", 2.0) against the
    # longest ("ccc", 3.0) is no preference, so the prompt counts as a tie.
    g = group("p", ["a", "bb", "ccc"], [2.0, 1.0, 3.0])
    pairs, stats = build_pairs([g], method="length_control", rho=1.0)
    assert pairs == [] and stats.ties == 1
    # At rho = 0.5 both thresholds are the midpoint 2.0: chosen = the shortest scored >= 2 ("a",
    # not "ccc"), rejected = the longest scored <= 2 ("bb", 1.0, not "a"): margin 1.
    pairs, _ = build_pairs([g], method="length_control", rho=0.5)
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("a", "bb")


def test_frequent_tie_break_by_hand():
    # Top score 5 shared by "a" (sampled once) and "b" (three copies, mean 5); bottom 1 shared by
    # "d" (once) and "c" (twice), "e" in between. first: a vs d; frequent: b vs c.
    g = group("p", ["a", "d", "b", "c", "b", "e", "c", "b"], [5.0, 1.0, 5.0, 1.0, 5.0, 3.0, 1.0, 5.0])
    (first,), _ = build_pairs([g])
    (frequent,), _ = build_pairs([g], tie_break="frequent")
    assert (first["chosen"], first["rejected"]) == ("a", "d")
    assert (frequent["chosen"], frequent["rejected"]) == ("b", "c")
    # Counts only order ties: a higher mean score still wins over a more frequent answer.
    g = group("q", ["x", "y", "y", "y", "z"], [4.0, 3.5, 3.5, 3.5, 0.0])
    (pair,), _ = build_pairs([g], tie_break="frequent")
    assert (pair["chosen"], pair["rejected"]) == ("x", "z")


def test_unique_best_drops_prompts_whose_top_score_is_shared_by_hand():
    # "a" and "b" both at 5: the judge picked no best answer, the prompt gives no pair. Copies of
    # one answer are one answer: "c" twice at the top with "d" below still gives c vs d.
    shared = group("p", ["a", "d", "b"], [5.0, 1.0, 5.0])
    single = group("q", ["c", "d", "c", "e"], [5.0, 1.0, 5.0, 3.0])
    pairs, stats = build_pairs([shared, single], unique_best=True)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("q", "c", "d")]
    assert (stats.shared_best, stats.ties, stats.pairs) == (1, 0, 1)
    assert stats.as_dict()["shared_best"] == 1
    # Off (the default), the shared top is broken as before: the first sampled answer wins.
    pairs, stats = build_pairs([shared, single])
    assert [p["chosen"] for p in pairs] == ["a", "c"] and stats.shared_best == 0
    # A shared bottom is no reason to drop: the rejected answer is any of the worst.
    (pair,), _ = build_pairs([group("r", ["x", "y", "z"], [4.0, 0.0, 0.0])], unique_best=True)
    assert (pair["chosen"], pair["rejected"]) == ("x", "y")
    with pytest.raises(ValueError, match="unique_best is a best_worst rule"):
        build_pairs([shared], method="all_pairs", unique_best=True)


def test_majority_agrees_keeps_a_pair_only_when_the_chosen_answer_is_the_most_sampled_by_hand():
    # p: the judge prefers "a" (5) but "b" was sampled three times to a's once: no pair.
    # q: "c" is both the top-scored and the most sampled answer: c vs d.
    # r: "x" and "y" sampled twice each, "x" top-scored: a shared majority counts as agreement.
    disagree = group("p", ["a", "b", "b", "b"], [5.0, 2.0, 2.0, 2.0])
    agree = group("q", ["c", "d", "c"], [4.0, 1.0, 4.0])
    level = group("r", ["x", "y", "x", "y", "z"], [5.0, 1.0, 5.0, 1.0, 3.0])
    pairs, stats = build_pairs([disagree, agree, level], majority_agrees=True, tie_break="frequent")
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("q", "c", "d"), ("r", "x", "y")]
    assert (stats.not_majority, stats.ties, stats.pairs) == (1, 0, 2)
    assert stats.as_dict()["not_majority"] == 1
    # The count is of scored copies: an unparsed copy of "b" is no vote.
    (pair,), stats = build_pairs([group("s", ["a", "b", "b"], [5.0, 2.0, None])], majority_agrees=True)
    assert pair["chosen"] == "a" and stats.not_majority == 0
    # Off (the default), the judge's pick stands.
    pairs, stats = build_pairs([disagree])
    assert [p["chosen"] for p in pairs] == ["a"] and stats.not_majority == 0
    with pytest.raises(ValueError, match="majority_agrees is a best_worst rule"):
        build_pairs([disagree], method="random", majority_agrees=True)


def test_overrule_majority_below_pairs_the_judges_pick_against_a_majority_it_scores_low_by_hand():
    # p: the pick "a" (5) against "b", sampled three times and scored 2 (< 3): a vs b, though
    #    "w" (1) is the lowest-scored answer.
    # q: the majority "d" scores 3 (not < 3): dropped as before.
    # r: "x" and "y" are both the most sampled (twice each), scored 2 and 1: the lower one is rejected.
    # s: the pick "e" and the majority "f" both score 2 under tie_break=first: a tie, no pair.
    low = group("p", ["a", "b", "b", "w", "b"], [5.0, 2.0, 2.0, 1.0, 2.0])
    passed = group("q", ["c", "d", "d"], [5.0, 3.0, 3.0])
    shared = group("r", ["x", "y", "x", "y", "z"], [2.0, 1.0, 2.0, 1.0, 4.0])
    level = group("s", ["e", "f", "f"], [2.0, 2.0, 2.0])
    pairs, stats = build_pairs([low, passed, shared, level], majority_agrees=True, overrule_majority_below=3.0)
    assert [(p["prompt"], p["chosen"], p["rejected"], p["margin"]) for p in pairs] == [
        ("p", "a", "b", 3.0), ("r", "z", "y", 3.0)]
    assert (stats.overruled, stats.not_majority, stats.ties, stats.pairs) == (2, 1, 1, 2)
    # Off (0, the default), majority_agrees drops all four.
    pairs, stats = build_pairs([low, passed, shared, level], majority_agrees=True)
    assert pairs == [] and (stats.not_majority, stats.ties, stats.overruled) == (3, 1, 0)
    # An agreeing prompt keeps its best-vs-worst pair, whatever the threshold.
    (pair,), stats = build_pairs([group("t", ["g", "h", "g"], [2.0, 1.0, 2.0])], majority_agrees=True,
                                 overrule_majority_below=5.0)
    assert (pair["chosen"], pair["rejected"], stats.overruled) == ("g", "h", 0)
    with pytest.raises(ValueError, match="exception to pairs.majority_agrees"):
        build_pairs([low], overrule_majority_below=3.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        build_pairs([low], majority_agrees=True, overrule_majority_below=-1.0)


def test_overrule_threshold_applies_up_to_its_last_iteration():
    assert [overrule_threshold(3.0, 1, t) for t in (1, 2, 3)] == [3.0, 0.0, 0.0]
    assert [overrule_threshold(3.0, 2, t) for t in (1, 2, 3)] == [3.0, 3.0, 0.0]
    assert [overrule_threshold(3.0, 0, t) for t in (1, 2, 3)] == [3.0, 3.0, 3.0]
    assert overrule_threshold(0.0, 0, 1) == 0.0


def test_min_vote_share_keeps_a_pair_only_when_enough_samples_are_the_chosen_answer_by_hand():
    # p: "a" is the pick and 2 of the 5 scored samples (0.4): kept at 0.4, dropped at 0.5.
    # q: "c" is 3 of 4 scored samples (0.75): kept at 0.5; the unscored copy of "d" is no sample.
    few = group("p", ["a", "b", "a", "e", "f"], [5.0, 1.0, 5.0, 2.0, 3.0])
    many = group("q", ["c", "d", "c", "c", "d"], [4.0, 1.0, 4.0, 4.0, None])
    pairs, stats = build_pairs([few, many], min_vote_share=0.5)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [("q", "c", "d")]
    assert (stats.low_vote_share, stats.pairs) == (1, 1) and stats.as_dict()["low_vote_share"] == 1
    pairs, stats = build_pairs([few, many], min_vote_share=0.4)
    assert [p["chosen"] for p in pairs] == ["a", "c"] and stats.low_vote_share == 0
    # With majority_agrees a prompt it drops is counted there, not twice.
    pairs, stats = build_pairs([group("r", ["x", "y", "y"], [5.0, 1.0, 1.0])], majority_agrees=True,
                               min_vote_share=0.5)
    assert pairs == [] and (stats.not_majority, stats.low_vote_share) == (1, 0)
    with pytest.raises(ValueError, match="min_vote_share is a best_worst rule"):
        build_pairs([few], method="all_pairs", min_vote_share=0.5)
    with pytest.raises(ValueError, match=r"min_vote_share must be in \[0, 1\], got 1.5"):
        build_pairs([few], min_vote_share=1.5)


def test_frequent_tie_break_is_a_best_worst_rule():
    with pytest.raises(ValueError, match="tie_break"):
        build_pairs([group("p", ["a", "b"], [1.0, 0.0])], tie_break="longest")
    with pytest.raises(ValueError, match="best_worst"):
        build_pairs([group("p", ["a", "b"], [1.0, 0.0])], method="all_pairs", tie_break="frequent")


def test_min_score_leaves_low_scored_answers_out_of_the_pairs_by_hand():
    # p: "junk" (0) would be rejected; with min_score=1 the worst kept answer, "b" (2), is.
    # q: only "c" reaches 1, so the prompt has too few scored answers left.
    # r: "x" is sampled most but scores 0.5: left out, it no longer makes "y" a non-majority pick.
    p = group("p", ["a", "junk", "b", "a"], [5.0, 0.0, 2.0, 5.0])
    q = group("q", ["c", "d", "e"], [4.0, 0.0, 0.5])
    r = group("r", ["x", "y", "x", "z"], [0.5, 5.0, 0.5, 1.0])
    pairs, stats = build_pairs([p, q, r])
    assert [(x["chosen"], x["rejected"]) for x in pairs] == [("a", "junk"), ("c", "d"), ("y", "x")]
    assert stats.below_min_score == 0
    pairs, stats = build_pairs([p, q, r], min_score=1.0, majority_agrees=True)
    assert [(x["prompt"], x["chosen"], x["rejected"]) for x in pairs] == [("p", "a", "b"), ("r", "y", "z")]
    assert (stats.below_min_score, stats.too_few_scored, stats.not_majority) == (4, 1, 0)
    assert stats.as_dict()["below_min_score"] == 4
