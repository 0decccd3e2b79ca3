"""``virtual-biopsy-train``: train, export and report the paper's models.

Sub-commands::

    virtual-biopsy-train train MANIFEST --out RUN_DIR [--tiny] [--architecture resnet18]
                               [--config config.json] [--pretrain-manifest CDD.csv] [--resume]
                               [--fold F] [--slot S] [--job ID] [--workers N]
    virtual-biopsy-train jobs [--tiny | --config config.json | --run RUN_DIR] [--ids KIND]
    virtual-biopsy-train package RUN_DIR --out PACKAGE_DIR
    virtual-biopsy-train experiments RUN_DIR [RUN_DIR ...] --out TABLES_DIR
    virtual-biopsy-train report RUN_DIR [RUN_DIR ...] --out REPORT_DIR [--resamples 2000]
                                [--manifest MANIFEST] [--overwrite]
    virtual-biopsy-train demo-model --out VirtualBiopsyLib/Resources/DemoModel
    virtual-biopsy-train import cdd-cesm DIR --out manifest.csv
    virtual-biopsy-train import dicom DIR --clinical SHEET --out manifest.csv
                               [--join breast] [--labels B=benign,M=malignant]

Exit codes are those of ``virtual-biopsy`` (0 ok, 1 internal error, 2 usage, 3 bad input
data, 4 bad model package, 5 output exists); 130 when interrupted (resume with
``--resume``); 141 when the reader of stdout went away (``jobs | head``).

>>> main(["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import VirtualBiopsyLib
from Training.config import CLASSIFIER_ARCHITECTURES, RunConfig, demo_config, tiny_config
from VirtualBiopsyLib.errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_STDOUT_CLOSED,
    EXIT_USAGE,
    OutputExistsError,
    UsageError,
    VirtualBiopsyError,
    error_message,
    exit_code_for,
    silence_stdout,
)

EXIT_INTERRUPTED = 130
DEMO_PATIENTS = 300  # the LE classifiers learn nothing from 120 (README, phantom check)
DEMO_COHORT_SEED = 7
DEMO_TRAINING_SEED = 0

logger = logging.getLogger("virtual-biopsy-train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtual-biopsy-train",
        description="Train, export and evaluate VirtualBiopsy models with the paper's "
        "protocol. " + VirtualBiopsyLib.RESEARCH_USE_NOTICE,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {VirtualBiopsyLib.__version__}"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(commands)
    _add_jobs(commands)
    _add_package(commands)
    _add_experiments(commands)
    _add_report(commands)
    _add_demo_model(commands)
    _add_phantom_check(commands)
    from Training.importers.command import register as add_import

    add_import(commands)
    return parser


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="cross-validated training of 4 classifiers and 2 generators per fold",
        description="Train every fold's classifiers (LE_CC, LE_MLO, DES_CC, DES_MLO) and "
        "generators (CC, MLO) on a manifest CSV; writes RUN_DIR (config.json, splits.json, "
        "fold_*/, predictions.csv, metrics.json). Defaults are the paper's numbers.",
    )
    train.add_argument("manifest", type=Path, help="training manifest CSV (phantom or import)")
    train.add_argument(
        "--out",
        type=Path,
        required=True,
        help="run folder (must be new, unless --resume or a job of a run being filled)",
    )
    _add_config_options(train)
    train.add_argument(
        "--pretrain-manifest",
        type=Path,
        help="pre-train the generators on this manifest, then fine-tune",
    )
    jobs = train.add_argument_group(
        "one part of a run (a scheduler runs the others side by side into the same --out; "
        "`virtual-biopsy-train jobs` lists them, `package` gathers them)"
    )
    jobs.add_argument(
        "--prepare",
        action="store_true",
        help="write the run's shared files and fill the image cache, run no job "
        "(once, before the scheduler starts the jobs)",
    )
    jobs.add_argument("--fold", type=int, help="only this fold's jobs")
    jobs.add_argument("--slot", help="only this model: LE_CC, LE_MLO, DES_CC, DES_MLO, G_CC, G_MLO")
    jobs.add_argument(
        "--job",
        action="append",
        help="only this job: an ID (e.g. $SLURM_ARRAY_TASK_ID) or a name such as "
        "fold_0/DES_CC; repeatable",
    )
    train.add_argument(
        "--cache", type=Path, help="preprocessed-image cache (default RUN_DIR/cache)"
    )
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")
    train.add_argument("--threads", type=int, help="CPU threads for torch (per worker)")
    train.add_argument(
        "--workers",
        type=int,
        default=1,
        help="train the run's jobs side by side in this many local processes, each job as "
        "soon as what it needs is finished (default 1: one after another in this process; "
        "with --device cuda they share the GPU); the files are the same for any number",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=run_train)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """The configuration options ``train`` and ``jobs`` share (same options, same jobs)."""
    parser.add_argument("--config", type=Path, help="a config.json to start from")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the CI/demo setting: 64² images, demo networks, few epochs",
    )
    parser.add_argument("--architecture", choices=CLASSIFIER_ARCHITECTURES)
    parser.add_argument(
        "--epochs",
        type=int,
        help="every classifier's max epochs, DES included (paper: 300; replaces a config's "
        "des_max_epochs)",
    )
    parser.add_argument("--generator-epochs", type=int, help="generator max epochs (paper: 200)")
    parser.add_argument("--batch-size", type=int, help="classifier batch size")
    parser.add_argument("--image-size", type=int, help="preprocessed side in pixels (paper: 256)")
    parser.add_argument("--no-generators", action="store_true", help="skip the CycleGANs")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default)")


def _add_jobs(commands: argparse._SubParsersAction) -> None:
    jobs = commands.add_parser(
        "jobs",
        help="list a run's independent jobs (IDs for --job, e.g. a Slurm array)",
        description="The jobs `train` runs for a configuration: ID, name, kind and what "
        "each needs first (a DES classifier needs its fold's generator of that view). "
        "Give the same configuration options as to `train`, or --run RUN_DIR.",
    )
    _add_config_options(jobs)
    jobs.add_argument("--run", type=Path, help="a run folder: its config.json and jobs.json")
    jobs.add_argument(
        "--pretrain-manifest",
        type=Path,
        help="the run pre-trains generators (adds the pretrain jobs; the file is not read)",
    )
    jobs.add_argument(
        "--ids",
        choices=("all", "pretrain", "generator", "classifier"),
        help="print only the IDs of this kind as a Slurm --array range (e.g. 0-9)",
    )
    jobs.add_argument(
        "--status", action="store_true", help="with --run: each job's state in that folder"
    )
    jobs.set_defaults(func=run_jobs)


def _add_package(commands: argparse._SubParsersAction) -> None:
    package = commands.add_parser("package", help="export a finished run as a model package")
    package.add_argument("run_dir", type=Path)
    package.add_argument("--out", type=Path, required=True)
    package.add_argument("--name")
    package.add_argument("--version", dest="package_version", default=VirtualBiopsyLib.__version__)
    package.add_argument("--overwrite", action="store_true")
    package.set_defaults(func=run_package)


def _add_experiments(commands: argparse._SubParsersAction) -> None:
    experiments = commands.add_parser(
        "experiments", help="the paper's tables (settings, robustness, density, generation)"
    )
    experiments.add_argument("run_dirs", type=Path, nargs="+", help="one run per architecture")
    experiments.add_argument("--out", type=Path, required=True)
    experiments.add_argument("--repetitions", type=int, help="robustness repetitions (10)")
    experiments.add_argument("--overwrite", action="store_true")
    experiments.set_defaults(func=run_experiments)


def _add_report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="study report: confidence intervals, paired tests, calibration, figures",
        description="A report for a supplement: report.md, report.html (figures inline), "
        "CSV and PNG files. Pooled out-of-fold test cases, patient-level bootstrap "
        "intervals, DeLong paired comparisons, calibration, robustness, density, "
        "generation examples (with --manifest).",
    )
    report.add_argument("run_dirs", type=Path, nargs="+", help="finished training runs")
    report.add_argument("--out", type=Path, required=True, help="report folder (new)")
    report.add_argument(
        "--resamples", type=int, default=2000, help="bootstrap resamples of patients (2000)"
    )
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    report.add_argument("--repetitions", type=int, help="robustness repetitions (config's)")
    report.add_argument(
        "--manifest", type=Path, help="the runs' manifest: enables generation examples"
    )
    report.add_argument(
        "--cache", type=Path, help="preprocessed-image cache (default RUN_DIR/cache)"
    )
    report.add_argument(
        "--generation-intervals",
        action="store_true",
        help="with --manifest: synthesize every test pair for Table 3 intervals (slow)",
    )
    report.add_argument("--overwrite", action="store_true", help="replace an older report")
    report.add_argument("--no-progress", action="store_true", help="no progress bars")
    report.set_defaults(func=run_report)


def _add_phantom_check(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "phantom-check",
        help="score a package on a fresh phantom cohort beside the phantom's bounds",
        description="Write a fresh phantom cohort, score the package with its fold ensemble "
        "(F, C, Ĉ, F+C, F+Ĉ on the same cases) and print the bounds the phantom allows "
        "(hand feature, oracles, lesion contrast). Synthetic data: not evidence of "
        "clinical performance.",
    )
    check.add_argument("package", type=Path, nargs="?", help="model package (default: demo)")
    check.add_argument("--patients", type=int, default=None, help="fresh phantom patients (60)")
    check.add_argument("--seed", type=int, default=None, help="phantom seed (2027)")
    check.add_argument(
        "--baseline",
        type=Path,
        metavar="PACKAGE",
        help="also score this package on the same cases and test each setting's AUC "
        "difference paired (DeLong): a retrain against what it replaces",
    )
    check.add_argument("--out", type=Path, help="also write phantom_check.json and .md here")
    check.add_argument(
        "--overwrite",
        action="store_true",
        help="replace phantom_check.json and .md of an earlier check in OUT",
    )
    check.set_defaults(func=run_phantom_check_command)


def _add_demo_model(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo-model", help="train the tiny demo package on a synthetic phantom cohort"
    )
    demo.add_argument("--out", type=Path, required=True)
    demo.add_argument("--patients", type=int, default=DEMO_PATIENTS)
    demo.add_argument("--seed", type=int, default=DEMO_COHORT_SEED, help="phantom cohort seed")
    demo.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads per worker (1: fastest)",
    )
    demo.add_argument(
        "--workers",
        type=int,
        help="jobs trained side by side in local processes (default: one per CPU core)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument(
        "--overwrite", action="store_true", help="replace OUT even when it is not a demo package"
    )
    demo.add_argument(
        "--keep-run",
        type=Path,
        metavar="DIR",
        help="keep the phantom cohort and the training run (histories, predictions) in DIR, "
        "which must be new (default: a temporary folder, removed)",
    )
    demo.set_defaults(func=run_demo_model)


# --- commands ---------------------------------------------------------------------------


def _run_config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """The base configuration with the command line's overrides (0 is a value, not "unset")."""
    if args.config:
        config = _with_absolute_paths(RunConfig.load(args.config), Path(args.config).parent)
    elif args.tiny:
        config = tiny_config()
    else:
        config = base or RunConfig()
    overrides = {
        "classifier": {
            "architecture": args.architecture,
            "max_epochs": args.epochs,
            "batch_size": args.batch_size,
        },
        "generator": {"max_epochs": args.generator_epochs},
        "image_size": args.image_size,
        "seed": args.seed,
        "device": args.device,
        "train_generators": False if args.no_generators else None,
    }
    data = config.to_dict()
    for key, value in overrides.items():
        if isinstance(value, dict):
            data[key].update({k: v for k, v in value.items() if v is not None})
        elif value is not None:
            data[key] = value
    if args.epochs is not None:  # one limit for every slot, as the help says
        data["classifier"]["des_max_epochs"] = None
    return RunConfig.from_dict(data)  # validates the overrides


def _with_absolute_paths(config: RunConfig, folder: Path) -> RunConfig:
    """A config file's relative ``pretrained_weights`` is relative to the file's folder;
    made absolute before it is saved, so jobs started from anywhere (a Slurm task, a
    local worker) find the file."""
    weights = config.classifier.pretrained_weights
    if weights is None or Path(weights).is_absolute():
        return config
    absolute = str((folder / weights).resolve())
    return replace(config, classifier=replace(config.classifier, pretrained_weights=absolute))


def _train_config(args: argparse.Namespace) -> RunConfig:
    """What ``train`` runs: resumed, the saved recipe is the base its options change, so
    ``--resume`` alone continues the run and a contradicting option is refused."""
    saved = args.out / "config.json"
    base = RunConfig.load(saved) if args.resume and saved.exists() else None
    return _run_config(args, base)


def run_train(args: argparse.Namespace) -> int:
    from Training.run import train_run

    _check_exists(args.manifest)
    if args.pretrain_manifest:
        _check_exists(args.pretrain_manifest)
    if args.workers != 1:
        return _train_in_workers(args)
    _set_threads(args.threads)
    out = train_run(
        args.manifest,
        args.out,
        _train_config(args),
        resume=args.resume,
        pretrain_manifest=args.pretrain_manifest,
        cache_dir=args.cache,
        progress=not args.no_progress,
        fold=args.fold,
        slot=args.slot,
        job=args.job,
        prepare_only=args.prepare,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return EXIT_OK  # under torchrun, rank 0 reports
    if args.prepare:
        print(f"{out} prepared: run its jobs (`virtual-biopsy-train jobs` lists them)")
    elif args.fold is None and args.slot is None and args.job is None:
        print(f"run written to {out} (metrics.json, predictions.csv)")
        _print_metrics(out)
    else:
        _print_job_progress(out)
    return EXIT_OK


def _train_in_workers(args: argparse.Namespace) -> int:
    """``train --workers N``: every job of the run, side by side in N local processes."""
    from Training.local_jobs import run_jobs_locally

    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, not {args.workers}")
    given = {"prepare": args.prepare or None, "fold": args.fold, "slot": args.slot, "job": args.job}
    chosen = [name for name, value in given.items() if value is not None]
    if chosen:
        raise UsageError(f"--workers trains every job of the run; drop --{chosen[0]}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--workers starts its own processes; run it without torchrun")
    out = run_jobs_locally(
        args.manifest,
        args.out,
        _train_config(args),
        args.workers,
        threads=args.threads or 1,
        on_done=None if args.no_progress else _print_job_done,
        resume=args.resume,
        pretrain_manifest=args.pretrain_manifest,
        cache_dir=args.cache,
    )
    print(f"run written to {out} (metrics.json, predictions.csv)")
    _print_metrics(out)
    return EXIT_OK


def _print_job_progress(run_dir: Path) -> None:
    from Training.jobs import missing_jobs, read_plan

    jobs = read_plan(run_dir) or []
    missing = missing_jobs(run_dir, jobs)
    print(f"{run_dir}: {len(jobs) - len(missing)} of {len(jobs)} jobs finished")
    if not missing:
        print(f"all finished: `virtual-biopsy-train package {run_dir} --out PACKAGE_DIR`")


def run_jobs(args: argparse.Namespace) -> int:
    from Training.jobs import (
        describe_state,
        format_jobs,
        id_ranges,
        job_status,
        plan_jobs,
        read_plan,
    )

    if args.status and args.run is None:
        raise UsageError("--status needs --run RUN_DIR: the states are that folder's")
    if args.run is not None:
        _check_exists(args.run)
        jobs = read_plan(args.run)
        if jobs is None:
            jobs = plan_jobs(RunConfig.load(args.run / "config.json"), False)
    else:
        jobs = plan_jobs(_run_config(args), args.pretrain_manifest is not None)
    if args.ids:
        chosen = [j.id for j in jobs if args.ids in ("all", j.kind)]
        print(id_ranges(chosen) if chosen else "")
        return EXIT_OK
    if args.status and args.run is not None:
        print(f"{'ID':>3}  {'JOB':16} STATUS")
        for job in jobs:
            print(f"{job.id:>3}  {job.name:16} {describe_state(job_status(args.run, job))}")
        return EXIT_OK
    print(format_jobs(jobs), end="")
    return EXIT_OK


def run_package(args: argparse.Namespace) -> int:
    from Training.export import export_package

    _check_exists(args.run_dir)
    out = export_package(
        args.run_dir,
        args.out,
        name=args.name,
        version=args.package_version,
        overwrite=args.overwrite,
    )
    print(f"model package written to {out}")
    return EXIT_OK


def run_experiments(args: argparse.Namespace) -> int:
    from Training.experiments import write_experiments

    for run_dir in args.run_dirs:
        _check_exists(run_dir)
    written = write_experiments(args.run_dirs, args.out, args.repetitions, args.overwrite)
    for path in written:
        print(path)
    return EXIT_OK


def run_report(args: argparse.Namespace) -> int:
    from Training.report.build import write_report

    for path in [*args.run_dirs, *([args.manifest] if args.manifest else [])]:
        _check_exists(path)
    out = write_report(
        args.run_dirs,
        args.out,
        n_resamples=args.resamples,
        seed=args.seed,
        repetitions=args.repetitions,
        manifest=args.manifest,
        cache_dir=args.cache,
        generation_intervals=args.generation_intervals,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"report written to {out / 'report.md'} and {out / 'report.html'}")
    print(VirtualBiopsyLib.RESEARCH_USE_NOTICE)
    return EXIT_OK


def run_phantom_check_command(args: argparse.Namespace) -> int:
    """Score a package on a fresh phantom cohort; arguments and ``--out`` are checked
    first, since the check itself takes minutes."""
    from Training.phantom_check import (
        PHANTOM_CHECK_PATIENTS,
        PHANTOM_CHECK_SEED,
        check_phantom_check_arguments,
        check_phantom_check_out,
        format_phantom_check,
        run_phantom_check,
        write_phantom_check,
    )
    from VirtualBiopsyLib.models.package import demo_package_path, load_package

    patients = PHANTOM_CHECK_PATIENTS if args.patients is None else args.patients
    seed = PHANTOM_CHECK_SEED if args.seed is None else args.seed
    check_phantom_check_arguments(patients, seed)
    if args.out is not None:
        check_phantom_check_out(args.out, args.overwrite)
    package = load_package(args.package or demo_package_path())
    baseline = None if args.baseline is None else load_package(args.baseline)
    try:
        check = run_phantom_check(package, patients=patients, seed=seed, baseline=baseline)
    except KeyboardInterrupt:  # there is nothing to resume: say what is left, not `--resume`
        written = (
            "nothing was written" if args.out is None else f"nothing was written to {args.out}"
        )
        print(f"phantom-check interrupted: {written}; run it again", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_phantom_check(check), end="")
    if args.out is not None:
        for path in write_phantom_check(check, args.out, overwrite=args.overwrite):
            print(path)
    return EXIT_OK


def run_demo_model(args: argparse.Namespace) -> int:
    """Phantom cohort (fixed seed) → tiny run → demo package marked synthetic."""
    from Training.export import export_package
    from Training.local_jobs import default_workers, run_jobs_locally
    from Training.run import train_run
    from VirtualBiopsyLib.models.package import DEMO_INTENDED_USE
    from VirtualBiopsyLib.phantom import generate_cohort

    overwrite = args.overwrite or _is_demo_package(args.out)
    if args.out.exists() and any(args.out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{args.out}: exists and is not a demo package (use --overwrite)")
    if args.keep_run is not None and args.keep_run.exists():
        raise OutputExistsError(f"{args.keep_run}: exists (--keep-run needs a new folder)")
    _set_threads(args.threads)
    with _work_folder(args.keep_run) as work:
        workers = args.workers or default_workers()
        manifest = generate_cohort(
            Path(work) / "cohort", patients=args.patients, seed=args.seed, workers=workers
        )
        if workers > 1:
            run_dir = run_jobs_locally(
                manifest,
                Path(work) / "run",
                demo_config(DEMO_TRAINING_SEED),
                workers,
                synthetic_data=True,
                threads=args.threads,
                on_done=None if args.no_progress else _print_job_done,
            )
        else:
            run_dir = train_run(
                manifest,
                Path(work) / "run",
                demo_config(DEMO_TRAINING_SEED),
                synthetic_data=True,
                progress=not args.no_progress,
            )
        _print_metrics(run_dir)
        out = export_package(
            run_dir,
            args.out,
            name="virtual-biopsy-demo",
            is_demo=True,
            intended_use=DEMO_INTENDED_USE,
            overwrite=True,
        )
    print(f"demo model package written to {out}")
    print(VirtualBiopsyLib.SYNTHETIC_NOTICE)
    return EXIT_OK


@contextlib.contextmanager
def _work_folder(kept: Path | None) -> Iterator[Path]:
    """``kept`` (created) when given, else a temporary folder removed afterwards."""
    if kept is not None:
        kept.mkdir(parents=True)
        yield kept
        return
    with tempfile.TemporaryDirectory(prefix="virtual-biopsy-demo-") as work:
        yield Path(work)


def _print_job_done(job) -> None:
    print(f"finished {job.describe()}", flush=True)


def _is_demo_package(directory: Path) -> bool:
    import json

    try:
        return bool(json.loads((directory / "model.json").read_text("utf-8")).get("is_demo"))
    except (OSError, ValueError):
        return False


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(path)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _print_metrics(run_dir: Path) -> None:
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    print("test metrics, mean ± SE over folds (%):")
    for setting, values in metrics["summary"].items():
        cells = [f"{name} {_percent(*values[name])}" for name in ("auc", "g_mean", "mcc")]
        print(f"  {setting:4s} " + "  ".join(cells))
    if metrics.get("synthetic_notice"):
        print(metrics["synthetic_notice"])
    print(VirtualBiopsyLib.RESEARCH_USE_NOTICE)


def _percent(mean: float | None, error: float | None) -> str:
    if mean is None or mean != mean:
        return "n/a"
    if error is None or error != error:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * error:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``virtual-biopsy-train``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except FileNotFoundError as error:
        print(f"error: {error.filename or error}: no such file or folder", file=sys.stderr)
        return EXIT_USAGE
    except VirtualBiopsyError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt:
        resumable = args.command == "train"
        print("interrupted" + ("; continue with `train ... --resume`" if resumable else ""),
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `jobs | head`: the reader of stdout went away
        silence_stdout()
        return EXIT_STDOUT_CLOSED
    except OSError as error:  # a folder that cannot be written, a full disk: the file, not a bug
        print(f"error: {error_message(error)}", file=sys.stderr)
        return exit_code_for(error)
    except Exception as error:  # a bug: say so briefly, full traceback with --verbose
        logger.debug("internal error", exc_info=True)
        print(f"internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_INTERNAL


def console_main() -> None:
    """The ``virtual-biopsy-train`` command: :func:`main`, then the exit a rank needs."""
    from Training.runtime import exit_process

    exit_process(main())


if __name__ == "__main__":
    console_main()
