"""The phantom check with packages other than the demo one: a package without generators,
itself as baseline, the demo cohort's seed, an interruption. Synthetic data: these test
the check, not clinical performance."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from Training.cli import DEMO_COHORT_SEED, EXIT_INTERRUPTED, main
from Training.evaluation import SETTINGS
from Training.phantom_check import (
    PhantomCheck,
    check_notices,
    format_phantom_check,
    run_phantom_check,
    write_phantom_check,
)
from VirtualBiopsyLib import SYNTHETIC_NOTICE
from VirtualBiopsyLib.inference.fixtures import write_untrained_package
from VirtualBiopsyLib.models.package import load_package


@pytest.fixture(scope="module")
def no_generator_check(tmp_path_factory: pytest.TempPathFactory) -> PhantomCheck:
    """A real check (3 patients, a few seconds) of an untrained package without
    generators, against itself."""
    folder = tmp_path_factory.mktemp("packages")
    package = load_package(write_untrained_package(folder / "plain", with_generators=False))
    return run_phantom_check(package, patients=3, seed=3, baseline=package)


def _strict(text: str) -> object:
    """JSON as a strict parser reads it: a bare NaN or Infinity is an error."""

    def refuse(constant: str) -> None:
        raise ValueError(f"bare {constant} in phantom_check.json")

    return json.loads(text, parse_constant=refuse)


def test_a_package_without_generators_says_so_and_prints_no_empty_table(
    no_generator_check: PhantomCheck,
) -> None:
    """Ĉ and F+Ĉ read n/a beside a sentence saying why, never 0; the generation section
    says there is nothing to compare instead of a header with no rows."""
    check = no_generator_check
    printed = format_phantom_check(check)
    assert SYNTHETIC_NOTICE in printed
    assert "has no LE-to-DES generators: its Ĉ and F+Ĉ are not scored" in printed
    for setting in ("Ĉ", "F+Ĉ"):
        assert check.settings[setting]["cases"] == 0
        assert f"| {setting} | n/a | n/a–n/a | n/a | n/a | 0 |" in printed
    generation = printed.split("| generation (synthetic vs real DES")[1].splitlines()
    assert generation[2].startswith("| no synthetic DES beside a real one")


def test_a_baseline_that_is_the_package_itself_is_named_as_such(
    no_generator_check: PhantomCheck,
) -> None:
    notices = no_generator_check.notices
    assert any("The baseline is the package itself" in notice for notice in notices)
    assert sum("has no LE-to-DES generators" in notice for notice in notices) == 2


def test_the_written_check_is_strict_json_and_the_markdown_prints_its_figures(
    no_generator_check: PhantomCheck, tmp_path: Path
) -> None:
    """Every setting's AUC in the Markdown is the JSON's, n/a where the JSON has null."""
    json_path, markdown_path = write_phantom_check(no_generator_check, tmp_path)
    record = _strict(json_path.read_text())
    markdown = markdown_path.read_text()
    assert record["notices"] == no_generator_check.notices
    for setting in SETTINGS:
        value = record["settings"][setting]["auc"]
        shown = "n/a" if value is None else f"{100 * value:.1f}"
        assert f"| {setting} | {shown} |" in markdown


def test_the_demo_cohort_seed_warns_that_its_patients_trained_the_demo() -> None:
    package = SimpleNamespace(name="p", generators={"CC": object()}, sha256="a")
    assert any(f"Seed {DEMO_COHORT_SEED} draws" in n for n in check_notices(package, 7))
    assert check_notices(package, 2027) == []


def test_a_markdown_that_fails_leaves_no_json_behind(
    no_generator_check: PhantomCheck, tmp_path: Path, monkeypatch
) -> None:
    """Both texts are made before either file is written: never a JSON without its .md."""

    def broken(_check: PhantomCheck) -> str:
        raise RuntimeError("formatting failed")

    monkeypatch.setattr("Training.phantom_check.format_phantom_check", broken)
    with pytest.raises(RuntimeError):
        write_phantom_check(no_generator_check, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_check_says_nothing_was_written_not_resume(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("Training.phantom_check.run_phantom_check", interrupted)
    out = tmp_path / "check"
    assert main(["phantom-check", "--patients", "3", "--out", str(out)]) == EXIT_INTERRUPTED
    error = capsys.readouterr().err
    assert f"phantom-check interrupted: nothing was written to {out}" in error
    assert "--resume" not in error
    assert not out.exists() or list(out.iterdir()) == []
