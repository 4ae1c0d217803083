"""The examples in the package's docstrings run as written, from the
repository's root (they replay tests/data/office.pcap). Examples that need a
live capture are marked ``# doctest: +SKIP``; those that replay need BPF
(BPF_PROG_TEST_RUN) and run with the ``bpf`` fixture."""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import numpy as np
import pktstat_bpf
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "pktstat_bpf"


def _module_names() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # runs the CLI when imported
            continue
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        out.append(".".join(parts))
    return out


def _runnable(name: str) -> list[doctest.DocTest]:
    tests = doctest.DocTestFinder(exclude_empty=True).find(importlib.import_module(name), name)
    for t in tests:
        t.examples = [e for e in t.examples if not e.options.get(doctest.SKIP)]
    return [t for t in tests if t.examples]


MODULES = [name for name in _module_names() if _runnable(name)]


def test_the_examples_are_found():
    want = {"core.addresses", "core.snapshot", "output.series", "views.budget", "core.intervals"}
    assert {f"pktstat_bpf.{m}" for m in want} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, request: pytest.FixtureRequest, monkeypatch, tmp_path) -> None:
    tests = _runnable(name)
    if any("replay(" in e.source or "timeseries(" in e.source for t in tests for e in t.examples):
        request.getfixturevalue("bpf")  # replays load the BPF program
    pandas = pytest.importorskip("pandas")
    monkeypatch.chdir(ROOT)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs = {"pktstat_bpf": pktstat_bpf, "json": json, "np": np, "pandas": pandas, "tmp": tmp_path}
    report: list[str] = []
    for t in tests:
        t.globs = {**t.globs, **globs}
        runner.run(t, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted == sum(len(t.examples) for t in tests) > 0
