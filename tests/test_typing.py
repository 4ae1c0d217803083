"""Type hints: _core.pyi against the built engine module (mypy's stubtest),
the package under mypy (configured in pyproject.toml), and every name the
package takes from _core present in the stub."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "pktstat_bpf"
STUB = PACKAGE / "_core.pyi"

pytest.importorskip("mypy")


def _run(*args: str, mypypath: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MYPYPATH": str(mypypath)}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


def _stubtest(stub_dir: Path, tmp: Path) -> subprocess.CompletedProcess:
    """stubtest of the stub found in `stub_dir` against the installed module. mypy
    also reads the package's .py files there: only the stub's own errors count."""
    config = tmp / "stubtest.ini"
    config.write_text(
        "[mypy]\nignore_missing_imports = True\n"
        "[mypy-pktstat_bpf.*]\nignore_errors = True\n[mypy-pktstat_bpf._core]\nignore_errors = False\n"
    )
    # run outside the source tree so that `import pktstat_bpf` is the installed package with its _core
    allow = ROOT / "tests" / "stubtest_allowlist.txt"
    return _run(
        "mypy.stubtest",
        "pktstat_bpf._core",
        "--concise",
        "--mypy-config-file",
        str(config),
        "--allowlist",
        str(allow),
        mypypath=stub_dir,
        cwd=tmp,
    )


def test_stub_matches_the_engine_module(tmp_path):
    r = _stubtest(PACKAGE.parent, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_stubtest_notices_a_binding_missing_from_the_stub(tmp_path):
    """The check above can fail: a stub without xdp_query."""
    pkg = tmp_path / "stubs" / "pktstat_bpf"
    shutil.copytree(PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    text = STUB.read_text()
    assert "def xdp_query(ifindex: _Int) -> XdpState: ..." in text
    (pkg / "_core.pyi").write_text(text.replace("def xdp_query(ifindex: _Int) -> XdpState: ...\n", ""))
    r = _stubtest(tmp_path / "stubs", tmp_path)
    assert (r.returncode, r.stdout) == (1, "pktstat_bpf._core.xdp_query is not present in stub\n")


# stubtest cannot see the parameters of pybind11 functions (they have no
# __text_signature__); pybind11 writes them on the first line of each
# docstring, so parameter names and defaults are compared here.


def _split_params(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + ([cur.strip()] if cur.strip() else [])


def _runtime_params(doc: str, name: str) -> list[list[tuple[str, str | None]]]:
    """Each signature pybind11 documents for `name`: [(parameter, default or None)], without self."""
    sigs = []
    for line in doc.splitlines():
        line = line.strip()
        if line[:1].isdigit() and ". " in line:  # an overload: "1. f(...) -> ..."
            line = line.split(". ", 1)[1]
        if not line.startswith(f"{name}(") or ") -> " not in line:  # also "f(*args, **kwargs)" of overloads
            continue
        inner = line[len(name) + 1 : line.rindex(") -> ")]
        params = []
        for p in _split_params(inner):
            pname, _, rest = p.partition(":")
            default = rest.split(" = ", 1)[1] if " = " in rest else None
            if pname.strip() not in ("self", "*args", "**kwargs"):
                params.append((pname.strip(), default))
        sigs.append(params)
    return sigs


def _stub_params(fn: ast.FunctionDef) -> list[tuple[str, str | None]]:
    args = fn.args.posonlyargs + fn.args.args
    defaults = [None] * (len(args) - len(fn.args.defaults)) + [ast.unparse(d) for d in fn.args.defaults]
    return [(a.arg, d) for a, d in zip(args, defaults) if a.arg != "self"]


def _stub_functions() -> dict[str, ast.FunctionDef]:
    body = ast.parse(STUB.read_text()).body
    classes = {node.name: node for node in body if isinstance(node, ast.ClassDef)}

    def methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
        """`cls`'s methods, with those of its stub bases (the shared map readers, the live collector)."""
        out: dict[str, ast.FunctionDef] = {}
        for b in cls.bases:
            if isinstance(b, ast.Name) and b.id in classes:
                out.update(methods(classes[b.id]))
        out.update({f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)})
        return out

    out = {node.name: node for node in body if isinstance(node, ast.FunctionDef)}
    for cls in classes.values():
        if not cls.name.startswith("_"):
            out.update({f"{cls.name}.{name}": f for name, f in methods(cls).items()})
    return out


def _same_default(runtime: str | None, stub: str | None) -> bool:
    if runtime is None or stub is None:
        return runtime is stub
    try:
        return ast.literal_eval(runtime) == ast.literal_eval(stub)
    except ValueError:
        return runtime == stub


def test_stub_parameters_match_the_bindings():
    from pktstat_bpf import _core

    stub = _stub_functions()
    checked = 0
    for qual, fn in stub.items():
        owner, _, attr = qual.rpartition(".")
        obj = getattr(getattr(_core, owner), attr) if owner else getattr(_core, attr)
        if isinstance(obj, property):
            continue
        sigs = _runtime_params(obj.__doc__ or "", attr)
        assert sigs, f"{qual}: no signature in its docstring"
        want = _stub_params(fn)
        assert any(
            [n for n, _ in sig] == [n for n, _ in want]
            and all(_same_default(a[1], b[1]) for a, b in zip(sig, want))
            for sig in sigs
        ), f"{qual}: stub {want}, bindings {sigs}"
        checked += 1
    assert checked >= 30


def test_the_parameter_check_can_fail():
    sig = _runtime_params("cgroup_id_of(dir: str) -> int\n\nThe cgroup id.", "cgroup_id_of")
    assert sig == [[("dir", None)]]
    fn = ast.parse("def cgroup_id_of(path: str) -> int: ...").body[0]
    assert [n for n, _ in _stub_params(fn)] != [n for n, _ in sig[0]]
    sig = _runtime_params(
        "advance(self: R, until_ts_ns: typing.SupportsInt | typing.SupportsIndex, progress: object = None, "
        "every: typing.SupportsInt | typing.SupportsIndex = 65536) -> bool",
        "advance",
    )
    assert sig == [[("until_ts_ns", None), ("progress", "None"), ("every", "65536")]]
    assert not _same_default("65536", "1024") and _same_default("[]", "[]") and not _same_default(None, "1")


def test_package_type_checks(tmp_path):
    r = _run("mypy", "--cache-dir", str(tmp_path / "mypy"), mypypath=ROOT / "python", cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("Success: no issues found"), r.stdout + r.stderr


def _stub_names() -> set[str]:
    names = set()
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_every_name_the_package_takes_from_core_is_in_the_stub():
    """Also in the modules mypy does not check yet (pyproject's ignore_errors list)."""
    used: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "_core"
            ):
                used.setdefault(node.attr, set()).add(path.name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("_core"):
                for alias in node.names:
                    used.setdefault(alias.name, set()).add(path.name)
    assert {
        "TcCollector",
        "XdpCollector",
        "CgroupCollector",
        "Replayer",
        "record_dtype",
        "CaptureError",
    } <= set(used)
    missing = {name: sorted(files) for name, files in used.items() if name not in _stub_names()}
    assert not missing, f"used from _core but not in _core.pyi: {missing}"
