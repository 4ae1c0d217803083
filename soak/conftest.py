"""The soak test reuses the suite's fixtures (namespaces, skip policy)."""

import importlib.util
import sys
from pathlib import Path

_tests = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(_tests))
_spec = importlib.util.spec_from_file_location("suite_conftest", _tests / "conftest.py")
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)

bpf = _suite.bpf
netns = _suite.netns
netns_v4only = _suite.netns_v4only
pytest_runtest_makereport = _suite.pytest_runtest_makereport
