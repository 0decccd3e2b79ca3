"""The worker's request parsing, in process and without models: a line that cannot be
parsed, is too long or too deep, or has a field of the wrong JSON type fails alone with
exit code 2 and the next request is served (``commands/worker.py``).

``predict_paths`` and ``finish_run`` are replaced by recorders: what is checked is what
the worker hands them, not a prediction (``test_worker.py`` runs real workers).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from VirtualBiopsyLib.commands.worker import MAX_REQUEST_BYTES, Worker

SETTINGS = {"device": "cpu", "synthesis": True, "synthesis_precision": "float32", "saliency": True}


class Recorder:
    """Stands in for ``predict_paths``: records its keyword arguments, writes nothing."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, paths, out, **kwargs):
        self.calls.append({"paths": paths, "out": out, **kwargs})
        return SimpleNamespace(result_files=[], folders=[])


@pytest.fixture
def served(monkeypatch):
    """``serve(lines)`` → (the end lines, the recorded predict calls)."""
    from VirtualBiopsyLib.commands import predict
    from VirtualBiopsyLib.inference import runner

    recorder = Recorder()
    monkeypatch.setattr(runner, "predict_paths", recorder)
    monkeypatch.setattr(predict, "finish_run", lambda run, out, reporter: 0)

    def serve(lines: list[bytes], stream: io.BytesIO | None = None):
        output = io.StringIO()
        pipeline = SimpleNamespace(settings=SETTINGS, close=lambda: None)
        worker = Worker(pipeline, SimpleNamespace(networks_built=0), output)
        source = stream if stream is not None else io.BytesIO(b"".join(lines))
        assert worker.serve(source) == 0  # end of input: the worker ended normally
        records = [json.loads(line) for line in output.getvalue().splitlines()]
        return [r for r in records if r["step"] == "end"], recorder.calls

    return serve


def request(tmp_path: Path, **fields) -> bytes:
    body = {"id": "next", "paths": [str(tmp_path)], "out": str(tmp_path / "out"), **fields}
    return json.dumps(body).encode() + b"\n"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"[" * 200_000 + b"]" * 200_000, id="nested-200k"),
        pytest.param(b'{"id": 1' + b"0" * 5000 + b"}", id="5000-digit-id"),
        pytest.param(b'{"id": "x", "paths": ' + b"[" * 40 + b"]" * 40 + b"}", id="depth-40"),
        pytest.param(b'{"id": "\xff\xfe"}', id="not-utf8"),
        pytest.param(b"x" * (MAX_REQUEST_BYTES + 10), id="over-1MiB"),
    ],
)
def test_a_line_that_cannot_be_parsed_fails_alone_and_the_next_is_served(served, tmp_path, bad):
    ends, calls = served([bad + b"\n", request(tmp_path)])
    assert [(end["request"], end["exit_code"]) for end in ends] == [(None, 2), ("next", 0)]
    assert ends[0]["status"] == "failed" and "internal error" not in ends[0]["message"]
    assert len(calls) == 1  # only the good request ran


class ChunkCountingInput(io.BytesIO):
    """Records the largest piece one ``readline`` returned."""

    largest = 0

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.largest = max(self.largest, len(line))
        return line


def test_an_over_long_line_is_read_in_bounded_chunks(served, tmp_path):
    too_long = b'{"id": "long", "paths": ["' + b"a" * (5 * MAX_REQUEST_BYTES) + b'"]}\n'
    stream = ChunkCountingInput(too_long + request(tmp_path))
    ends, _ = served([], stream)
    assert [end["exit_code"] for end in ends] == [2, 0]
    assert "longer than 1048576 bytes" in ends[0]["message"]
    assert stream.largest <= MAX_REQUEST_BYTES + 1  # never the whole 5 MiB line at once


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"overwrite": "false"}, "'overwrite' must be true or false"),
        ({"export_dicom": "false"}, "'export_dicom' must be true or false"),
        ({"overwrite": 0}, "'overwrite' must be true or false"),
        ({"saliency": "true"}, "'saliency' must be true or false"),
        ({"id": 1.5}, "'id' must be a string or an integer"),
        ({"id": True}, "'id' must be a string or an integer"),
        ({"paths": "exam/"}, "'paths' must be a non-empty list"),
        ({"paths": [1]}, "'paths' must be a non-empty list"),
        ({"out": 5}, "'out' must be the output folder"),
        ({"out": "results\0/x"}, "'out' holds a NUL character"),
        ({"paths": ["exam\0"]}, "'paths' holds a NUL character"),
        ({"device": 0}, "'device' must be a string"),
    ],
)
def test_a_field_of_the_wrong_type_fails_the_request(served, tmp_path, fields, named):
    ends, calls = served([request(tmp_path, **fields), request(tmp_path)])
    assert [end["exit_code"] for end in ends] == [2, 0]
    assert named in ends[0]["message"]
    assert len(calls) == 1


@pytest.mark.parametrize("value", [True, False])
def test_boolean_fields_reach_predict_as_given(served, tmp_path, value):
    _, calls = served([request(tmp_path, overwrite=value, export_dicom=value)])
    assert calls[0]["overwrite"] is value and calls[0]["export_dicom"] is value


def test_an_id_is_echoed_and_a_bad_one_is_not(served, tmp_path):
    ends, _ = served([request(tmp_path, id=7), request(tmp_path, id=7.0)])
    assert [(end["request"], end["exit_code"]) for end in ends] == [(7, 0), (None, 2)]
