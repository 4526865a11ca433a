import math
import warnings

import numpy as np
import pytest
from scipy import stats

from selfreward.metrics import (
    JudgeGroup,
    _average_ranks,
    _kendall_tau_b,
    _spearman_single,
    exact_match,
    five_best,
    judge_metrics,
    kendall_tau,
    length_bias,
    pairwise_accuracy,
    pairwise_accuracy_se,
    spearman,
    win_rate,
)

NAN = float("nan")

# Two groups used by the pairwise and summary tests.
# A: gold [3, 2, 1], pred [5, 3, 4]
#    (0,1) gold >, pred 5>3 agree; (0,2) gold >, pred 5>4 agree; (1,2) gold >, pred 3<4 disagree
# B: gold [2, 2, 1], pred [4, None, 4]
#    (0,1) gold tie: left out; (0,2) gold >, pred 4=4 tie: disagree; (1,2) None: disagree
# Accuracy = (2 + 0) / (3 + 2) = 0.4
GROUP_A = JudgeGroup(gold=[3, 2, 1], pred=[5, 3, 4])
GROUP_B = JudgeGroup(gold=[2, 2, 1], pred=[4, None, 4])


# --- pairwise accuracy ---------------------------------------------------------------------


def test_pairwise_accuracy_by_hand():
    assert pairwise_accuracy([GROUP_A, GROUP_B]) == pytest.approx(0.4)
    assert pairwise_accuracy([GROUP_A]) == pytest.approx(2 / 3)
    assert pairwise_accuracy([GROUP_B]) == 0.0


def test_pairwise_accuracy_accepts_mappings():
    groups = [{"gold": [3, 2, 1], "pred": [5, 3, 4]}, {"gold": [2, 2, 1], "pred": [4, None, 4]}]
    assert pairwise_accuracy(groups) == pytest.approx(0.4)


def test_pairwise_accuracy_tie_and_opposite_are_disagreements():
    assert pairwise_accuracy([JudgeGroup(gold=[2, 1], pred=[3, 3])]) == 0.0
    assert pairwise_accuracy([JudgeGroup(gold=[2, 1], pred=[1, 3])]) == 0.0
    assert pairwise_accuracy([JudgeGroup(gold=[2, 1], pred=[3, 1])]) == 1.0


def test_pairwise_accuracy_unparsed_judge_is_not_accurate():
    assert pairwise_accuracy([JudgeGroup(gold=[3, 2, 1], pred=[None, None, None])]) == 0.0


def test_pairwise_accuracy_nan_without_gold_ordered_pairs():
    assert math.isnan(pairwise_accuracy([]))
    assert math.isnan(pairwise_accuracy([JudgeGroup(gold=[1], pred=[5])]))
    assert math.isnan(pairwise_accuracy([JudgeGroup(gold=[2, 2], pred=[5, 1])]))


def test_mismatched_group_raises():
    with pytest.raises(ValueError, match="2 gold values but 3 predictions"):
        pairwise_accuracy([JudgeGroup(gold=[1, 2], pred=[1, 2, 3])])


# --- five-best -----------------------------------------------------------------------------


def test_five_best_by_hand():
    groups = [
        JudgeGroup(gold=[-1, -2, -3], pred=[5, 4, 5]),  # best is 0, scored 5: hit
        JudgeGroup(gold=[-2, -1, -3], pred=[5, 4, 3]),  # best is 1, scored 4: miss
        JudgeGroup(gold=[1, 1, 0], pred=[5, 5, 5]),  # best tied: left out
        JudgeGroup(gold=[0, 1], pred=[5, None]),  # best is 1, unparsed: miss
    ]
    # 1 hit out of 3 counted groups
    assert five_best(groups) == pytest.approx(1 / 3)


def test_five_best_top_score():
    groups = [JudgeGroup(gold=[0, 1], pred=[3, 10])]
    assert five_best(groups) == 0.0
    assert five_best(groups, top=10) == 1.0


def test_five_best_nan_without_unique_best():
    assert math.isnan(five_best([]))
    assert math.isnan(five_best([JudgeGroup(gold=[2, 2, 1], pred=[5, 5, 1])]))


# --- exact match ---------------------------------------------------------------------------


def test_exact_match_by_hand():
    groups = [
        JudgeGroup(gold=[3, 2, 1], pred=[5, 4, 1]),  # same strict order: match
        JudgeGroup(gold=[2, 2, 1], pred=[4, 4, 3]),  # gold tie matched by a pred tie: match
        JudgeGroup(gold=[2, 2, 1], pred=[5, 4, 3]),  # gold tie, pred ordered: no match
        JudgeGroup(gold=[3, 2, 1], pred=[5, 5, 1]),  # pred tie, gold ordered: no match
        JudgeGroup(gold=[1], pred=[None]),  # unparsed: no match
        JudgeGroup(gold=[1], pred=[3]),  # one response, no pairs: match
    ]
    # 3 matches out of 6 groups
    assert exact_match(groups) == pytest.approx(0.5)


def test_exact_match_none_never_matches():
    assert exact_match([JudgeGroup(gold=[2, 1], pred=[5, None])]) == 0.0


def test_exact_match_nan_without_groups():
    assert math.isnan(exact_match([]))


# --- rank correlations ---------------------------------------------------------------------


def test_average_ranks_share_tied_ranks():
    # sorted: 5 -> 1, 10 -> 2, 20 and 20 -> (3 + 4) / 2 = 3.5
    np.testing.assert_array_equal(_average_ranks(np.array([10, 20, 20, 5])), [2, 3.5, 3.5, 1])


def test_single_group_correlations_by_hand():
    # No ties: d = [0, 1, 1, 0], rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    # Pairs: only (1, 2) discordant, so P = 5, Q = 1, tau = (5 - 1) / 6 = 2/3
    assert _spearman_single([1, 3, 2, 4], [1, 2, 3, 4]) == pytest.approx(0.8)
    assert _kendall_tau_b([1, 3, 2, 4], [1, 2, 3, 4]) == pytest.approx(2 / 3)

    # x = [1, 1, 2] has ranks [1.5, 1.5, 3], centred [-0.5, -0.5, 1]; y centred [-1, 0, 1].
    # rho = 1.5 / sqrt(1.5 * 2) = sqrt(3) / 2
    # Pairs: (0,1) tied in x only, (0,2) and (1,2) concordant: P = 2, Q = 0, T_x = 1, T_y = 0
    # tau_b = 2 / sqrt((2 + 1) * (2 + 0)) = 2 / sqrt(6)
    assert _spearman_single([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert _kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))

    # (0,1) tied on both sides counts nowhere: P = 2, tau_b = 2 / sqrt(2 * 2) = 1
    assert _kendall_tau_b([1, 1, 2], [1, 1, 3]) == pytest.approx(1.0)


@pytest.mark.parametrize("x, y", [([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [4, 4, 4]), ([1], [2])])
def test_single_group_correlations_undefined(x, y):
    assert math.isnan(_spearman_single(x, y))
    assert math.isnan(_kendall_tau_b(x, y))


@pytest.mark.parametrize("seed", range(10))
def test_single_group_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        n = int(rng.integers(2, 30))
        x = rng.integers(0, 5, size=n)  # few distinct values: plenty of ties
        y = rng.integers(0, 4, size=n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on constant input
            expected_rho = stats.spearmanr(x, y).statistic
            expected_tau = stats.kendalltau(x, y, variant="b").statistic
        np.testing.assert_allclose(_spearman_single(x, y), expected_rho, atol=1e-9, equal_nan=True)
        np.testing.assert_allclose(_kendall_tau_b(x, y), expected_tau, atol=1e-9, equal_nan=True)


def test_group_correlations_average_defined_groups():
    groups = [
        JudgeGroup(gold=[1, 2, 3, 4], pred=[1, 3, 2, 4]),  # rho 0.8, tau 2/3 (as above)
        JudgeGroup(gold=[1, 2, 3], pred=[1, 1, 2]),  # rho sqrt(3)/2, tau 2/sqrt(6)
        JudgeGroup(gold=[1, 2, 3], pred=[1, None, 2]),  # None: left out
        JudgeGroup(gold=[1, 2, 3], pred=[4, 4, 4]),  # constant pred: left out
        JudgeGroup(gold=[2, 2], pred=[1, 5]),  # constant gold: left out
        JudgeGroup(gold=[1], pred=[1]),  # one response: left out
    ]
    assert spearman(groups) == pytest.approx((0.8 + math.sqrt(3) / 2) / 2)
    assert kendall_tau(groups) == pytest.approx((2 / 3 + 2 / math.sqrt(6)) / 2)


def test_group_correlations_nan_without_defined_groups():
    groups = [JudgeGroup(gold=[1, 2], pred=[None, 3]), JudgeGroup(gold=[1, 2], pred=[3, 3])]
    assert math.isnan(spearman(groups))
    assert math.isnan(kendall_tau(groups))
    assert math.isnan(spearman([]))
    assert math.isnan(kendall_tau([]))


def test_pairwise_accuracy_se_by_hand():
    # A: 2 of 3 pairs agree; B: 0 of 2 (a predicted tie and a None). p = 2/5; residuals
    # a_g - p n_g = 0.8 and -0.8; se = sqrt(2/1 * 1.28) / 5 = 0.32.
    assert pairwise_accuracy_se([GROUP_A, GROUP_B]) == pytest.approx(0.32)
    # One gold-ordered pair per prompt: the binomial se with G - 1, sqrt(p (1 - p) / (G - 1)).
    one_pair = [JudgeGroup(gold=[2, 1], pred=[p, 0]) for p in (1, 0, 0, 0)]
    assert pairwise_accuracy_se(one_pair) == pytest.approx(math.sqrt(0.25 * 0.75 / 3))
    # A prompt without gold-ordered pairs is not a unit; fewer than two units give nan.
    tied = JudgeGroup(gold=[2, 2], pred=[1, 0])
    assert pairwise_accuracy_se([GROUP_A, GROUP_B, tied]) == pytest.approx(0.32)
    assert math.isnan(pairwise_accuracy_se([GROUP_A, tied]))
    assert math.isnan(pairwise_accuracy_se([]))


# --- summary -------------------------------------------------------------------------------


def test_judge_metrics():
    groups = [GROUP_A, GROUP_B]
    metrics = judge_metrics(groups)
    assert set(metrics) == {
        "pairwise_accuracy",
        "pairwise_accuracy_se",
        "five_best",
        "exact_match",
        "spearman",
        "kendall_tau",
        "parse_failure_rate",
        "n_groups",
        "n_pairs",
    }
    assert metrics["pairwise_accuracy"] == pytest.approx(0.4)
    assert metrics["pairwise_accuracy_se"] == pytest.approx(0.32)
    assert metrics["five_best"] == five_best(groups)
    assert metrics["exact_match"] == exact_match(groups)
    assert metrics["spearman"] == spearman(groups)
    assert metrics["kendall_tau"] == kendall_tau(groups)
    assert metrics["parse_failure_rate"] == pytest.approx(1 / 6)  # one None in six responses
    assert metrics["n_groups"] == 2
    assert metrics["n_pairs"] == 5  # 3 in A + 2 gold-ordered in B


def test_judge_metrics_empty():
    metrics = judge_metrics([])
    assert math.isnan(metrics["parse_failure_rate"])
    assert math.isnan(metrics["pairwise_accuracy"])
    assert metrics["n_groups"] == 0
    assert metrics["n_pairs"] == 0


# --- win rate ------------------------------------------------------------------------------


def test_win_rate_by_hand():
    # 3 wins, 1 tie, 1 loss out of 5: win_rate = 0.6 + 0.2 / 2 = 0.7
    result = win_rate([1, 1, 0.5, 0, 1])
    assert result == pytest.approx({"win": 0.6, "tie": 0.2, "loss": 0.2, "win_rate": 0.7, "n": 5})


def test_win_rate_empty():
    result = win_rate([])
    assert result["n"] == 0
    assert all(math.isnan(result[key]) for key in ("win", "tie", "loss", "win_rate"))


def test_win_rate_rejects_other_values():
    with pytest.raises(ValueError, match=r"\[2\.0\]"):
        win_rate([1, 2, 0])


# --- length bias ---------------------------------------------------------------------------


def test_length_bias_longer_scores_higher():
    scores = [1, 2, 3, 4, 3, 2, 5, 9, 1, 4, 4, 4, None]
    lengths = [10, 20, 30, 40, 5, 15, 25, 1, 99, 10, 20, 30, 1000]
    gold = [1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 1]
    # gold 1 (None left out): lengths [10, 20, 30, 40], scores [1, 2, 3, 4]: rho = 1
    # gold 2: lengths [5, 15, 25], scores [3, 2, 5] -> ranks [2, 1, 3] vs [1, 2, 3]
    #         d = [1, 1, 0], rho = 1 - 6 * 2 / (3 * 8) = 0.5
    # gold 3: two items: skipped; gold 4: constant score: skipped
    # weighted: (4 * 1 + 3 * 0.5) / 7 = 5.5 / 7
    assert length_bias(scores, lengths, gold) == pytest.approx(5.5 / 7)


def test_length_bias_controls_for_gold():
    # Better responses are shorter and score higher, so pooled length and score anticorrelate,
    # but within each gold stratum longer responses score higher.
    scores = [1, 2, 3, 7, 8, 9]
    lengths = [100, 110, 120, 10, 20, 30]
    gold = [1, 1, 1, 5, 5, 5]
    assert _spearman_single(scores, lengths) < 0
    assert length_bias(scores, lengths, gold) == pytest.approx(1.0)


def test_length_bias_no_relation():
    # gold 0: score ranks [3.5, 1.5, 1.5, 3.5] centred [1, -1, -1, 1] vs lengths centred
    #         [-1.5, -0.5, 0.5, 1.5]: covariance -1.5 + 0.5 - 0.5 + 1.5 = 0
    # gold 1: score ranks [1.5, 3, 1.5] centred [-0.5, 1, -0.5] vs [-1, 0, 1]: 0.5 - 0.5 = 0
    scores = [2, 1, 1, 2, 1, 3, 1]
    lengths = [1, 2, 3, 4, 1, 2, 3]
    gold = [0, 0, 0, 0, 1, 1, 1]
    assert length_bias(scores, lengths, gold) == pytest.approx(0.0, abs=1e-12)


def test_length_bias_nan_without_strata():
    assert math.isnan(length_bias([1, 2], [10, 20], [1, 1]))  # stratum too small
    assert math.isnan(length_bias([3, 3, 3], [10, 20, 30], [1, 1, 1]))  # constant score
    assert math.isnan(length_bias([1, 2, 3], [10, 10, 10], [1, 1, 1]))  # constant length
    assert math.isnan(length_bias([None, None, None], [10, 20, 30], [1, 1, 1]))
    assert math.isnan(length_bias([], [], []))


def test_length_bias_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        length_bias([1, 2, 3], [10, 20], [1, 1, 1])
