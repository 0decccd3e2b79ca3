"""The phantom check: ground-truth masks on the network's grid, bounds, the command line.
Phantom figures are synthetic: they test the pipeline, not clinical performance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from Training.cache import PreprocessedCache
from Training.cli import main
from Training.datasets import group_cases, read_manifest
from Training.evaluation import SETTINGS
from Training.metrics import lesion_contrast
from Training.metrics import pearson_r as _pearson
from Training.phantom_bounds import FEATURE_SETS
from Training.phantom_check import ContrastPair, le_image_prediction, run_phantom_check
from Training.phantom_truth import (
    MEASUREMENTS,
    hand_feature,
    lesion_measurements,
    phantom_truth,
    radial_profile,
)
from VirtualBiopsyLib import SYNTHETIC_NOTICE
from VirtualBiopsyLib.images.preprocessing import PreprocessingParams
from VirtualBiopsyLib.inference.fixtures import write_untrained_package
from VirtualBiopsyLib.models.package import demo_package_path, load_package
from VirtualBiopsyLib.phantom import generate_cohort

PATIENTS, SEED = 16, 5


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("check")
    manifest = generate_cohort(root / "cohort", patients=PATIENTS, seed=SEED)
    params = PreprocessingParams(size=128)
    cases = group_cases(read_manifest(manifest).rows, phase="early")
    truth = phantom_truth(cases, PATIENTS, SEED, params)
    return cases, truth, PreprocessedCache(root / "cache", params)


def test_lesion_masks_land_on_the_lesion_of_every_view(cohort) -> None:
    """Enhancing lesions are bright inside their mask; the mirrored mask misses them."""
    cases, truth, cache = cohort
    inside, mirrored = [], []
    for case in cases:
        record = truth[case.key]
        if record.enhancement < 0.15:
            continue
        for slot in ("DES_CC", "DES_MLO"):
            if slot not in case.slots:
                continue
            des = cache.load(case.slots[slot])
            mask, breast = record.lesion_masks[slot], record.breast_masks[slot]
            inside.append(lesion_contrast(des, mask, breast))
            mirrored.append(lesion_contrast(des, np.flipud(mask), breast))
    assert len(inside) >= 6
    assert np.nanmean(inside) > 0.05
    assert np.nanmean(inside) > 3 * abs(np.nanmean(mirrored))


def test_every_case_has_truth_and_masks_inside_the_breast(cohort) -> None:
    cases, truth, _ = cohort
    assert set(truth) == {case.key for case in cases}
    for case in cases:
        record = truth[case.key]
        assert record.label in (0, 1) and 0.0 <= record.aggressiveness <= 1.0
        for slot, mask in record.lesion_masks.items():
            breast = record.breast_masks[slot]
            assert mask.any() and (mask & breast).sum() >= 0.9 * mask.sum()
        assert record.features["enhancement"] == record.enhancement  # the same lesion
        assert record.features["diameter_mm"] == record.diameter_mm


def test_hand_feature_and_contrast_are_undefined_without_a_region() -> None:
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    empty = np.zeros((32, 32), bool)
    assert math.isnan(lesion_contrast(image, empty, ~empty))
    assert math.isnan(hand_feature(image, empty))
    assert np.isnan(lesion_measurements(image, empty, ~empty)).all()


def test_lesion_measurements_tell_a_rim_from_a_filled_lesion() -> None:
    """Measured where the lesion is: contrast, area, and a rim brighter than its core."""
    rows, cols = np.mgrid[:48, :48]
    radius = np.hypot(rows - 24, cols - 24)
    lesion, breast = radius <= 8, np.ones((48, 48), bool)
    filled = np.where(lesion, 0.6, 0.3)
    rim = np.where(lesion & (radius > 5), 0.6, np.where(lesion, 0.35, 0.3))
    measured = {
        name: dict(zip(MEASUREMENTS, lesion_measurements(image, lesion, breast), strict=True))
        for name, image in (("filled", filled), ("rim", rim))
    }
    assert measured["filled"]["contrast"] == pytest.approx(0.3)
    assert measured["filled"]["area"] == lesion.sum()
    assert measured["rim"]["rim"] > 0.1 > abs(measured["filled"]["rim"])
    assert measured["filled"]["edge"] > 0.0
    assert measured["filled"]["surround"] == pytest.approx(0.0, abs=1e-12)


def _disc_pairs(real_contrast: np.ndarray, brightness: np.ndarray) -> list[ContrastPair]:
    """Pairs whose LE shows a disc of the given brightness on a noisy background."""
    rng = np.random.default_rng(0)
    rows, cols = np.indices((48, 48))
    pairs = []
    for real, bright in zip(real_contrast, brightness, strict=True):
        centre = rng.integers(16, 32, size=2)
        lesion = np.hypot(rows - centre[0], cols - centre[1]) < rng.uniform(3, 6)
        le = 0.3 + 0.02 * rng.standard_normal((48, 48)) + bright * lesion
        pairs.append(ContrastPair(1, float(real), 0.0, None, _le_pixels(le, lesion)))
    return pairs


def _le_pixels(le: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    breast = np.ones_like(lesion)
    return np.concatenate(
        [lesion_measurements(le, lesion, breast), radial_profile(le, lesion, breast)]
    )


def test_le_image_reference_reads_what_the_le_pixels_show_and_not_chance() -> None:
    """The reference for r predicts a contrast the LE disc shows, and not one it does not."""
    rng = np.random.default_rng(1)
    brightness = rng.uniform(0.0, 0.2, 80)
    shown = 2.0 * brightness + 0.01 * rng.standard_normal(80)
    hidden = rng.standard_normal(80)
    assert _pearson(shown, le_image_prediction(_disc_pairs(shown, brightness))) > 0.9
    assert abs(_pearson(hidden, le_image_prediction(_disc_pairs(hidden, brightness)))) < 0.4
    few = _disc_pairs(shown[:9], brightness[:9])  # under two per fold: undefined, not a guess
    assert np.isnan(le_image_prediction(few)).all()
    without_le = [*_disc_pairs(shown, brightness)[:40], ContrastPair(1, 0.1, 0.0, None, None)]
    prediction = le_image_prediction(without_le)
    assert np.isnan(prediction[-1]) and not np.isnan(prediction[:-1]).any()


def test_radial_profile_falls_off_from_the_lesion_and_stays_in_the_breast() -> None:
    rows, cols = np.indices((40, 40))
    disc = np.hypot(rows - 20, cols - 20) < 4
    image = np.where(disc, 1.0, 0.2)
    profile = radial_profile(image, disc, np.ones((40, 40), bool))
    means = profile[0::2]
    assert means[0] == pytest.approx(0.8) and means[-1] == pytest.approx(0.0)
    assert np.all(np.diff(means) <= 1e-12)  # never rises outwards
    outside = np.zeros((40, 40), bool)
    outside[:, 30:] = True  # a breast that holds none of the inner rings
    assert np.isnan(radial_profile(image, disc, outside)[0])
    assert np.isnan(radial_profile(image, np.zeros((40, 40), bool), outside)).all()


def test_phantom_check_scores_all_settings_on_one_population_and_reports_bounds() -> None:
    check = run_phantom_check(load_package(demo_package_path()), patients=24, seed=11)
    sizes = {setting: m["cases"] for setting, m in check.settings.items()}
    assert len(set(sizes.values())) == 1 and check.cases == sizes["C"] > 0
    assert set(check.bounds) >= {
        "oracle_des_auc", "oracle_des_visible_auc", "oracle_le_visible_auc", "oracle_le_auc",
        "hand_feature_real_des_auc", "image_oracle_des_auc", "image_oracle_le_auc",
        "image_oracle_le_des_auc", "image_oracle_synthetic_des_auc",
    }  # fmt: skip
    assert check.bounds["oracle_des_auc"] > 0.6  # the phantom's DES carries its label
    assert set(check.population) == set(FEATURE_SETS)  # the ceilings without cohort noise
    assert check.population["des_visible"] < check.population["des_all"]
    contrast = check.lesion_contrast
    assert contrast["real_malignant"] > contrast["real_benign"] > 0.0
    for reference in ("pearson_r_bound_from_le", "pearson_r_le_image_reference", "pearson_r_label"):
        assert -1.0 <= contrast[reference] <= 1.0
    assert {"psnr", "ssim", "breast_psnr", "lesion_mae"} <= set(check.generation)
    assert SYNTHETIC_NOTICE in check.notices
    for metrics in check.settings.values():  # each AUC inside its own 95 % interval
        assert metrics["auc_ci_low"] <= metrics["auc"] <= metrics["auc_ci_high"]
    pairs = {(c["a"], c["b"]): c for c in check.comparisons}
    assert set(pairs) == {("Ĉ", "F"), ("F+Ĉ", "F"), ("F+C", "F"), ("C", "Ĉ")}
    for (a, b), c in pairs.items():  # AUC(a) − AUC(b) on the same cases, with its interval
        expected = check.settings[a]["auc"] - check.settings[b]["auc"]
        assert c["difference"] == pytest.approx(expected, abs=1e-12)
        assert c["ci_low"] <= c["difference"] <= c["ci_high"] and 0.0 <= c["p_value"] <= 1.0
        assert c["cases"] == check.cases
    fusions = {f["fusion"]: f for f in check.fusion}
    assert set(fusions) == {"F+Ĉ", "F+C"}
    for name, f in fusions.items():  # the weight grid holds 0 (F alone) and 1 (the DES)
        first, second = (check.settings[s]["auc"] for s in f["inputs"])
        assert f["fusion_auc"] == pytest.approx(check.settings[name]["auc"], abs=1e-12)
        assert f["best_auc"] >= max(first, second) - 1e-12 and 0.0 <= f["best_weight"] <= 1.0
        assert f["best_minus_first"]["difference"] == pytest.approx(f["best_auc"] - first)
        assert -1.0 <= f["pearson_r"] <= 1.0 and f["cases"] == check.cases


def test_the_fusion_reference_finds_the_weighting_of_two_readers_that_err_apart() -> None:
    """Two readers wrong on different cases are better mixed; a reader mixed with a copy
    of itself gains nothing; one class leaves every number undefined."""
    from Training.datasets import TrainingCase
    from Training.holdout import PackageScores
    from Training.phantom_check import _fusion_reference

    rng = np.random.default_rng(0)
    cases = [TrainingCase(f"P{n}", "1.2", "L", n % 2, "b") for n in range(200)]
    keys = [case.key for case in cases]
    truth = np.array([case.label for case in cases], dtype=float)
    f, c = (truth + rng.normal(0.0, 1.0, truth.size) for _ in range(2))  # independent errors
    scores = PackageScores(cases, {
        "F": dict(zip(keys, f, strict=True)),
        "Ĉ": dict(zip(keys, c, strict=True)),
        "F+Ĉ": dict(zip(keys, (f + c) / 2, strict=True)),
        "C": dict(zip(keys, f, strict=True)),  # a copy of F
        "F+C": dict(zip(keys, f, strict=True)),
    }, {}, {}, 0.5)  # fmt: skip
    apart = _fusion_reference(scores, "F+Ĉ", "F", "Ĉ")
    assert 0.3 <= apart["best_weight"] <= 0.7 and abs(apart["pearson_r"]) < 0.5
    assert apart["best_minus_first"]["difference"] > 0.02  # averaging two readers helps
    assert apart["best_auc"] >= apart["fusion_auc"]  # the equal mix is on the grid
    same = _fusion_reference(scores, "F+C", "F", "C")
    assert same["best_weight"] == 0.0 and same["best_minus_first"]["difference"] == 0.0
    assert same["pearson_r"] == pytest.approx(1.0)
    malignant = [cases[1], cases[3], cases[5]]
    only = {s: {c.key: p[c.key] for c in malignant} for s, p in scores.probabilities.items()}
    one_class = PackageScores(malignant, only, {}, {}, 0.5)
    undefined = _fusion_reference(one_class, "F+Ĉ", "F", "Ĉ")
    assert math.isnan(undefined["best_weight"]) and math.isnan(undefined["best_auc"])
    assert all(math.isnan(v) for v in undefined["best_minus_first"].values())


def test_a_comparison_on_one_class_is_undefined_not_zero() -> None:
    """As every metric of a one-class subset (the method issue): NaN, written as null."""
    from Training.datasets import TrainingCase
    from Training.holdout import PackageScores
    from Training.phantom_check import _compare

    cases = [TrainingCase(f"P{n}", "1.2", "L", 1, "b") for n in range(2)]  # both malignant
    a, b = (case.key for case in cases)
    probabilities = {"Ĉ": {a: 0.2, b: 0.9}, "F": {a: 0.5, b: 0.4}}
    one_class = PackageScores(cases, probabilities, {}, {}, 0.5)
    result = _compare(one_class, "Ĉ", "F")
    assert result["cases"] == 2 and all(
        math.isnan(result[key]) for key in ("difference", "ci_low", "ci_high", "p_value")
    )


def test_a_baseline_without_generators_leaves_its_synthetic_settings_undefined() -> None:
    """Against a package that cannot synthesize, Ĉ and F+Ĉ differences have no cases
    (NaN, written as null) while the other settings are still compared."""
    from Training.datasets import TrainingCase
    from Training.holdout import PackageScores
    from Training.phantom_check import _against_baseline

    cases = [TrainingCase(f"P{n}", "1.2", "L", n % 2, "b") for n in range(6)]
    keys = [case.key for case in cases]
    ranked = dict(zip(keys, [0.1, 0.9, 0.3, 0.8, 0.2, 0.6], strict=True))  # AUC 1
    one_swap = dict(zip(keys, [0.5, 0.4, 0.3, 0.8, 0.2, 0.6], strict=True))  # AUC 8/9
    ours = dict.fromkeys(SETTINGS, ranked)
    theirs = {setting: {} if "Ĉ" in setting else one_swap for setting in SETTINGS}
    against = _against_baseline(
        PackageScores(cases, ours, {}, {}, 0.5), PackageScores(cases, theirs, {}, {}, 0.5), "b"
    )
    by_setting = {d["setting"]: d for d in against["differences"]}
    for setting in ("Ĉ", "F+Ĉ"):
        assert by_setting[setting]["cases"] == 0 and math.isnan(by_setting[setting]["difference"])
        assert math.isnan(against["settings"][setting]["auc"])
    assert by_setting["F"]["cases"] == 6
    assert by_setting["F"]["difference"] == pytest.approx(1.0 - 8 / 9)


def test_phantom_check_command_writes_json_and_markdown(tmp_path: Path, capsys) -> None:
    """With ``--baseline`` (here an untrained package) both score the same cases and each
    setting's AUC difference is tested paired."""
    baseline = write_untrained_package(tmp_path / "untrained", n_folds=2, image_size=64)
    out = tmp_path / "check"
    code = main(
        ["phantom-check", "--patients", "12", "--seed", "3", "--out", str(out)]
        + ["--baseline", str(baseline)]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "| F+Ĉ |" in printed and SYNTHETIC_NOTICE in printed
    assert "| Ĉ − F |" in printed and "DeLong" in printed
    assert "ceiling of the phantom itself" in printed and "a ceiling for C" in printed
    assert "Against the baseline package untrained-test (model.json sha256 " in printed
    record = json.loads((out / "phantom_check.json").read_text())
    assert record["patients"] == 12 and record["settings"]["C"]["cases"] > 0
    assert (out / "phantom_check.md").read_text().startswith("# Phantom check")
    against = record["baseline"]
    assert [d["setting"] for d in against["differences"]] == list(record["settings"])
    for d in against["differences"]:  # AUC(package) − AUC(baseline) on the same cases
        ours, theirs = record["settings"][d["setting"]], against["settings"][d["setting"]]
        assert d["cases"] == ours["cases"] == theirs["cases"]
        assert d["difference"] == pytest.approx(ours["auc"] - theirs["auc"], abs=1e-12)
        assert d["ci_low"] <= d["difference"] <= d["ci_high"]
    assert {(c["a"], c["b"]) for c in against["comparisons"]} == {
        (c["a"], c["b"]) for c in record["comparisons"]
    }


@pytest.fixture(scope="module")
def one_patient_check():
    """A real check of one patient (about 10 s): every metric n/a, but a complete record."""
    return run_phantom_check(load_package(demo_package_path()), patients=1, seed=3)


def _no_check(*_args, **_kwargs):
    raise AssertionError("the check ran although its arguments or output were refused")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--patients", "0"], "--patients 0: a phantom check needs at least 1 patient"),
        (["--patients", "-4"], "--patients -4: a phantom check needs at least 1 patient"),
        (["--seed", "-1"], "--seed -1: the phantom's seed must be 0 or more"),
    ],
)
def test_phantom_check_refuses_a_cohort_it_cannot_draw_before_any_work(
    arguments: list[str], message: str, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("Training.phantom_check.run_phantom_check", _no_check)
    assert main(["phantom-check", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_run_phantom_check_refuses_no_patients_before_writing_a_cohort(monkeypatch) -> None:
    from VirtualBiopsyLib.errors import UsageError

    monkeypatch.setattr("Training.phantom_check.generate_cohort", _no_check)
    with pytest.raises(UsageError, match="at least 1 patient"):
        run_phantom_check(load_package(demo_package_path()), patients=0)


def test_phantom_check_refuses_a_file_as_out_before_any_work(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("Training.phantom_check.run_phantom_check", _no_check)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["phantom-check", "--patients", "1", "--out", str(afile)]) == 5
    assert f"{afile}: exists and is not a folder" in capsys.readouterr().err
    assert afile.read_text() == "mine"


def test_phantom_check_keeps_an_earlier_check_without_overwrite(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("Training.phantom_check.run_phantom_check", _no_check)
    user = tmp_path / "userdir"
    user.mkdir()
    for name in ("phantom_check.json", "phantom_check.md", "notes.txt"):
        (user / name).write_text(f"my {name}")
    assert main(["phantom-check", "--patients", "1", "--out", str(user)]) == 5
    error = capsys.readouterr().err
    assert f"{user}: holds an earlier phantom check" in error and "--overwrite" in error
    for name in ("phantom_check.json", "phantom_check.md", "notes.txt"):
        assert (user / name).read_text() == f"my {name}"


def test_phantom_check_overwrite_replaces_only_its_own_files(
    one_patient_check, tmp_path: Path, monkeypatch, capsys
) -> None:
    """One patient gives n/a metrics, not an error; ``--overwrite`` replaces the earlier
    check's two files and leaves the user's other files alone."""
    monkeypatch.setattr(
        "Training.phantom_check.run_phantom_check", lambda *_a, **_k: one_patient_check
    )
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    assert main(["phantom-check", "--patients", "1", "--out", str(user)]) == 0  # none earlier
    (user / "phantom_check.md").write_text("an earlier check")
    assert main(["phantom-check", "--patients", "1", "--out", str(user), "--overwrite"]) == 0
    assert "| F | n/a |" in capsys.readouterr().out
    assert (user / "phantom_check.md").read_text().startswith("# Phantom check")
    assert json.loads((user / "phantom_check.json").read_text())["patients"] == 1
    assert (user / "notes.txt").read_text() == "mine"


def test_write_phantom_check_refuses_a_check_that_appeared_while_it_ran(
    one_patient_check, tmp_path: Path
) -> None:
    from Training.phantom_check import write_phantom_check
    from VirtualBiopsyLib.errors import OutputExistsError

    (tmp_path / "phantom_check.json").write_text("another run's")
    with pytest.raises(OutputExistsError, match="phantom_check.json"):
        write_phantom_check(one_patient_check, tmp_path)
    assert (tmp_path / "phantom_check.json").read_text() == "another run's"
    assert not (tmp_path / "phantom_check.md").exists()
    written = write_phantom_check(one_patient_check, tmp_path, overwrite=True)
    assert [path.name for path in written] == ["phantom_check.json", "phantom_check.md"]


def test_generation_errors_count_the_images_each_region_is_known_on() -> None:
    """A data set with lesion masks for some images only (CDD-CESM annotates some; an
    import may have none): every image has its whole-image and in-breast errors, the
    lesion error averages the images with a non-empty mask, and each region says how many
    images it covers; the Markdown shows those counts."""
    from Training.datasets import TrainingCase
    from Training.holdout import PackageScores
    from Training.phantom_check import PhantomCheck, _generation_summary, format_phantom_check
    from Training.phantom_truth import CaseTruth

    rng = np.random.default_rng(0)
    cases = [TrainingCase(f"P{n}", "1.2", "L", n % 2, "b") for n in range(6)]
    real: dict[str, dict[str, np.ndarray]] = {"DES_CC": {}}
    fake: dict[str, dict[str, np.ndarray]] = {"DES_CC": {}}
    truth = {}
    lesion = np.zeros((32, 32), bool)
    lesion[10:14, 10:14] = True
    for n, case in enumerate(cases):
        real["DES_CC"][case.key] = rng.random((32, 32))
        fake["DES_CC"][case.key] = 0.9 * real["DES_CC"][case.key]
        record = CaseTruth(case.label, 0.5, 0.1, "none", 10.0)
        record.breast_masks["DES_CC"] = np.ones((32, 32), bool)
        if n >= 2:  # two without a lesion mask, two with an empty one, two with a lesion
            record.lesion_masks["DES_CC"] = lesion if n >= 4 else np.zeros((32, 32), bool)
        truth[case.key] = record
    scores = PackageScores(cases, {s: {} for s in SETTINGS}, real, fake, 0.5)
    generation = _generation_summary(scores, truth)
    assert generation["images"] == generation["breast_images"] == 6
    assert generation["lesion_images"] == 2
    assert (
        generation["lesion_mae"]
        == pytest.approx(  # |0.9 real − real| in the lesion
            np.mean([np.mean(0.1 * real["DES_CC"][c.key][lesion]) for c in cases[4:]])
        )
    )
    without = _generation_summary(scores, {})  # no truth at all: whole image only
    assert without["images"] == 6 and without["breast_images"] == without["lesion_images"] == 0
    assert math.isnan(without["lesion_mae"]) and math.isnan(without["breast_psnr"])
    settings = {s: dict.fromkeys(("auc", "g_mean", "mcc", "cases"), 0.0) for s in SETTINGS}
    check = PhantomCheck("p", 6, 1, 6, settings, [], {}, {}, {}, without)
    assert "| lesion_mae | n/a | 0 |" in format_phantom_check(check)
    assert "| psnr |" in format_phantom_check(check)
