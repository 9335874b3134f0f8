"""The verify job's background report writer and the snapshot it writes."""

from __future__ import annotations

import json
import threading

import pytest

from cdat_core.lab import report


def test_a_queued_report_is_dropped_for_a_newer_one(tmp_path, monkeypatch):
    started, release, written = threading.Event(), threading.Event(), []
    write_json = report.write_json

    def slow(path, data, **kw):
        written.append(data["stage"])
        started.set()
        release.wait(timeout=30)
        return write_json(path, data, **kw)

    monkeypatch.setattr(report, "write_json", slow)
    writer = report.BackgroundWriter()
    writer.submit(tmp_path / "r.json", {"stage": 1})
    assert started.wait(timeout=30)  # stage 1 is being written
    writer.submit(tmp_path / "r.json", {"stage": 2})  # queued ...
    writer.submit(tmp_path / "r.json", {"stage": 3})  # ... and replaced by stage 3
    release.set()
    writer.close()
    assert written == [1, 3]
    assert json.loads((tmp_path / "r.json").read_text()) == {"stage": 3}


def test_wait_raises_the_error_of_a_write(tmp_path):
    writer = report.BackgroundWriter()
    writer.submit(tmp_path / "missing" / "r.json", {"a": 1})  # no such folder
    with pytest.raises(FileNotFoundError):
        writer.wait()
    writer.submit(tmp_path / "r.json", {"a": 2})  # the writer still works after an error
    writer.close()
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 2}


def test_the_written_report_does_not_see_later_stages(tmp_path):
    results = {"per_seed": {"0": {"runs": {"a": {"loss": [1.0, float("nan")]}}}}}
    frozen = report.snapshot(results)
    results["per_seed"]["0"]["runs"]["b"] = {"loss": [2.0]}
    results["per_seed"]["1"] = {}
    writer = report.BackgroundWriter()
    writer.submit(tmp_path / "r.json", frozen)
    writer.close()
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "per_seed": {"0": {"runs": {"a": {"loss": [1.0, None]}}}}
    }
