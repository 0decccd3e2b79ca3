"""Atomic files and staged folders: a reader never sees half an output, and a finished
output is never replaced by accident.

Files are written to a hidden temporary sibling and renamed over the target
(``os.replace`` is atomic within one file system). Folders are filled under a hidden
name and renamed into place; without ``replace`` the rename refuses an existing target
(Linux ``renameat2(RENAME_NOREPLACE)``; elsewhere a plain ``rename``, which already
refuses a non-empty folder), so two runs writing the same folder at once cannot replace
each other's finished work. Temporary files and folders get the user's usual
permissions (umask), not ``mkstemp``'s 0600/0700.

:class:`StagingArea` adds ownership for long runs that fill many folders in one parent
(``predict --out DIR``): the run holds an ``flock`` on a lock file in DIR for its
lifetime, and every hidden folder it makes carries the lock's token in its name. The
kernel drops the lock when the process dies, even by ``kill -9``, so the next run can
tell a stale partial folder (token whose lock nobody holds) from one a live run is
still filling, and removes only the stale ones.

Some shared file systems have no ``flock`` (Lustre mounted without ``flock``, NFS without
its lock service: the call fails with ENOSYS, ENOLCK or EOPNOTSUPP). :func:`exclusive_lock`
raises :class:`LockUnsupportedError` there, so that a caller never takes "no lock" for
"lock held". A :class:`StagingArea` there still stages and publishes (a run's output
matters more than its claim), and keeps every other run's partial folders, since none
can be told stale.

>>> import tempfile
>>> target = Path(tempfile.mkdtemp()) / "note.txt"
>>> write_text_atomic(target, "phantom").read_text()
'phantom'
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; stale folders are kept
    fcntl = None  # type: ignore[assignment]

LOCK_PREFIX = ".virtual-biopsy-run-"
#: what ``flock`` answers on a file system that does not support it (see the module docstring)
FLOCK_UNSUPPORTED = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
LOCK_SUFFIX = ".lock"
_HIDDEN_FOLDER = re.compile(r"^\..+\.(?P<token>[0-9a-f]{16})\.[^.]+\.(?:partial|old)$")
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


# --- permissions ------------------------------------------------------------------------


def current_umask() -> int:
    """The process's umask (read without changing it for longer than a call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the usual permissions:
    0666/0777 less the umask, as if it had been made by ``open``/``mkdir``."""
    mask = current_umask()
    path = Path(path)
    if path.is_file():
        os.chmod(path, 0o666 & ~mask)
        return
    os.chmod(path, 0o777 & ~mask)
    for root, folders, files in os.walk(path):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


# --- files ------------------------------------------------------------------------------


def write_atomically(
    path: Path | str,
    write: Callable[[Path], object],
    *,
    mode: int | None = None,
    durable: bool = False,
) -> Path:
    """Call ``write(temp_path)`` on a hidden sibling of ``path``, then rename it over
    ``path``. The temporary name keeps ``path``'s suffix (writers that choose the format
    by extension still work). ``mode``: permissions (default: 0666 less the umask);
    ``durable``: fsync before the rename (for files a crash must not lose).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent
    )
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        if durable:
            sync_to_disk(temporary)
        os.chmod(temporary, mode if mode is not None else 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(
    path: Path | str, data: bytes, *, mode: int | None = None, durable: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomically`)."""
    return write_atomically(path, lambda temp: temp.write_bytes(data), mode=mode, durable=durable)


def write_text_atomic(path: Path | str, text: str, *, mode: int | None = None) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON ``null``) and tuples as lists: what
    strict JSON holds. Metrics are NaN where undefined (one class); a strict parser
    rejects a bare ``NaN``.

    >>> finite_json({"auc": float("nan"), "folds": (0.5, float("inf"))})
    {'auc': None, 'folds': [0.5, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def write_json_atomic(path: Path | str, data: Any, *, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (``indent`` 2, a final newline, no NaN) atomically."""
    text = json.dumps(data, indent=indent, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


# --- folders ----------------------------------------------------------------------------


def rename_no_replace(source: Path | str, target: Path | str) -> None:
    """Rename ``source`` to ``target``; ``FileExistsError`` if ``target`` exists.

    Atomic on Linux (``renameat2`` with ``RENAME_NOREPLACE``). Where that call is not
    available the check is the plain ``rename``'s: it refuses a non-empty folder or a
    file in the way, and would only replace an empty folder.
    """
    source, target = os.fspath(source), os.fspath(target)
    if _renameat2(source, target):
        return
    if os.path.lexists(target) and not (os.path.isdir(target) and not os.listdir(target)):
        raise FileExistsError(errno.EEXIST, "exists", target)
    try:
        os.rename(source, target)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, "exists", target) from error
        raise


def _renameat2(source: str, target: str) -> bool:
    """True when renameat2 did the rename; False when the system has no such call."""
    function = _libc_renameat2()
    if function is None:
        return False
    result = function(
        _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # kernel or file system lacks it
        return False
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), target)
    raise OSError(code, os.strerror(code), source)


def _libc_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def publish_folder(staging: Path, final: Path, *, replace: bool = False) -> Path:
    """Move a filled hidden folder to ``final`` and give it the usual permissions.

    ``replace=False``: ``FileExistsError`` when ``final`` exists (``staging`` is left
    for the caller to discard). ``replace=True``: an existing ``final`` is moved aside
    first and deleted only once the new folder is in place.
    """
    staging, final = Path(staging), Path(final)
    apply_umask(staging)
    if not replace:
        rename_no_replace(staging, final)
        return final
    try:
        rename_no_replace(staging, final)
        return final
    except FileExistsError:
        pass
    old = _hidden_sibling(final, _token_of(staging), "old")
    os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def staged_folder(final: Path | str, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``final``; when the block ends normally it
    becomes ``final`` (:func:`publish_folder`), otherwise it is deleted.

    >>> import tempfile
    >>> final = Path(tempfile.mkdtemp()) / "package"
    >>> with staged_folder(final) as folder:
    ...     _ = (folder / "model.json").write_text("{}")
    >>> sorted(p.name for p in final.iterdir())
    ['model.json']
    """
    final = Path(final)
    final.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = _make_hidden_folder(final, secrets.token_hex(8))
    try:
        yield staging
        publish_folder(staging, final, replace=replace)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _make_hidden_folder(final: Path, token: str) -> Path:
    parent = final.absolute().parent
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.{token}.", suffix=".partial", dir=parent))


def _hidden_sibling(final: Path, token: str, kind: str) -> Path:
    return final.with_name(f".{final.name}.{token}.{secrets.token_hex(4)}.{kind}")


def _token_of(hidden: Path) -> str:
    match = _HIDDEN_FOLDER.match(hidden.name)
    return match.group("token") if match else secrets.token_hex(8)


class StagingArea:
    """A run's claim on an output folder: hidden partial folders it fills there, owned
    through a lock the kernel releases when the process ends (see the module docstring).

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> with StagingArea(out) as area:
    ...     partial = area.stage("case-1")
    ...     _ = (partial / "result.json").write_text("{}")
    ...     _ = area.publish(partial, "case-1")
    >>> sorted(p.name for p in out.iterdir())
    ['case-1']
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.token = secrets.token_hex(8)
        self._lock: int | None = None
        self.cleared: list[Path] = []

    @property
    def lock_path(self) -> Path:
        return self.folder / f"{LOCK_PREFIX}{self.token}{LOCK_SUFFIX}"

    def open(self) -> StagingArea:
        """Create the folder if needed, take the lock, remove stale partial folders.

        Raises ``OSError`` when the folder cannot be made or written (the lock file is
        the first thing written, so this is also the writability check).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=LOCK_PREFIX, suffix=".new", dir=self.folder)
        try:
            with contextlib.suppress(LockUnsupportedError):  # no claim there: nothing
                _try_flock(handle, name)  # is ever taken for stale (see clear_stale)
            os.write(handle, f"{os.getpid()}\n".encode())
            os.replace(name, self.lock_path)  # named for cleaners only once it is locked
        except BaseException:
            os.close(handle)
            Path(name).unlink(missing_ok=True)
            raise
        self._lock = handle
        self.cleared = clear_stale(self.folder)
        return self

    def close(self) -> None:
        """Release the claim (the lock file goes; folders still staged are deleted)."""
        if self._lock is None:
            return
        for hidden in self._own_hidden():
            shutil.rmtree(hidden, ignore_errors=True)
        self.lock_path.unlink(missing_ok=True)
        os.close(self._lock)
        self._lock = None

    def __enter__(self) -> StagingArea:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stage(self, name: str) -> Path:
        """An empty hidden folder that will become ``folder/name``."""
        if self._lock is None:
            raise RuntimeError("StagingArea.stage() before open()")
        return _make_hidden_folder(self.folder / name, self.token)

    def publish(self, staging: Path, name: str, *, replace: bool = False) -> Path:
        """Move ``staging`` to ``folder/name`` (:func:`publish_folder`)."""
        return publish_folder(staging, self.folder / name, replace=replace)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def _own_hidden(self) -> list[Path]:
        return [p for p in self.folder.iterdir() if _folder_token(p) == self.token]


def _folder_token(path: Path) -> str | None:
    match = _HIDDEN_FOLDER.match(path.name)
    return match.group("token") if match and path.is_dir() else None


def clear_stale(folder: Path) -> list[Path]:
    """Delete the hidden partial folders in ``folder`` whose run is gone; return them.

    A folder belongs to the run whose lock file carries its token; it is stale when that
    lock file is missing or nobody holds its lock. Stale lock files go too.
    """
    folder = Path(folder)
    live: set[str] = set()
    stale_locks: list[tuple[Path, int]] = []
    for lock in folder.glob(f"{LOCK_PREFIX}*{LOCK_SUFFIX}"):
        token = lock.name[len(LOCK_PREFIX) : -len(LOCK_SUFFIX)]
        handle = _try_lock(lock)
        if handle is None:
            live.add(token)
        else:
            stale_locks.append((lock, handle))
    cleared = []
    try:
        for path in folder.iterdir():
            token = _folder_token(path)
            if token is not None and token not in live:
                shutil.rmtree(path, ignore_errors=True)
                cleared.append(path)
    finally:
        for lock, handle in stale_locks:
            lock.unlink(missing_ok=True)
            os.close(handle)
    return cleared


def _try_lock(lock: Path) -> int | None:
    """An fd holding ``lock``'s flock, or None when a live process holds it or there is
    no way to tell (no flock on Windows or on the file system: the run is taken as live,
    so its partial folders stay rather than risk removing one still being filled)."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        handle = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if _try_flock(handle, lock):
            return handle
    except LockUnsupportedError:
        pass
    os.close(handle)
    return None


def _try_flock(handle: int, path: Path | str) -> bool:
    """Take ``handle``'s exclusive flock without waiting: False when another process
    holds it; :class:`LockUnsupportedError` (naming ``path``) where the file system has
    no flock. (No flock on Windows: True.)"""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno not in FLOCK_UNSUPPORTED:
            raise
        raise LockUnsupportedError(
            error.errno,
            f"this file system does not support flock "
            f"({errno.errorcode[error.errno]}: {error.strerror})",
            str(path),
        ) from error
    return True


class LockUnsupportedError(OSError):
    """The file system of a lock file does not support ``flock``."""


@contextlib.contextmanager
def exclusive_lock(path: Path, wait: float = 0.0) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block.

    Yields False, holding nothing, when another process holds it (still after ``wait``
    seconds, tried every 10 ms); the kernel drops the lock when its holder dies, even by
    ``kill -9``. (No flock on Windows: always True.) Raises :class:`LockUnsupportedError`
    where the file system has no ``flock``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + wait
    try:
        while not _try_flock(handle, path):
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(0.01)
        yield True
    finally:
        os.close(handle)


def sync_to_disk(*paths: Path | str) -> None:
    """fsync files and folders: what a crash must not lose (a folder's fsync makes the
    renames in it durable). Windows cannot open a folder: folders are skipped there."""
    for path in map(Path, paths):
        folder = path.is_dir()
        if folder and os.name == "nt":  # pragma: no cover - Windows
            continue
        handle = os.open(path, os.O_RDONLY if folder else os.O_RDWR)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
