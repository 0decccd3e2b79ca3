"""Training throughput: our training step against a plain float32 loop, in the same run.

For ResNet18, ResNet50 and VGG16 (batch 8 at 256², one channel) and the paper's CycleGAN
(ngf 64, 9 blocks, 70×70 PatchGAN; one full iteration of two generators and two
discriminators at batch 1) it times:

- ``ours``: the step the training loops run (``Training.classifier_training`` /
  ``Training.generator_training``): random affine augmentation on the batch, and on CUDA
  mixed precision (autocast + GradScaler) and channels-last, with the training images
  held in memory on the device (on CUDA: in GPU memory, as a run can hold a preprocessed
  cohort of 256² images); on CUDA also ``ours-host``, the same with the images in host
  memory, copied to the GPU batch by batch;
- ``plain``: the same network and optimiser in float32 with no augmentation, AMP or
  channels-last, on a batch already on the device.

It prints a table of seconds per step, images per second and the speed-up of ours over
plain (images/s ratio) on the CPU and, when present, on CUDA. Defaults take a few
minutes on a 2-core CPU (a VGG16 step there is about 7.7 s); ``--steps``, ``--models``
and ``--size`` make it shorter.

Usage::

    .venv/bin/python Testing/benchmarks/bench_training.py                 # CPU (+ CUDA)
    .venv/bin/python Testing/benchmarks/bench_training.py --models resnet18 --steps 2
    .venv/bin/python Testing/benchmarks/bench_training.py --json out.json
    # the GPU target (issue 14: ours ≥ 3× plain images/s, ResNet18, 256², batch 32):
    .venv/bin/python Testing/benchmarks/bench_training.py --device cuda --models resnet18 \
        --batch 32 --size 256 --steps 30 --warmup 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from Training.classifier_training import ImageSet, _ClassifierLoop  # noqa: E402
from Training.config import ClassifierConfig, GeneratorConfig  # noqa: E402
from Training.generator_training import (  # noqa: E402
    PairSet,
    _CycleGanLoop,
    _lsgan,
    generator_runtime,
)
from Training.runtime import Runtime, make_runtime  # noqa: E402
from VirtualBiopsyLib.models.classifiers import build_classifier  # noqa: E402
from VirtualBiopsyLib.models.cyclegan import build_discriminator, build_generator  # noqa: E402

CLASSIFIERS = ("resnet18", "resnet50", "vgg16")
GENERATOR = "cyclegan"


@dataclass
class Timing:
    device: str
    model: str
    loop: str  # "ours" or "plain"
    batch: int
    seconds_per_step: float

    @property
    def images_per_second(self) -> float:
        return self.batch / self.seconds_per_step


def _median_time(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_classifier(
    architecture: str, runtime: Runtime, size: int, batch: int, steps: int, warmup: int
) -> list[Timing]:
    """Our loop's training step vs a plain float32 step, same network and data."""
    device = runtime.device
    images = torch.rand(batch, 1, size, size)
    labels = torch.randint(0, 2, (batch,))
    placements = {"ours": device} if device.type != "cuda" else {"ours": device, "ours-host": None}
    name = str(device.type)
    timings = []
    for loop_name, place in placements.items():
        data = (
            ImageSet(images.to(place), labels.to(place))
            if place is not None
            else ImageSet(images.pin_memory(), labels)
        )
        seconds = _time_our_classifier(architecture, runtime, data, steps, warmup)
        timings.append(Timing(name, architecture, loop_name, batch, seconds))
        _empty_cache(device)
    plain = _time_plain_classifier(architecture, device, images, labels, steps, warmup)
    _empty_cache(device)
    return [*timings, Timing(name, architecture, "plain", batch, plain)]


def _time_our_classifier(
    architecture: str, runtime: Runtime, data: ImageSet, steps: int, warmup: int
) -> float:
    config = ClassifierConfig(architecture=architecture, batch_size=len(data))
    torch.manual_seed(0)
    model = runtime.prepare_model(build_classifier(architecture))
    loop = _ClassifierLoop(model, config, 0, runtime)
    return _median_time(lambda: loop._train_one_epoch(data), steps, warmup, runtime.device)


def _time_plain_classifier(
    architecture: str,
    device: torch.device,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    warmup: int,
) -> float:
    model = build_classifier(architecture).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    x, y = images.to(device), labels.to(device)

    def plain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return _median_time(plain_step, steps, warmup, device)


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_cyclegan(runtime: Runtime, size: int, steps: int, warmup: int) -> list[Timing]:
    """One full CycleGAN iteration (2 G + 2 D), batch 1, paper sizes."""
    le, des = torch.rand(1, 1, size, size), torch.rand(1, 1, size, size)
    config = GeneratorConfig(batch_size=1)
    torch.manual_seed(0)
    loop = _CycleGanLoop(config, 0, generator_runtime(runtime))  # as train_generator runs it
    pairs = PairSet(le, des)
    ours = _median_time(lambda: loop._train_one_epoch(pairs), steps, warmup, runtime.device)

    device = runtime.device
    g, f = build_generator().to(device), build_generator().to(device)
    d_des, d_le = build_discriminator().to(device), build_discriminator().to(device)
    opt_g = torch.optim.Adam([*g.parameters(), *f.parameters()], lr=1e-5, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([*d_des.parameters(), *d_le.parameters()], lr=1e-5, betas=(0.5, 0.999))
    x, y = le.to(device), des.to(device)
    l1 = nn.functional.l1_loss

    def plain_step() -> None:
        opt_g.zero_grad(set_to_none=True)
        fake_des, fake_le = g(x), f(y)
        loss_g = (
            _lsgan(d_des(fake_des), True)
            + _lsgan(d_le(fake_le), True)
            + 10 * (l1(f(fake_des), x) + l1(g(fake_le), y))
            + 5 * (l1(g(y), y) + l1(f(x), x))
        )
        loss_g.backward()
        opt_g.step()
        opt_d.zero_grad(set_to_none=True)
        loss_d = 0.5 * (_lsgan(d_des(y), True) + _lsgan(d_des(fake_des.detach()), False)) + (
            0.5 * (_lsgan(d_le(x), True) + _lsgan(d_le(fake_le.detach()), False))
        )
        loss_d.backward()
        opt_d.step()

    plain = _median_time(plain_step, steps, warmup, device)
    name = str(device.type)
    return [Timing(name, GENERATOR, "ours", 1, ours), Timing(name, GENERATOR, "plain", 1, plain)]


def print_table(timings: list[Timing]) -> None:
    print(
        f"{'device':6} {'model':9} {'loop':9} {'batch':>5} {'s/step':>8} {'img/s':>8} "
        f"{'speed-up':>8}"
    )
    plain = {(t.device, t.model): t for t in timings if t.loop == "plain"}
    for t in timings:
        ratio = ""
        if t.loop != "plain" and (t.device, t.model) in plain:
            ratio = f"{plain[(t.device, t.model)].seconds_per_step / t.seconds_per_step:7.2f}×"
        print(
            f"{t.device:6} {t.model:9} {t.loop:9} {t.batch:5d} {t.seconds_per_step:8.4f} "
            f"{t.images_per_second:8.1f} {ratio}"
        )
    print(
        "speed-up: images/s of our step over the plain float32 step of the same run (> 1 is "
        "faster). On CPU ours adds the augmentation and trains the classifiers channels-last "
        "(the generators stay contiguous there); AMP is CUDA-only. GPU target (ResNet18, "
        "256², batch 32): ours ≥ 3×."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default=",".join((*CLASSIFIERS, GENERATOR)),
        help="comma-separated subset of resnet18,resnet50,vgg16,cyclegan",
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--devices", default="cpu,cuda", help="cpu and/or cuda (if present)")
    parser.add_argument(
        "--device",
        help="only this device (cpu, cuda, cuda:1); cuda is an error when there is none",
    )
    parser.add_argument("--json", type=Path, help="also write the timings here")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.device:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA device here")
        devices = [args.device]
    else:
        devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )
    timings: list[Timing] = []
    for device in devices:
        runtime = make_runtime(device)  # AMP and channels-last on CUDA (the run's defaults)
        for model in models:
            if model == GENERATOR:
                timings += bench_cyclegan(runtime, args.size, args.steps, args.warmup)
            else:
                timings += bench_classifier(
                    model, runtime, args.size, args.batch, args.steps, args.warmup
                )
            print(f"  done {device} {model}", flush=True)
    print_table(timings)
    if args.json:
        rows = [{**asdict(t), "images_per_second": t.images_per_second} for t in timings]
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
