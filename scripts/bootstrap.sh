#!/bin/bash
# bootstrap.sh: install what blendfs needs on Debian 12 (as root), then configure and build it.
#   BUILD=dir to build elsewhere (default: build); BLENDFS_NO_APT=1 to skip the package step.
set -eu
cd "$(dirname "$0")/.."
PKGS="gcc meson ninja-build pkg-config libfuse3-dev fuse3 libyaml-dev libxxhash-dev libjansson-dev
      python3 python3-numpy python3-yaml util-linux"
if [ "${BLENDFS_NO_APT:-0}" != 1 ]; then
	missing=$(for p in $PKGS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"; done)
	if [ -n "$missing" ]; then
		[ "$(id -u)" = 0 ] || { echo "bootstrap: run as root to install:" $missing >&2; exit 1; }
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
fi
BUILD=${BUILD:-build}
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" --wrap-mode=nodownload >/dev/null
ninja -C "$BUILD" >/dev/null
echo "bootstrap: built $BUILD/src/blendfs ($("$BUILD/src/blendfs" --version))"
