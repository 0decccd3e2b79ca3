"""Weights on disk: safetensors only, checked by SHA-256, written atomically.

Pickled checkpoints (``.pt``/``.pth``) can run code when loaded, so weights are read with
``safetensors`` only. A checked file is hashed and deserialised from the same bytes, so
the file cannot change between the check and the load. Hashing alone needs no torch, so
a front end can verify a package without loading the deep-learning stack.

Only regular files up to ``VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES`` are read (a link to
``/dev/zero`` would never end), and the loaded tensors must be float32 (or integer
counters) and finite: half- or double-precision weights would fail deep inside a
forward pass, and a NaN weight would make every probability NaN and blame the image.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from VirtualBiopsyLib.atomic_io import write_bytes_atomic
from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.limits import LimitExceededError, limit, read_regular_file

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
    budget = limit("VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES")
    with open(path, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise ModelPackageError(f"{path}: not a regular file (a device, FIFO or socket)")
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
            budget -= len(chunk)
            if budget < 0:
                raise ModelPackageError(
                    f"{path}: larger than {limit('VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES')} bytes "
                    "(VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES)"
                )
    return digest.hexdigest()


def read_state_dict(
    path: Path | str, expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` state dict, refusing it if its SHA-256 is not the expected one."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors_bytes

    path = Path(path)
    try:
        data = read_regular_file(
            path, limit("VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES"), "VIRTUAL_BIOPSY_MAX_WEIGHTS_BYTES"
        )
    except LimitExceededError as error:
        raise ModelPackageError(f"{path}: weights file {error}") from error
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
        state = load_safetensors_bytes(data)
    except SafetensorError as error:
        raise ModelPackageError(f"{path}: not a valid safetensors file ({error})") from error
    except MemoryError as error:
        raise ModelPackageError(f"{path}: not enough memory to load the weights") from error
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
            if not bool(torch.isfinite(tensor).all()):
                raise ModelPackageError(
                    f"{path}: tensor {name!r} holds NaN or infinite values; the weights are corrupt"
                )
        elif tensor.is_complex() or tensor.dtype == torch.bool:
            raise ModelPackageError(f"{path}: tensor {name!r} has type {tensor.dtype}")


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
