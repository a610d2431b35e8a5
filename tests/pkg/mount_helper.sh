#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# mount_helper.sh: packaging/mount.fuse.blendfs under mount(8), as root:
#   1. mount -t fuse.blendfs RECIPE MNT -o cache_size=8M,threads=4,noauto,nofail: the options
#      reach blendfs (the status file shows the 8M budget), mount(8)-only options are dropped,
#      the files are byte-identical to `blendfs merge`, /proc/mounts names the recipe; umount MNT;
#   2. an fstab line through `mount --fstab FILE MNT`, then `mount -a --fstab FILE` knows it is
#      mounted (no second mount on top); umount;
#   3. unknown options, options without their value and bad values are refused with a clear
#      message and mount nothing; an invalid recipe gives blendfs's exit status 1; -f (fake) and
#      -s (sloppy) behave as mount(8) documents.
# mount(8) only looks for helpers in /sbin: the helper is installed there for the test and removed
# on exit. An existing, different /sbin/mount.fuse.blendfs (an installed package) is not touched:
# the test then runs in a private mount namespace with this tree's helper bind-mounted over it.
SBIN=/sbin/mount.fuse.blendfs
HELPER=$(cd "$(dirname "$0")/../../packaging" && pwd)/mount.fuse.blendfs
if [ "$(id -u)" = 0 ] && [ -e "$SBIN" ] && ! cmp -s "$SBIN" "$HELPER" && [ -z "${BF_PKG_NS:-}" ]; then
	exec unshare --mount --propagation private env BF_PKG_NS=1 "$0" "$@"
fi
# shellcheck source=../mount/lib.sh
. "$(dirname "$0")/../mount/lib.sh"
[ "$(id -u)" = 0 ] || fail "needs root: mount(8) runs /sbin helpers for root only"
[ -x "$HELPER" ] || fail "$HELPER is missing or not executable"

installed=0
if [ -n "${BF_PKG_NS:-}" ]; then
	mount --bind "$HELPER" "$SBIN" || fail "cannot bind-mount the helper over $SBIN"
elif [ ! -e "$SBIN" ]; then
	install -m 0755 "$HELPER" "$SBIN" || fail "cannot install $SBIN"
	installed=1
elif ! dpkg -S "$SBIN" >/dev/null 2>&1 && ! dpkg -S "$(readlink -f "$SBIN")" >/dev/null 2>&1; then
	installed=1 # the same helper, owned by no package: left by an interrupted run, remove it too
fi
helper_cleanup() {
	cleanup
	if [ "$installed" = 1 ] && cmp -s "$SBIN" "$HELPER"; then rm -f "$SBIN"; fi
}
trap helper_cleanup EXIT

cd "$CONF" || fail "no conformance dir"
RECIPE=$(realpath cases/linear.yaml) # as mount(8) canonicalizes it
MNT=$TMP/mnt
mkdir -p "$MNT"
MOUNTS+=("$MNT")
"$BLENDFS" merge --no-sync --log-level warn cases/linear.yaml "$TMP/merged" >/dev/null || fail "merge failed"

budget() { sed -n 's/^cache_budget_bytes: //p' "$MNT/.blendfs/status"; }
mounts_on() { awk -v m="$MNT" '$2 == m' /proc/mounts | wc -l; }
wait_unmounted() {
	local _
	for _ in $(seq 50); do is_mounted "$MNT" || return 0; sleep 0.1; done
	fail "$MNT still mounted after $*"
}

# ---- 1. mount -t fuse.blendfs
out=$(timeout 60 mount -t fuse.blendfs cases/linear.yaml "$MNT" -o cache_size=8M,threads=4,noauto,nofail 2>&1) ||
	fail "mount -t fuse.blendfs failed: $out"
[ -z "$out" ] || fail "mount(8) is not quiet on success: $out"
is_mounted "$MNT" || fail "$MNT is not mounted after mount -t fuse.blendfs"
[ "$(budget)" = 8388608 ] || fail "cache_size=8M did not reach blendfs (cache_budget_bytes $(budget))"
awk -v m="$MNT" -v r="$RECIPE" '$2 == m && $1 == r && $3 == "fuse.blendfs" { f = 1 } END { exit !f }' /proc/mounts ||
	fail "/proc/mounts does not show $RECIPE as the source: $(grep " $MNT " /proc/mounts)"
same_files "$TMP/merged" "$MNT"
timeout 60 umount "$MNT" || fail "umount $MNT failed"
wait_unmounted "umount"
ok "mount -t fuse.blendfs -o cache_size=8M,threads=4,noauto,nofail: same bytes as blendfs merge; umount"

# ---- 2. an fstab line
FSTAB=$TMP/fstab
printf '# test fstab\n%s  %s  fuse.blendfs  cache_size=16M,nofail,noexec,x-systemd.automount,_netdev  0 0\n' \
	"$RECIPE" "$MNT" >"$FSTAB"
out=$(timeout 60 mount --fstab "$FSTAB" "$MNT" 2>&1) || fail "mount --fstab failed: $out"
is_mounted "$MNT" || fail "$MNT is not mounted after mount --fstab"
[ "$(budget)" = 16777216 ] || fail "fstab's cache_size=16M did not reach blendfs (cache_budget_bytes $(budget))"
cmp -s "$TMP/merged/model.safetensors" "$MNT/model.safetensors" || fail "model.safetensors differs (fstab mount)"
timeout 60 mount -a --fstab "$FSTAB" || fail "mount -a --fstab failed with the recipe already mounted"
[ "$(mounts_on)" = 1 ] || fail "mount -a mounted the recipe a second time ($(mounts_on) mounts on $MNT)"
timeout 60 umount "$MNT" || fail "umount $MNT failed"
wait_unmounted "umount"
ok "fstab line: mount --fstab FILE MNT; mount -a sees it mounted; umount"

# ---- 3. refusals
# expect_refused STATUS PATTERN ARGS...: mount(8) fails with STATUS, stderr matches PATTERN, nothing mounted
expect_refused() {
	local want=$1 pat=$2 rc
	shift 2
	out=$(timeout 60 mount "$@" 2>&1)
	rc=$?
	[ "$rc" = "$want" ] || fail "mount $* exited $rc, expected $want: $out"
	grep -qF -e "$pat" <<<"$out" || fail "mount $*: message does not say '$pat': $out"
	! is_mounted "$MNT" || fail "mount $* mounted something"
	echo "refused as expected: $out"
}
expect_refused 2 "mount.fuse.blendfs: unknown option 'cache_sise=8M'" \
	-t fuse.blendfs "$RECIPE" "$MNT" -o cache_sise=8M,nofail
expect_refused 2 "unknown option 'bogus'" -t fuse.blendfs "$RECIPE" "$MNT" -o allow_other,bogus
expect_refused 2 "option 'threads' needs a value" -t fuse.blendfs "$RECIPE" "$MNT" -o threads
expect_refused 2 "--threads: 'lots' is not a number" -t fuse.blendfs "$RECIPE" "$MNT" -o threads=lots
expect_refused 2 "--log-level: 'loud' is not one of" -t fuse.blendfs "$RECIPE" "$MNT" -o log_level=loud
printf 'models:\n  - model: no/such-model-here\nmerge_method: linear\n' >"$TMP/bad.yaml"
expect_refused 1 "no/such-model-here" -t fuse.blendfs "$TMP/bad.yaml" "$MNT" -o cache_size=8M
ok "unknown options, missing and bad values, invalid recipes: refused with a clear message"

# -f: mount(8)'s fake mode checks the options and mounts nothing
out=$(timeout 60 mount -f -v -t fuse.blendfs "$RECIPE" "$MNT" -o cache_size=8M,nofail 2>&1) ||
	fail "mount -f failed: $out"
! is_mounted "$MNT" || fail "mount -f mounted something"
grep -qF -e "mount --cache-size 8M -o fsname=$RECIPE -- $RECIPE $MNT" <<<"$out" ||
	fail "mount -f -v does not show the blendfs command: $out"
# -s: sloppy, unknown options are only warned about
out=$(timeout 60 mount -s -t fuse.blendfs "$RECIPE" "$MNT" -o bogus=1,cache_size=8M 2>&1) ||
	fail "mount -s with an unknown option failed: $out"
is_mounted "$MNT" || fail "mount -s did not mount"
grep -q "ignoring unknown option 'bogus=1'" <<<"$out" || fail "mount -s did not warn: $out"
timeout 60 umount "$MNT" || fail "umount $MNT failed"
wait_unmounted "umount"
ok "mount -f checks and mounts nothing; mount -s ignores unknown options with a warning"
