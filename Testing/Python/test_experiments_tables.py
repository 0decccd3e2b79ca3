"""``virtual-biopsy-train experiments`` on simulated run folders (no training): each row
names its run, however the run folder was given."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from Training.cli import main
from Training.experiments import load_run
from Training.report.simulate import simulate_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_run(tmp_path_factory.mktemp("runs") / "resnet18-seed1", patients=30, seed=1)


def _runs_named(table: Path) -> set[str]:
    lines = [line for line in table.read_text().splitlines() if not line.startswith("#")]
    return {row["run"] for row in csv.DictReader(lines)}


@pytest.mark.parametrize("given", [".", "./", "../resnet18-seed1", "sub/.."])
def test_a_run_given_by_a_relative_path_is_named_after_its_folder(
    run_dir: Path, given: str, monkeypatch
) -> None:
    (run_dir / "sub").mkdir(exist_ok=True)
    monkeypatch.chdir(run_dir)
    assert load_run(Path(given)).name == "resnet18-seed1"


def test_experiments_on_dot_writes_the_run_folder_name(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(run_dir)
    out = tmp_path / "tables"
    assert main(["experiments", ".", "--out", str(out), "--repetitions", "1"]) == 0
    assert _runs_named(out / "settings.csv") == {"resnet18-seed1"}
    assert "| resnet18-seed1 |" in (out / "settings.md").read_text()


def test_one_run_folder_given_twice_is_named_as_such(run_dir: Path, tmp_path: Path, capsys) -> None:
    code = main(["experiments", str(run_dir), f"{run_dir}/.", "--out", str(tmp_path / "t")])
    assert code == 3 and "the same run folder is given twice" in capsys.readouterr().err


def _table_rows(table: Path) -> list[dict[str, str]]:
    lines = [line for line in table.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_runs_on_different_manifests_are_flagged_and_not_averaged(tmp_path: Path, caplog) -> None:
    """Runs trained on different data: every table says so and Table 4 has no average
    over them (a mean of two populations); on one manifest the average is there."""
    import json

    from Training.experiments import write_experiments

    a = simulate_run(tmp_path / "a" / "resnet18", patients=20, seed=1)
    b = simulate_run(tmp_path / "b" / "resnet18", patients=20, seed=2)  # shares the name
    same = write_experiments([a, b], tmp_path / "same", repetitions=1)
    assert {row["run"] for row in _table_rows(tmp_path / "same" / "settings.csv")} == {
        "a/resnet18",
        "b/resnet18",
    }
    assert "average" in {row["run"] for row in _table_rows(tmp_path / "same" / "density.csv")}
    assert not any(
        "different manifests" in path.read_text() for path in same if path.suffix != ".png"
    )
    record = json.loads((b / "run.json").read_text())
    record["manifest_sha256"] = "f" * 64
    (b / "run.json").write_text(json.dumps(record))
    written = write_experiments([a, b], tmp_path / "different", repetitions=1)
    for path in written:
        if path.suffix in (".csv", ".md"):
            assert "trained on different manifests" in path.read_text(), path.name
            assert "b/resnet18 ffffffffffff" in path.read_text()
    density = _table_rows(tmp_path / "different" / "density.csv")
    assert density and "average" not in {row["run"] for row in density}
    assert "different manifests" in caplog.text


def test_tables_say_over_how_many_folds_a_mean_is_taken(tmp_path: Path) -> None:
    """A fold whose test cases hold one class defines no metric and is left out of the
    mean ± SE: Table A1 and Table 4 say over how many folds, instead of showing the mean
    of the others as if it were all of them."""
    import dataclasses

    from Training.evaluation import read_predictions, write_predictions
    from Training.experiments import write_experiments

    run = simulate_run(tmp_path / "run", patients=60, seed=3, protocol="every-patient")
    write_experiments([run], tmp_path / "before", repetitions=1)
    before = {row["setting"]: row for row in _table_rows(tmp_path / "before" / "settings.csv")}
    assert before["F"]["folds"] == "5 of 5"
    rows = read_predictions(run / "predictions.csv")
    one_class = [
        dataclasses.replace(p, label=1) if (p.fold, p.split) == (1, "test") else p for p in rows
    ]
    write_predictions(one_class, run / "predictions.csv")
    write_experiments([run], tmp_path / "after", repetitions=1)
    after = {row["setting"]: row for row in _table_rows(tmp_path / "after" / "settings.csv")}
    assert {row["folds"] for row in after.values()} == {"4 of 5"}
    for row in _table_rows(tmp_path / "after" / "density.csv"):
        assert int(row["folds"]) <= 4 and (row["AUC"] == "n/a") == (row["folds"] == "0")
