"""Exceptions of pktstat_bpf, each with the CLI exit code it maps to.

Exit codes (documented in the README and ``--help``):

====  =====================================================
0     success
1     runtime error (:class:`PktstatError`)
2     usage error: a bad flag or value (:class:`UsageError`)
69    a kernel feature is missing (:class:`FeatureMissingError`)
77    insufficient privilege (:class:`PrivilegeError`)
130   interrupted (SIGINT or SIGTERM) before a report could be made
====  =====================================================
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_FEATURE = 69
EXIT_PRIVILEGE = 77
EXIT_INTERRUPTED = 130


class PktstatError(Exception):
    """A failure with a one-line, user-facing message."""

    exit_code = EXIT_RUNTIME


class UsageError(PktstatError, ValueError):
    """A bad argument: unknown interface, invalid duration, bad size ..."""

    exit_code = EXIT_USAGE


class FeatureMissingError(PktstatError):
    """The running kernel lacks a feature this mode needs."""

    exit_code = EXIT_FEATURE


class PrivilegeError(PktstatError, PermissionError):
    """Loading or attaching BPF programs was refused."""

    exit_code = EXIT_PRIVILEGE


PRIVILEGE_HINT = "run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"


def translate_os_error(e: OSError, what: str) -> PktstatError:
    """Map an engine OSError to the exception (and exit code) a user sees."""
    from .engine import _core  # (the engine's FeatureMissing: imported here, when an error is mapped)

    if isinstance(e, _core.FeatureMissing):  # the engine's probe says what is missing
        return FeatureMissingError(str(e))
    if isinstance(e, _core.TableTooLarge):  # --max-entries beyond the kernel memory there is
        return UsageError(str(e))
    if e.errno == errno.ENOSYS:
        return FeatureMissingError(f"{what}: this kernel has no bpf() system call (CONFIG_BPF_SYSCALL)")
    if e.errno in (errno.EPERM, errno.EACCES):
        return PrivilegeError(f"{what}: permission denied; {PRIVILEGE_HINT}")
    if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, 524):  # 524 = ENOTSUPP
        return FeatureMissingError(
            f"{what}: the kernel refused it ({e.strerror or e}); see README 'Requirements'"
        )
    if e.errno == errno.ENOMEM:
        return PktstatError(f"{what}: out of memory (lower --max-entries?)")
    return PktstatError(f"{what}: {e.strerror or e}")
