#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# manpage.sh: docs/blendfs.1 renders with man(1) and without groff warnings, names the version the
# binary reports, and documents every command, every long option that `blendfs --help` and
# `blendfs COMMAND --help` print, every option of the mount helper, the exit codes, the status
# file and the environment variables.
# shellcheck source=../mount/lib.sh
. "$(dirname "$0")/../mount/lib.sh"
PAGE=$TESTS/../docs/blendfs.1
HELPER=$TESTS/../packaging/mount.fuse.blendfs
[ -f "$PAGE" ] || fail "$PAGE is missing"
if ! command -v groff >/dev/null && [ "$(id -u)" = 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends groff-base >/dev/null
fi
command -v groff >/dev/null || fail "groff is missing (apt-get install groff-base)"

warnings=$(groff -man -Tutf8 -ww -z "$PAGE" 2>&1) || fail "groff failed: $warnings"
[ -z "$warnings" ] || fail "groff warnings: $warnings"
if command -v man >/dev/null; then
	MANPAGER=cat MANWIDTH=80 man -l "$PAGE" >"$TMP/man.txt" 2>"$TMP/man.err" ||
		fail "man -l failed: $(cat "$TMP/man.err")"
	[ "$(wc -l <"$TMP/man.txt")" -gt 200 ] || fail "man -l rendered only $(wc -l <"$TMP/man.txt") lines"
fi
ok "renders with man -l and groff -ww, no warnings"

# rendered text, one long line per paragraph, so that no option is broken across lines
TEXT=$TMP/page.txt
groff -man -Tascii -P-cbou -rLL=1000n "$PAGE" 2>/dev/null | sed 's/  */ /g' >"$TEXT" || fail "groff -Tascii"
has() { grep -qE -- "(^|[^A-Za-z0-9_-])$1([^A-Za-z0-9_-]|\$)" "$TEXT"; }

version=$("$BLENDFS" --version) || fail "blendfs --version"
grep -q "^\.TH BLENDFS 1 \"[^\"]*\" \"$version\"" "$PAGE" ||
	fail "the .TH line does not name '$version': $(grep '^\.TH' "$PAGE")"

missing=()
for cmd in mount umount merge check inspect; do
	has "$cmd" || missing+=("command $cmd")
done
for cmd in '' mount umount merge check inspect; do
	# shellcheck disable=SC2086  # no command: blendfs --help
	help=$("$BLENDFS" $cmd --help) || fail "blendfs $cmd --help failed"
	while read -r opt; do
		has "$opt" || missing+=("${cmd:-blendfs} $opt")
	done < <(grep -oE -- '--[a-z][a-z0-9-]+' <<<"$help" | sort -u)
	[ -z "$cmd" ] || [ "$(grep -cE -- '--[a-z]' <<<"$help")" -gt 0 ] || [ "$cmd" = inspect ] ||
		fail "blendfs $cmd --help lists no long options: the extraction is broken"
done
# short options of mount and umount
for opt in -f -o -d -z; do has "$opt" || missing+=("option $opt"); done
# the mount helper's options
while read -r opt; do
	has "$opt" || missing+=("mount helper $opt")
done < <("$HELPER" --help | grep -oE '[a-z_]+=' | sort -u)
for word in fuse.blendfs fstab Type=fuse.blendfs What= Where= Options= .blendfs/status \
	HF_HUB_CACHE HF_HOME BLENDFS_SIMD cache_hits 'EXIT STATUS' ENVIRONMENT FILES EXAMPLES; do
	grep -qF -- "$word" "$TEXT" || missing+=("$word")
done
# exit codes 0..3
for code in 0 1 2 3; do
	sed -n '/^EXIT STATUS/,/^ENVIRONMENT/p' "$TEXT" | grep -qE "^ *$code " || missing+=("exit status $code")
done
# every merge method
for m in linear slerp nuslerp multislerp karcher task_arithmetic ties dare_linear dare_ties della \
	della_linear breadcrumbs breadcrumbs_ties sce ram ramplus_tl model_stock nearswap arcee_fusion \
	passthrough; do
	has "$m" || missing+=("method $m")
done
[ ${#missing[@]} = 0 ] || fail "not in the man page: ${missing[*]}"
ok "documents every command, every --help option, the helper's options, exit codes, methods, environment"
