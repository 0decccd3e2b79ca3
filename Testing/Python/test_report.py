"""``virtual-biopsy-train report`` on simulated run folders (known signal, no training).

Checks that the report pools the right cases (every patient once under the every-patient
protocol; Ĉ on the cases of C), that its point estimates equal an independent
recomputation through :mod:`Training.evaluation` and scikit-learn, that claims follow the
tests, that the robustness sweep keeps its population and ends at C and Ĉ, that small
density groups report nothing, and that the folder is written atomically and never
replaces a folder that is not a report. Simulated numbers are synthetic.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

import VirtualBiopsyLib
from Training.cli import main
from Training.evaluation import fold_test_cases, fold_weights, setting_scores
from Training.report import figures
from Training.report.analysis import _conclusion, analyse_run
from Training.report.build import write_report
from Training.report.data import ReportInputError, load_run, load_runs, pooled_scores
from Training.report.simulate import EVERY_PATIENT_PROTOCOL, simulate_run
from VirtualBiopsyLib.errors import OutputExistsError

RESAMPLES = 200


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("simulated")
    return {
        "paper": simulate_run(root / "resnet18", patients=80, seed=1),
        "every": simulate_run(
            root / "vgg16",
            patients=80,
            architecture="vgg16",
            protocol=EVERY_PATIENT_PROTOCOL,
            seed=2,
        ),
    }


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports") / "report"
    return write_report([runs["paper"], runs["every"]], out, n_resamples=RESAMPLES, progress=False)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def test_report_folder_has_markdown_html_csv_and_figures(report: Path) -> None:
    names = {p.name for p in report.iterdir()}
    for name in (
        "report.md",
        "report.html",
        "report.json",
        "settings.csv",
        "paired_comparisons.csv",
        "calibration.csv",
        "density.csv",
        "robustness.csv",
        "generation.csv",
        "roc_resnet18.png",
        "roc_vgg16.png",
        "reliability_resnet18.png",
        "robustness.png",
        "density.png",
        "paired_comparisons.png",
    ):
        assert name in names, name
    pngs = sorted(report.glob("*.png"))
    for png in pngs:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 300
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 5  # something is drawn
    html = (report / "report.html").read_text()
    inline = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(inline) == len(pngs)
    assert {base64.b64decode(data) for data in inline} == {p.read_bytes() for p in pngs}
    markdown = (report / "report.md").read_text()
    for png in pngs:
        assert f"]({png.name})" in markdown


def test_generation_table_shows_the_in_breast_errors_beside_the_papers(report: Path) -> None:
    """Table 3 of the report, as of ``experiments``: whole-image MSE/PSNR/SSIM and the
    in-breast MSE/PSNR that training records beside them."""
    rows = _csv_rows(report / "generation.csv")
    assert rows and all(float(row["breast_psnr_fold_mean"]) > 0 for row in rows)
    markdown = (report / "report.md").read_text()
    assert (
        "| run | view | MSE | PSNR (dB) | SSIM | MSE in breast | PSNR in breast (dB) |" in markdown
    )


def test_lesion_table_says_n_a_for_runs_without_lesion_masks(report: Path) -> None:
    """Runs without masks (and result files written before lesion figures existed) still
    tabulate: the lesion columns say n/a and generation.csv counts 0 lesion images."""
    markdown = (report / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if "| MAE in lesion |" in line)
    rows = markdown.split(header, 1)[1].splitlines()[2:]
    assert rows and rows[0].startswith("| ") and rows[0].endswith("| n/a | n/a | n/a | n/a | n/a |")
    assert all(row["lesion_images"] == "0" for row in _csv_rows(report / "generation.csv"))


def test_first_page_carries_notices_provenance_and_tripod_items(report: Path) -> None:
    markdown = (report / "report.md").read_text()
    first_page = markdown[: markdown.index("## Statistical methods")]
    assert VirtualBiopsyLib.SYNTHETIC_NOTICE in first_page
    assert VirtualBiopsyLib.RESEARCH_USE_NOTICE in first_page
    assert "0" * 64 in first_page  # the simulated runs' manifest hash
    assert "every-patient" in first_page and "| paper |" in first_page
    assert "TRIPOD+AI items this report covers" in first_page
    assert "External validation" in first_page
    assert "bootstrap with 200 resamples" in first_page
    for line in (report / "settings.csv").read_text().splitlines()[:2]:
        assert line.startswith("# ")


def test_the_paper_protocols_pool_is_not_presented_as_the_whole_cohort(report: Path) -> None:
    """Its folds test about half of the patients: the discrimination table's caption
    says the pooled estimate of that run covers only those, and not of the other run."""
    markdown = (report / "report.md").read_text()
    caption = markdown.split("## Discrimination")[1].split("## ")[0]
    assert "resnet18: the paper's protocol; the pooled estimate covers only the patients" in caption
    assert "vgg16: the paper" not in caption


def test_every_patient_protocol_pools_each_patient_once(runs) -> None:
    paper, every = load_run(runs["paper"]), load_run(runs["every"])
    tested = {p.patient for p in every.predictions if p.split == "test"}
    assert len(tested) == 80
    scored = [case for fold in every.folds for case in fold_test_cases(every.predictions, fold)]
    pooled = pooled_scores(every)["F"]
    assert sorted(pooled.cases) == sorted(scored) and len(set(scored)) == len(scored)
    assert set(pooled.patients) <= tested and len(set(pooled.patients)) > 60
    assert len({p.patient for p in paper.predictions if p.split == "test"}) == 40


def test_every_patient_is_claimed_only_when_every_patient_is_scored(tmp_path: Path) -> None:
    """Under the every-patient protocol the first page says "every patient is tested
    once" only when the pool holds every patient; generators in fold 0 only (the demo
    recipe) leave folds 1-4 unscored, and the page says so instead of the claim."""
    from Training.evaluation import read_predictions, write_predictions
    from Training.report.build import _coverage

    full = load_run(
        simulate_run(
            tmp_path / "full", patients=20, protocol=EVERY_PATIENT_PROTOCOL, missing_des=0.0
        )
    )
    text = _coverage(full, analyse_run(full, n_resamples=100, repetitions=1))
    assert "20 of 20 patients (every patient is tested once)" in text
    folder = simulate_run(tmp_path / "fold0", patients=20, protocol=EVERY_PATIENT_PROTOCOL)
    rows = read_predictions(folder / "predictions.csv")
    write_predictions(
        [p for p in rows if p.source == "real" or p.fold == 0], folder / "predictions.csv"
    )
    partial = load_run(folder)
    text = _coverage(partial, analyse_run(partial, n_resamples=100, repetitions=1))
    assert "every patient is tested once" not in text
    assert "Fold(s) 1, 2, 3, 4 score no case: they have no synthetic DES" in text


def test_c_and_c_hat_are_scored_on_the_same_cases(runs) -> None:
    run = load_run(runs["paper"])
    scores = pooled_scores(run)
    assert all(scores[setting].cases == scores["C"].cases for setting in scores)
    tested = {p.case for p in run.predictions if p.split == "test"}
    assert len(scores["F"]) < len(tested)  # cases without DES are in no setting, F included


def test_point_auc_equals_an_independent_recomputation_per_fold(runs) -> None:
    run = load_run(runs["paper"])
    analysis = analyse_run(run, n_resamples=RESAMPLES)
    rows = {row["setting"]: row for row in analysis.settings}
    for setting in ("F", "C", "F+C"):
        labels, scores = [], []
        for fold in run.folds:
            weights = fold_weights(run.predictions, fold, run.threshold)
            y, s, _ = setting_scores(fold_test_cases(run.predictions, fold), setting, weights)
            labels += list(y)
            scores += list(s)
        assert rows[setting]["auc"] == pytest.approx(roc_auc_score(labels, scores))
        assert rows[setting]["cases"] == len(labels)
        assert rows[setting]["auc_ci_low"] <= rows[setting]["auc"] <= rows[setting]["auc_ci_high"]


def test_report_is_reproducible_with_its_seed(runs, tmp_path: Path) -> None:
    first = write_report([runs["paper"]], tmp_path / "a", n_resamples=RESAMPLES, progress=False)
    second = write_report([runs["paper"]], tmp_path / "b", n_resamples=RESAMPLES, progress=False)
    third = write_report(
        [runs["paper"]], tmp_path / "c", n_resamples=RESAMPLES, seed=5, progress=False
    )
    assert (first / "settings.csv").read_bytes() == (second / "settings.csv").read_bytes()
    assert (first / "settings.csv").read_bytes() != (third / "settings.csv").read_bytes()


def test_claims_follow_the_holm_adjusted_test_and_the_interval(report: Path) -> None:
    rows = _csv_rows(report / "paired_comparisons.csv")
    assert len(rows) == 8  # four comparisons × two runs
    for row in rows:
        p, low, high = (
            float(row[k]) for k in ("delong_p_holm", "bootstrap_ci_low", "bootstrap_ci_high")
        )
        if "higher" in row["conclusion"]:
            assert p < 0.05 and low > 0
        elif "lower" in row["conclusion"]:
            assert p < 0.05 and high < 0
        else:
            assert row["conclusion"] == "no significant difference"
            assert p >= 0.05 or low <= 0 <= high
    # real DES carries far more signal than LE in the simulation
    assert all(r["conclusion"] == "F+C higher than F" for r in rows if r["comparison"] == "F+C − F")


def test_no_claim_when_the_test_and_the_interval_disagree() -> None:
    base = {"a": "F", "b": "F+Ĉ"}
    assert (
        _conclusion(
            {**base, "delong_p_holm": 0.01, "bootstrap_ci_low": -0.01, "bootstrap_ci_high": 0.2}
        )
        == "no significant difference"
    )
    assert (
        _conclusion(
            {**base, "delong_p_holm": 0.2, "bootstrap_ci_low": 0.01, "bootstrap_ci_high": 0.2}
        )
        == "no significant difference"
    )
    assert (
        _conclusion(
            {**base, "delong_p_holm": 0.01, "bootstrap_ci_low": 0.01, "bootstrap_ci_high": 0.2}
        )
        == "F+Ĉ higher than F"
    )
    assert _conclusion({**base, "delong_p_holm": math.nan}) == "not tested"


def test_robustness_population_is_fixed_and_ends_at_c_and_c_hat(runs) -> None:
    run = load_run(runs["paper"])
    analysis = analyse_run(run, n_resamples=RESAMPLES, repetitions=4)
    scores = analysis.scores
    curve = {(r["percent_synthetic"], r["curve"]): r for r in analysis.robustness}
    assert sorted({p for p, _ in curve}) == list(range(0, 101, 10))
    assert len({r["cases"] for r in analysis.robustness}) == 1  # one population throughout
    assert curve[(0, "C*")]["auc_mean"] == pytest.approx(
        roc_auc_score(scores["C"].labels, scores["C"].probabilities)
    )
    assert curve[(100, "C*")]["auc_mean"] == pytest.approx(
        roc_auc_score(scores["Ĉ"].labels, scores["Ĉ"].probabilities)
    )
    assert curve[(100, "F+C*")]["auc_mean"] == pytest.approx(
        roc_auc_score(scores["F+Ĉ"].labels, scores["F+Ĉ"].probabilities)
    )
    for percent in (0, 100):
        assert curve[(percent, "C*")]["auc_min"] == curve[(percent, "C*")]["auc_max"]
    assert curve[(50, "C*")]["auc_max"] > curve[(50, "C*")]["auc_min"]  # spread exists
    assert curve[(50, "C*")]["repetitions"] == 4


def test_small_density_groups_report_no_metric(tmp_path: Path) -> None:
    run_dir = simulate_run(tmp_path / "small", patients=20, seed=3)
    analysis = analyse_run(load_run(run_dir), n_resamples=RESAMPLES)
    hidden = [r for r in analysis.density if not r["reported"]]
    shown = [r for r in analysis.density if r["reported"]]
    assert hidden, "20 patients over four categories should leave some group too small"
    for row in hidden:
        assert min(row["malignant"], row["benign"]) < 3
        assert "auc" not in row and math.isnan(row["auc_fold_mean"])
    for row in shown:
        assert min(row["malignant"], row["benign"]) >= 3 and not math.isnan(row["auc"])
    out = write_report([run_dir], tmp_path / "report", n_resamples=RESAMPLES, progress=False)
    assert "too few" in (out / "report.md").read_text()


def test_runs_are_keyed_by_folder_not_architecture(tmp_path: Path) -> None:
    a = simulate_run(tmp_path / "first" / "resnet18", patients=30, seed=4)
    b = simulate_run(tmp_path / "second" / "resnet18", patients=30, seed=5)
    assert [r.name for r in load_runs([a, b])] == ["first/resnet18", "second/resnet18"]
    out = write_report([a, b], tmp_path / "report", n_resamples=RESAMPLES, progress=False)
    names = {row["run"] for row in _csv_rows(out / "settings.csv")}
    assert names == {"first/resnet18", "second/resnet18"}


def test_a_run_given_as_dot_is_named_after_its_folder(runs, tmp_path: Path, monkeypatch) -> None:
    """``report .`` inside a run folder: rows, text and figure files carry the folder's
    name, not an empty one (``|  |`` rows, ``roc_.png``), as ``experiments`` names it."""
    monkeypatch.chdir(runs["paper"])
    out = write_report([Path(".")], tmp_path / "report", n_resamples=RESAMPLES, progress=False)
    assert {row["run"] for row in _csv_rows(out / "settings.csv")} == {"resnet18"}
    assert (out / "roc_resnet18.png").is_file() and not (out / "roc_.png").exists()
    assert "resnet18: pooled out-of-fold test set" in (out / "report.md").read_text()


def test_runs_on_different_manifests_are_flagged_on_the_first_page(tmp_path: Path) -> None:
    import json

    a = simulate_run(tmp_path / "a", patients=20, seed=1)
    b = simulate_run(tmp_path / "b", patients=20, seed=2)
    record = json.loads((b / "run.json").read_text())
    del record["manifest_sha256"]  # a run that does not say what it was trained on
    (b / "run.json").write_text(json.dumps(record))
    out = write_report([a, b], tmp_path / "report", n_resamples=100, progress=False)
    first_page = (out / "report.md").read_text().split("## Statistical methods")[0]
    assert "trained on different manifests (SHA-256 a 000000000000; b unknown)" in first_page


def test_refuses_to_replace_a_folder_that_is_not_a_report(runs, tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        write_report([runs["paper"]], user, n_resamples=RESAMPLES, progress=False)
    with pytest.raises(OutputExistsError, match="not a report folder"):
        write_report([runs["paper"]], user, n_resamples=RESAMPLES, overwrite=True, progress=False)
    assert (user / "notes.txt").read_text() == "mine"
    out = write_report([runs["paper"]], tmp_path / "r", n_resamples=RESAMPLES, progress=False)
    (out / "stale.csv").write_text("old")
    write_report([runs["paper"]], out, n_resamples=RESAMPLES, overwrite=True, progress=False)
    assert not (out / "stale.csv").exists() and (out / "report.md").exists()


def test_a_failed_report_leaves_nothing_behind(runs, tmp_path: Path, monkeypatch) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(figures, "density_figure", broken)
    with pytest.raises(RuntimeError):
        write_report([runs["paper"]], tmp_path / "out", n_resamples=RESAMPLES, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_broken_run_folder_is_named_in_the_error(runs, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "run.json").write_text("{}")
    with pytest.raises(ReportInputError, match=r"broken/predictions\.csv: missing"):
        load_run(broken)
    code = main(
        ["report", str(runs["paper"]), str(broken), "--out", str(tmp_path / "r"), "--no-progress"]
    )
    assert code == 3
    assert "predictions.csv" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_command_line_writes_the_report(runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "report",
            str(runs["every"]),
            "--out",
            str(out),
            "--resamples",
            "150",
            "--repetitions",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "report.md" in capsys.readouterr().out
    assert '"bootstrap_resamples": 150' in (out / "report.json").read_text()


def test_a_run_without_generators_reports_what_it_has(tmp_path: Path) -> None:
    """--no-generators: no synthetic DES, so Ĉ, F+Ĉ and the sweep are absent, not faked."""
    run_dir = simulate_run(tmp_path / "nogen", patients=40, seed=6)
    predictions = run_dir / "predictions.csv"
    lines = predictions.read_text().splitlines()
    kept = [line for line in lines if ",synthetic," not in line]
    predictions.write_text("\n".join(kept) + "\n")
    analysis = analyse_run(load_run(run_dir), n_resamples=RESAMPLES)
    rows = {row["setting"]: row for row in analysis.settings}
    assert rows["Ĉ"]["cases"] == 0 and "auc" not in rows["Ĉ"]
    assert not analysis.robustness
    paired = {row["comparison"]: row for row in analysis.paired}
    assert paired["Ĉ − C"]["conclusion"] == "not tested"
    assert paired["F+C − F"]["conclusion"] != "not tested"
    out = write_report([run_dir], tmp_path / "report", n_resamples=RESAMPLES, progress=False)
    markdown = (out / "report.md").read_text()
    assert "No case has both real and synthetic DES" in markdown
    assert not (out / "robustness.png").exists()


def test_runs_whose_names_differ_only_in_punctuation_keep_their_own_figures(
    tmp_path: Path,
) -> None:
    """``run.1`` and ``run_1`` would both be ``roc_run_1.png``: one run's figures would
    replace the other's and report.md would show them under both names."""
    dotted = simulate_run(tmp_path / "run.1", patients=30, seed=4)
    underscored = simulate_run(tmp_path / "run_1", patients=30, seed=5)
    out = write_report(
        [dotted, underscored], tmp_path / "report", n_resamples=RESAMPLES, progress=False
    )
    markdown = (out / "report.md").read_text()
    for kind, caption in (("roc", "ROC curves per setting"), ("reliability", "Reliability")):
        shown = {
            run: re.search(
                rf"!\[{re.escape(caption)}[^\]]*, {re.escape(run)}\]\(([^)]+)\)", markdown
            )
            for run in ("run.1", "run_1")
        }
        files = {run: match.group(1) for run, match in shown.items() if match}
        assert len(set(files.values())) == 2, files  # one figure per run
        assert all(name.startswith(f"{kind}_") for name in files.values())
        pictures = [(out / name).read_bytes() for name in files.values()]
        assert pictures[0] != pictures[1]  # each run's own curves, not one run's twice
    again = write_report(
        [underscored, dotted], tmp_path / "again", n_resamples=RESAMPLES, progress=False
    )
    assert sorted(p.name for p in again.glob("roc_*.png")) == sorted(
        p.name for p in out.glob("roc_*.png")
    )  # the names do not depend on the runs' order


def test_figure_stems_are_distinct_even_on_a_case_insensitive_disk() -> None:
    from Training.report.build import _figure_stems

    stems = _figure_stems(["Run", "run", "a/b", "a_b", "resnet18"])
    assert stems["resnet18"] == "resnet18"  # a name nobody shares keeps its plain stem
    assert len({stem.casefold() for stem in stems.values()}) == 5
    taken = _figure_stems(["x.1", "x_1"])["x.1"]  # a run already named like a suffixed stem
    crowded = _figure_stems(["x.1", "x_1", taken])
    assert len({stem.casefold() for stem in crowded.values()}) == 3
