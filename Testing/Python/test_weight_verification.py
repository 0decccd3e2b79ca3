"""Weight checksums: still verified, hashed once per file identity, never trusted stale.

``load_package`` hashes every weight file (side by side on threads); a loaded network
reuses that check only while the file's identity (device, inode, size, mtime, ctime) is
unchanged and the file had settled before it was hashed. A replaced or rewritten file is
hashed again and, when it no longer matches, refused with an error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from VirtualBiopsyLib.errors import ModelPackageError
from VirtualBiopsyLib.inference.fixtures import write_untrained_package
from VirtualBiopsyLib.models import safetensors_io
from VirtualBiopsyLib.models.package import load_package
from VirtualBiopsyLib.models.safetensors_io import check_weights, read_state_dict


@pytest.fixture(autouse=True)
def fresh_registry():
    safetensors_io.forget_verified()
    yield
    safetensors_io.forget_verified()


@pytest.fixture
def package_dir(tmp_path: Path) -> Path:
    return write_untrained_package(tmp_path / "package", n_folds=2, image_size=32)


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """Names of the files hashed from now on."""
    names: list[str] = []
    original = safetensors_io._hash_stream

    def spy(stream, path):
        names.append(Path(path).name)
        return original(stream, path)

    monkeypatch.setattr(safetensors_io, "_hash_stream", spy)
    return names


def _weight_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def _corrupt_in_place(path: Path) -> None:
    """Flip one byte near the end (inside the tensor data), keeping the size."""
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    with open(path, "r+b") as stream:
        stream.write(data)


def test_a_corrupted_weight_file_fails_naming_the_file(package_dir):
    victim = _weight_files(package_dir)[3]
    _corrupt_in_place(victim)
    with pytest.raises(ModelPackageError, match=rf"{victim.name}: SHA-256 mismatch"):
        load_package(package_dir)


def test_settled_files_are_hashed_once_per_process(package_dir, hashed, monkeypatch):
    monkeypatch.setattr(safetensors_io, "SETTLED_SECONDS", 0.0)
    files = _weight_files(package_dir)
    package = load_package(package_dir)
    assert sorted(hashed) == sorted(f.name for f in files)  # each file once, at load
    hashed.clear()
    load_package(package_dir)
    package.load_classifier(1, "DES_CC")
    package.load_generator("CC")
    assert hashed == []  # verified already: same identity, not hashed again


def test_a_file_changed_just_before_it_was_hashed_is_hashed_every_time(package_dir, hashed):
    """Timestamps tick coarsely: a file that had not settled is never remembered."""
    load_package(package_dir)  # the files were written a moment ago
    first = len(hashed)
    load_package(package_dir)
    assert len(hashed) == 2 * first


def test_a_file_replaced_after_verification_is_refused(package_dir, monkeypatch):
    monkeypatch.setattr(safetensors_io, "SETTLED_SECONDS", 0.0)
    package = load_package(package_dir)  # every file verified and remembered
    entry = package.folds[0].classifiers["LE_CC"]
    victim = package_dir / entry.file
    corrupted = victim.with_name("corrupted.tmp")
    corrupted.write_bytes(victim.read_bytes()[:-5] + b"\x00" * 5)
    os.replace(corrupted, victim)  # a new file under the old name: a new identity
    with pytest.raises(ModelPackageError, match=rf"fold 0 LE_CC classifier: .*{victim.name}"):
        package.load_classifier(0, "LE_CC")
    with pytest.raises(ModelPackageError, match=rf"{victim.name}: SHA-256 mismatch"):
        load_package(package_dir)


def test_a_file_rewritten_in_place_after_verification_is_refused(package_dir):
    package = load_package(package_dir)
    victim = package_dir / package.generators[next(iter(package.generators))].file
    _corrupt_in_place(victim)
    with pytest.raises(ModelPackageError, match=rf"generator: .*{victim.name}.*SHA-256"):
        package.load_generator(next(iter(package.generators)))


def test_read_state_dict_checks_the_digest_it_is_given(package_dir):
    path = _weight_files(package_dir)[0]
    with pytest.raises(ModelPackageError, match=rf"{path.name}: SHA-256 mismatch"):
        read_state_dict(path, expected_sha256="0" * 64)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_weight_anywhere_is_refused(value):
    tensor = torch.zeros(1000)
    tensor[617] = value
    state = {"fine": torch.ones(3), "layer.weight": tensor}
    with pytest.raises(ModelPackageError, match=r"'layer.weight' holds NaN or infinite"):
        check_weights(state, "weights.safetensors")
    check_weights({"fine": torch.ones(3), "empty": torch.zeros(0)}, "weights.safetensors")
