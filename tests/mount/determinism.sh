#!/bin/bash
# determinism.sh CASE: the same recipe gives the same bytes whatever the chunk size, thread
# count, cache size or read path (merge to disk vs. a mount read by concurrent readers), and
# across remounts; for random methods a different seed (--seed or random_seed:) changes them.
. "$(dirname "$0")/lib.sh"
case=${1:?usage: determinism.sh CASE}
cd "$CONF" || fail "no conformance dir"
recipe=cases/$case.yaml
sums() { (cd "$1" && sha256sum ./*.safetensors | sort); }
ref=""
i=0
for cfg in "--chunk-size 1K --threads 1" "--chunk-size 4K --threads 2" "--chunk-size 64K --threads 3" \
	"--chunk-size 1M --threads 1"; do
	i=$((i + 1))
	# shellcheck disable=SC2086
	"$BLENDFS" merge --no-sync --log-level warn $cfg "$recipe" "$TMP/m$i" || fail "merge $cfg failed"
	s=$(sums "$TMP/m$i")
	[ -z "$ref" ] && ref=$s
	[ "$s" = "$ref" ] || fail "merge with $cfg gives different bytes"
done
ok "$case: identical bytes for chunk sizes 1K..1M and 1..3 threads"
for cfg in "--cache-size 0 --chunk-size 2K" "--cache-size 8K --chunk-size 4K --threads 2" "--cache-size 64M"; do
	# shellcheck disable=SC2086
	bf_mount "$recipe" "$TMP/mnt" $cfg
	for f in "$TMP"/m1/*.safetensors; do
		"$FSXRO" -q -t 4 -n 200 -m 100000 -s 3 "$TMP/mnt/$(basename "$f")" "$f" >/dev/null ||
			fail "mount ($cfg) differs from merge under concurrent reads"
	done
	[ "$(sums "$TMP/mnt")" = "$ref" ] || fail "mount ($cfg) differs from merge"
	bf_umount "$TMP/mnt"
done
ok "$case: mounts with cache 0..64M and 1..16 threads give the merge's bytes (4 concurrent readers)"
if grep -q '"random": true' "expected/$case/.oracle/meta.json"; then
	"$BLENDFS" merge --no-sync --log-level warn --seed 1 "$recipe" "$TMP/seed1" || fail "merge --seed 1"
	"$BLENDFS" merge --no-sync --log-level warn --seed 1 --chunk-size 3K "$recipe" "$TMP/seed1b" || fail "merge"
	[ "$(sums "$TMP/seed1")" != "$ref" ] || fail "--seed 1 did not change a random method's bytes"
	[ "$(sums "$TMP/seed1")" = "$(sums "$TMP/seed1b")" ] || fail "--seed 1 is not deterministic"
	{ cat "$recipe"; echo "random_seed: 1"; } >"$TMP/seeded.yaml"
	sed -i "s#fixtures/#$CONF/fixtures/#g" "$TMP/seeded.yaml"
	"$BLENDFS" merge --no-sync --log-level warn "$TMP/seeded.yaml" "$TMP/seed1c" || fail "merge random_seed"
	[ "$(sums "$TMP/seed1c")" = "$(sums "$TMP/seed1")" ] || fail "random_seed: 1 differs from --seed 1"
	ok "$case: --seed and random_seed: change the bytes, the same seed gives the same bytes"
fi
