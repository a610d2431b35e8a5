#!/bin/bash
# golden.sh [--write]: every conformance recipe merged by this build gives the model.safetensors
# bytes listed in tests/conformance/merged.sha256, for each SIMD variant (BLENDFS_SIMD unset, avx2,
# 0), 1 and 3 threads and 4K..1M chunks. The list was written on the 2-core build machine and the
# same bytes came out on a 16-core Xeon of another family (docs/reliability.md, "Across machines"),
# so a change of compiler, CPU or kernel that moves a single bit of any method, random ones
# included, fails here. --write regenerates the list (only after a deliberate change of the math).
. "$(dirname "$0")/lib.sh"
export LC_ALL=C
cd "$CONF" || fail "no conformance dir"
list=$CONF/merged.sha256
manifest() { # SIMD THREADS CHUNK: "case file sha256" for every case
	local c n
	for c in cases/*.yaml; do
		n=$(basename "$c" .yaml)
		rm -rf "$TMP/o"
		if [ "$1" = default ]; then
			env -u BLENDFS_SIMD "$BLENDFS" merge --no-sync --log-level error --threads "$2" \
				--chunk-size "$3" "$c" "$TMP/o" || fail "$n: merge failed"
		else
			BLENDFS_SIMD=$1 "$BLENDFS" merge --no-sync --log-level error --threads "$2" \
				--chunk-size "$3" "$c" "$TMP/o" || fail "$n: merge failed"
		fi
		(cd "$TMP/o" && sha256sum model*.safetensors) | awk -v n="$n" '{print n, $2, $1}'
	done
}
if [ "${1:-}" = --write ]; then
	manifest default 2 1M > "$list" && ok "wrote $(wc -l < "$list") hashes to $list"
	exit 0
fi
[ -s "$list" ] || fail "$list is missing"
for cfg in "default 1 64K" "avx2 3 1M" "0 2 4K"; do
	# shellcheck disable=SC2086
	manifest $cfg > "$TMP/got" || exit 1
	diff "$list" "$TMP/got" > "$TMP/diff" ||
		fail "BLENDFS_SIMD/threads/chunk = $cfg: bytes differ from $list:
$(cat "$TMP/diff")"
	ok "SIMD ${cfg%% *}, ${cfg#* } (threads, chunk): $(wc -l < "$list") shards of $(ls cases | wc -l) recipes match merged.sha256"
done
