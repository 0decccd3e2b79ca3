"""Nothing a file can contain stops a batch, exhausts memory or gets a confident label.

The corpus (``hostile_corpus.py``) is built in a temporary folder. Each entry runs through
``virtual-biopsy predict`` (the in-process command line) on its own: no traceback, the
documented exit code (3 bad input, 4 bad model package, 0 for a file that is usable or
rightly passed over), a message naming the file and what is wrong, the hostile file never
classified. One batch then holds every hostile input beside a good case: it ends with
exit 3, names every bad file, and writes the good case. (One run per entry *with* the good
case would spend most of its time drawing the same report; the batch shows the same.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_corpus import ENVIRONMENT, HostileCorpus, HostileEntry, build_corpus

from VirtualBiopsyLib.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> HostileCorpus:
    return build_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(autouse=True)
def _limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


def _predict(paths: list[Path], out: Path, model: Path | None = None) -> list[str]:
    args = ["predict", *map(str, paths), "--out", str(out), "--no-saliency"]
    return args + (["--model", str(model)] if model is not None else [])


def _run(capsys, caplog, args: list[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err + caplog.text


def _case_folders(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/result.json"))


def test_the_corpus_covers_every_class_of_the_review(corpus):
    names = {entry.name for entry in corpus.entries}
    assert len(names) == len(corpus.entries) >= 80
    for prefix in ("dicom-", "nrrd-", "case-json-", "png-", "jpeg-", "model-"):
        assert any(name.startswith(prefix) for name in names), prefix
    assert {entry.expected_exit for entry in corpus.entries} == {0, 3, 4}


def test_each_hostile_input_is_that_files_problem(corpus, tmp_path, capsys, caplog):
    """One run per entry: right exit code, file and reason named, no traceback, the
    hostile file not classified (model entries run on the good case: exit 4, nothing
    written)."""
    wrong = []
    for index, entry in enumerate(corpus.entries):
        out = tmp_path / f"out{index}"
        paths = [corpus.good] if entry.model is not None else [entry.folder]
        code, text = _run(capsys, caplog, _predict(paths, out, entry.model))
        caplog.clear()
        problems = _problems(entry, code, text, out)
        if problems:
            wrong.append(f"{entry.name}: {'; '.join(problems)}")
    assert not wrong, "\n".join(wrong)


def _problems(entry: HostileEntry, code: int, text: str, out: Path) -> list[str]:
    problems = []
    if code != entry.expected_exit:
        problems.append(f"exit {code}, expected {entry.expected_exit}: {text[-600:]}")
    if "Traceback" in text:
        problems.append("traceback printed")
    folders = _case_folders(out)
    if entry.expected_exit == 4:
        if entry.bad_file.name not in text:
            problems.append(f"message does not name {entry.bad_file.name}")
        if folders:
            problems.append("a case was written with a bad model package")
        return problems
    if entry.expected_exit == 3 and str(entry.bad_file) not in text:
        problems.append(f"message does not name {entry.bad_file}: {text[-400:]}")
    if entry.reason and entry.expected_exit == 3 and entry.reason not in text:
        problems.append(f"reason {entry.reason!r} not in the message: {text[-400:]}")
    results = [json.loads((folder / "result.json").read_text()) for folder in folders]
    hostile = [r for r in results if r["case"]["patient_id"] != "GOOD-1"]
    if entry.expected_exit == 3 and any(_uses(r, entry.bad_file) for r in hostile):
        problems.append("the hostile file was classified")
    if entry.expected_exit == 0:
        if len(hostile) != 1:
            problems.append("the usable hostile case was not written")
        elif entry.reason not in json.dumps(hostile[0]["warnings"]):
            problems.append(f"{entry.reason!r} not in its warnings: {hostile[0]['warnings']}")
    return problems


def _uses(result: dict, path: Path) -> bool:
    return any(
        record.get("path") and Path(record["path"]).name == path.name
        for record in result["inputs"].values()
    )


def test_one_batch_with_every_hostile_input_writes_the_good_case(corpus, tmp_path, capsys, caplog):
    folders = [e.folder for e in corpus.entries if e.model is None]
    out = tmp_path / "out"
    code, text = _run(capsys, caplog, _predict([*folders, corpus.good], out))
    assert code == 3 and "Traceback" not in text
    patients = [
        json.loads((folder / "result.json").read_text())["case"]["patient_id"]
        for folder in _case_folders(out)
    ]
    assert patients.count("GOOD-1") == 1
    for entry in corpus.entries:
        if entry.model is None and entry.expected_exit == 3:
            assert str(entry.bad_file) in text, entry.name


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder; see the unit test")
def test_an_unreadable_subfolder_is_reported(corpus, tmp_path, capsys, caplog):
    locked = tmp_path / "exam" / "locked"
    locked.mkdir(parents=True)
    locked.chmod(0)
    try:
        code, text = _run(
            capsys, caplog, _predict([tmp_path / "exam", corpus.good], tmp_path / "o")
        )
    finally:
        locked.chmod(0o755)
    assert code == 3 and str(locked) in text and "cannot list folder" in text


def test_inspect_decode_refuses_each_hostile_image_with_its_reason(corpus, capsys):
    folders = [e.folder for e in corpus.entries if e.model is None]
    assert main(["inspect", "--json", "--decode", *map(str, folders)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    images = json.loads(captured.out)["images"]
    for entry in corpus.entries:
        if entry.model is not None or entry.expected_exit != 3:
            continue
        refused = [
            image
            for image in images
            if image["status"] == "error"
            and (image["path"] == str(entry.bad_file) or str(entry.bad_file) in image["reason"])
        ]
        assert refused, entry.name
        assert entry.reason in refused[0]["reason"], (entry.name, refused[0]["reason"])
