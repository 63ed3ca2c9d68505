#!/bin/sh
# PID 1 of the real-kernel test VM (scripts/vm-test). The root file system is the host's, shared
# read-only over 9p; this script lives in the repository, which no mount below covers.
# Kernel command-line parameters arrive as environment: OFFLOAD_REPO, OFFLOAD_ARGS (base64 of the
# pytest arguments, one per line; scripts/vm-test defaults them to the vm-marked tests; `--run CMD
# ARGS...` runs that command instead, e.g. a benchmark that needs netdevsim).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# Writable scratch space, without hiding the repository (a CI clone may live under /tmp).
for d in /tmp /run /var/tmp; do
  case "$OFFLOAD_REPO/" in "$d"/*) echo "offload-vm: $d holds the repository: left read-only" ;;
    *) mount -t tmpfs tmpfs "$d" ;; esac
done
mount -t tmpfs tmpfs /mnt
export TMPDIR=/mnt
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t bpf bpffs /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /run/netns
ip link set lo up
echo "offload-vm: kernel $(uname -r), $(nproc) cpus"

cd "$OFFLOAD_REPO" || { echo "offload-vm: no repository at $OFFLOAD_REPO"; echo "OFFLOAD-VM-EXIT=3"; poweroff -f; }
set --
if [ -n "$OFFLOAD_ARGS" ]; then
  # one argument per line, base64 on the kernel command line
  while IFS= read -r a; do set -- "$@" "$a"; done <<ARGS
$(echo "$OFFLOAD_ARGS" | base64 -d)
ARGS
fi
# OFFLOAD_CACHE_DIR: the host root is read-only here; a writable cache lets profiles validate once.
# OFFLOAD_TEST_CLI=fork: the tests run `offload` as a child forked from pytest (tests/lib/cli.py),
# saving an interpreter start and offload's imports (10-20 s under TCG) per call.
# OFFLOAD_TEST_OBJECTS (from the command line): the BPF objects scripts/vm-test compiled on the host.
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 OFFLOAD_IN_VM=1 OFFLOAD_RUN_DIR=/run/offload OFFLOAD_CACHE_DIR=/mnt/offload-cache TERM=dumb
export OFFLOAD_TEST_CLI=fork OFFLOAD_TEST_OBJECTS
if [ "$1" = --run ]; then   # scripts/vm-test --run CMD...: a command (a benchmark), not pytest
  shift
  "$@"
else
  .venv/bin/python -m pytest -p no:cacheprovider "$@"
fi
rc=$?
echo "OFFLOAD-VM-EXIT=$rc"
sync
poweroff -f
