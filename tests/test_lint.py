"""The habits that keep the code as it is: lint and format checks, the
package's import layers, and the size limits of a file (issue: one-way
layers). Each runs the real tool the project configures in pyproject.toml /
.clang-format; none needs root."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "pktstat_bpf"
PY_TREES = ["python", "tests", "bench"]
MAX_PY_LINES = 450
MAX_SRC_LINES = 600


def _tool(name: str) -> str:
    """A tool of the venv (next to this interpreter), else from PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: make setup installs it (pyproject.toml [test] / the Makefile)")
    return path


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_check():
    r = _run(_tool("ruff"), "check", "--no-cache", *PY_TREES)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format():
    r = _run(_tool("ruff"), "format", "--check", "--no-cache", *PY_TREES)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_fmt_skip_markers():
    """The formatter's output is the style: no line opts out of it."""
    markers = tuple("fmt: " + word for word in ("skip", "off"))  # (spelled so this file has none)
    marked = [
        f"{p.relative_to(ROOT)}:{i}"
        for tree in PY_TREES
        for p in sorted((ROOT / tree).rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if any(m in line for m in markers)
    ]
    assert marked == []


def _c_sources() -> list[Path]:
    return sorted(p for ext in ("*.c", "*.h", "*.cpp", "*.hpp") for p in (ROOT / "src").rglob(ext))


def test_clang_format():
    sources = _c_sources()
    assert len(sources) > 20
    r = _run(_tool("clang-format"), "--dry-run", "-Werror", *map(str, sources))
    assert r.returncode == 0, r.stderr[-5000:]


def test_import_layers():
    """pyproject.toml's [tool.importlinter] contracts: imports point down
    the layers (cli -> output/exporter -> views -> core), and no cycles."""
    r = _run(_tool("lint-imports"), "--no-cache", str(ROOT / "pyproject.toml"), cwd=ROOT / "python")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 3 kept, 0 broken." in r.stdout and "ignored import" not in r.stdout


def _imports(path: Path) -> set[str]:
    """Absolute module names `path` imports (relative imports resolved)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out |= {f"{mod}.{a.name}" for a in node.names} | {mod}
    return out


def test_only_the_engine_door_imports_the_engine():
    """core/engine.py is the one module that imports the compiled _core (the
    import graph lint-imports reads cannot see an extension module)."""
    importers = sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "pktstat_bpf._core" in _imports(p)
    )
    assert importers == ["core/engine.py"]


def test_product_imports_no_argparse_below_the_cli():
    below = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "cli" not in p.relative_to(PACKAGE).parts and "argparse" in _imports(p)
    ]
    assert below == []


def test_file_sizes():
    big_py = [
        f"{p.relative_to(ROOT)}: {n}"
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_PY_LINES
    ]
    big_src = [
        f"{p.relative_to(ROOT)}: {n}"
        for p in _c_sources()
        if (n := len(p.read_text().splitlines())) > MAX_SRC_LINES
    ]
    assert (big_py, big_src) == ([], [])
