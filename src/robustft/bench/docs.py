"""What the docs say about the seed papers' claims, generated from a protocol's committed results: per claim its
verdict, interval, n, seeds, conditions and what would change the verdict. Pages hold the generated text between
``<!-- evidence:KEY begin -->`` and ``<!-- evidence:KEY end -->`` (KEY: ``all`` or a paper, e.g. ``TWINS``), so no
page states more than the verdicts; ``tests/bench/test_docs_evidence.py`` checks that the pages match."""

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from .._io import atomic_write
from ..errors import UserError
from ..report.paired import Z80, Z95, t95

__all__ = ["PAGES", "claim_paper", "claims_markdown", "choosing_markdown", "update_docs"]

PAGES = ("choosing.md", "methods/twins.md", "methods/roli.md", "methods/rift.md", "methods/autolora.md")
_BLOCK = re.compile(r"(<!-- evidence:(?P<key>[\w-]+) begin -->\n)(?:.*?\n)?(<!-- evidence:(?P=key) end -->)", re.S)


def claim_paper(claim: str) -> str | None:
    """The paper a claim cites, ``TWINS`` in '... (TWINS, CVPR 2023)'; None for a claim that cites none."""
    found = re.search(r"\((\w[\w-]*), [A-Z]+ \d{4}\)", claim)
    return found.group(1) if found else None


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _seeds_needed(d: float, sd_seed: float, half_images: float, have: int, most: int = 10_000) -> int | None:
    """The fewest seeds (more than ``have``) whose interval — the seeds' t half-width joined in quadrature with the
    images' — detects a true difference ``d`` with 80% power, if this spread holds; None beyond ``most``."""
    for s in range(have + 1, most + 1):
        if (Z95 + Z80) / Z95 * math.hypot(half_images, t95(s - 1) * sd_seed / math.sqrt(s)) <= d:
            return s
    return None


def _change(metric: dict[str, Any], tolerance: float | None) -> str:
    """What would change one metric's verdict, from its interval, n and minimum detectable difference."""
    pair = metric["paired"]
    (lo, hi), n, d, mdd = pair["ci95"], pair["n"], pair["difference"], pair["mdd80"]
    alike = hi - lo <= 1e-12 and abs(d) <= 1e-12  # every image's accuracy equal on both sides, at every seed
    same = "every test image is right equally often on both sides (over the seeds)"
    if tolerance is not None:
        if metric["verdict"] == "held":
            return f"the whole interval lies within ±{100 * tolerance:.1f}" + (f", trivially: {same}" if alike else "")
        return (f"the interval reaches beyond ±{100 * tolerance:.1f}; a narrower one needs more test images "
                f"(half-width now {100 * (hi - lo) / 2:.1f} points)")
    seeds = list(metric["per_seed"].values())
    agree = (f"all {len(seeds)} seeds agree in sign" if len(seeds) > 1 and len({x > 0 for x in seeds}) == 1
             else f"the {len(seeds)} seeds do not all agree in sign" if len(seeds) > 1 else "one seed")
    per_seed = ", ".join(_pts(x) for x in seeds)
    over = "test images and seeds" if len(seeds) > 1 else "test images at one seed"
    if metric["verdict"] == "held":
        return (f"the interval's end nearest zero is {_pts(lo)}; per seed {per_seed} ({agree}): the interval is over "
                f"{over}, so other conditions than these could change it")
    if metric["verdict"] == "contradicted":
        return (f"the interval lies below zero (upper end {_pts(hi)}); per seed {per_seed} ({agree}): the reverse "
                f"holds under these conditions (the interval is over {over}); other conditions could change it")
    if alike:
        return f"{same}: no number of images or seeds separates them, only conditions where they differ"
    if abs(d) <= 1e-12:
        need = "far more images or seeds"
    elif pair.get("half_seeds", 0.0) > pair.get("half_images", 0.0):  # the seeds dominate: more images do not help
        more = _seeds_needed(abs(d), pair["sd_seed"], pair["half_images"], len(seeds))
        need = (f"{f'about {more:,}' if more else 'far more'} seeds (per seed {per_seed}: their spread, not the test "
                "set, limits it)")
    else:
        need = f"about {math.ceil(n * (mdd / abs(d)) ** 2):,} test images"
    seeds_n = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    return (f"{n:,} images and {seeds_n} detect {100 * mdd:.1f} points with 80% power; a true difference of "
            f"{_pts(d)} needs {need}, or conditions where it is larger")


def _metric_line(name: str, metric: dict[str, Any], tolerance: float | None) -> str:
    """``pgd: +1.2 [+0.4, +2.0] points, n 10,000, seeds 0, 1, 2 — held (…)``."""
    if "paired" not in metric:
        return f"{name}: {metric.get('why', 'not measured')} — inconclusive"
    pair = metric["paired"]
    lo, hi = pair["ci95"]
    seeds = ", ".join(str(s) for s in metric["per_seed"])
    p = f", McNemar p {pair['p_mcnemar']:.2g}" if "p_mcnemar" in pair else ""
    return (f"{name}: {_pts(pair['difference'])} [{_pts(lo)}, {_pts(hi)}] points, n {pair['n']:,}, seed"
            f"{'s' if len(metric['per_seed']) > 1 else ''} {seeds}{p} — **{metric['verdict']}** "
            f"({_change(metric, tolerance)})")


def claims_markdown(results: dict[str, Any], links: tuple[str, str], paper: str | None = None) -> str:
    """The claims of one protocol's results (those citing ``paper``, or all), one list item each: the verdict, each
    metric's paired interval, n and seeds, and what would change each verdict; then the conditions. ``links``: the
    results directory and docs/benchmark.md relative to the page."""
    lines = []
    for c in results["claims"]:
        if paper not in (None, "all") and claim_paper(c["claim"]) != paper:
            continue
        rule = f" (equivalence margin ±{100 * c['tolerance']:.1f} points, fixed before the run)" \
            if c["tolerance"] is not None else ""
        lines.append(f"- **{c['claim']}**{rule}: **{c['verdict']}** — {' + '.join(c['better'])} vs "
                     f"{' + '.join(c['than'])}, task `{c['task']}`.")
        lines += [f"  - {_metric_line(m, metric, c['tolerance'])}" for m, metric in c["metrics"].items()]
    if not lines:
        return ""
    results_link, rule_link = links
    return "\n".join([f"From [`{results['protocol']}`]({results_link}/results.md) (`{results['command']}`): each "
                      "difference is better − than in accuracy points, its 95% interval paired per test image and, "
                      "with several seeds, over seeds too; *held* / *contradicted* when the interval excludes zero "
                      f"in / against the claimed direction, *inconclusive* otherwise ([the rule]({rule_link})).", "",
                      *lines, "", f"Conditions: {results['description'].strip()}"])


def choosing_markdown(results: dict[str, Any], links: tuple[str, str]) -> str:
    """The generated part of docs/choosing.md: per task, each method's validated variant and numbers with its cost,
    then every claim."""
    lines = []
    for task in dict.fromkeys(g["task"] for g in results["groups"]):
        lines += [f"**Task `{task}`** — test accuracy in %, mean over seeds; the variant each seed used was chosen "
                  "on validation:", "",
                  "| method | chosen variant (per seed) | clean | PGD | AutoAttack | corruption | train img/s | "
                  "wall s / seed |", "|---|---|---|---|---|---|---|---|"]
        for g in (g for g in results["groups"] if g["task"] == task):
            chosen = ", ".join(sorted(set(g["variants"]), key=g["variants"].index))
            cells = [f"{100 * g[k]:.1f}" if k in g else "–" for k in
                     ("test_clean", "test_pgd", "test_autoattack", "test_corruption")]
            cost = [f"{g[k]:.0f}" if g.get(k) is not None else "–" for k in ("train_images_per_s", "wall_s")]
            lines.append(f"| {g['label']} | {chosen} | {' | '.join(cells)} | {' | '.join(cost)} |")
        lines.append("")
    return "\n".join([*lines, claims_markdown(results, links)])


def update_docs(results_dir: Path, docs_dir: Path, check: bool = False) -> list[Path]:
    """Rewrite every evidence block of the pages in ``PAGES`` from ``results_dir/results.json``; with ``check``,
    write nothing and return the pages whose blocks differ."""
    path = results_dir / "results.json"
    if not path.is_file():
        raise UserError(f"{path} does not exist: run the protocol (robustft bench --report-dir {results_dir}) first")
    results = json.loads(path.read_text())
    changed = []
    for page in PAGES:
        file = docs_dir / page
        text = file.read_text()
        links = tuple(Path(os.path.relpath(p.resolve(), file.parent.resolve())).as_posix()
                      for p in (results_dir, docs_dir / "benchmark.md"))

        def block(m: re.Match, links: tuple[str, str] = links) -> str:
            body = (choosing_markdown(results, links) if m["key"] == "all"
                    else claims_markdown(results, links, m["key"]))
            return m.group(1) + (body + "\n" if body else "") + m.group(3)

        new = _BLOCK.sub(block, text)
        if new != text:
            changed.append(file)
            if not check:
                atomic_write(file, lambda tmp, new=new: Path(tmp).write_text(new))
    return changed
