"""The prepared GPU session script (Testing/benchmarks/gpu_session.py) stays runnable.

No test can run it on a GPU; its ``--smoke`` mode runs every stage on the CPU in a few
minutes (run by hand, see the script). Here: every command it would start parses with
the real command lines, and its paper-size recipe is the demo recipe with the paper's
network sizes and nothing else changed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from Training.cli import build_parser as training_parser
from Training.config import RunConfig, demo_config
from VirtualBiopsyLib.cli import build_parser as library_parser

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.py"


@pytest.fixture(scope="module")
def gpu_session():
    spec = importlib.util.spec_from_file_location("gpu_session", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("smoke", [False, True])
def test_every_command_parses_with_the_real_command_lines(gpu_session, smoke, tmp_path) -> None:
    args = argparse.Namespace(smoke=smoke, patients=600, check_patients=300)
    parsers = {"Training.cli": training_parser(), "VirtualBiopsyLib": library_parser()}
    out, work = tmp_path / "out", tmp_path / "work"
    seen = set()
    for stage in gpu_session.STAGES:
        for command in gpu_session.stage_commands(stage, out, work, args):
            if command[1] == "-m":
                parsed = parsers[command[2]].parse_args(command[3:])  # SystemExit if stale
                assert callable(parsed.func)
                seen.add(command[3])
                if "--device" in command:
                    assert command[command.index("--device") + 1] == ("cpu" if smoke else "cuda")
                if command[3] == "train" and stage == "paper-size":
                    assert parsed.workers > 1  # its jobs side by side
            else:  # the training benchmark, started as a script
                assert Path(command[1]).is_file() and "--json" in command
            # the device tool brings back files at most two folders below $OUT, and --out
            # is $OUT/gpu: a file or folder named here lies in --out itself; the cohorts,
            # runs and packages (thousands of files) go to --work
            for path in (Path(a) for a in command if a.startswith(str(tmp_path))):
                assert path.is_relative_to(work) or len(path.relative_to(out).parts) == 1
    assert seen == {"phantom", "train", "package", "predict", "phantom-check"}


def test_the_gpu_stages_fit_one_device_command(gpu_session) -> None:
    """The device tool runs a command for at most 600 s: the stage limits leave room."""
    assert sum(gpu_session.GPU_LIMITS) <= 570


def test_job_seconds_reads_each_jobs_state_and_duration(gpu_session, tmp_path) -> None:
    jobs = tmp_path / "run" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "fold_0.G_CC.json").write_text(
        '{"status": "complete", "started": "2026-12-07T10:00:00+00:00",'
        ' "updated": "2026-12-07T10:02:05+00:00"}'
    )
    (jobs / "fold_0.LE_CC.json").write_text(
        '{"status": "running", "started": "2026-12-07T10:00:00+00:00",'
        ' "updated": "2026-12-07T10:00:00+00:00"}'
    )
    assert gpu_session.job_seconds(tmp_path / "run") == {
        "fold_0/G_CC": {"status": "complete", "seconds": 125.0},
        "fold_0/LE_CC": {"status": "running"},
    }
    assert gpu_session.job_seconds(tmp_path / "no-run") == {}


def test_a_stage_out_of_time_ends_its_whole_process_group(gpu_session, tmp_path) -> None:
    """``train --workers`` starts processes of its own: a timeout must end them too."""
    marker = tmp_path / "child-still-running"
    child = f"import time, pathlib; time.sleep(3); pathlib.Path({str(marker)!r}).touch()"
    parent = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(30)"
    )
    with open(tmp_path / "log", "w") as log:
        assert gpu_session.run_within([sys.executable, "-c", parent], log, 1.0) is None
    time.sleep(4)
    assert not marker.exists()


def test_the_paper_size_recipe_is_the_demo_recipe_with_paper_size_networks(gpu_session) -> None:
    config = gpu_session.paper_size_config(smoke=False)
    assert RunConfig.from_dict(config.to_dict()) == config  # a valid, saveable config
    demo = demo_config()
    expected = replace(
        demo,
        image_size=256,
        device="cuda",
        classifier=replace(demo.classifier, architecture="resnet18", batch_size=32),
        generator=replace(demo.generator, base_width=32, levels=5, crop_size=128),
    )
    assert config == expected


def test_a_folder_that_holds_files_is_refused(gpu_session, tmp_path) -> None:
    (tmp_path / "earlier.txt").write_text("results of an earlier session\n")
    with pytest.raises(SystemExit):
        gpu_session.main(["--out", str(tmp_path), "--smoke"])
    with pytest.raises(SystemExit):
        gpu_session.main(["--out", str(tmp_path / "new"), "--work", str(tmp_path), "--smoke"])
    assert (tmp_path / "earlier.txt").read_text() == "results of an earlier session\n"
    assert not (tmp_path / "new").exists()
