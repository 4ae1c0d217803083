#!/bin/bash
# vmtest.sh - run a command as root inside a Debian kernel booted under qemu,
# with the host's / shared read-only over virtio-9p (virtme-style). The
# project's kernel-matrix harness (tests/vm/test-kernels.sh, make
# test-kernels) boots Debian's 6.1 and 6.12 kernels with it.
#
# usage: vmtest.sh [command [args...]]        (default: /bin/sh -c 'uname -a')
#
# env knobs:
#   KPKG     Debian kernel package (needs CONFIG_9P_FS: use the generic flavour,
#            NOT -cloud)             default linux-image-6.1.0-50-amd64-unsigned
#   WORKDIR  host dir shared read-WRITE, mounted at the same path; cwd of the
#            command                 default $PWD
#   VMTEST_CACHE  where kernel debs are unpacked   default /tmp/vmtest/cache
#   MEM SMP TIMEOUT ACCEL CPU        qemu knobs    default 2G 1 600 tcg max
#   MODULES  modules insmod'ed at boot (deps resolved automatically)
#   OVERLAY=1  make / writable (tmpfs overlay over the 9p root); else only
#            /tmp /run /var/tmp /root are tmpfs       default 1
#   KAPPEND  extra kernel command line
# exit status = exit status of the command in the guest (124 = qemu timeout,
# 125 = guest never reported a status, e.g. kernel panic).
set -euo pipefail

KPKG=${KPKG:-linux-image-6.1.0-50-amd64-unsigned}
CACHE=${VMTEST_CACHE:-/tmp/vmtest/cache}
WORKDIR=$(realpath "${WORKDIR:-$PWD}")
MEM=${MEM:-2G}; SMP=${SMP:-1}; TIMEOUT=${TIMEOUT:-600}
ACCEL=${ACCEL:-tcg,thread=multi}; CPU=${CPU:-max}
MODULES=${MODULES:-"9p 9pnet_virtio virtio_pci overlay veth cls_bpf sch_ingress sch_netem tun wireguard"}
OVERLAY=${OVERLAY:-1}
KAPPEND=${KAPPEND:-}
[ $# -gt 0 ] || set -- /bin/sh -c 'uname -a'

# ---- 1. kernel: download + unpack once -------------------------------------
KROOT=$CACHE/$KPKG
if [ ! -d "$KROOT/boot" ]; then
	mkdir -p "$CACHE" && chmod 755 "$CACHE"
	(cd "$CACHE" && apt-get download "$KPKG" >&2)
	mkdir -p "$KROOT.tmp"
	dpkg-deb -x "$CACHE"/"${KPKG}"_*.deb "$KROOT.tmp"
	kv=$(ls "$KROOT.tmp/lib/modules")
	/sbin/depmod -b "$KROOT.tmp" "$kv"       # .deb ships no modules.dep
	mv "$KROOT.tmp" "$KROOT"
fi
KVER=$(ls "$KROOT/lib/modules")
# Boot the uncompressed ELF vmlinux via PVH: skips the in-guest xz
# decompression, which costs ~2.5 s under TCG. Falls back to the bzImage.
VMLINUZ=$KROOT/vmlinux
if [ ! -s "$VMLINUZ" ]; then
	bz=$KROOT/boot/vmlinuz-$KVER
	# 6.1 generic: xz, 6.1 cloud: lz4, 6.12: zstd
	for dec in "xz -dc:\xfd7zXZ" "lz4 -dc:\x02\x21\x4c\x18" "zstd -dc:\x28\xb5\x2f\xfd"; do
		off=$(LC_ALL=C grep -abo "$(printf "${dec#*:}")" "$bz" | head -1 | cut -d: -f1 || true)
		[ -n "$off" ] || continue
		tail -c +$((off+1)) "$bz" | ${dec%%:*} > "$VMLINUZ.tmp" 2>/dev/null || true
		head -c4 "$VMLINUZ.tmp" | grep -q ELF && break
	done
	if head -c4 "$VMLINUZ.tmp" 2>/dev/null | grep -q ELF; then mv "$VMLINUZ.tmp" "$VMLINUZ"
	else rm -f "$VMLINUZ.tmp"; VMLINUZ=$bz; fi
fi

# ---- 2. base initramfs (busybox + modules + /init), cached ------------------
key=$(echo "$MODULES $OVERLAY" | md5sum | cut -c1-8)
BASE=$KROOT/initramfs-$key.cpio.gz
if [ ! -f "$BASE" ] || [ "$0" -nt "$BASE" ]; then
	ir=$(mktemp -d)
	mkdir -p "$ir"/{bin,proc,sys,dev,newroot,lib/modules/$KVER}
	cp /bin/busybox "$ir/bin/busybox"           # Debian busybox-static
	: > "$ir/modules.order"
	for m in $MODULES; do
		/sbin/modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" |
		awk '$1=="insmod"{print $2}' | while read -r ko; do
			rel=${ko#"$KROOT"/lib/modules/"$KVER"/}; rel=${rel%.xz}
			grep -qxF "$rel" "$ir/modules.order" && continue
			mkdir -p "$ir/lib/modules/$KVER/$(dirname "$rel")"
			case $ko in   # 6.12 debs ship .ko.xz; store them uncompressed
			*.xz) xz -dc "$ko" > "$ir/lib/modules/$KVER/$rel" ;;
			*) cp "$ko" "$ir/lib/modules/$KVER/$rel" ;;
			esac
			echo "$rel" >> "$ir/modules.order"
		done
	done
	cat > "$ir/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
. /vmtest-env                                  # from the per-run cpio
KVER=$(uname -r)
for m in $(cat /modules.order); do
	insmod /lib/modules/$KVER/$m || echo "vmtest: insmod $m failed"
done
R=/newroot
if [ "$OVERLAY" = 1 ]; then
	mkdir -p /lower /rw
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 vmroot /lower
	mount -t tmpfs -o mode=755 rw /rw; mkdir -p /rw/upper /rw/work
	mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay $R
else
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 vmroot $R
fi
# full module tree of the guest kernel (unpacked on the host) for on-demand
# autoload: the kernel's usermode helper runs in the initramfs root (not in
# the chroot), so point kernel.modprobe at busybox modprobe there.
mount --bind $R$KROOT/lib/modules/$KVER /lib/modules/$KVER
echo /bin/modprobe > /proc/sys/kernel/modprobe
if [ "$OVERLAY" != 1 ]; then
	for d in /tmp /run /var/tmp /root; do
		[ -d $R$d ] && mount -t tmpfs -o mode=1777 tmp $R$d
	done
fi
mount -t proc proc $R/proc; mount -t sysfs sysfs $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts; mount -t tmpfs shm $R/dev/shm
mount -t bpf bpf $R/sys/fs/bpf
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
if [ "$OVERLAY" = 1 ]; then
	# guest modules visible to modprobe/kmod for on-demand autoload
	mkdir -p $R/lib/modules/$KVER && mount --bind $R$KROOT/lib/modules/$KVER $R/lib/modules/$KVER
	mount -t tmpfs -o mode=1777 tmp $R/tmp
fi
mkdir -p $R$WORKDIR
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmwork $R$WORKDIR
ip link set lo up; hostname vmtest
CMD=$(cat /vmtest-cmd)
echo "vmtest: guest up after $(cut -d' ' -f1 /proc/uptime)s"
chroot $R /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	/bin/sh -c 'cd "$1" && eval "$2"' sh "$WORKDIR" "$CMD"
rc=$?; echo; echo "VMTEST_RC=$rc"
sync; poweroff -f
EOF
	chmod 755 "$ir/init"
	(cd "$ir" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) > "$BASE.tmp"
	mv "$BASE.tmp" "$BASE"; rm -rf "$ir"
fi

# ---- 3. per-run cpio with the command; concatenated after the base one ------
run=$(mktemp -d); trap 'rm -rf "$run"' EXIT
mkdir "$run/ir"
printf 'WORKDIR=%q\nKROOT=%q\nOVERLAY=%q\n' "$WORKDIR" "$KROOT" "$OVERLAY" > "$run/ir/vmtest-env"
{ printf '%q ' "$@"; echo; } > "$run/ir/vmtest-cmd"
cp "$BASE" "$run/initrd"
(cd "$run/ir" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) >> "$run/initrd"

# ---- 4. boot ----------------------------------------------------------------
set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 \
	-accel "$ACCEL" -cpu "$CPU" -smp "$SMP" -m "$MEM" -M pc \
	-nodefaults -display none -no-reboot -serial stdio \
	-kernel "$VMLINUZ" -initrd "$run/initrd" \
	-append "console=ttyS0 quiet panic=-1 oops=panic $KAPPEND" \
	-virtfs local,path=/,mount_tag=vmroot,security_model=none,readonly=on,multidevs=remap \
	-virtfs local,path="$WORKDIR",mount_tag=vmwork,security_model=none,multidevs=remap \
	</dev/null | tr -d '\r' | tee "$run/log"
qrc=${PIPESTATUS[0]}
set -e
[ "$qrc" = 124 ] && { echo "vmtest: TIMEOUT after ${TIMEOUT}s" >&2; exit 124; }
rc=$(sed -n 's/^VMTEST_RC=\([0-9]*\).*/\1/p' "$run/log" | tail -1)
exit "${rc:-125}"
