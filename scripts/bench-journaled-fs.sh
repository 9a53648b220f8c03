#!/bin/sh
# Issue 16's benchmark rows on a journaled ext4, as mail servers are deployed.
#
# The benchmarks write to os.tmpdir(). On some VMs that is an ext4 without a
# journal, where creating a file costs a scan past every inode deleted in the
# last minute (ext4's recently_deleted(), which only runs without a journal):
# a Maildir delivery, and Postfix's queue file, pay it for every message
# (docs/performance.md). This script makes a journaled ext4 in a file, mounts
# it through a loop device, runs the benchmark with TMPDIR there, and removes
# it again. Root only (mount); nothing outside the image is touched.
#
#   sudo sh scripts/bench-journaled-fs.sh [OUT.json]   (default /tmp/bench-journaled.json; OUT.json.md is the report)
set -eu
out=${1:-/tmp/bench-journaled.json}
img=$(mktemp /var/tmp/tern-bench-fs.XXXXXX)
mnt=$(mktemp -d /tmp/tern-bench-mnt.XXXXXX)
cleanup() { umount "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; rm -f "$img"; }
trap cleanup EXIT INT TERM
truncate -s 3G "$img"
mkfs.ext4 -q -F "$img"
mount -o loop "$img" "$mnt"
chmod 1777 "$mnt"
cd "$(dirname "$0")/.."
TMPDIR="$mnt" node_modules/.bin/node bench/run.ts --issue16 --json "$out"
