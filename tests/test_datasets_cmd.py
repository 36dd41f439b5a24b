"""`robustft datasets`: every name with its classes, split sizes, source and licence; docs/datasets.md holds its
table. Run this file (``PYTHONPATH=src python tests/test_datasets_cmd.py``) to rewrite the table."""

import re
from pathlib import Path

from robustft.cli import main
from robustft.data.catalog import CATALOG, CORRUPTIONS
from test_config_cmd import generated

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "datasets.md"
BLOCK = re.compile(r"<!-- (robustft datasets[^>]*?): begin -->\n(.*?)<!-- robustft datasets: end -->", re.S)
REGENERATE = "PYTHONPATH=src python tests/test_datasets_cmd.py"


def regenerate(text: str) -> str:
    """``text`` with its generated block replaced by the current output of the command its marker names."""
    return BLOCK.sub(lambda m: f"<!-- {m[1]}: begin -->\n{generated(m[1])}<!-- robustft datasets: end -->", text)


def test_every_name_is_listed_with_classes_sizes_source_and_licence(capsys):
    assert main(["datasets"]) == 0
    blocks = {b.splitlines()[0].split(": ", 1)[1]: b for b in capsys.readouterr().out.strip().split("\n\n")}
    assert set(blocks) == set(CATALOG) | set(CORRUPTIONS)
    caltech = blocks["caltech256"]
    assert "classes: 257" in caltech and "train: 14,649" in caltech and "val: 771" in caltech
    assert "test: 15,187" in caltech and "RoLI" in caltech and "licence: CC BY 4.0" in caltech
    assert "val: -" in blocks["cub200"] and "train_test_split.txt" in blocks["cub200"]
    assert "no checksum published" in blocks["stanford_dogs"] and "ROBUSTFT_IMAGENET" in blocks["imagenet"]
    assert all("licence: " in b and "source: " in b for b in blocks.values())


def test_the_docs_table_matches_the_command():
    text = DOC.read_text()
    assert BLOCK.search(text), "docs/datasets.md lost its generated table"
    assert regenerate(text) == text, f"docs/datasets.md: the table is out of date; rewrite it with `{REGENERATE}`"


if __name__ == "__main__":
    DOC.write_text(regenerate(DOC.read_text()))
