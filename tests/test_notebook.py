"""notebooks/traffic_analysis.ipynb runs top to bottom in a kernel of this
venv's Python (nbclient + ipykernel, kernelspec of our own) and draws its
figures; its data, tests/data/office.pcap, is what its script writes; the
committed notebook carries no outputs and the README's figure exists."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "traffic_analysis.ipynb"
FIGURE = ROOT / "docs" / "traffic_bitrate.png"

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load(ROOT / "notebooks" / "run.py", "notebook_run")


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def _about(size: tuple[int, int], want: tuple[int, int]) -> bool:
    """Within 5 % (the inline backend trims the figure's margins)."""
    return all(0.95 * w <= s <= w for s, w in zip(size, want))


def test_committed_notebook_is_valid_and_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 10
    assert all(c.outputs == [] and c.execution_count is None for c in code), (
        "strip the outputs before committing"
    )
    assert [c.id for c in code if "readme-figure" in c.metadata.get("tags", [])] == ["bitrate-plot"]


def test_notebook_runs_top_to_bottom_in_the_venv_kernel(bpf):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    probe = nbformat.v4.new_code_cell(
        "import sys, pktstat_bpf\nprint(sys.executable)\nprint(pktstat_bpf.__file__)"
    )
    nb.cells.append(probe)
    nb = run.execute(NOTEBOOK, nb=nb)  # raises CellExecutionError at the first failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # every cell ran, in order
    assert [out for _, out in run.outputs(nb, "error")] == []
    assert not [
        out for _, out in run.outputs(nb, "stream") if out.name == "stderr" and "Traceback" in out.text
    ]
    # the kernel was this interpreter, with this package
    import pktstat_bpf

    assert nb.cells[-1].outputs[0].text.splitlines() == [sys.executable, pktstat_bpf.__file__]
    # figures: the bitrate plot and the per-protocol breakdown, real PNGs of the size the code asks for
    figs = {cell.id: png for cell, png in run.figures(nb)}
    assert set(figs) == {"bitrate-plot", "proto-plot"}
    assert _about(_png_size(figs["bitrate-plot"]), (1000, 420))  # figsize (10, 4.2) at 100 dpi
    assert _about(_png_size(figs["proto-plot"]), (1100, 320))
    assert all(len(png) > 20_000 for png in figs.values())
    assert run.tagged_figure(nb, "readme-figure") == figs["bitrate-plot"]
    # and what it printed is what the capture holds
    by_id = {c.id: c for c in code}
    look = by_id["look"].outputs[0].text
    # 23 IP flows and 2 ARP flows (its 6 ARP frames, 252 bytes, were unparsed before issue 17)
    assert "58.02s: 25 flows, 6699 packets, 6672777 bytes; unparsed 2 packets/120 bytes" in look
    assert "every frame accounted for: True" in look
    assert by_id["parquet"].outputs[-1].data["text/plain"] == "6699"
    # TCP health: the SSH session's segment sent again each way (tshark's two retransmissions);
    # no timestamp option in the capture, so no round trip
    assert (
        by_id["health"].outputs[0].text == "2 segments sent again, in 2 of 4 TCP flows; 0 round trips timed\n"
    )
    health = by_id["health"].outputs[-1].data["text/plain"]
    assert "40022" in health and "NaT" in health
    # DuckDB over the flow-record files: the 25 flows, 6672777 bytes less the 120 unparsed
    assert by_id["flows-duckdb"].outputs[0].text == "25 records, 6672657 bytes\n"
    assert "192.168.1.23" in by_id["flows-duckdb"].outputs[-1].data["text/plain"]


def test_the_readme_figure_is_committed():
    """`make docs` regenerates it from the notebook's tagged cell."""
    assert _about(_png_size(FIGURE.read_bytes()), (1000, 420))
    assert "docs/traffic_bitrate.png" in (ROOT / "README.md").read_text()
    assert "notebooks/traffic_analysis.ipynb" in (ROOT / "README.md").read_text()


def test_office_capture_is_what_its_script_writes(tmp_path):
    pytest.importorskip("scapy")
    make = _load(ROOT / "tests" / "data" / "make_office_pcap.py", "make_office_pcap")
    assert make.main([str(tmp_path / "office.pcap")]) == 0
    assert (tmp_path / "office.pcap").read_bytes() == (ROOT / "tests" / "data" / "office.pcap").read_bytes()


def test_figure_option_writes_the_tagged_png(tmp_path, bpf):
    out = tmp_path / "fig.png"
    assert run.main([str(NOTEBOOK), "--figure", f"readme-figure={out}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _about(_png_size(out.read_bytes()), (1000, 420))
    with pytest.raises(SystemExit):
        run.main([str(NOTEBOOK), "--figure", "no-path"])
