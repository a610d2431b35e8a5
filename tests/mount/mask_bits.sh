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
	[ "$(field mask_bits_refused)" = 0 ] || fail "--cache-size $1: $(field mask_bits_refused) refused"
	[ "$(field mask_bits_used_bytes)" = 0 ] ||
		fail "--cache-size $1: $(field mask_bits_used_bytes) bytes of mask bits still held after a whole read"
	ok "--cache-size $1: mask bits budget $2, chunk cache $3; $tensors tensors kept their masks, all freed"
	bf_umount "$TMP/mnt"
done
