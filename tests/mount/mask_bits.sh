#!/bin/bash
# mask_bits.sh: a random method's masks are kept as bits from the statistics pass to the reads
# that use them, in a budget of 16 MiB plus a quarter of --cache-size that the chunk cache gives
# up; a whole read keeps every tensor's masks, frees them all once consumed, and gives the same
# bytes as blendfs merge.
. "$(dirname "$0")/lib.sh"
cd "$CONF" || fail "no conformance dir"
field() { sed -n "s/^$1: //p" "$TMP/mnt/.blendfs/status"; }
"$BLENDFS" merge --no-sync --log-level warn cases/dare_ties.yaml "$TMP/ref" || fail "merge failed"
for cfg in "64M 33554432 50331648" "0 16777216 0" "1M 17039360 786432"; do
	# shellcheck disable=SC2086
	set -- $cfg
	bf_mount cases/dare_ties.yaml "$TMP/mnt" --cache-size "$1"
	[ "$(field mask_bits_budget_bytes)" = "$2" ] ||
		fail "--cache-size $1: mask_bits_budget_bytes $(field mask_bits_budget_bytes), want $2"
	[ "$(field cache_budget_bytes)" = "$3" ] ||
		fail "--cache-size $1: cache_budget_bytes $(field cache_budget_bytes), want $3"
	cmp "$TMP/mnt/model.safetensors" "$TMP/ref/model.safetensors" || fail "--cache-size $1: mount differs from merge"
	tensors=$(field tensors)
	[ "$(field mask_bits_kept)" = "$tensors" ] ||
		fail "--cache-size $1: masks kept for $(field mask_bits_kept) of $tensors tensors"
	[ "$(field mask_bits_refused)" = 0 ] && [ "$(field mask_bits_partial)" = 0 ] ||
		fail "--cache-size $1: $(field mask_bits_partial) partial, $(field mask_bits_refused) refused"
	[ "$(field mask_bits_used_bytes)" = 0 ] ||
		fail "--cache-size $1: $(field mask_bits_used_bytes) bytes of mask bits still held after a whole read"
	ok "--cache-size $1: mask bits budget $2, chunk cache $3; $tensors tensors kept their masks, all freed"
	bf_umount "$TMP/mnt"
done
# a budget far too small for the tensors: masks kept over a prefix of some tensors, none for
# others, drawn again for the rest when read; the bytes are the same
for case in dare_ties della; do
	"$BLENDFS" merge --no-sync --log-level warn "cases/$case.yaml" "$TMP/$case-ref" || fail "merge $case"
	for budget in 0 64 4096 40000; do
		BLENDFS_MASK_BITS=$budget "$BLENDFS" merge --no-sync --log-level warn "cases/$case.yaml" "$TMP/$case-$budget" ||
			fail "merge $case with BLENDFS_MASK_BITS=$budget"
		cmp "$TMP/$case-$budget/model.safetensors" "$TMP/$case-ref/model.safetensors" ||
			fail "$case: BLENDFS_MASK_BITS=$budget changes the bytes"
	done
	BLENDFS_MASK_BITS=512 bf_mount "cases/$case.yaml" "$TMP/mnt" --cache-size 0 --chunk-size 1K
	cmp "$TMP/mnt/model.safetensors" "$TMP/$case-ref/model.safetensors" || fail "$case: mount with 512 B of mask bits differs"
	kept=$(field mask_bits_kept) part=$(field mask_bits_partial) ref=$(field mask_bits_refused)
	[ "$(field mask_bits_budget_bytes)" = 512 ] || fail "BLENDFS_MASK_BITS=512 did not set the budget"
	[ "$part" -ge 1 ] || fail "$case: no tensor kept its masks in part (kept $kept, refused $ref)"
	[ $((kept + part + ref)) = "$(field tensors)" ] || fail "$case: kept $kept + partial $part + refused $ref != tensors"
	[ "$(field mask_bits_used_bytes)" = 0 ] || fail "$case: mask bits still held after a whole read"
	ok "$case: 0 B to 40 kB of mask bits give the same bytes (512 B mount: $kept kept, $part in part, $ref refused)"
	bf_umount "$TMP/mnt"
done
