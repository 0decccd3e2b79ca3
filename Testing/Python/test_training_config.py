"""Training configuration: the paper's defaults, JSON round trip, clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from Training.config import ClassifierConfig, ConfigError, RunConfig, demo_config, tiny_config
from VirtualBiopsyLib.roles import SLOTS


def test_defaults_are_the_papers_numbers() -> None:
    config = RunConfig()
    c, g, a = config.classifier, config.generator, config.classifier.augment
    assert (c.learning_rate, c.beta1, c.weight_decay) == (1e-3, 0.9, 1e-5)
    assert (c.lr_factor, c.lr_patience) == (0.1, 10)
    assert (c.max_epochs, c.early_stopping_patience, c.warmup_epochs) == (300, 50, 50)
    assert (a.shift_fraction, a.zoom_fraction, a.rotation_degrees) == (0.1, 0.1, 15.0)
    assert (g.learning_rate, g.beta1, g.weight_decay) == (1e-5, 0.5, 1e-5)
    assert (g.lambda_cycle, g.lambda_identity) == (10.0, 5.0)
    assert (g.max_epochs, g.early_stopping_patience, g.warmup_epochs) == (200, 50, 50)
    assert (g.ngf, g.n_blocks, g.ndf, g.n_layers) == (64, 9, 64, 3)
    assert (config.image_size, config.splits.n_folds, config.threshold) == (256, 5, 0.5)


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    tiny_config(seed=4).save(path)
    assert RunConfig.load(path) == tiny_config(seed=4)
    assert json.loads(path.read_text())["classifier"]["architecture"] == "demo"


def test_unknown_key_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    data = RunConfig().to_dict()
    data["classifier"]["learning_rat"] = 0.1
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"config\.json.*learning_rat"):
        RunConfig.load(path)


def test_bad_values_are_refused() -> None:
    data = RunConfig().to_dict()
    data["classifier"]["architecture"] = "alexnet"
    with pytest.raises(ConfigError, match="alexnet"):
        RunConfig.from_dict(data)
    data = RunConfig().to_dict()
    data["classifier"]["batch_size"] = 0
    with pytest.raises(ConfigError, match="batch_size"):
        RunConfig.from_dict(data)


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        RunConfig.load(path)


def test_class_weighting_defaults_to_the_papers_plain_cross_entropy(tmp_path: Path) -> None:
    assert RunConfig().classifier.class_weighting == "none"
    assert tiny_config().classifier.class_weighting == "balanced"
    assert demo_config().classifier.class_weighting == "balanced"
    path = tmp_path / "config.json"
    demo_config().save(path)
    assert json.loads(path.read_text())["classifier"]["class_weighting"] == "balanced"
    assert RunConfig.load(path) == demo_config()


def test_unknown_class_weighting_is_refused() -> None:
    data = RunConfig().to_dict()
    data["classifier"]["class_weighting"] = "inverse"
    with pytest.raises(ConfigError, match="class_weighting.*inverse"):
        RunConfig.from_dict(data)


def test_config_saved_before_class_weighting_existed_still_loads(tmp_path: Path) -> None:
    data = RunConfig().to_dict()
    del data["classifier"]["class_weighting"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert RunConfig.load(path).classifier.class_weighting == "none"


def test_demo_config_is_the_recipe_that_sees_the_lesion() -> None:
    demo, tiny = demo_config(), tiny_config()
    assert demo.generator.max_epochs > tiny.generator.max_epochs
    assert demo.image_size == 128 > tiny.image_size
    assert demo.classifier.pooling == "max" and tiny.classifier.pooling == "avg"
    c = demo.classifier  # a constant rate; DES epochs hold real and synthetic images
    assert c.min_learning_rate == c.learning_rate and c.synthetic_des_training
    assert c.for_slot("LE_CC").max_epochs == 2 * c.for_slot("DES_MLO").max_epochs == 60
    # LE classifiers learn from both views' LE images; DES ones from their own view's
    assert c.trains_on_other_view("LE_MLO") and not c.trains_on_other_view("DES_CC")
    g = demo.generator
    assert (g.recipe, g.architecture, g.selection) == ("pix2pix", "unet", "emphasis_l1")
    assert g.lesion_emphasis > 0 and g.crop_size == 64 and g.folds == 1
    assert demo.splits.protocol == "every-patient"
    paper = RunConfig()
    assert (paper.generator.recipe, paper.generator.lesion_emphasis) == ("cyclegan", 0.0)
    assert (paper.classifier.pooling, paper.splits.protocol) == ("avg", "paper")


def test_des_max_epochs_is_the_des_slots_limit_and_is_checked(tmp_path: Path) -> None:
    classifier = tiny_config().classifier
    assert classifier.des_max_epochs is None
    assert {classifier.for_slot(s).max_epochs for s in ("LE_CC", "DES_CC")} == {40}
    data = tiny_config().to_dict()
    data["classifier"]["des_max_epochs"] = 0
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="des_max_epochs must be a positive integer"):
        RunConfig.load(path)


def test_other_view_training_names_modalities_and_is_checked(tmp_path: Path) -> None:
    """The paper trains each classifier on its own view only ("none", the default)."""
    assert ClassifierConfig().other_view_training == "none"
    for choice, trained in (
        ("none", set()),
        ("LE", {"LE_CC", "LE_MLO"}),
        ("DES", {"DES_CC", "DES_MLO"}),
        ("all", {"LE_CC", "LE_MLO", "DES_CC", "DES_MLO"}),
    ):
        config = ClassifierConfig(other_view_training=choice)
        assert {s for s in SLOTS if config.trains_on_other_view(s)} == trained
    data = tiny_config().to_dict()
    data["classifier"]["other_view_training"] = "MLO"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="unknown other_view_training 'MLO'"):
        RunConfig.load(path)


def test_the_epochs_option_is_every_classifiers_limit(tmp_path: Path) -> None:
    from Training.cli import _run_config, build_parser

    path = tmp_path / "demo.json"
    demo_config().save(path)
    train = ["train", "m.csv", "--out", "o", "--config", str(path)]
    kept = _run_config(build_parser().parse_args(train))
    assert kept.classifier.for_slot("DES_CC").max_epochs == 30  # the config's own split
    overridden = _run_config(build_parser().parse_args([*train, "--epochs", "5"])).classifier
    assert {overridden.for_slot(s).max_epochs for s in ("LE_CC", "DES_MLO")} == {5}


def _edited(section: str, key: str, value: object) -> dict:
    """The paper's configuration as JSON with one value changed (section "" = top level)."""
    data = RunConfig().to_dict()
    (data[section] if section else data)[key] = value
    return data


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("classifier", "synthetic_des_training", "false", "true or false"),  # "false" is true
        ("generator", "other_view_pairs", "yes", "true or false"),
        ("classifier", "val_loss_smoothing", "0.5", "a number"),
        ("classifier", "learning_rate", "1e-3", "a number"),
        ("classifier", "max_epochs", True, "an integer"),
        ("generator", "crop_size", "64", "an integer or null"),
        ("generator", "lr_decay_epochs", 2.5, "an integer"),
        ("classifier", "pretrained_weights", 5, "a string or null"),
        ("", "image_size", "256", "an integer"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused_not_coerced(
    section: str, key: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError, match=f"{key} must be {expected}, got {value!r}"):
        RunConfig.from_dict(_edited(section, key, value))


@pytest.mark.parametrize(
    ("section", "edits", "message"),
    [
        # the plateau schedule never rises to a floor above its start: silently constant
        ("classifier", {"min_learning_rate": 0.01}, "min_learning_rate 0.01 is above"),
        ("classifier", {"min_learning_rate": -1e-4}, "min_learning_rate must be"),
        ("classifier", {"val_loss_smoothing": 1.0}, r"val_loss_smoothing must be in \[0, 1\)"),
        ("classifier", {"lr_factor": 1.5}, r"lr_factor must be in \(0, 1\)"),
        ("classifier", {"learning_rate": -0.1}, "learning_rate must be"),
        # refused by the builder only once the first classifier starts, hours into a run
        (
            "classifier",
            {"architecture": "vgg16", "pooling": "attention"},
            "pooling 'attention' cannot be used with architecture 'vgg16'",
        ),
        ("classifier", {"pretrained_weights": "imagenet.pth"}, r"imagenet\.pth.*\.safetensors"),
        (
            "classifier",
            {"architecture": "demo", "pretrained_weights": "w.safetensors"},
            "demo classifier has no ImageNet weights",
        ),
        ("generator", {"crop_size": 0}, "crop_size must be a positive integer"),  # was "no crop"
        ("generator", {"lr_decay_epochs": -5}, "lr_decay_epochs must be a non-negative"),
        ("generator", {"lesion_emphasis": -2.0}, "lesion_emphasis must be"),  # weights < 0
        ("generator", {"emphasis_window": 0.0}, r"emphasis_window must be in \(0, 1\]"),
        ("generator", {"folds": 0}, "folds must be a positive integer"),  # was: no generator
        ("generator", {"ngf": 512}, "ngf must be an integer from 1 to 256"),  # unpackageable
        (
            "generator",
            {"architecture": "unet", "base_width": 128, "levels": 5},
            "invalid U-Net size",
        ),
        ("splits", {"n_folds": 1}, "n_folds must be an integer >= 2"),
        ("", {"threshold": 1.0}, r"threshold must be in \(0, 1\)"),  # unpackageable
        ("", {"image_size": 4}, "image_size must be an integer from 8 to 1024"),
        ("", {"stretch": "histogram"}, "unknown stretch 'histogram'"),
        ("", {"classifier_phase": "middle"}, "unknown classifier_phase 'middle'"),
    ],
)
def test_an_option_that_training_would_ignore_or_fail_on_is_refused_up_front(
    section: str, edits: dict, message: str
) -> None:
    data = RunConfig().to_dict()
    (data[section] if section else data).update(edits)
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(data)


def test_images_or_crops_too_small_for_the_networks_are_refused() -> None:
    paper = RunConfig()
    with pytest.raises(ConfigError, match="crop_size 16 is too small .* at least 24 pixels"):
        replace(paper, generator=replace(paper.generator, crop_size=16))
    with pytest.raises(ConfigError, match="image_size 16 is too small for the vgg16"):
        replace(paper, image_size=16, classifier=replace(paper.classifier, architecture="vgg16"))
    # what the checks allow: a U-Net of 3 levels without an adversary on 8² crops, a crop
    # larger than the image (the whole image), odd crops, no generators at a small size
    unet = replace(
        paper.generator, recipe="pix2pix", architecture="unet", levels=3, lambda_adversarial=0.0
    )
    replace(paper, generator=replace(unet, crop_size=8))
    replace(paper, generator=replace(paper.generator, crop_size=1024))
    replace(paper, generator=replace(paper.generator, crop_size=33))
    replace(paper, image_size=16, train_generators=False, classifier=tiny_config().classifier)


def test_a_config_built_in_code_is_checked_like_one_read_from_json() -> None:
    with pytest.raises(ConfigError, match="attention"):
        ClassifierConfig(architecture="vgg16", pooling="attention")
    with pytest.raises(ConfigError, match="min_learning_rate"):
        replace(ClassifierConfig(), min_learning_rate=1.0)
