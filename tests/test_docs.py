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
    reports = [*(ROOT / "docs" / "results").glob("*/results.md"), *(ROOT / "docs" / "results").glob("*/robustness.md")]
    written = {match.group(0) for path in reports for match in result_rows(path)}
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


def _mean_std_cell(values: list[float]) -> str:
    import statistics

    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f} %"


def test_the_d2l_table_beside_the_book_is_the_runs_own() -> None:
    """Our cells of docs/results/d2l/README.md's table are recomputed from the committed per-run CSVs (best-on-
    validation checkpoint: results.csv; last epoch, the book's protocol: last_epoch.csv), and every row the book
    printed a figure for gives the difference from it."""
    import csv

    folder = ROOT / "docs" / "results" / "d2l"
    best = list(csv.DictReader((folder / "results.csv").open()))
    last = list(csv.DictReader((folder / "last_epoch.csv").open()))
    rows = [line for line in (folder / "README.md").read_text().splitlines() if line.startswith("| §")]
    trained = 0
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        variant = cells[1].split("`")[1]
        ours = [float(r["test_acc"]) for r in best if r["variant"] == variant]
        if not ours:
            assert cells[3] == "not trained (a GPU job)", row
            continue
        trained += 1
        assert cells[3] == _mean_std_cell(ours), row
        assert cells[4] == _mean_std_cell([float(r["test_acc"]) for r in last if r["variant"] == variant]), row
        if cells[2][0].isdigit():  # the book printed a test accuracy: the difference is given
            book = float(cells[2].split(" %")[0])
            mean_last = 100 * sum(float(r["test_acc"]) for r in last if r["variant"] == variant) / 3
            assert cells[5] == f"{mean_last - book:+.2f}", row
    assert trained == 6 and len(rows) == 10
    readme = (ROOT / "README.md").read_text()  # the front page's copy of our column
    for variant in ("softmax", "mlp", "dropout", "lenet", "lenet_bn"):
        assert f"| {_mean_std_cell([float(r['test_acc']) for r in best if r['variant'] == variant])} |" in readme
