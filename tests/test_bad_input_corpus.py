"""The bad-input corpus (tests/bad_inputs.py) over the library, the CLI and the pages, one test per case.

Each family of cases runs in one subprocess whose address space is capped at 3 GB (RLIMIT_AS), so an
input that makes the app allocate gigabytes fails its case here instead of exhausting the machine. Two
families run at a time (the one being asserted and the next), which suits two cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.bad_inputs import CAP_BYTES, CASES, FAMILIES, ROOT

_running: dict[str, tuple[subprocess.Popen, object]] = {}
_results: dict[str, dict] = {}


def _start(family: str, base) -> None:
    work = base / family
    work.mkdir(parents=True, exist_ok=True)
    out = work / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
           "EXPLORER_CACHE_DIR": str(work / "cache"), "EXPLORER_ALLOW_DOWNLOAD": "0"}
    env.pop("EXPLORER_IMAGE_ROOT", None)
    log = open(work / "runner.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "bad_inputs.py"), family, str(work), str(out)],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    _running[family] = (proc, out)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_inputs")
    yield base
    for proc, _ in _running.values():
        if proc.poll() is None:
            proc.kill()


def family_results(family: str, base) -> dict:
    if family not in _results:
        index = FAMILIES.index(family)
        for name in FAMILIES[index : index + 2]:  # this family, and the next one starts meanwhile
            if name not in _running:
                _start(name, base)
        proc, out = _running[family]
        try:
            proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
        log = (base / family / "runner.log").read_text()[-3000:]
        assert out.exists(), (f"the {family} runner died (exit {proc.returncode}) "
                              f"under the {CAP_BYTES >> 30} GB cap:\n{log}")
        _results[family] = json.loads(out.read_text())
    return _results[family]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error_or_a_correct_result(case, corpus_dir):
    report = family_results(case.family, corpus_dir)
    assert report["baseline_vm_mb"] < report["cap_mb"] / 2, report  # the cap leaves room for the work itself
    got = report["results"][case.id]
    where = f"[{case.surface}] {case.id}: {got['kind']}: {got['message']}\n{got['stderr'][-2000:]}"
    assert got["kind"] != "traceback", where
    assert got["kind"] == case.expect, where
    assert re.search(case.pattern, got["message"]), f"message does not match {case.pattern!r}\n{where}"
    if case.surface == "cli":
        assert "Traceback" not in got["stderr"], where
        if got["kind"] == "error":
            assert got["message"].startswith("error: ") and "\n" not in got["message"].strip(), where
            # one error line and no progress bar before it (a one-line "warning: …", e.g. TorchScript's trust
            # warning on a file that did load, may precede it)
            lines = [line for line in got["stderr"].splitlines() if line.strip() and not line.startswith("warning: ")]
            assert len(lines) == 1, where
            assert "%|" not in got["stderr"], where


def test_the_corpus_covers_every_family_and_defect():
    families = {c.family for c in CASES}
    assert families == set(FAMILIES) and len(CASES) >= 60
    defects = {c.defect.split(":")[0] for c in CASES if c.defect}
    assert {str(n) for n in range(1, 13)} - {"11"} <= defects  # 11 (--arch, TorchScript warning) is the models work
    assert {f"20.{n}" for n in range(1, 9)} <= defects  # issue 20's eight classes
    assert len({c.id for c in CASES}) == len(CASES)
