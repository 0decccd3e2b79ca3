"""``virtual-biopsy predict``: the Slicer hand-over folder, progress lines, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from VirtualBiopsyLib import RESEARCH_USE_NOTICE
from VirtualBiopsyLib.cli import main
from VirtualBiopsyLib.errors import (
    EXIT_BAD_INPUT,
    EXIT_BAD_MODEL,
    EXIT_OK,
    EXIT_OUTPUT_EXISTS,
    EXIT_USAGE,
)
from VirtualBiopsyLib.inference import runner
from VirtualBiopsyLib.inference.fixtures import write_slot_folder, write_untrained_package

PATIENT_ID = "PHANTOM-SECRET-42"


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_untrained_package(tmp_path_factory.mktemp("pkg") / "tiny", n_folds=2)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_untrained_package(
        tmp_path_factory.mktemp("demo") / "DemoModel", n_folds=2, is_demo=True
    )


@pytest.fixture(scope="module")
def exam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slot_folder(
        tmp_path_factory.mktemp("exam") / "export",
        ["LE_CC", "LE_MLO", "DES_MLO"],
        patient_id=PATIENT_ID,
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_progress_ends_with_done_and_the_result_paths(exam, package_dir, tmp_path, capsys):
    code = main(
        [
            "predict",
            str(exam),
            "--model",
            str(package_dir),
            "--out",
            str(tmp_path),
            "--progress",
            "json",
            "--no-saliency",
        ]
    )
    lines = json_lines(capsys.readouterr().out)
    assert code == EXIT_OK
    assert all({"step", "fraction", "message"} <= set(line) for line in lines)
    fractions = [line["fraction"] for line in lines]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert lines[-1]["step"] == "done"
    [result_path] = lines[-1]["results"]
    result = json.loads(Path(result_path).read_text())
    assert result["inputs"]["DES_CC"]["source"] == "synthetic"
    assert result["notice"] == RESEARCH_USE_NOTICE
    assert "saliency_LE_CC" not in result["outputs"]


def test_human_summary_names_no_patient(exam, package_dir, tmp_path, capsys):
    code = main(["predict", str(exam), "--model", str(package_dir), "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == EXIT_OK
    assert "report.png" in captured.out and RESEARCH_USE_NOTICE in captured.out
    assert "DES_CC synthetic" in captured.out
    assert PATIENT_ID not in captured.out + captured.err
    assert "DEMO MODEL" not in captured.out
    folder = next(tmp_path.iterdir())
    assert {"result.json", "report.png", "synthetic_DES_CC.nrrd", "saliency_DES_CC.nrrd"} <= {
        p.name for p in folder.iterdir()
    }


def test_existing_output_is_kept_without_overwrite(exam, package_dir, tmp_path, capsys):
    args = [
        "predict",
        str(exam),
        "--model",
        str(package_dir),
        "--out",
        str(tmp_path),
        "--no-saliency",
    ]
    assert main(args) == EXIT_OK
    [folder] = list(tmp_path.iterdir())
    created = json.loads((folder / "result.json").read_text())["created"]
    capsys.readouterr()
    assert main(args) == EXIT_OUTPUT_EXISTS
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((folder / "result.json").read_text())["created"] == created
    assert main([*args, "--overwrite"]) == EXIT_OK


def test_without_model_the_demo_model_is_used_and_says_so(
    exam, demo_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(runner, "demo_package_path", lambda: demo_dir)
    code = main(["predict", str(exam), "--out", str(tmp_path), "--no-saliency"])
    captured = capsys.readouterr()
    assert code == EXIT_OK
    assert "DEMO MODEL" in captured.out
    result = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    assert result["model"]["is_demo"] is True
    assert any("DEMO MODEL" in warning for warning in result["warnings"])


def test_missing_path_is_a_usage_error(package_dir, tmp_path, capsys):
    code = main(
        [
            "predict",
            str(tmp_path / "nope"),
            "--model",
            str(package_dir),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == EXIT_USAGE
    assert "no such file or folder" in capsys.readouterr().err


def test_tampered_package_is_refused(exam, package_dir, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for file in package_dir.iterdir():
        (tampered / file.name).write_bytes(file.read_bytes())
    weights = next(tampered.glob("*fold0_LE_CC.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    code = main(
        [
            "predict",
            str(exam),
            "--model",
            str(tampered),
            "--out",
            str(tmp_path / "o"),
            "--progress",
            "json",
        ]
    )
    captured = capsys.readouterr()
    assert code == EXIT_BAD_MODEL
    assert "SHA-256" in captured.err
    assert json_lines(captured.out)[-1]["step"] == "error"
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_folder_without_images_is_bad_input(package_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no images here")
    code = main(
        [
            "predict",
            str(tmp_path / "in"),
            "--model",
            str(package_dir),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == EXIT_BAD_INPUT
    assert "no usable mammogram" in capsys.readouterr().err


def test_unreadable_image_is_bad_input_not_a_traceback(package_dir, tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "LE_CC.nrrd").write_bytes(b"NRRD0004\ngarbage")
    code = main(
        ["predict", str(folder), "--model", str(package_dir), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "LE_CC.nrrd" in err and "Traceback" not in err


def test_an_unreadable_file_beside_a_good_case_is_a_json_error_line(
    exam, package_dir, tmp_path, capsys
):
    """What the Slicer module reads is stdout's JSON lines: a file that could not be read
    must be one of them (before "done"), not only a line on stderr."""
    import shutil

    inputs = tmp_path / "inputs"
    shutil.copytree(exam, inputs / "good")
    broken = inputs / "other" / "IM0001.dcm"
    broken.parent.mkdir()
    broken.write_bytes(b"not DICOM" * 40)
    out = tmp_path / "out"
    code = main(
        ["predict", str(inputs), "--model", str(package_dir), "--out", str(out),
         "--progress", "json", "--no-saliency"]
    )  # fmt: skip
    lines = json_lines(capsys.readouterr().out)
    assert code == EXIT_BAD_INPUT
    errors = [line["message"] for line in lines if line["step"] == "error"]
    assert errors == [f"unreadable file: {broken}: not a DICOM file (no 'DICM' prefix or "
                      "file meta information)"]  # fmt: skip
    assert lines[-1]["step"] == "done" and len(lines[-1]["results"]) == 1
    assert "1 file(s) unreadable" in lines[-1]["message"]


def test_cuda_request_without_cuda_is_a_usage_error(exam, package_dir, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal path cannot be exercised")
    code = main(
        [
            "predict",
            str(exam),
            "--model",
            str(package_dir),
            "--out",
            str(tmp_path),
            "--device",
            "cuda",
        ]
    )
    assert code == EXIT_USAGE
    assert "CUDA" in capsys.readouterr().err


def test_export_dicom_adds_the_synthetic_dicom(exam, package_dir, tmp_path):
    code = main(
        [
            "predict",
            str(exam),
            "--model",
            str(package_dir),
            "--out",
            str(tmp_path),
            "--no-saliency",
            "--export-dicom",
            "--progress",
            "json",
        ]
    )
    assert code == EXIT_OK
    result = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    assert result["outputs"]["synthetic_DES_CC_dicom"] == "synthetic_DES_CC.dcm"
