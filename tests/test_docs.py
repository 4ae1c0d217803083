"""The documentation: the README stays a short front page, every relative
link of the README, CONTRIBUTING.md and docs/*.md leads to a file (and a
heading) that exists, and the manual documents every flag of the CLI and
every JSON field a run writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLI_DOC = ROOT / "docs" / "cli.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
OFFICE = ROOT / "tests" / "data" / "office.pcap"

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's ids of a Markdown page's headings: lower case, punctuation
    other than '-' and '_' dropped, spaces to '-', '-N' on repeats."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} +(.*?) *#* *$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_readme_is_a_front_page():
    size = README.stat().st_size
    assert size < 12_500, f"README.md is {size} bytes: move detail to docs/"


def test_the_pages_exist():
    assert {p.name for p in PAGES} >= {
        "README.md",
        "CONTRIBUTING.md",
        "cli.md",
        "python-api.md",
        "counting.md",
        "replay.md",
        "exporter.md",
        "performance.md",
        "architecture.md",
        "testing.md",
    }
    assert not (ROOT / "DEVELOPERS.md").exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert links(page)  # every page leads somewhere
    assert broken == [], f"{page.name}: {broken}"


def test_the_link_checker_sees_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## Exit codes\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#exit-codes) [x](a.md#nothing) [y](gone.md) ![f](a.md) [w](https://x.y/z)\n")
    assert links(page) == ["a.md#exit-codes", "a.md#nothing", "gone.md", "a.md"]
    assert anchors(tmp_path / "a.md") == {"top", "exit-codes"}


def _flag_rows(page: Path) -> str:
    return "\n".join(line for line in page.read_text().splitlines() if line.startswith("| `-"))


def test_every_flag_is_in_both_flag_tables():
    from pktstat_bpf.cli.options import build_parser

    flags = {s for a in build_parser()._actions for s in a.option_strings}
    assert {"-i", "--pcap", "--prometheus-top", "-?"} <= flags
    for page in (README, CLI_DOC):
        rows = _flag_rows(page)
        missing = sorted(f for f in flags if not re.search(rf"`(?:[^`]*[ ,])?{re.escape(f)}(?![\w-])", rows))
        assert missing == [], f"{page.name} lacks {missing}"


def _keys(obj, into: set[str]) -> set[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            into.add(k)
            _keys(v, into)
    elif isinstance(obj, list):
        for v in obj:
            _keys(v, into)
    return into


def test_every_json_field_of_a_replay_is_documented(bpf):
    """The fields the real program writes (report and stream) each appear,
    in backquotes, in docs/cli.md."""
    run = [sys.executable, "-m", "pktstat_bpf", "--pcap", str(OFFICE)]
    report = subprocess.run([*run, "-j"], capture_output=True, text=True, timeout=120, check=True)
    stream = subprocess.run(
        [*run, "--jsonl", "-r", "10s"], capture_output=True, text=True, timeout=120, check=True
    )
    fields = _keys(json.loads(report.stdout), set())
    for line in stream.stdout.splitlines():
        _keys(json.loads(line), fields)
    assert {"srcIp", "linkType", "unparsedPackets", "totalBytes", "interval"} <= fields
    documented = set(re.findall(r"`(\w+)`", CLI_DOC.read_text()))
    assert sorted(fields - documented) == []


def test_the_dataframe_table_is_the_dataframe():
    """The column tables of docs/python-api.md name exactly the columns of
    Snapshot.to_pandas(), in order, and the name columns (core/names.py)."""
    pytest.importorskip("pandas", reason="pandas is not installed (pip install '.[test]')")
    import numpy as np
    import pktstat_bpf

    empty = np.zeros(0, pktstat_bpf.RECORD_DTYPE)
    snap = pktstat_bpf.Snapshot(
        empty, pktstat_bpf.Totals(), duration=1.0, started_at=0.0, taken_at=1.0, mode="tc"
    )
    text = (ROOT / "docs" / "python-api.md").read_text()
    section = text.split("\n## DataFrames\n", 1)[1].split("\n## ", 1)[0]
    tables = [t for t in section.split("\n\n") if t.lstrip().startswith("| column |")]
    documented = [
        [
            c
            for line in t.splitlines()
            if line.startswith("| `")
            for c in re.findall(r"`(\w+)`", line.split("|")[1])
        ]
        for t in tables
    ]
    from pktstat_bpf.core import names

    # the columns of every snapshot, then those of the modes that read names
    assert documented == [list(snap.to_pandas().columns), list(names.COLUMNS)]
