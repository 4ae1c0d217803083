"""The checks of the flow-record flags (--ipfix, --parquet and their
settings), split from :mod:`.options`: Options fields from the parsed flags,
or a UsageError."""

from __future__ import annotations

import argparse

from ..core.errors import UsageError
from ..output.ipfix import DEFAULT_TEMPLATE_REFRESH, parse_target
from ..output.parquet import DEFAULT_ROLL


def check_flow_records(ns: argparse.Namespace) -> dict[str, object]:
    """--ipfix and --parquet and their settings, as Options fields (they
    combine with every job: a report, a stream, the exporter, the table,
    a replay)."""
    out: dict[str, object] = {
        "ipfix": None,
        "ipfix_target": "",
        "ipfix_domain": 0,
        "ipfix_template_refresh": DEFAULT_TEMPLATE_REFRESH,
        "parquet_roll": DEFAULT_ROLL,
    }
    if ns.ipfix is None:
        unused = {
            "--ipfix-transport": ns.ipfix_transport,
            "--ipfix-domain": ns.ipfix_domain,
            "--ipfix-template-refresh": ns.ipfix_template_refresh,
        }
        for flag, value in unused.items():
            if value is not None:
                raise UsageError(f"{flag} needs --ipfix")
    else:
        try:
            transport, host, port = parse_target(ns.ipfix, ns.ipfix_transport)
        except ValueError as e:
            raise UsageError(f"--ipfix: invalid collector {ns.ipfix!r}: {e}") from None
        if ns.ipfix_transport is not None and "://" in ns.ipfix and transport != ns.ipfix_transport:
            raise UsageError(f"--ipfix {ns.ipfix} and --ipfix-transport {ns.ipfix_transport} disagree")
        domain = 0 if ns.ipfix_domain is None else ns.ipfix_domain
        if not 0 <= domain <= 0xFFFFFFFF:
            raise UsageError(f"--ipfix-domain must be between 0 and 4294967295, not {domain}")
        refresh = DEFAULT_TEMPLATE_REFRESH if ns.ipfix_template_refresh is None else ns.ipfix_template_refresh
        if refresh <= 0:
            raise UsageError("--ipfix-template-refresh must be positive")
        out.update(
            ipfix=(transport, host, port),
            ipfix_target=ns.ipfix,
            ipfix_domain=domain,
            ipfix_template_refresh=refresh,
        )
    if ns.parquet is None:
        if ns.parquet_roll is not None:
            raise UsageError("--parquet-roll needs --parquet")
    else:
        if ns.parquet == "":
            raise UsageError("--parquet needs a directory")
        roll = DEFAULT_ROLL if ns.parquet_roll is None else ns.parquet_roll
        if roll <= 0:
            raise UsageError("--parquet-roll must be positive")
        out["parquet_roll"] = roll
    return out
