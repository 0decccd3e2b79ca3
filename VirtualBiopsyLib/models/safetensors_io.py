"""Weights on disk: safetensors only, checked by SHA-256, written atomically.

Pickled checkpoints (``.pt``/``.pth``) can run code when loaded, so weights are read with
``safetensors`` only. Hashing alone needs no torch, so a front end can verify a package
without loading the deep-learning stack.

A file is hashed once per file identity within a process (:func:`verify_file`): device,
inode, size, modification and change time, recorded only for a file whose last change
is older than :data:`SETTLED_SECONDS`. Any later write or replacement changes the
change time (which no user can set back) or the inode, so the next load hashes it again;
a file changed just before it was hashed is hashed on every load. A verified file is
then read straight into the tensors' memory (one copy, nothing mapped from the file, so
a later change to the file cannot reach a loaded network), and its identity is checked
again once it is read.

Only regular files up to ``VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES`` are read (a link to
``/dev/zero`` would never end), and the loaded tensors must be float32 (or integer
counters) and finite: half- or double-precision weights would fail deep inside a
forward pass, and a NaN weight would make every probability NaN and blame the image.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from VirtualBiopsyLib.atomic_io import write_bytes_atomic
from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.limits import LimitExceededError, limit, read_regular_file

if TYPE_CHECKING:  # torch is imported only when weights are (de)serialised
    import torch

# A file whose last change is at least this old when it is hashed is not hashed again in
# this process while its identity stays the same. Timestamps tick coarsely (a few ms on
# Linux, 2 s on FAT): a change within the same tick as an earlier one could keep the
# identity, so only files that have settled are remembered.
SETTLED_SECONDS = 2.0
FileIdentity = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns
_verified: dict[FileIdentity, str] = {}  # identity → SHA-256 it was verified to have


def file_identity(status: os.stat_result) -> FileIdentity:
    """What identifies one version of a file: device, inode, size, mtime and ctime."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in chunks.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
    >>> sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    with open(path, "rb") as stream:
        return _hash_stream(stream, path)


def _hash_stream(stream: BinaryIO, path: Path | str) -> str:
    """SHA-256 of an open regular file within the weights size limit (hashlib releases
    the GIL on each chunk, so files hash side by side on threads)."""
    if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
        raise ModelPackageError(f"{path}: not a regular file (a device, FIFO or socket)")
    digest = hashlib.sha256()
    budget = limit("VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES")
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
        budget -= len(chunk)
        if budget < 0:
            raise ModelPackageError(
                f"{path}: larger than {limit('VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES')} bytes "
                "(VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES)"
            )
    return digest.hexdigest()


def verify_file(path: Path | str, expected_sha256: str) -> FileIdentity:
    """Check that ``path`` has the SHA-256 ``expected_sha256``; return its identity.

    Hashes the file unless this process verified this very identity already (see the
    module docstring); raises :class:`ModelPackageError` naming the file otherwise.
    """
    path, expected = Path(path), expected_sha256.lower()
    try:
        status = os.stat(path)
    except FileNotFoundError as error:
        raise ModelPackageError(f"{path}: weights file is missing") from error
    except OSError as error:
        raise ModelPackageError(f"{path}: cannot read weights ({error.strerror})") from error
    if stat.S_ISREG(status.st_mode) and _verified.get(file_identity(status)) == expected:
        return file_identity(status)
    started_ns = time.time_ns()
    try:
        with open(path, "rb") as stream:
            before = file_identity(os.fstat(stream.fileno()))
            actual = _hash_stream(stream, path)
            after = file_identity(os.fstat(stream.fileno()))
    except OSError as error:
        raise ModelPackageError(f"{path}: cannot read weights ({error.strerror})") from error
    if actual != expected:
        raise ModelPackageError(
            f"{path}: SHA-256 mismatch (expected {expected_sha256}, found {actual}); "
            "the file was modified or corrupted, refusing to load it"
        )
    settled = started_ns - after[4] >= SETTLED_SECONDS * 1e9
    if before == after and settled:
        _verified[after] = actual
    return after


def forget_verified() -> None:
    """Forget which files this process has verified (every file is hashed again)."""
    _verified.clear()


def read_state_dict(
    path: Path | str, expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` state dict, refusing it if its SHA-256 is not the expected one.

    With ``expected_sha256`` the file is verified first (:func:`verify_file`, once per
    file identity) and then read straight into the tensors (one copy); its identity must
    be unchanged after the read, or the file is refused as changed while loading.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors_bytes
    from safetensors.torch import load_file

    path = Path(path)
    try:
        if expected_sha256 is None:
            data = read_regular_file(
                path, limit("VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES"), "VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES"
            )
            state = load_safetensors_bytes(data)
            del data
        else:
            identity = verify_file(path, expected_sha256)
            state = load_file(path, backend="pread")  # into the tensors, nothing mapped
            if file_identity(os.stat(path)) != identity:
                raise ModelPackageError(
                    f"{path}: the weights file changed while it was loaded; refusing it"
                )
    except LimitExceededError as error:
        raise ModelPackageError(f"{path}: weights file {error}") from error
    except FileNotFoundError as error:
        raise ModelPackageError(f"{path}: weights file is missing") from error
    except SafetensorError as error:
        raise ModelPackageError(f"{path}: not a valid safetensors file ({error})") from error
    except MemoryError as error:
        raise ModelPackageError(f"{path}: not enough memory to load the weights") from error
    except OSError as error:
        raise ModelPackageError(f"{path}: cannot read weights ({error.strerror})") from error
    check_weights(state, path)
    return state


def check_weights(state: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Refuse weights that are not float32 or not finite, naming the first bad tensor.

    Integer tensors (batch-norm counters) are allowed; every floating tensor must be
    float32, the type the networks are built in (float16/float64 would be adopted as
    they are and fail in the first convolution).
    """
    import torch

    for name, tensor in state.items():
        if tensor.is_floating_point():
            if tensor.dtype != torch.float32:
                raise ModelPackageError(
                    f"{path}: tensor {name!r} is {str(tensor.dtype).removeprefix('torch.')}; "
                    "weights must be float32"
                )
            if tensor.numel() and not _finite(tensor):
                raise ModelPackageError(
                    f"{path}: tensor {name!r} holds NaN or infinite values; the weights are corrupt"
                )
        elif tensor.is_complex() or tensor.dtype == torch.bool:
            raise ModelPackageError(f"{path}: tensor {name!r} has type {tensor.dtype}")


def _finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite, in one pass that allocates nothing: the minimum
    and maximum are NaN when any value is (``aminmax`` propagates NaN), ±inf for an inf.
    """
    import torch

    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def write_state_dict(
    state: Mapping[str, torch.Tensor], path: Path | str, metadata: Mapping[str, str] | None = None
) -> str:
    """Write a state dict as safetensors atomically and return the file's SHA-256."""
    from safetensors.torch import save as save_safetensors_bytes

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    data = save_safetensors_bytes(tensors, metadata=dict(metadata) if metadata else None)
    # fsync'd: a package or checkpoint must survive a crash; 0644: packages are shared
    write_bytes_atomic(Path(path), data, mode=0o644, durable=True)
    return sha256_bytes(data)
