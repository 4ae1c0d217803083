import pytest
from pktstat_bpf.core.durations import format_duration, parse_duration
from pktstat_bpf.core.errors import UsageError


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("10s", 10),
        ("1m30s", 90),
        ("10m", 600),
        ("1h", 3600),
        ("250ms", 0.25),
        ("1.5h", 5400),
        ("0", 0),
        ("2h45m", 9900),
        ("100us", 1e-4),
        ("100µs", 1e-4),
        ("5ns", 5e-9),
        (".5s", 0.5),
        ("+3s", 3),
    ],
)
def test_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "10x", "s", "1m30", "-5s", "1 s", "1s2", "abc", "1e3s"])
def test_reject(text):
    with pytest.raises(UsageError, match="invalid duration|must not be negative"):
        parse_duration(text)


def test_format_roundtrip():
    for s in (0, 1, 90, 600, 3725):
        assert parse_duration(format_duration(s)) == s
