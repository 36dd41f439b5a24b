"""Paired comparisons of models tested on the same images: the per-image accuracy difference, its 95% confidence
interval, and the verdict rule every claim uses (held / contradicted / inconclusive)."""

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["Z95", "Z80", "paired_difference", "t95", "verdict", "accuracy_interval", "wilson_interval",
           "accuracy_intervals"]

Z95 = 1.959964  # two-sided 95% normal quantile
Z80 = 0.841621  # one-sided 80% normal quantile (power)


def t95(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom (table to 10, Cornish-Fisher beyond)."""
    if df < 1:
        raise ValueError("t needs at least 1 degree of freedom")
    if df <= len(_T95):
        return _T95[df - 1]
    z = Z95
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def paired_difference(better: Sequence[str], than: Sequence[str],
                      seed_differences: Sequence[float] = ()) -> dict[str, Any]:
    """Accuracy difference of two sets of models on the same test images, from per-image '0'/'1' flag strings (each
    entry one model: a cell of one seed). Per image d_i = mean over ``better`` − mean over ``than``; over the images,
    the 95% half-width is 1.96·sd(d)/√n. With two or more ``seed_differences`` (each seed's difference on these
    images) the seeds are a second source of error: their half-width t95(S−1)·sd(D)/√S joins the images' in
    quadrature, so the interval covers both which test images and which training seeds. With one model per side,
    ``b_only``/``t_only`` count the discordant images (McNemar's table) and ``p_mcnemar`` is the exact two-sided
    binomial p-value. ``mdd80`` is the minimum detectable difference: the true difference found (interval excluding
    zero) with 80% power, (1.96 + 0.84)/1.96 times the half-width."""
    lengths = {len(f) for f in (*better, *than)}
    if not better or not than or len(lengths) != 1:
        raise ValueError(f"paired flags must cover the same images on both sides, got lengths {sorted(lengths)}")
    n = lengths.pop()
    if n < 2:
        raise ValueError("a paired difference needs at least 2 images")

    def mean_per_image(flags: Sequence[str]) -> list[float]:
        counts = [0] * n
        for f in flags:
            for i, c in enumerate(f):
                counts[i] += c == "1"
        return [c / len(flags) for c in counts]

    d = [b - t for b, t in zip(mean_per_image(better), mean_per_image(than), strict=True)]
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half_images = Z95 * sd / math.sqrt(n)
    out: dict[str, Any] = {"difference": mean, "n": n, "models": [len(better), len(than)],
                           "half_images": half_images, "seeds": len(seed_differences)}
    half = half_images
    if len(seed_differences) > 1:
        s, m = len(seed_differences), sum(seed_differences) / len(seed_differences)
        sd_seed = math.sqrt(sum((x - m) ** 2 for x in seed_differences) / (s - 1))
        out.update(sd_seed=sd_seed, half_seeds=t95(s - 1) * sd_seed / math.sqrt(s))
        half = math.hypot(half_images, out["half_seeds"])
    out.update(ci95=[mean - half, mean + half], mdd80=(Z95 + Z80) / Z95 * half)
    if len(better) == len(than) == 1:
        b_only, t_only = sum(x > 0 for x in d), sum(x < 0 for x in d)
        out.update(b_only=b_only, t_only=t_only, p_mcnemar=_binomial_two_sided(b_only, b_only + t_only))
    return out


def _binomial_two_sided(k: int, m: int) -> float:
    """Exact two-sided p-value of k successes in m fair coin flips (McNemar's exact test on the discordant pairs)."""
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(k, m - k) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def verdict(ci: Sequence[float], tolerance: float | None = None) -> str:
    """The rule for one metric: a claim that ``better`` beats ``than`` is *held* when the interval lies above 0 and
    *contradicted* when it lies below 0; a claim of 'unchanged within ±tolerance' is *held* when the interval lies
    inside ±tolerance and *contradicted* when it lies wholly outside; anything else is *inconclusive*."""
    lo, hi = ci
    if tolerance is None:
        return "held" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
    if -tolerance <= lo and hi <= tolerance:
        return "held"
    return "contradicted" if lo > tolerance or hi < -tolerance else "inconclusive"


def accuracy_interval(flags: Sequence[str], seed_accuracies: Sequence[float] = ()) -> list[float]:
    """95% interval of one accuracy from per-image '0'/'1' flags (one string per model: a seed), made as the paired
    difference's (against a model that is always wrong): the images' half-width, joined in quadrature with the
    seeds' t-interval when two or more ``seed_accuracies`` are given; cut to [0, 1] (with two seeds, t95(1) = 12.7
    can reach past them)."""
    lo, hi = paired_difference(flags, ["0" * len(flags[0])], seed_accuracies)["ci95"]
    return [max(lo, 0.0), min(hi, 1.0)]


def wilson_interval(accuracy: float, n: int) -> list[float]:
    """Wilson's 95% score interval of a binomial proportion ``accuracy`` measured on ``n`` images."""
    centre = (accuracy + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 / (1 + Z95 ** 2 / n) * math.sqrt(accuracy * (1 - accuracy) / n + Z95 ** 2 / (4 * n ** 2))
    return [centre - half, centre + half]


def accuracy_intervals(entry: dict[str, Any], members: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``entry`` (a ``result_row``, or a mean over the seed rows ``members``) with ``test_clean_ci95`` and
    ``test_pgd_ci95``: ``accuracy_interval`` of the members' per-image flags where every member has them (seeds
    included), else Wilson's interval on the entry's ``n_test`` images (test-image noise only); ``ci_kind`` says
    which."""
    out, kinds = dict(entry), set()
    for metric, key in (("clean", "test_clean"), ("pgd", "test_pgd")):
        if entry.get(key) is None:
            continue
        flags = [m.get("samples", {}).get(metric) for m in members]
        if flags and all(flags) and len({len(f) for f in flags}) == 1:
            seeds = [m[key] for m in members] if len(members) > 1 else []
            out[f"{key}_ci95"], kind = accuracy_interval(flags, seeds), "test images" + (" + seeds" if seeds else "")
        else:
            out[f"{key}_ci95"], kind = wilson_interval(entry[key], entry["n_test"]), "Wilson, test images only"
        kinds.add(kind)
    out["ci_kind"] = ", ".join(sorted(kinds))
    return out
