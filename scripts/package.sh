#!/bin/bash
# package.sh [OUTDIR]: build the Debian package of blendfs (default OUTDIR: build-deb).
#
# dpkg-buildpackage wants debian/ at the root of the source tree; the tree keeps it in
# packaging/debian. So: copy the tree (git's tracked and untracked-but-not-ignored files, else
# everything but build directories) to a temporary directory, put packaging/debian there as
# debian/, run `dpkg-buildpackage -us -uc -b` in it, and move the .deb (with its .buildinfo and
# .changes, and the build log) to OUTDIR. Installs the build tools and Build-Depends first if
# they are missing (as root; set BLENDFS_NO_APT=1 to skip). DEB_BUILD_OPTIONS is honoured
# (e.g. nocheck to skip the unit tests).
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-build-deb}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# ---- tools and build dependencies
PKGS="debhelper dpkg-dev fakeroot gcc meson ninja-build pkg-config libfuse3-dev libyaml-dev
      libxxhash-dev libjansson-dev"
if [ "${BLENDFS_NO_APT:-0}" != 1 ]; then
	missing=$(for p in $PKGS; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || printf '%s ' "$p"
	done)
	if [ -n "$missing" ]; then
		if [ "$(id -u)" != 0 ]; then
			echo "package: run as root to install: $missing" >&2
			exit 1
		fi
		echo "package: installing $missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
fi

# ---- the version: debian/changelog and meson.build must agree
version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
meson_version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" meson.build | head -1)
if [ "$version" != "$meson_version" ]; then
	echo "package: packaging/debian/changelog says $version, meson.build says $meson_version;" \
		"add a changelog entry (dch -v $meson_version)" >&2
	exit 1
fi

# ---- a copy of the tree with debian/ at its root
WORK=$(mktemp -d /tmp/blendfs-deb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/blendfs-$version
mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# tracked files that still exist, plus new files git does not ignore
	git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
		tar -C "$ROOT" --null -T - -cf - | tar -C "$SRC" -xf -
else
	tar -C "$ROOT" --exclude='./build*' --exclude=./examples/models --exclude=./.git -cf - . |
		tar -C "$SRC" -xf -
fi
rm -rf "$SRC/debian"
cp -r "$ROOT/packaging/debian" "$SRC/debian"

# ---- build
LOG=$OUT/blendfs_${version}_build.log
echo "package: building blendfs $version in $SRC (log: $LOG)"
if ! (cd "$SRC" && dpkg-buildpackage -us -uc -b -j"$(nproc)") >"$LOG" 2>&1; then
	tail -40 "$LOG" >&2
	echo "package: dpkg-buildpackage failed; the whole log is $LOG" >&2
	exit 1
fi
shopt -s nullglob
built=("$WORK"/blendfs_"$version"_*.deb)
if [ ${#built[@]} = 0 ]; then
	echo "package: dpkg-buildpackage made no .deb (see $LOG)" >&2
	exit 1
fi
# the package, its -dbgsym companion, and the .buildinfo and .changes that list them
for f in "$WORK"/blendfs*_"$version"_*.deb "$WORK"/blendfs_"$version"_*.buildinfo \
	"$WORK"/blendfs_"$version"_*.changes; do
	mv -f "$f" "$OUT/"
done
for f in "${built[@]}"; do
	echo "package: $OUT/${f##*/}"
done
