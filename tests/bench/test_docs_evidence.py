"""The docs say what the committed evidence says: every generated block of docs/choosing.md and the method pages
equals what bench/evidence_docs.py writes from bench/results/evidence, every paper with a claim has a page that
states it, and the generated text gives verdict, interval, n, seeds and what would change the verdict."""

import re
import subprocess
import sys
from pathlib import Path

from robustft.bench import load_protocol
from robustft.bench.docs import PAGES, claim_paper, claims_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_docs_match_the_committed_evidence():
    proc = subprocess.run([sys.executable, str(ROOT / "bench/evidence_docs.py"), "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, f"stale pages (run python bench/evidence_docs.py): {proc.stdout}{proc.stderr}"


def test_every_claimed_paper_has_a_generated_block():
    marker = re.compile(r"<!-- evidence:([\w-]+) begin -->")
    keys = {m for page in PAGES for m in marker.findall((ROOT / "docs" / page).read_text())}
    papers = {claim_paper(c.claim) for c in load_protocol("evidence").claims}
    assert "all" in keys and papers <= keys, papers - keys


def _claim(verdict: str, lo: float, hi: float, tolerance: float | None = None) -> dict:
    d = (lo + hi) / 2
    return {"claim": "X beats Y (PAPER, CVPR 2023)", "task": "t", "better": ["x"], "than": ["y"],
            "tolerance": tolerance, "verdict": verdict,
            "metrics": {"pgd": {"verdict": verdict, "per_seed": {0: d, 1: d},
                                "paired": {"difference": d, "ci95": [lo, hi], "n": 10000, "mdd80": 0.012}}}}


def test_generated_text_states_verdict_interval_n_and_what_would_change_it():
    results = {"protocol": "p", "command": "robustft bench --protocol p", "description": "the conditions",
               "claims": [_claim("held", 0.01, 0.03), _claim("inconclusive", -0.002, 0.004),
                          _claim("contradicted", -0.03, -0.01), _claim("held", -0.004, 0.004, tolerance=0.01)]}
    text = claims_markdown(results, ("../r", "benchmark.md"), "PAPER")
    items = text.split("\n- ")[1:]
    assert len(items) == 4 and "Conditions: the conditions" in text
    assert "**held**" in items[0] and "[+1.0, +3.0] points, n 10,000, seeds 0, 1" in items[0]
    assert "per seed +2.0, +2.0 (all 2 seeds agree in sign)" in items[0]
    # inconclusive: the MDD at this n, and the n that a difference of this size needs: 10000 · (1.2 / 0.1)² images
    assert "detect 1.2 points" in items[1] and "about 1,440,000 test images" in items[1]
    assert "the reverse holds" in items[2] and "over test images and seeds" in items[2]
    # seeds that disagree: their spread, not the images, decides what more evidence would need: the fewest seeds S
    # whose interval, 1.43 · hypot(0.4, t95(S-1) · 3 / √S) points, shrinks to the 1-point difference: 108
    spread = _claim("inconclusive", -0.05, 0.07)
    spread["metrics"]["pgd"]["per_seed"] = {0: 0.04, 1: -0.02, 2: 0.04}
    spread["metrics"]["pgd"]["paired"].update(half_images=0.004, half_seeds=0.06, sd_seed=0.03)
    text = claims_markdown({**results, "claims": [spread]}, ("../r", "benchmark.md"), "PAPER")
    assert "about 108 seeds" in text and "not the test set, limits it" in text
    # never fewer seeds than were run (the seeds' t quantile at 3 seeds is 4.3, not 1.96): −5.6 with per-seed sd 2.5
    few = _claim("inconclusive", -0.118, 0.006)
    few["metrics"]["pgd"]["per_seed"] = {0: -0.053, 1: -0.083, 2: -0.033}
    few["metrics"]["pgd"]["paired"].update(difference=-0.056, half_images=0.012, half_seeds=0.06, sd_seed=0.0252)
    text = claims_markdown({**results, "claims": [few]}, ("../r", "benchmark.md"), "PAPER")
    assert "needs about 5 seeds" in text
    spread["metrics"]["pgd"]["paired"].update(half_images=0.0072)  # the images alone keep it above 1 point
    text = claims_markdown({**results, "claims": [spread]}, ("../r", "benchmark.md"), "PAPER")
    assert "needs far more seeds" in text
    assert "equivalence margin ±1.0" in items[3] and "within ±1.0" in items[3]
    assert claims_markdown(results, ("../r", "benchmark.md"), "OTHER") == ""
    # both sides right on the same images at every seed (RiFT returning its source): said so, not "needs more images"
    same = {**results, "claims": [_claim("inconclusive", 0.0, 0.0), _claim("held", 0.0, 0.0, tolerance=0.01)]}
    items = claims_markdown(same, ("../r", "benchmark.md"), "PAPER").split("\n- ")[1:]
    assert all("every test image is right equally often on both sides" in item for item in items)
    assert "images or seeds separates them" in items[0] and "needs" not in items[0]
    assert "within ±1.0, trivially" in items[1]
