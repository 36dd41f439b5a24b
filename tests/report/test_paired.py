"""Paired per-image differences: the interval, McNemar's exact test, and the held / contradicted / inconclusive rule."""

import math

import pytest

from robustft.report import paired_difference, verdict
from robustft.report.paired import t95


def test_one_pair_gives_the_discordant_counts_and_mcnemars_exact_p():
    better, than = "1100111000", "1000001001"  # b only: images 1, 4, 5; t only: image 9
    out = paired_difference([better], [than])
    assert out["difference"] == pytest.approx(0.2) and out["n"] == 10
    assert (out["b_only"], out["t_only"]) == (3, 1)
    assert out["p_mcnemar"] == pytest.approx(2 * (1 + 4) / 16)  # P(X <= 1), X ~ Bin(4, 1/2), doubled
    d = [0, 1, 0, 0, 1, 1, 0, 0, 0, -1]
    sd = math.sqrt(sum((x - 0.2) ** 2 for x in d) / 9)
    assert out["ci95"] == [pytest.approx(0.2 - 1.959964 * sd / math.sqrt(10)),
                           pytest.approx(0.2 + 1.959964 * sd / math.sqrt(10))]
    assert out["mdd80"] == pytest.approx((1.959964 + 0.841621) * sd / math.sqrt(10))


def test_identical_models_have_a_zero_width_interval_and_p_one():
    out = paired_difference(["0110"] * 2, ["0110"] * 3)
    assert out["ci95"] == [0.0, 0.0] and "p_mcnemar" not in out, "McNemar only for one model per side"
    assert paired_difference(["0110"], ["0110"])["p_mcnemar"] == 1.0


def test_flags_of_different_images_are_refused():
    with pytest.raises(ValueError, match="same images"):
        paired_difference(["0101"], ["010"])


@pytest.mark.parametrize("ci,tolerance,expected", [
    ((0.01, 0.05), None, "held"), ((-0.05, -0.01), None, "contradicted"), ((-0.01, 0.05), None, "inconclusive"),
    ((-0.004, 0.006), 0.01, "held"), ((0.02, 0.03), 0.01, "contradicted"), ((-0.03, -0.02), 0.01, "contradicted"),
    ((-0.004, 0.02), 0.01, "inconclusive"), ((0.0, 0.0), None, "inconclusive")])
def test_verdict_rule(ci, tolerance, expected):
    assert verdict(ci, tolerance) == expected


def test_seeds_that_disagree_widen_the_interval_beyond_the_images():
    better, than = ["1100111000" * 20] * 3, ["1000001001" * 20] * 3  # 200 images, d = 0.2
    images = paired_difference(better, than)
    seeds = paired_difference(better, than, [0.4, 0.0, 0.2])  # each seed's own difference: sd 0.2 over 3 seeds
    half_seeds = 4.303 * 0.2 / math.sqrt(3)
    assert seeds["half_seeds"] == pytest.approx(half_seeds) and seeds["half_images"] == pytest.approx(
        images["ci95"][1] - 0.2)
    assert seeds["ci95"][1] - 0.2 == pytest.approx(math.hypot(half_seeds, seeds["half_images"]))
    assert verdict(images["ci95"]) == "held" and verdict(seeds["ci95"]) == "inconclusive"
    agreeing = paired_difference(better, than, [0.2, 0.2, 0.2])  # no seed spread: the images' interval
    assert agreeing["ci95"] == pytest.approx(images["ci95"])
    assert paired_difference(better, than, [0.2])["ci95"] == pytest.approx(images["ci95"])  # one seed: images only


def test_t_quantiles():
    assert t95(2) == 4.303 and t95(30) == pytest.approx(2.042, abs=0.002) and t95(1000) == pytest.approx(1.962,
                                                                                                        abs=0.001)
