"""A run's independent jobs: what they are, what each needs, and where each one stands.

A run of the paper's protocol is 5 folds × (2 generators + 4 classifiers) = 30 models, and
each is trained on its own (seeded per model, so the order does not change any weight):

- ``pretrain/G_<view>``: with ``--pretrain-manifest``, one generator per view, pre-trained
  on the other manifest; every fold's generator of that view starts from it.
- ``fold_<k>/G_<view>``: the LE → DES generator of view CC or MLO in fold k (only in the
  first ``GeneratorConfig.folds`` folds; none with ``train_generators=False``).
- ``fold_<k>/<slot>``: the classifier of slot LE_CC, LE_MLO, DES_CC or DES_MLO in fold k.
  A DES classifier also scores the synthetic DES of its fold's generator of the same view
  (its Ĉ rows, and its validation rows that fit its synthetic-DES calibration), so it
  needs that generator to be finished: a job started before it fails at once, naming the
  generator job (it does not wait; submit it with a dependency). In a fold without
  generators it needs the first generator fold's, for its validation rows only.

Job IDs count from 0 in that order (pre-training, generators, classifiers), so a Slurm
array can run one stage after another (``virtual-biopsy-train jobs --ids generator``).
``jobs.json`` in the run folder holds the plan (job list and the manifest's SHA-256),
created once by the first job; every later job checks it has the same plan. Each job
writes ``jobs/<name>.json`` (its status: running, complete, skipped or failed; device,
world size, dates, host and process ID) and only its own model folder; a model is
finished when its ``result.json`` (and, for a classifier, its ``predictions.csv``)
exists. A job holds ``jobs/<name>.lock`` while it trains (:func:`job_lock`); one that
says running while nobody holds its lock is ``interrupted``.

>>> from Training.config import RunConfig
>>> jobs = plan_jobs(RunConfig())
>>> len(jobs), jobs[0].name, jobs[10].name, jobs[12].needs
(30, 'fold_0/G_CC', 'fold_0/LE_CC', ('fold_0/G_CC',))
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from Training.config import RunConfig
from VirtualBiopsyLib.atomic_io import (
    LockUnsupportedError,
    exclusive_lock,
    rename_no_replace,
    write_json_atomic,
    write_text_atomic,
)
from VirtualBiopsyLib.errors import UsageError, VirtualBiopsyError
from VirtualBiopsyLib.processes import process_alive
from VirtualBiopsyLib.roles import SLOTS, VIEWS, parse_slot

logger = logging.getLogger(__name__)

PLAN_FORMAT = "virtual-biopsy-training-jobs-v1"
JOB_KINDS: tuple[str, ...] = ("pretrain", "generator", "classifier")
GENERATOR_SLOTS: tuple[str, ...] = tuple(f"G_{view.value}" for view in VIEWS)
COMPLETE, SKIPPED, RUNNING, FAILED, NOT_STARTED, INTERRUPTED = (
    "complete",
    "skipped",
    "running",
    "failed",
    "not started",
    "interrupted",  # said running, but no process holds its lock (killed, node lost)
)
FINISHED = (COMPLETE, SKIPPED)
PROBE_WAIT = 1.0  # seconds job_lock waits for a lock held by a status probe (job_status)
CLAIM_SETTLE = 0.2  # seconds a takeover of a dead copy's claim waits before reading it back
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


class JobError(VirtualBiopsyError):
    """A job that cannot run yet, or a run whose jobs are not all finished."""


@dataclass(frozen=True)
class Job:
    """One model of a run, trained by one ``train --job ID`` call."""

    id: int
    kind: str  # "pretrain", "generator" or "classifier"
    fold: int | None  # None for pre-training
    slot: str  # "G_CC", "G_MLO" or a classifier slot ("LE_CC", ...)
    needs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{'pretrain' if self.fold is None else f'fold_{self.fold}'}/{self.slot}"

    @property
    def view(self) -> str:
        return self.slot.split("_")[1]

    def folder(self, run_dir: Path) -> Path:
        """The model folder this job alone writes."""
        if self.kind == "pretrain":
            return run_dir / "pretrain" / self.view
        kind = "generators" if self.kind == "generator" else "classifiers"
        name = self.view if self.kind == "generator" else self.slot
        return run_dir / f"fold_{self.fold}" / kind / name

    def finished_files(self, run_dir: Path) -> list[Path]:
        """The files a finished model has: its weights, and the record written last; a
        job that lost one (deleted, never copied back) is not finished."""
        folder = self.folder(run_dir)
        if self.kind == "pretrain":
            return [folder / f"pretrained_generator_LE_to_DES_{self.view}.safetensors"]
        if self.kind == "generator":
            return [folder / f"generator_LE_to_DES_{self.view}.safetensors", folder / "result.json"]
        return [
            folder / f"classifier_{self.slot}.safetensors",
            folder / "result.json",
            folder / "predictions.csv",
        ]

    def status_file(self, run_dir: Path) -> Path:
        return run_dir / "jobs" / f"{self.name.replace('/', '.')}.json"

    def describe(self) -> str:
        """Words for messages: "job 12 fold_0/DES_CC (classifier DES_CC of fold 0)"."""
        what = {
            "pretrain": f"generator {self.slot} pre-trained on the pretrain manifest",
            "generator": f"generator {self.slot} (LE → DES, view {self.view}) of fold {self.fold}",
            "classifier": f"classifier {self.slot} of fold {self.fold}",
        }[self.kind]
        return f"job {self.id} {self.name} ({what})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name, "needs": list(self.needs)}


def plan_jobs(config: RunConfig, pretrain: bool = False) -> list[Job]:
    """Every job of a run with this configuration, in ID (and dependency) order."""
    generators = config.train_generators
    limit = config.generator.folds
    generator_folds = [
        fold
        for fold in range(config.splits.n_folds)
        if generators and (limit is None or fold < limit)
    ]
    specs: list[tuple[str, int | None, str, tuple[str, ...]]] = []
    if pretrain and generator_folds:
        specs += [("pretrain", None, slot, ()) for slot in GENERATOR_SLOTS]
    for fold in generator_folds:
        for slot in GENERATOR_SLOTS:
            needs = (f"pretrain/{slot}",) if pretrain else ()
            specs.append(("generator", fold, slot, needs))
    for fold in range(config.splits.n_folds):
        for slot in SLOTS:
            modality, view = parse_slot(slot)
            needs = ()
            if modality.value == "DES" and generator_folds:
                own = fold if fold in generator_folds else generator_folds[0]
                needs = (f"fold_{own}/G_{view.value}",)
            specs.append(("classifier", fold, slot, needs))
    return [Job(index, *spec) for index, spec in enumerate(specs)]


def select_jobs(
    jobs: Sequence[Job],
    *,
    fold: int | None = None,
    slot: str | None = None,
    job: Iterable[str] | None = None,
) -> list[Job]:
    """The jobs chosen by ``--fold``, ``--slot`` and ``--job`` (all of them when none).

    ``--job`` takes IDs or names (``12`` or ``fold_0/DES_CC``); ``--fold`` and ``--slot``
    narrow together (``--fold 2 --slot G_CC`` is one job).

    >>> from Training.config import RunConfig
    >>> [j.name for j in select_jobs(plan_jobs(RunConfig()), fold=4, slot="G_MLO")]
    ['fold_4/G_MLO']
    """
    chosen = list(jobs)
    if fold is not None:
        folds = sorted({j.fold for j in jobs if j.fold is not None})
        if fold not in folds:
            raise UsageError(f"--fold {fold}: the run has folds {folds[0]}–{folds[-1]}")
        chosen = [j for j in chosen if j.fold == fold]
    if slot is not None:
        slots = (*GENERATOR_SLOTS, *SLOTS)
        if slot not in slots:
            raise UsageError(f"--slot {slot}: expected one of {', '.join(slots)}")
        chosen = [j for j in chosen if j.slot == slot]
    if job is not None:
        wanted = {_find(jobs, key).id for key in job}
        chosen = [j for j in chosen if j.id in wanted]
    if not chosen:
        raise UsageError("no job of this run matches --fold / --slot / --job together")
    return chosen


def _find(jobs: Sequence[Job], key: str) -> Job:
    key = str(key).strip()
    for job in jobs:
        if key == job.name or (key.isascii() and key.isdigit() and int(key) == job.id):
            return job
    raise UsageError(
        f"--job {key}: no such job (IDs 0–{len(jobs) - 1}; `virtual-biopsy-train jobs` lists them)"
    )


def id_ranges(ids: Sequence[int]) -> str:
    """Slurm ``--array`` syntax of a set of IDs.

    >>> id_ranges([0, 1, 2, 5, 7, 8])
    '0-2,5,7-8'
    """
    parts: list[str] = []
    ordered = sorted(ids)
    start = previous = None
    for value in [*ordered, None]:
        if value is not None and previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = value
    return ",".join(parts)


def format_jobs(jobs: Sequence[Job]) -> str:
    """The table ``virtual-biopsy-train jobs`` prints."""
    lines = [f"{'ID':>3}  {'JOB':16} {'KIND':10} NEEDS"]
    for job in jobs:
        lines.append(f"{job.id:>3}  {job.name:16} {job.kind:10} {', '.join(job.needs) or '-'}")
    return "\n".join(lines) + "\n"


# --- the plan in the run folder -----------------------------------------------------------


def plan_record(
    jobs: Sequence[Job],
    manifest_sha256: str,
    pretrain_sha256: str | None,
    synthetic_data: bool,
) -> dict[str, Any]:
    return {
        "format": PLAN_FORMAT,
        "manifest_sha256": manifest_sha256,
        "pretrain_manifest_sha256": pretrain_sha256,
        "synthetic_data": synthetic_data,
        "jobs": [job.to_dict() for job in jobs],
    }


def create_once(path: Path, text: str) -> str:
    """Write ``path`` unless it exists (atomically, refusing to replace); return its text.

    Two jobs starting at once both try; exactly one file wins and both read it.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.new")  # any host
        write_text_atomic(temporary, text)
        try:
            rename_no_replace(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8")


def claim_plan(run_dir: Path, record: dict[str, Any]) -> None:
    """Create ``jobs.json`` or check that the existing one describes the same run."""
    path = run_dir / "jobs.json"
    saved = json.loads(create_once(path, json.dumps(record, indent=2) + "\n"))
    for key, what in (
        ("manifest_sha256", "training manifest"),
        ("pretrain_manifest_sha256", "pretrain manifest (--pretrain-manifest)"),
        ("jobs", "job list (configuration)"),
    ):
        if saved.get(key) != record.get(key):
            raise JobError(
                f"{path}: this run was started with another {what}; start every job of a "
                "run with the same manifest, configuration and options, or choose a new --out"
            )


def read_plan(run_dir: Path) -> list[Job] | None:
    """The jobs of ``jobs.json``; None for a run written before jobs existed."""
    path = Path(run_dir) / "jobs.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return [
            Job(int(j["id"]), j["kind"], j["fold"], j["slot"], tuple(j["needs"]))
            for j in record["jobs"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise JobError(f"{path}: unreadable job plan ({error})") from None


# --- status of each job ---------------------------------------------------------------------


def job_status(run_dir: Path, job: Job) -> dict[str, Any]:
    """Where a job stands: its status file, with ``complete`` decided by its output files.

    A job that says running reads as ``interrupted`` once its process is gone
    (:func:`_still_running`); where that cannot be told from here, the record says why
    in ``unverified``.
    """
    record: dict[str, Any] = {}
    path = job.status_file(run_dir)
    if path.exists():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {"status": FAILED, "error": f"{path}: unreadable status file"}
    if record.get("status") == SKIPPED:
        return record
    if all(file.exists() for file in job.finished_files(run_dir)):
        return {**record, "status": COMPLETE}
    if record.get("status") == COMPLETE:  # its outputs were removed since
        record = {**record, "status": NOT_STARTED}
    if record.get("status") == RUNNING:
        running = _still_running(run_dir, job, record)
        if running is False:
            record = {**record, "status": INTERRUPTED}
        elif running is None:
            record = {
                **record,
                "unverified": "whether its process still runs can only be checked on "
                f"{record.get('host', 'the host it ran on')}",
            }
    return {**record, "status": record.get("status", NOT_STARTED)}


def _still_running(run_dir: Path, job: Job, record: dict[str, Any]) -> bool | None:
    """Whether the process that wrote "running" is still there; None when nobody can tell.

    Its lock says so where ``flock`` works (a job holds it while it trains, see
    :func:`job_lock`; the kernel drops it when the process dies). Where the file system
    has no ``flock``, or the run predates job locks, the process ID recorded with the
    status answers on the host that process ran on.
    """
    lock = _lock_file(run_dir, job)
    if lock.exists():
        try:
            with exclusive_lock(lock) as free:
                return not free
        except LockUnsupportedError:
            pass  # no flock on this file system: ask the process table
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        return process_alive(record["pid"])
    return None


def is_finished(run_dir: Path, job: Job) -> bool:
    return job_status(run_dir, job)["status"] in FINISHED


def write_status(run_dir: Path, job: Job, status: str, **fields: Any) -> None:
    """Record a job's status (only the job's own process writes its file)."""
    path = job.status_file(run_dir)
    record: dict[str, Any] = {}
    if path.exists():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if status == RUNNING:
        record = {"started": now}
    record.update(
        {
            "job": job.to_dict(),
            "status": status,
            "updated": now,
            "host": socket.gethostname(),
            "pid": os.getpid(),  # with host: is it still running, where flock cannot tell
        }
    )
    record.update(fields)
    write_json_atomic(path, record)


@contextlib.contextmanager
def job_lock(run_dir: Path, job: Job) -> Iterator[None]:
    """Hold the job's lock while it trains; refuse a second copy of the same job.

    Two copies (a requeued array task beside the original, two GPUs given one ID) would
    otherwise write the same model folder and checkpoint under each other. The lock is a
    ``flock`` on ``jobs/<name>.lock``: held across processes on one machine and, on a
    shared file system that supports ``flock`` (NFSv4, Lustre, GPFS), across machines.
    Where the file system has no ``flock``, the job's status record and a claim file
    stand in (:func:`_check_without_flock`, :func:`_claim_without_flock`). A lock
    found held is tried again for
    ``PROBE_WAIT`` seconds: whoever asks whether an interrupted job still runs
    (:func:`job_status`: ``jobs --status``, ``package``, another job's progress line)
    holds its lock for an instant, and a copy starting then is no second copy.
    """
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(exclusive_lock(_lock_file(run_dir, job), PROBE_WAIT))
        except LockUnsupportedError as error:
            held = _check_without_flock(run_dir, job, error) and stack.enter_context(
                _claim_without_flock(run_dir, job, error)
            )
        if not held:
            status = job_status(run_dir, job)
            if status["status"] != RUNNING:  # a copy that claimed it and has not said so yet
                status = {**status, **_read_claim(_claim_file(run_dir, job))}
            raise JobError(
                f"{job.describe()} is running already ({_where(status)}); wait for it, or "
                "end that process before starting the job again"
            )
        yield


def _check_without_flock(run_dir: Path, job: Job, error: LockUnsupportedError) -> bool:
    """Whether a job may start where ``flock`` fails: False when its record shows a copy
    alive on this host; an error when it shows one elsewhere (it cannot be checked from
    here, so the user decides); True otherwise, with a warning that the record and the
    job's claim file guard it (:func:`_claim_without_flock`)."""
    status = job_status(run_dir, job)
    if status["status"] == RUNNING and not status.get("unverified"):
        return False
    if status["status"] == RUNNING:
        raise JobError(
            f"{error.filename}: {error.strerror}, so a running copy of a job is known from "
            f"its status record only. {job.describe()} says running ({_where(status)}); "
            f"{status['unverified']}. If that process has ended (killed, node lost), remove "
            f"{job.status_file(run_dir)} and start the job again with --resume"
        )
    logger.warning(
        "%s: %s; a second copy of %s is recognised by its claim file and status record "
        "(host, process ID)",
        error.filename,
        error.strerror,
        job.name,
    )
    return True


@contextlib.contextmanager
def _claim_without_flock(run_dir: Path, job: Job, error: LockUnsupportedError) -> Iterator[bool]:
    """Hold ``jobs/<name>.claim`` while the job runs, where ``flock`` fails: two copies
    started in the same instant both find no running record, but only one can create the
    claim (a hard link to a complete file, refused when the name exists, also on NFS and
    Lustre). Yields False when a live copy on this host holds it; a claim left by a dead
    process of this host is taken over; one from another host cannot be checked from
    here, so the user is told which file to remove. The claim is removed at the end."""
    path = _claim_file(run_dir, job)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}
    owned = _create_claim(path, record) or _take_over_claim(path, record, job, error)
    try:
        yield owned
    finally:
        if owned and _read_claim(path).get("token") == record["token"]:
            path.unlink(missing_ok=True)


def _create_claim(path: Path, record: dict[str, Any]) -> bool:
    """Create the claim unless it exists: a complete file linked in place (a reader never
    sees it half written), or an exclusive create where hard links are not supported."""
    text = json.dumps(record) + "\n"
    temporary = path.with_name(f".{path.name}.{record['token']}.new")
    write_text_atomic(temporary, text)
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
    finally:
        temporary.unlink(missing_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        return False
    return True


def _take_over_claim(
    path: Path, record: dict[str, Any], job: Job, error: LockUnsupportedError
) -> bool:
    """Replace a claim whose process has ended on this host, then read it back after
    :data:`CLAIM_SETTLE` seconds: of two copies taking over at once, the last writer
    keeps it and the other yields. A live claim here: False; one from elsewhere or one
    that cannot be read: an error naming the file."""
    claim = _read_claim(path)
    if claim.get("host") != socket.gethostname() or not isinstance(claim.get("pid"), int):
        where = f"host {claim['host']}" if claim.get("host") else "an unreadable claim"
        raise JobError(
            f"{error.filename}: {error.strerror}, so {path} marks a running copy of "
            f"{job.describe()} ({where}); it cannot be checked from here. If that process "
            f"has ended (killed, node lost), remove {path} and start the job again with --resume"
        )
    if process_alive(claim["pid"]):
        return False
    write_json_atomic(path, record)
    time.sleep(CLAIM_SETTLE)
    return _read_claim(path).get("token") == record["token"]


def _read_claim(path: Path) -> dict[str, Any]:
    """The claim's record; empty when it is gone or unreadable (being written)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _claim_file(run_dir: Path, job: Job) -> Path:
    return _lock_file(run_dir, job).with_suffix(".claim")


def _where(status: dict[str, Any]) -> str:
    where = f"on {status.get('host', '?')}"
    where = f"since {status['started']} {where}" if status.get("started") else where
    return f"{where}, process {status['pid']}" if "pid" in status else where


def _lock_file(run_dir: Path, job: Job) -> Path:
    return job.status_file(run_dir).with_suffix(".lock")


def check_needs(run_dir: Path, jobs: Sequence[Job], job: Job) -> None:
    """Fail with the missing prerequisite's name when a job's inputs are not finished."""
    by_name = {j.name: j for j in jobs}
    for name in job.needs:
        needed = by_name[name]
        status = job_status(run_dir, needed)
        if status["status"] not in FINISHED:
            raise JobError(
                f"{job.describe()} needs {needed.describe()}, which is {status['status']}; "
                f"run `train ... --job {needed.id}` first (in Slurm: submit this job with "
                "--dependency=afterok on it)"
            )


def missing_jobs(run_dir: Path, jobs: Sequence[Job]) -> list[tuple[Job, dict[str, Any]]]:
    """The jobs not finished yet, each with its status record."""
    missing = []
    for job in jobs:
        status = job_status(run_dir, job)
        if status["status"] not in FINISHED:
            missing.append((job, status))
    return missing


def describe_state(status: dict[str, Any]) -> str:
    """A job's state for people: "failed (updated … on node-3): RuntimeError: …"; when and
    where an unfinished job last ran, its error, and why "running" is unverified."""
    state = status["status"]
    if state in FINISHED:
        return state
    if status.get("updated"):
        state += f" (updated {status['updated']}"
        state += f" on {status['host']})" if status.get("host") else ")"
    if status.get("error"):
        state += f": {status['error']}"
    if status.get("unverified"):
        state += f"; {status['unverified']}"
    return state


def describe_missing(run_dir: Path, missing: Sequence[tuple[Job, dict[str, Any]]]) -> str:
    """The message of an incomplete run: every missing job, its ID, what it is, its state."""
    lines = [f"{run_dir}: {len(missing)} job(s) not finished, so no package was written:"]
    for job, status in missing:
        lines.append(f"  {job.describe()}: {describe_state(status)}")
    ids = id_ranges([job.id for job, _ in missing])
    lines.append(f"run them with `virtual-biopsy-train train MANIFEST --out {run_dir} --job ID`")
    lines.append(f"(IDs {ids}), then package again")
    return "\n".join(lines)
