#!/bin/bash
# invariant.sh LEFT RIGHT: two recipes that must give the same bytes by construction (worked out
# by hand: slerp at t=0 is the base, weights (1, 0) are the first model, TIES with one model at
# density 1 is task arithmetic, ...). Both are merged and every shard compared byte for byte.
. "$(dirname "$0")/lib.sh"
left=${1:?usage: invariant.sh LEFT RIGHT}
right=${2:?usage: invariant.sh LEFT RIGHT}
cd "$CONF" || fail "no conformance dir"
"$BLENDFS" merge --no-sync --log-level warn "$TESTS/cases/$left.yaml" "$TMP/l" || fail "merge $left failed"
"$BLENDFS" merge --no-sync --log-level warn "$TESTS/cases/$right.yaml" "$TMP/r" || fail "merge $right failed"
for f in "$TMP"/r/*.safetensors; do
	cmp "$f" "$TMP/l/$(basename "$f")" || fail "$left and $right differ in $(basename "$f")"
done
ok "$left gives exactly the bytes of $right"
