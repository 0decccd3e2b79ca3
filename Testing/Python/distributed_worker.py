"""What ``test_training_distributed`` runs under ``torchrun`` (gloo, CPU, 127.0.0.1).

``python -m torch.distributed.run --nproc_per_node 2 distributed_worker.py MODE OUT
--manifest MANIFEST``

- steps: the sample indices each rank trains on (``rank<r>.json``), its classifier
  and generator weights after one epoch, and the gradients of one uneven CycleGAN batch
  (``rank<r>_*.safetensors``); rank 0 also computes that batch's gradients in one process
  (``single_gradients.safetensors``).
- ``first``: ``steps`` into OUT/steps; ``train_run`` of four of fold 0's jobs (``JOBS``)
  of the toy cohort into OUT/straight; the same into OUT/interrupted, stopped after one
  epoch of fold 0's LE_MLO classifier as a kill would (both ranks raise; torchrun exits
  non-zero).
- ``resume``: OUT/interrupted resumed (``resume=True``).

Every weight file a rank writes is logged in ``OUT/writes_rank<r>.txt``, every job lock
it takes or probes in ``OUT/locks_rank<r>.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_training import toy_config, toy_loader  # noqa: E402

import Training.classifier_training as classifier_training  # noqa: E402
import Training.generator_training as generator_training  # noqa: E402
import Training.jobs as jobs_module  # noqa: E402
import Training.run as run_module  # noqa: E402
import Training.runtime as runtime_module  # noqa: E402
from Training.config import ClassifierConfig, GeneratorConfig  # noqa: E402
from Training.runtime import Runtime, copy_state, make_runtime  # noqa: E402
from VirtualBiopsyLib.models.safetensors_io import write_state_dict  # noqa: E402

#: fold 0's jobs that cover every path: a generator, a DES classifier scoring its synthetic
#: DES, and the LE classifier that is interrupted and resumed
JOBS = ["fold_0/G_CC", "fold_0/LE_CC", "fold_0/LE_MLO", "fold_0/DES_CC"]
N_IMAGES = 11  # batches of 4, 4, 3: the last one splits 1 / 2 over two ranks
BATCH = 4


def _images(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(N_IMAGES, 1, 16, 16, generator=generator)
    labels = torch.tensor([index % 2 for index in range(N_IMAGES)])
    return images, labels


def _classifier_loop(runtime: Runtime) -> classifier_training._ClassifierLoop:
    config = ClassifierConfig(architecture="demo", max_epochs=1, batch_size=BATCH)
    torch.manual_seed(5)
    model = runtime.prepare_model(classifier_training.build_config_classifier(config))
    weights = classifier_training.class_weights(_images()[1], "balanced")
    return classifier_training._ClassifierLoop(model, config, 5, runtime, weights)


def _generator_loop(runtime: Runtime) -> generator_training._GeneratorLoop:
    config = GeneratorConfig(
        ngf=4, n_blocks=1, ndf=4, n_layers=2, max_epochs=1, batch_size=BATCH, learning_rate=1e-3
    )
    torch.manual_seed(6)
    return generator_training._CycleGanLoop(config, 6, runtime)


def _gradients(loop: generator_training._GeneratorLoop) -> dict[str, torch.Tensor]:
    """The last step's gradients of every network of a generator loop."""
    return {
        f"{name}.{key}": parameter.grad.detach().clone()
        for name, network in loop.networks.items()
        for key, parameter in runtime_module.unwrap(network).named_parameters()
        if parameter.grad is not None
    }


def steps(out: Path) -> None:
    runtime = make_runtime("cpu", amp=False, channels_last=False)
    assert runtime.distributed, "run me under torchrun"
    rank = runtime.rank
    images, labels = _images()
    shards = []
    for epoch in range(3):
        shuffle = torch.Generator().manual_seed(11 + epoch)
        batches = classifier_training._batches(N_IMAGES, BATCH, shuffle, runtime, 0, epoch)
        for batch in batches:
            (part,), factor = runtime.shard(batch)
            shards.append({"batch": batch.tolist(), "part": part.tolist(), "factor": factor})
    (out / f"rank{rank}.json").write_text(json.dumps({"shards": shards}))
    # the classifier: one epoch (3 steps, the last one uneven); parameters, then buffers
    classifier = _classifier_loop(runtime)
    classifier._train_one_epoch(classifier_training.ImageSet(images, labels))
    parameters = {k: v.detach().clone() for k, v in classifier.model.named_parameters()}
    write_state_dict(parameters, out / f"rank{rank}_classifier.safetensors")
    runtime.sync_buffers(classifier.model)
    buffers = {k: v.clone() for k, v in classifier.model.named_buffers()}
    write_state_dict(buffers, out / f"rank{rank}_classifier_buffers.safetensors")
    # the CycleGAN: one epoch of 11 images (weights), and one uneven batch of 3 (gradients)
    pairs = generator_training.PairSet(images, torch.flip(images, dims=[-1]))
    generator = _generator_loop(runtime)
    generator._train_one_epoch(pairs)
    write_state_dict(
        copy_state(generator.networks["le_to_des"]), out / f"rank{rank}_generator.safetensors"
    )
    three = generator_training.PairSet(pairs.le[:3], pairs.des[:3])
    generator = _generator_loop(runtime)
    generator._train_one_epoch(three)
    write_state_dict(_gradients(generator), out / f"rank{rank}_gradients.safetensors")
    if rank == 0:  # the same batch in one process, for comparison
        generator = _generator_loop(Runtime(torch.device("cpu")))
        generator._train_one_epoch(three)
        write_state_dict(_gradients(generator), out / "single_gradients.safetensors")


def _log_writes(out: Path) -> None:
    """Record (per rank) every weight file and checkpoint this process writes."""
    log = out / f"writes_rank{os.environ['RANK']}.txt"

    def logged(original):
        def write(tensors, path, *args, **kwargs):
            with open(log, "a", encoding="utf-8") as stream:
                stream.write(f"{Path(path).relative_to(out)}\n")
            return original(tensors, path, *args, **kwargs)

        return write

    run_module.write_state_dict = logged(run_module.write_state_dict)
    runtime_module.write_state_dict = logged(runtime_module.write_state_dict)


def _log_locks(out: Path) -> None:
    """Record (per rank) every job lock this process takes or probes."""
    log = out / f"locks_rank{os.environ['RANK']}.txt"
    original = jobs_module.exclusive_lock

    def logged(path, *args, **kwargs):
        with open(log, "a", encoding="utf-8") as stream:
            stream.write(f"{Path(path).relative_to(out)}\n")
        return original(path, *args, **kwargs)

    jobs_module.exclusive_lock = logged


def _interrupt(name: str) -> None:
    """Stop the model described ``name`` after one epoch, with its checkpoint written."""
    original = classifier_training.run_epochs

    def run_epochs(loop, train, val, **options):
        if options["description"] != name:
            return original(loop, train, val, **options)
        original(loop, train, val, **{**options, "stop_after_epochs": 1})
        raise KeyboardInterrupt

    classifier_training.run_epochs = run_epochs


def run(out: Path, manifest: Path, resume: bool = False, interrupt: str | None = None) -> None:
    torch.set_num_threads(1)
    config = toy_config()
    config = replace(config, device="cpu", generator=replace(config.generator, max_epochs=2))
    run_module.train_run(
        manifest, out, config, progress=False, loader=toy_loader, job=JOBS, resume=resume
    )


def main() -> None:
    """``first``: steps, a straight run and one interrupted in fold 0's LE_MLO (exits 130
    by KeyboardInterrupt); ``resume``: the interrupted run resumed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("first", "resume"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    _log_writes(args.out)
    _log_locks(args.out)
    if args.mode == "first":
        steps(args.out / "steps")
        run(args.out / "straight", args.manifest)
        _interrupt("fold 0 LE_MLO")
        run(args.out / "interrupted", args.manifest)
    else:
        run(args.out / "interrupted", args.manifest, resume=True)


if __name__ == "__main__":
    main()
    runtime_module.exit_process(0)  # as virtual-biopsy-train ends a rank; errors raise first
