"""Weights on disk: safetensors only, checked by SHA-256, written atomically.

Pickled checkpoints (``.pt``/``.pth``) can run code when loaded, so weights are read with
``safetensors`` only. A checked file is hashed and deserialised from the same bytes, so
the file cannot change between the check and the load. Hashing alone needs no torch, so
a front end can verify a package without loading the deep-learning stack.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from VirtualBiopsyLib.errors import ModelPackageError

if TYPE_CHECKING:  # torch is imported only when weights are (de)serialised
    import torch


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
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(
    path: Path | str, expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` state dict, refusing it if its SHA-256 is not the expected one."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors_bytes

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise ModelPackageError(f"{path}: weights file is missing") from error
    except OSError as error:
        raise ModelPackageError(f"{path}: cannot read weights ({error.strerror})") from error
    if expected_sha256 is not None:
        actual = sha256_bytes(data)
        if actual != expected_sha256.lower():
            raise ModelPackageError(
                f"{path}: SHA-256 mismatch (expected {expected_sha256}, found {actual}); "
                "the file was modified or corrupted, refusing to load it"
            )
    try:
        return load_safetensors_bytes(data)
    except SafetensorError as error:
        raise ModelPackageError(f"{path}: not a valid safetensors file ({error})") from error


def write_state_dict(
    state: Mapping[str, torch.Tensor], path: Path | str, metadata: Mapping[str, str] | None = None
) -> str:
    """Write a state dict as safetensors atomically and return the file's SHA-256."""
    from safetensors.torch import save as save_safetensors_bytes

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    data = save_safetensors_bytes(tensors, metadata=dict(metadata) if metadata else None)
    write_bytes_atomic(Path(path), data)
    return sha256_bytes(data)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling and ``os.replace`` (no half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; packages are shared read-only
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
