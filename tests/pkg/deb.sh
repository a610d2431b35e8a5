#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# deb.sh: scripts/package.sh builds the Debian package from this tree (installing debhelper and
# the build dependencies first if they are missing); `dpkg-deb -c` lists the binary, the mount
# helper, the man pages, bash completion and the examples; `dpkg-deb -I` shows the Depends;
# `dpkg -x` into a scratch root gives a working binary, the man page and the completion in their
# places, and a mount helper that finds the packaged binary beside it and mounts with it.
# shellcheck source=../mount/lib.sh
. "$(dirname "$0")/../mount/lib.sh"
ROOT=$(cd "$TESTS/.." && pwd)
OUT=$TMP/deb

"$ROOT/scripts/package.sh" "$OUT" || fail "scripts/package.sh failed"
arch=$(dpkg --print-architecture)
version=$(dpkg-parsechangelog -l "$ROOT/packaging/debian/changelog" -S Version)
DEB=$OUT/blendfs_${version}_$arch.deb
[ -f "$DEB" ] || fail "no $DEB (found: $(ls "$OUT"))"
# warning-free: the compiler (with Debian's hardening flags) and debhelper; test programs, built
# for the unit suite and not packaged, aside
if grep -E "(^|[^-])[Ww]arning:" "$OUT"/blendfs_"${version}"_build.log | grep -vE "^(\.\./)*tests/"; then
	fail "the package build printed warnings (above)"
fi
ok "scripts/package.sh built $(basename "$DEB")"

# ---- contents
listing=$(dpkg-deb -c "$DEB") || fail "dpkg-deb -c failed"
echo "$listing"
missing=()
for f in ./usr/bin/blendfs ./usr/sbin/mount.fuse.blendfs ./usr/share/man/man1/blendfs.1.gz \
	./usr/share/man/man8/mount.fuse.blendfs.8.gz ./usr/share/bash-completion/completions/blendfs \
	./usr/share/doc/blendfs/copyright ./usr/share/doc/blendfs/examples/slerp.yaml \
	./usr/share/doc/blendfs/examples/ties.yaml ./usr/share/doc/blendfs/examples/mnt-model.mount; do
	grep -qE " $f( |\$)" <<<"$listing" || missing+=("$f")
done
[ ${#missing[@]} = 0 ] || fail "not in the package: ${missing[*]}"
grep -E '^-rwxr-xr-x .* \./usr/sbin/mount\.fuse\.blendfs$' <<<"$listing" >/dev/null ||
	fail "the mount helper is not installed executable"
! grep -q 'examples/models' <<<"$listing" || fail "the generated demo models went into the package"
examples=("$ROOT"/examples/*.yaml)
n_examples=${#examples[@]}
[ "$(grep -c '/usr/share/doc/blendfs/examples/.*\.yaml$' <<<"$listing")" = "$n_examples" ] ||
	fail "not every example recipe is in the package"
ok "dpkg-deb -c: binary, mount helper, man pages, completion, $n_examples examples, systemd unit"

# ---- control
info=$(dpkg-deb -I "$DEB") || fail "dpkg-deb -I failed"
echo "$info"
depends=$(dpkg-deb -f "$DEB" Depends)
for d in fuse3 libfuse3-3 libyaml-0-2 libxxhash0 libjansson4 libc6; do
	grep -qE "(^|, )$d( |,|\$)" <<<"$depends" || fail "Depends lacks $d: $depends"
done
[ "$(dpkg-deb -f "$DEB" Package)" = blendfs ] || fail "Package is not blendfs"
[ "$(dpkg-deb -f "$DEB" Version)" = "$version" ] || fail "Version is not $version"
ok "dpkg-deb -I: Depends: $depends"

# ---- unpacked
R=$TMP/root
dpkg -x "$DEB" "$R" || fail "dpkg -x failed"
got=$("$R/usr/bin/blendfs" --version) || fail "the packaged blendfs does not run"
[ "$got" = "blendfs $version" ] || fail "packaged blendfs --version says '$got', not 'blendfs $version'"
(cd "$CONF" && "$R/usr/bin/blendfs" check cases/linear.yaml >/dev/null) || fail "the packaged blendfs check failed"
zcat "$R/usr/share/man/man1/blendfs.1.gz" | cmp -s - "$ROOT/docs/blendfs.1" ||
	fail "the packaged man page is not docs/blendfs.1"
if command -v man >/dev/null; then
	MANPAGER=cat MANWIDTH=80 man -l "$R/usr/share/man/man1/blendfs.1.gz" 2>/dev/null | grep -q "mount.fuse.blendfs" ||
		fail "man -l of the packaged man page failed"
fi
cmp -s "$R/usr/share/bash-completion/completions/blendfs" "$ROOT/packaging/blendfs.bash-completion" ||
	fail "the packaged completion is not packaging/blendfs.bash-completion"
bash -c '. "$1" && complete -p blendfs' _ "$R/usr/share/bash-completion/completions/blendfs" | grep -q _blendfs ||
	fail "the packaged completion does not register _blendfs"
ok "dpkg -x: blendfs --version = $got; man page and completion in their places"

# the helper, without $BLENDFS, runs the packaged binary (../bin/blendfs beside /usr/sbin)
out=$(env -u BLENDFS "$R/usr/sbin/mount.fuse.blendfs" /srv/r.yaml /mnt/m -f -v -o cache_size=8M,nofail 2>&1) ||
	fail "the packaged helper failed: $out"
[ "$out" = "mount.fuse.blendfs: $R/usr/sbin/../bin/blendfs mount --cache-size 8M -o fsname=/srv/r.yaml -- /srv/r.yaml /mnt/m" ] ||
	fail "the packaged helper would not run the packaged binary: $out"
MNT=$TMP/mnt
mkdir -p "$MNT"
MOUNTS+=("$MNT")
(cd "$CONF" && env -u BLENDFS "$R/usr/sbin/mount.fuse.blendfs" cases/linear.yaml "$MNT" -o cache_size=8M) ||
	fail "mounting with the packaged helper and binary failed"
is_mounted "$MNT" || fail "$MNT is not mounted"
(cd "$CONF" && "$BLENDFS" merge --no-sync --log-level warn cases/linear.yaml "$TMP/merged") || fail "merge failed"
same_files "$TMP/merged" "$MNT"
"$R/usr/bin/blendfs" umount "$MNT" || fail "the packaged blendfs umount failed"
ok "the packaged helper mounts with the packaged binary; same bytes as blendfs merge"
