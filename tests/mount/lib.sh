# lib.sh: shared set-up for the mount tests (sourced). Each test gets a private temp dir, every
# mount it makes is unmounted on exit (even on failure), and a daemon that outlives its mount
# is killed. Environment (set by meson): BLENDFS, FSXRO, TESTS (the tests/ directory).
set -u
: "${BLENDFS:?BLENDFS must point at the blendfs binary}"
: "${TESTS:?TESTS must point at the tests directory}"
PY=/usr/bin/python3
TOOLS=$TESTS/tools
CONF=$TESTS/conformance
TMP=$(mktemp -d /tmp/blendfs-test.XXXXXX)
MOUNTS=()

cleanup() {
	local m
	for m in "${MOUNTS[@]}"; do
		if mountpoint -q "$m" 2>/dev/null || grep -q " $m fuse" /proc/mounts; then
			fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		fi
	done
	rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok    $*"; }

[ -c /dev/fuse ] || fail "/dev/fuse is missing: mount tests need it (modprobe fuse)"
command -v fusermount3 >/dev/null || fail "fusermount3 is missing (apt-get install fuse3)"

is_mounted() { grep -q " $1 fuse.blendfs " /proc/mounts; }

# bf_mount RECIPE MNT [options...]: mount and register for cleanup; fails the test on error
bf_mount() {
	local recipe=$1 mnt=$2
	shift 2
	mkdir -p "$mnt"
	MOUNTS+=("$mnt")
	timeout 60 "$BLENDFS" mount --log-level warn "$@" "$recipe" "$mnt" || fail "mount of $recipe failed"
	is_mounted "$mnt" || fail "$mnt is not mounted after blendfs mount returned"
}

bf_umount() {
	timeout 60 "$BLENDFS" umount "$1" || fail "umount $1 failed"
	local i
	for i in $(seq 50); do is_mounted "$1" || return 0; sleep 0.1; done
	fail "$1 still mounted after umount"
}

# same_files A B: every file of the model in A is byte-identical in B and vice versa
same_files() {
	local a=$1 b=$2 f
	local la lb
	la=$(cd "$a" && ls -1 | sort)
	lb=$(cd "$b" && ls -1 | sort)
	[ "$la" = "$lb" ] || fail "file lists differ: [$la] vs [$lb]"
	for f in $la; do cmp -s "$a/$f" "$b/$f" || fail "$f differs between $a and $b"; done
}
