"""Rewrite the evidence blocks of docs/choosing.md and the method pages from a protocol's committed results.

    python bench/evidence_docs.py                      # from bench/results/evidence into docs/
    python bench/evidence_docs.py --check              # exit 1 if a page differs from what the results say
"""

import argparse
import sys
from pathlib import Path

from robustft.bench.docs import update_docs
from robustft.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Parse the arguments, rewrite (or check) the pages."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=ROOT / "bench/results/evidence", help="protocol report directory")
    p.add_argument("--docs", type=Path, default=ROOT / "docs", help="docs directory")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is stale")
    args = p.parse_args()
    try:
        changed = update_docs(args.results, args.docs, check=args.check)
    except UserError as e:
        print(f"evidence_docs: error: {e}", file=sys.stderr)
        return 2
    for page in changed:
        print(f"{'stale' if args.check else 'rewrote'}: {page}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
