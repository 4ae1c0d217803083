"""Execute a notebook top to bottom with *this* Python as its kernel, and
optionally save figures from it.

    python notebooks/run.py notebooks/traffic_analysis.ipynb \\
        [--figure readme-figure=docs/traffic_bitrate.png] [--output executed.ipynb]

The kernel is the interpreter running this script (the project's venv under
``make``), declared in a kernelspec written to a temporary directory: no
kernelspec installed for the user or the system is looked at or needed, and
IPython's own state goes to a temporary directory too. ``--figure TAG=PATH``
writes the first PNG output of the cell tagged TAG. tests/test_notebook.py
and ``make docs`` use this module.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

KERNEL = "pktstat-bpf-venv"


def write_kernelspec(kernels_dir: Path, python: str = sys.executable) -> Path:
    """A kernelspec named KERNEL that starts ipykernel in `python`."""
    spec = kernels_dir / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"Python ({python})",
                "language": "python",
            }
        )
    )
    return spec


def execute(path: Path, timeout: int = 600, nb: Any = None) -> Any:
    """The notebook at `path` (or `nb`, as if it were there), executed in
    the notebook's directory; raises nbclient's CellExecutionError at the
    first cell that fails."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    if nb is None:
        nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="pktstat-nb-") as tmp:
        kernels = Path(tmp) / "kernels"
        write_kernelspec(kernels)
        ksm = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
        # Unix sockets in our directory rather than TCP ports on the loopback
        km = KernelManager(
            kernel_name=KERNEL,
            kernel_spec_manager=ksm,
            transport="ipc",
            ip=str(Path(tmp) / "kernel"),
            connection_file=str(Path(tmp) / "connection.json"),
        )
        client = NotebookClient(
            nb, km=km, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(path.parent)}}
        )
        env = {**os.environ, "IPYTHONDIR": str(Path(tmp) / "ipython"), "MPLCONFIGDIR": str(Path(tmp) / "mpl")}
        client.execute(env=env)
    return nb


def outputs(nb: Any, output_type: str | None = None) -> list[tuple[Any, Any]]:
    """(cell, output) of every code cell's outputs, of one type if given."""
    return [
        (cell, out)
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if output_type is None or out.output_type == output_type
    ]


def figures(nb: Any) -> list[tuple[Any, bytes]]:
    """(cell, PNG bytes) of every image the notebook displayed."""
    return [
        (cell, base64.b64decode(out.data["image/png"]))
        for cell, out in outputs(nb)
        if out.output_type in ("display_data", "execute_result") and "image/png" in out.get("data", {})
    ]


def tagged_figure(nb: Any, tag: str) -> bytes:
    for cell, png in figures(nb):
        if tag in cell.metadata.get("tags", []):
            return png
    raise LookupError(f"no cell tagged {tag!r} displayed a PNG")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("--figure", action="append", default=[], metavar="TAG=PATH",
                   help="write the first PNG of the cell tagged TAG to PATH")  # fmt: skip
    p.add_argument("--output", type=Path, help="write the executed notebook here")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = p.parse_args(argv)
    nb = execute(args.notebook.resolve(), args.timeout)
    for spec in args.figure:
        tag, _, dest = spec.partition("=")
        if not dest:
            p.error(f"--figure {spec!r}: expected TAG=PATH")
        Path(dest).write_bytes(tagged_figure(nb, tag))
        print(f"{dest}: the figure of the cell tagged {tag!r}")
    if args.output:
        import nbformat

        nbformat.write(nb, args.output)
    print(f"{args.notebook}: {len(nb.cells)} cells ran, {len(figures(nb))} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
