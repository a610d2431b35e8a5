#!/bin/bash
# conformance.sh CASE: mount a conformance recipe and check it end to end:
#   1. the mounted tensors match mergekit's expected output (tools/conformance_check.py rules)
#   2. every file of the mount is byte-identical to `blendfs merge` of the same recipe
#   3. 4 concurrent readers (pread/readv/mmap/read at odd offsets and lengths) see the same bytes
. "$(dirname "$0")/lib.sh"
case=${1:?usage: conformance.sh CASE}
cd "$CONF" || fail "no conformance dir"
"$BLENDFS" merge --no-sync --log-level warn "cases/$case.yaml" "$TMP/merged" || fail "merge failed"
bf_mount "cases/$case.yaml" "$TMP/mnt"
$PY "$TOOLS/conformance_check.py" "$case" "$TMP/mnt" "expected/$case" "cases/$case.yaml" . ||
	fail "mounted $case does not match mergekit's expected tensors"
ok "$case: mount matches the expected tensors"
same_files "$TMP/merged" "$TMP/mnt"
ok "$case: mount is byte-identical to blendfs merge"
for f in "$TMP"/merged/*.safetensors; do
	"$FSXRO" -t 4 -n 400 -m 200000 -s 7 "$TMP/mnt/$(basename "$f")" "$f" || fail "concurrent reads differ"
done
ok "$case: 4 concurrent readers at odd offsets match"
bf_umount "$TMP/mnt"
