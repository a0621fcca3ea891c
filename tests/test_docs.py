"""The result tables of the README and docs/ (and the recipe table) are the report tool's output, copied, never typed by hand."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORT_ROW = re.compile(r"^\| \w+ \| (\d+) \| [\d.]+( ± [\d.]+)? % \|.*\|$")  # variant | seeds | mean (± std) | ...
DOCUMENTS = ["README.md", "docs/results.md", "docs/results-overview.md"]


def result_rows(path: Path) -> list[re.Match]:
    return [match for line in path.read_text().splitlines() if (match := REPORT_ROW.match(line))]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_result_row_is_a_report_row_unchanged(document: str) -> None:
    rows = [match.group(0) for match in result_rows(ROOT / document)]
    assert len(rows) >= 10, f"{document}: the result tables are gone or their format changed"
    written = {match.group(0) for path in (ROOT / "docs" / "results").glob("*/results.md") for match in result_rows(path)}
    typed = [row for row in rows if row not in written]
    assert not typed, f"{document} has rows no report under docs/results/ wrote:\n" + "\n".join(typed)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_result_row_is_a_mean_over_at_least_three_seeds(document: str) -> None:
    """One seed on one machine is an anecdote: another CPU gives another trajectory."""
    few = [match.group(0) for match in result_rows(ROOT / document) if int(match.group(1)) < 3]
    assert not few, f"{document} reports rows over fewer than three seeds:\n" + "\n".join(few)


def test_the_recipe_table_is_the_configs_own() -> None:
    """The recipe table is generated from the shipped configs (`python -m mnist_cifar.reporting.recipes`), never typed."""
    from mnist_cifar.reporting.recipes import table

    readme = (ROOT / "docs" / "running.md").read_text()
    marker = "<!-- recipes: python -m mnist_cifar.reporting.recipes -->\n"
    start = readme.index(marker) + len(marker)
    assert readme[start:readme.index("\n<!-- end recipes -->")] == table()
