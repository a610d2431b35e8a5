#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# completion.sh: packaging/blendfs.bash-completion, sourced into a fresh bash with COMP_WORDS and
# COMP_CWORD set and _blendfs called as bash would call it: the commands for `blendfs m<TAB>`,
# the levels for `--log-level <TAB>` (and `--log-level=<TAB>`), recipes (*.yaml, *.yml) and
# directories for mount/merge/check, directories for the mount point, any path for inspect,
# per-command options. Run twice: on its own, and on top of bash-completion's own library when
# that is installed (then _filedir does the file completion).
# shellcheck source=../mount/lib.sh
. "$(dirname "$0")/../mount/lib.sh"
COMPLETION=$TESTS/../packaging/blendfs.bash-completion
[ -f "$COMPLETION" ] || fail "$COMPLETION is missing"
bash -n "$COMPLETION" || fail "$COMPLETION does not parse"

DIR=$TMP/work
mkdir -p "$DIR/models/base" "$DIR/out"
touch "$DIR/a.yaml" "$DIR/b.yml" "$DIR/notes.txt" "$DIR/model.safetensors"

# complete [BASH_COMPLETION_LIBRARY] -- WORDS...: the sorted suggestions, one per line
complete_words() {
	local lib=$1
	shift 2
	(cd "$DIR" && bash --norc --noprofile -c '
		lib=$1 completion=$2
		shift 2
		if [ -n "$lib" ]; then . "$lib" || exit 3; fi
		. "$completion" || exit 3
		spec=$(complete -p blendfs) || exit 4
		[[ $spec == *"-F _blendfs"* ]] || exit 4
		COMP_WORDS=("$@")
		COMP_CWORD=$(($# - 1))
		COMP_LINE="$*"
		COMP_POINT=${#COMP_LINE}
		COMPREPLY=()
		_blendfs blendfs "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
		printf "%s\n" "${COMPREPLY[@]}" | sed "s:/*$::" | sort -u | sed "/^$/d"
	' _ "$lib" "$COMPLETION" "$@")
}

# expect LIB "WORDS" "EXPECTED (space-separated, sorted)"
expect() {
	local lib=$1 words=$2 want=$3 got
	local -a w
	read -r -a w <<<"$words"
	# a trailing space in WORDS means the cursor is on a new, empty word
	[[ $words == *" " ]] && w+=("")
	got=$(complete_words "$lib" -- "${w[@]}" | tr '\n' ' ' | sed 's/ $//') ||
		fail "completion of '$words' failed (${lib:-standalone})"
	[ "$got" = "$want" ] || fail "'$words<TAB>' (${lib:-standalone}): got [$got], want [$want]"
}

run_checks() {
	local lib=$1 name=${1:-standalone}
	expect "$lib" "blendfs m" "merge mount"
	expect "$lib" "blendfs " "--help --version check help inspect merge mount umount"
	expect "$lib" "blendfs mount --log-level " "debug error info warn"
	expect "$lib" "blendfs mount --log-level = " "debug error info warn"
	expect "$lib" "blendfs merge --log-level = w" "warn"
	expect "$lib" "blendfs check --log-level i" "info"
	expect "$lib" "blendfs mount --cache-size 5" "512M"
	expect "$lib" "blendfs mount -o allow_o" "allow_other"
	expect "$lib" "blendfs mount --c" "--cache-size --chunk-size"
	expect "$lib" "blendfs merge --no" "--no-sync"
	expect "$lib" "blendfs umount -" "--help --lazy -z"
	# recipes (and directories to walk into) for the recipe argument; no other files
	expect "$lib" "blendfs mount " "a.yaml b.yml models out"
	expect "$lib" "blendfs mount --cache-size 1G --seed 3 -f " "a.yaml b.yml models out"
	expect "$lib" "blendfs check " "a.yaml b.yml models out"
	expect "$lib" "blendfs merge --threads = 4 a" "a.yaml"
	# directories for the mount point and the merge output
	expect "$lib" "blendfs mount a.yaml " "models out"
	expect "$lib" "blendfs mount --log-level debug a.yaml o" "out"
	expect "$lib" "blendfs merge a.yaml " "models out"
	expect "$lib" "blendfs check a.yaml " ""
	# any path for inspect, directories for umount
	expect "$lib" "blendfs inspect " "a.yaml b.yml model.safetensors models notes.txt out"
	expect "$lib" "blendfs inspect models/" "models/base"
	expect "$lib" "blendfs umount o" "out"
	expect "$lib" "blendfs mount --log-file n" "notes.txt"
	ok "completion ($name): commands, options, --log-level values, sizes, recipes, directories, paths"
}

run_checks ""
BC=/usr/share/bash-completion/bash_completion
if [ -f "$BC" ]; then
	run_checks "$BC"
else
	echo "note: $BC not installed; checked the standalone completion only"
fi
