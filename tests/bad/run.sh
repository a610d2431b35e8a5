#!/bin/bash
# run.sh NAME: one bad-input case from cases.txt. The command must exit with the expected status,
# print a message containing the expected text, not crash, and leave nothing mounted.
. "$(dirname "$0")/../mount/lib.sh"
name=${1:?usage: run.sh NAME}
line=$(grep -E "^$name\|" "$TESTS/bad/cases.txt") || fail "no case '$name' in cases.txt"
IFS='|' read -r _ cmd want_rc want_msg <<<"$line"
$PY "$TESTS/bad/mkbad.py" "$TMP" || fail "mkbad.py failed"
cp "$TESTS"/bad/recipes/*.yaml "$TMP/"
mkdir -p "$TMP/mnt"
MOUNTS+=("$TMP/mnt")
# "model:DIR" = a linear merge of the fixture base with the malformed model DIR
cmd=${cmd//MNT/$TMP/mnt}
if [[ $cmd == *model:* ]]; then
	m=$(sed -E 's/.*model:([A-Za-z_0-9]+).*/\1/' <<<"$cmd")
	printf 'models:\n  - model: fixtures/base\n    parameters: {weight: 0.5}\n  - model: models/%s\n    parameters: {weight: 0.5}\nmerge_method: linear\n' "$m" >"$TMP/model_$m.yaml"
	cmd=${cmd//model:$m/model_$m.yaml}
fi
cd "$TMP" || fail "cd"
# shellcheck disable=SC2086
out=$(timeout 60 "$BLENDFS" $cmd 2>&1)
rc=$?
echo "\$ blendfs $cmd"
echo "$out"
[ "$rc" -lt 124 ] || fail "exit status $rc (timeout or crash)"
[ "$rc" = "$want_rc" ] || fail "exit status $rc, expected $want_rc"
grep -qF -- "$want_msg" <<<"$out" || fail "message does not contain: $want_msg"
is_mounted "$TMP/mnt" && fail "something is mounted on $TMP/mnt"
ok "$name: exit $rc, message names the problem, nothing mounted"
