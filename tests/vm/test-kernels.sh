#!/bin/bash
# test-kernels.sh - `make test-kernels`: the BPF test subset (pytest -m kernel)
# inside Debian's own 6.1 and 6.12 kernels, booted under qemu by vmtest.sh
# with this machine's file system shared read-only and the checkout
# read-write (the project's .venv is used as built on the host).
#
# Each kernel states what it must have (PKTSTAT_BPF_EXPECT): a test of a
# feature in that list fails where the feature is missing; a feature the
# kernel lacks is tested for its clean refusal instead. Skips are failures
# (PKTSTAT_BPF_REQUIRE_ALL=1), as in CI on the host.
#
#   6.1   legacy clsact (no TCX), no sock_send_length tracepoints (cgroup
#         mode without claims, process mode on fentry and kprobes)
#   6.12  TCX, the socket tracepoints, process mode on all three backends
#   both  the wireguard module (vmtest.sh loads it), for the live WireGuard
#         label (tests/test_l7_wireguard.py), and sch_netem, for round trips
#         over a delayed path (tests/test_health_live.py)
#
# The guests run side by side (one emulated CPU each); each one's pytest
# output goes to build/test-kernels-<line>.log.
#
# env: KERNELS="6.1 6.12" (a subset), PYTEST_ARGS (extra pytest arguments),
#      VM_TIMEOUT (seconds per kernel, default 3000), and vmtest.sh's knobs.
# Needs qemu-system-x86, busybox-static and kmod, which `make setup`
# installs; the kernel packages are fetched with apt-get download and
# unpacked under VMTEST_CACHE (default /tmp/vmtest/cache).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
KERNELS=${KERNELS:-"6.1 6.12"}
VM_TIMEOUT=${VM_TIMEOUT:-3000}
PY=$root/.venv/bin/python
[ -x "$PY" ] || { echo "test-kernels: $PY is missing: run make setup first" >&2; exit 2; }
mkdir -p "$root/build"

# The newest Debian 12 package of a kernel line (the ABI number moves on).
package_for() {
	local pattern
	case $1 in
	6.1) pattern='^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' ;;
	6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' ;;
	*) echo "test-kernels: unknown kernel line $1" >&2; return 1 ;;
	esac
	apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -1
}

expect_for() {
	case $1 in
	6.1) echo "process-fentry,process-kprobe,wireguard,netem" ;;
	6.12) echo "tcx,sock-tracepoints,process-tracepoint,process-fentry,process-kprobe,wireguard,netem" ;;
	esac
}

run_kernel() { # line package -> exit status of pytest in the guest
	local k=$1 pkg=$2 log=$root/build/test-kernels-$1.log
	# one line: vmtest.sh hands the command to the guest's dash through printf %q
	local cmd="PKTSTAT_BPF_REQUIRE_ALL=1 PKTSTAT_BPF_EXPECT=$(expect_for "$k")"
	cmd+=" $PY -m pytest -m kernel -ra -v -p no:cacheprovider ${PYTEST_ARGS:-} >$log 2>&1"
	KPKG=$pkg TIMEOUT=$VM_TIMEOUT WORKDIR=$root "$root/tests/vm/vmtest.sh" /bin/sh -c "$cmd" \
		>"$root/build/test-kernels-$k.console" 2>&1
}

# Fetch and unpack the kernels one at a time (vmtest.sh caches them).
declare -A pkgs pids
for k in $KERNELS; do
	pkgs[$k]=$(package_for "$k")
	if [ -z "${pkgs[$k]}" ]; then
		echo "test-kernels: no Debian package for Linux $k (run apt-get update)" >&2
		exit 1
	fi
	KPKG=${pkgs[$k]} WORKDIR=$root TIMEOUT=120 "$root/tests/vm/vmtest.sh" true >/dev/null 2>&1 ||
		{ echo "test-kernels: cannot boot ${pkgs[$k]} under qemu" >&2; exit 1; }
done

start=$(date +%s)
for k in $KERNELS; do
	echo "== Linux $k (${pkgs[$k]}): pytest -m kernel in a qemu guest, log in build/test-kernels-$k.log"
	run_kernel "$k" "${pkgs[$k]}" &
	pids[$k]=$!
done
status=0
for k in $KERNELS; do
	rc=0
	wait "${pids[$k]}" || rc=$?
	echo "== Linux $k: exit $rc after $(( $(date +%s) - start ))s"
	grep -E '^(FAILED|ERROR|SKIPPED)|^=+ .* in [0-9.]+s' "$root/build/test-kernels-$k.log" || tail -5 "$root/build/test-kernels-$k.console"
	[ "$rc" = 0 ] || status=1
done
exit $status
