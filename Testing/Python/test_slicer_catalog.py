"""The Extensions Index's checks on our catalog entry, applied offline.

``scripts/check_description_files.py`` of Slicer/ExtensionsIndex (07f1d1b, 2026-08) runs
these checks on a submitted ``<Extension>.json``; each test below names the function it
follows. Checks that need the network are replaced by their offline part: the schema is
the copy in Testing/Data, and the icon / screenshot URLs must name files of this
repository (``raw.githubusercontent.com/<owner>/<repo>/main/<path>``) that are PNGs.
The GitHub topic ``3d-slicer-extension`` (check_git_repository_topics) is a repository
setting that cannot be checked from a checkout.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import urllib.parse as urlparse
from pathlib import Path

import jsonschema
import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
DATA = REPOSITORY / "Testing" / "Data"
ENTRY_FILE = REPOSITORY / "VirtualBiopsy.json"
EXTENSION_NAME = ENTRY_FILE.stem
OWNER, REPOSITORY_NAME = "virtual-biopsy", "SlicerVirtualBiopsy"
RAW_PREFIX = f"https://raw.githubusercontent.com/{OWNER}/{REPOSITORY_NAME}/main/"


@pytest.fixture(scope="module")
def entry() -> dict:
    return json.loads(ENTRY_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cmake() -> str:
    return (REPOSITORY / "CMakeLists.txt").read_text(encoding="utf-8")


def accepted_categories() -> list[str]:
    api = json.loads((DATA / "slicer-api.json").read_text())
    return next(v for k, v in api.items() if k.startswith("Extensions Index accepted categories"))


def test_check_json_file_format_lf_only():
    data = ENTRY_FILE.read_bytes()
    json.loads(data)
    assert b"\r" not in data


def test_json_style_is_the_index_prettier_style(entry):
    """.prettierrc.js: prettier-plugin-multiline-arrays, wrap threshold 0 → every array on
    several lines; 2-space indent; final newline (end-of-file-fixer)."""
    text = ENTRY_FILE.read_text(encoding="utf-8")
    assert text == json.dumps(entry, indent=2, ensure_ascii=False) + "\n"
    assert '[\n    "PyTorch"\n  ]' in text


def test_check_json_schema(entry):
    schema_name = "slicer-extension-catalog-entry-schema-v1.0.2.json"
    assert entry["$schema"].split("#")[0].endswith("/" + schema_name)
    jsonschema.validate(entry, json.loads((DATA / schema_name).read_text()))


def test_check_extension_name():
    assert not EXTENSION_NAME.lower().startswith("slicer")


def test_check_category(entry):
    assert entry["category"] in accepted_categories()


def test_check_git_repository_name(entry):
    url = entry["scm_url"].strip().strip("/")
    name = os.path.splitext(urlparse.urlsplit(url).path.split("/")[-1])[0]
    prefixes = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
    assert name.startswith(prefixes), name
    assert name == REPOSITORY_NAME


def test_check_scm_url_syntax(entry):
    assert "://" in entry["scm_url"]
    assert urlparse.urlsplit(entry["scm_url"]).scheme in ("git", "https")
    assert urlparse.urlsplit(entry["scm_url"]).path.split("/")[1] == OWNER
    assert entry["build_dependencies"] == ["PyTorch"]


def test_check_cmakelists_content(cmake, entry):
    """Project name, icon and screenshot URLs as the Index's regular expressions read them."""
    (project,) = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", cmake, re.IGNORECASE)[:1]
    assert project.strip("\"'") == EXTENSION_NAME
    icons = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', cmake, re.IGNORECASE)
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', cmake, re.IGNORECASE)
    assert icons and shots
    urls = [icons[0].strip(), *shots[0].split()]
    for url in urls:
        assert url.startswith(RAW_PREFIX), f"{url} is not in {OWNER}/{REPOSITORY_NAME}"
        path = REPOSITORY / url.removeprefix(RAW_PREFIX)
        assert path.is_file(), f"{url} names no file of this repository"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    icon = (REPOSITORY / icons[0].removeprefix(RAW_PREFIX)).read_bytes()
    assert struct.unpack(">II", icon[16:24]) == (128, 128)
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE\s+"([^"]+)"\)', cmake).group(1)
    assert homepage == entry["scm_url"].removesuffix(".git")


def test_module_help_links_the_same_repository(entry):
    module = (REPOSITORY / "VirtualBiopsy" / "VirtualBiopsy.py").read_text(encoding="utf-8")
    links = re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", module)
    assert links and set(links) == {entry["scm_url"].removesuffix(".git")}


def test_check_license_file():
    names = ["LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING"]
    assert any((REPOSITORY / name).is_file() for name in names + ["COPYING.txt"])


def _tracked_files() -> list[Path]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, check=True
        ).stdout
        return [REPOSITORY / name for name in listing.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file
        skip = {".git", ".venv", ".venv-slicer512", "__pycache__"}
        return [p for p in REPOSITORY.rglob("*") if p.is_file() and not skip & set(p.parts)]


def test_check_repository_size():
    """A clone (the files a checkout holds) stays under the Index's 100 MB limit."""
    size = sum(path.stat().st_size for path in _tracked_files() if path.is_file())
    assert size < 100 * 1024 * 1024, f"{size / 2**20:.1f} MB"
