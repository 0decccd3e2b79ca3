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
