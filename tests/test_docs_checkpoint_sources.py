"""Every test that docs/evaluation.md's table of checkpoint sources names exists, so the table cannot rot."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_checkpoint_source_table_names_existing_tests():
    section = (ROOT / "docs/evaluation.md").read_text().split("### Checkpoint sources", 1)[1].split("\n## ", 1)[0]
    named = []
    for row in (line for line in section.splitlines() if line.startswith("| ") and "::" in line):
        module = None
        for file, test in re.findall(r"`(test_\w+\.py)?::(test_\w+)`", row.split(" | ")[-1]):
            module = file or module
            named.append((module, test))
    assert len(named) >= 10
    missing = [f"{m}::{t}" for m, t in named
               if not re.search(rf"^def {t}\(", (ROOT / "tests/models" / m).read_text(), flags=re.M)]
    assert not missing, f"docs/evaluation.md names tests that do not exist: {missing}"
