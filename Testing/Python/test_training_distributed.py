"""DistributedDataParallel under torchrun: two CPU processes, gloo, on 127.0.0.1.

Two launches of ``distributed_worker.py`` (module fixture): the first checks steps
(shards, gradients, weights on both ranks), trains four of fold 0's toy jobs straight and
again with an interruption after one epoch of a classifier; the second resumes that run,
whose interrupted job says "running" as a kill -9 leaves it.

Tolerances, and why:

- Gradients of one CycleGAN batch split over two ranks equal the single-process
  gradients of that batch within 5e-5 × the network's largest gradient: instance norm is
  per image, so the sum is the same up to float32 summation order (measured 3e-6).
- A run under torchrun is not the single-process run bit for bit: the classifiers' batch
  norm sees each rank's half batch (PyTorch's SyncBatchNorm is GPU-only; on CUDA the
  runtime converts to it), and Adam turns float noise in gradients that are zero in exact
  arithmetic (convolution biases before an instance norm) into ±lr steps. Probabilities
  agree within 0.03 (measured ≤ 0.009 after 2 epochs of the toy run).
- The resumed torchrun run equals the straight torchrun run exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from toy_training import toy_config, toy_loader, write_cohort

from Training.evaluation import read_predictions
from Training.jobs import job_status, plan_jobs, write_status
from Training.run import train_run
from VirtualBiopsyLib.models.safetensors_io import read_state_dict

WORKER = Path(__file__).with_name("distributed_worker.py")
REPOSITORY = Path(__file__).resolve().parents[2]
JOBS = ["fold_0/G_CC", "fold_0/LE_CC", "fold_0/LE_MLO", "fold_0/DES_CC"]
GRADIENT_TOLERANCE = 5e-5  # × the network's largest gradient (float32 summation order)
PROBABILITY_TOLERANCE = 0.03  # batch norm per rank, Adam on zero-gradient biases


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _torchrun(mode: str, out: Path, manifest: Path) -> subprocess.CompletedProcess:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    environment["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        mode,
        str(out),
        "--manifest",
        str(manifest),
    ]
    return subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("distributed")
    manifest = write_cohort(root / "cohort", 15, "P")
    out = root / "out"
    (out / "steps").mkdir(parents=True)
    first = _torchrun("first", out, manifest)
    assert first.returncode != 0, "the interrupted run should have stopped torchrun"
    assert "KeyboardInterrupt" in first.stderr + first.stdout
    assert (out / "straight" / "fold_0" / "classifiers" / "DES_CC" / "result.json").exists(), (
        first.stderr[-3000:]
    )
    interrupted = out / "interrupted"
    status = json.loads((interrupted / "jobs" / "fold_0.LE_MLO.json").read_text())
    state = json.loads(
        (interrupted / "fold_0/classifiers/LE_MLO/checkpoint/state.json").read_text()
    )
    # as a kill -9 leaves it: "running", and nobody holds the lock
    killed = next(job for job in plan_jobs(toy_config()) if job.name == "fold_0/LE_MLO")
    write_status(interrupted, killed, "running")
    before_resume = job_status(interrupted, killed)["status"]
    second = _torchrun("resume", out, manifest)
    assert second.returncode == 0, second.stderr[-3000:]
    return {
        "root": root,
        "out": out,
        "manifest": manifest,
        "status": status,
        "state": state,
        "before_resume": before_resume,
    }


def test_ranks_train_on_disjoint_parts_of_the_same_global_batches(launched) -> None:
    ranks = [
        json.loads((launched["out"] / "steps" / f"rank{r}.json").read_text())["shards"]
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 9  # 3 epochs × batches of 4, 4, 3
    for zero, one in zip(*ranks, strict=True):
        assert zero["batch"] == one["batch"]  # same shuffle on both ranks
        assert not set(zero["part"]) & set(one["part"])
        assert sorted(zero["part"] + one["part"]) == sorted(zero["batch"])
        # loss factor world × n_part / n_batch: DDP's mean of the ranks' gradients of
        # factor × (part mean loss) is the gradient of the whole batch's mean loss
        for rank in (zero, one):
            assert rank["factor"] == pytest.approx(2 * len(rank["part"]) / len(rank["batch"]))
    assert {round(s["factor"], 6) for s in ranks[0]} == {1.0, round(2 / 3, 6)}


def test_every_rank_holds_the_same_weights_after_training_steps(launched) -> None:
    steps = launched["out"] / "steps"
    for name in ("classifier", "classifier_buffers", "generator"):
        zero = read_state_dict(steps / f"rank0_{name}.safetensors")
        one = read_state_dict(steps / f"rank1_{name}.safetensors")
        assert zero.keys() == one.keys() and zero
        assert all(torch.equal(zero[key], one[key]) for key in zero), name


def test_gradients_are_the_single_process_gradients_of_the_whole_batch(launched) -> None:
    steps = launched["out"] / "steps"
    ddp = read_state_dict(steps / "rank0_gradients.safetensors")
    assert all(
        torch.equal(ddp[k], v)
        for k, v in read_state_dict(steps / "rank1_gradients.safetensors").items()
    )
    single = read_state_dict(steps / "single_gradients.safetensors")
    assert ddp.keys() == single.keys()
    for network in ("le_to_des", "des_to_le", "d_des", "d_le"):
        keys = [key for key in single if key.startswith(f"{network}.")]
        scale = max(float(single[key].abs().max()) for key in keys)
        error = max(float((ddp[key] - single[key]).abs().max()) for key in keys)
        assert scale > 0 and error <= GRADIENT_TOLERANCE * scale, (network, error, scale)


def test_only_rank_zero_writes_and_each_file_once(launched) -> None:
    """Rank 0 writes each final file once and one checkpoint per epoch, and removes a
    finished model's checkpoint; rank 1 writes nothing and takes or probes no job lock
    (its probe of a free lock could make rank 0 refuse its own job as a second copy)."""
    out = launched["out"]
    assert not (out / "writes_rank1.txt").exists()
    written = (out / "writes_rank0.txt").read_text().split()
    finals = [path for path in written if "checkpoint" not in path]
    assert len(finals) == len(set(finals)) == 2 * len(JOBS)  # straight + interrupted runs
    straight = out / "straight"
    for result in straight.glob("fold_0/*/*/result.json"):
        folder = str(result.parent.relative_to(out))
        saved = written.count(f"{folder}/checkpoint.tmp/weights.safetensors")
        assert saved == json.loads(result.read_text())["epochs_run"] > 0, folder
    assert not list(straight.rglob("checkpoint*"))
    assert not list((out / "interrupted").rglob("checkpoint*"))
    assert (out / "locks_rank0.txt").exists() and not (out / "locks_rank1.txt").exists()


def test_resume_under_torchrun_continues_to_the_straight_runs_result(launched) -> None:
    assert launched["status"]["status"] == "failed"
    assert "interrupted" in launched["status"]["error"]
    assert launched["before_resume"] == "interrupted"  # after a kill -9's "running"
    assert launched["state"]["epoch"] == 1  # the kill came after one of two epochs
    straight, resumed = launched["out"] / "straight", launched["out"] / "interrupted"
    weights = sorted(p for p in straight.rglob("*.safetensors") if "checkpoint" not in p.parts)
    assert len(weights) == len(JOBS)
    for path in weights:
        first = read_state_dict(path)
        second = read_state_dict(resumed / path.relative_to(straight))
        assert all(torch.equal(first[key], second[key]) for key in first), path
    for path in straight.rglob("predictions.csv"):
        assert path.read_text() == (resumed / path.relative_to(straight)).read_text()
    record = json.loads((resumed / "jobs" / "fold_0.LE_MLO.json").read_text())
    assert record["status"] == "complete" and record["world_size"] == 2


def test_the_torchrun_result_matches_one_process_within_the_stated_tolerance(launched) -> None:
    torch.set_num_threads(1)
    config = toy_config()
    config = replace(config, device="cpu", generator=replace(config.generator, max_epochs=2))
    single = launched["root"] / "single"
    shutil.rmtree(single, ignore_errors=True)
    train_run(launched["manifest"], single, config, progress=False, loader=toy_loader, job=JOBS)
    straight = launched["out"] / "straight"
    largest = 0.0
    for slot in ("LE_CC", "LE_MLO", "DES_CC"):
        relative = Path("fold_0") / "classifiers" / slot / "predictions.csv"
        one, two = read_predictions(single / relative), read_predictions(straight / relative)
        assert [(p.case, p.split, p.source) for p in one] == [
            (p.case, p.split, p.source) for p in two
        ]
        largest = max(
            largest, *(abs(a.probability - b.probability) for a, b in zip(one, two, strict=True))
        )
    assert {p.source for p in read_predictions(straight / relative)} == {"real", "synthetic"}
    assert largest <= PROBABILITY_TOLERANCE


def test_joining_a_group_registers_its_destruction_before_interpreter_exit(monkeypatch) -> None:
    """make_runtime under torchrun joins the group and registers the handler that
    destroys it at exit (left to interpreter finalization, gloo aborted a finished rank);
    a real one-rank gloo group stands in for torchrun's two."""
    import torch.distributed as dist

    from Training import runtime

    join = dist.init_process_group
    registered = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(runtime.atexit, "register", registered.append)
    monkeypatch.setattr(
        dist,
        "init_process_group",
        lambda backend: join(backend, store=dist.HashStore(), rank=0, world_size=1),
    )
    assert not dist.is_initialized()
    try:
        runtime.make_runtime("cpu")
        assert dist.is_initialized() and registered == [runtime._leave_process_group]
        registered[0]()
        assert not dist.is_initialized()
        registered[0]()  # at exit again (or after the run destroyed it): nothing to do
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


_ENDING_RANK = """
import atexit, pathlib, sys
import torch.distributed as dist
from Training.runtime import exit_process

folder = pathlib.Path(sys.argv[1])
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
atexit.register(lambda: (folder / "exit_handlers_ran").write_text("yes"))


class Finalized:
    def __del__(self):
        (folder / "interpreter_finalized").write_text("yes")


kept_until_teardown = Finalized()
print("all written", end="")  # a pipe buffers it: only a flush gets it out
exit_process(3)
"""


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_a_rank_ends_with_its_code_after_exit_handlers_without_finalization(
    tmp_path, world_size
) -> None:
    """virtual-biopsy-train's exit (Training.cli.console_main → runtime.exit_process): a
    torchrun rank runs Python's exit handlers, flushes, then skips interpreter teardown,
    where a finished rank aborted (SIGABRT) now and then; one process exits as usual."""
    environment = {**os.environ, "WORLD_SIZE": world_size, "PYTHONPATH": str(REPOSITORY)}
    ended = subprocess.run(
        [sys.executable, "-c", _ENDING_RANK, str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ended.returncode == 3, ended.stderr[-2000:]
    assert ended.stdout == "all written"
    assert (tmp_path / "exit_handlers_ran").exists()
    assert (tmp_path / "interpreter_finalized").exists() == (world_size == "1")


def test_the_train_command_ends_through_exit_process() -> None:
    (command,) = entry_points(group="console_scripts", name="virtual-biopsy-train")
    assert command.value == "Training.cli:console_main"
