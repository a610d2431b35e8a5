#!/bin/bash
# concurrency.sh: 8 threads of seeded random reads (pread/preadv/mmap/read at odd offsets and
# lengths) against mounts of linear, ties and dare_ties over ~2 MB models, with the chunk cache at
# 5% of the output so that eviction happens all the time (and the page cache dropped every 16 ops
# so that reads keep reaching the daemon); every byte compared with `blendfs
# merge` output. OPS (default 50000, the CI size) is the total over the three methods; the long
# run documented in docs/reliability.md uses OPS=1000000.
. "$(dirname "$0")/lib.sh"
OPS=${OPS:-50000}
G="$PY $TOOLS/gen_models.py --hidden 128 --intermediate 344 --layers 4 --vocab 1024 --heads 4 --kv-heads 2"
$G "$TMP/m/base" --seed 1 >/dev/null || fail "gen"
$G "$TMP/m/a" --from "$TMP/m/base" --delta-scale 0.004 --seed 2 >/dev/null || fail "gen"
$G "$TMP/m/b" --from "$TMP/m/base" --delta-scale 0.004 --seed 3 --max-shard-bytes 700000 >/dev/null || fail "gen"
$G "$TMP/m/c" --from "$TMP/m/base" --delta-scale 0.004 --sparse 0.5 --seed 4 >/dev/null || fail "gen"
per=$((OPS / 3 / 8))
for method in linear ties dare_ties; do
	r=$TMP/$method.yaml
	{
		echo "models:"
		for m in a b c; do
			printf '  - model: %s/m/%s\n    parameters: {weight: 0.5, density: 0.6}\n' "$TMP" "$m"
		done
		[ $method = linear ] || echo "base_model: $TMP/m/base"
		echo "merge_method: $method"
		echo "dtype: bfloat16"
	} | sed "$([ $method = linear ] && echo 's/, density: 0.6//')" >"$r"
	"$BLENDFS" merge --no-sync --log-level warn --shard-size 1M "$r" "$TMP/ref-$method" || fail "merge $method"
	size=$(cat "$TMP"/ref-$method/*.safetensors | wc -c)
	budget=$((size / 20))
	bf_mount "$r" "$TMP/mnt-$method" --shard-size 1M --cache-size "$budget" --chunk-size 16K
	for f in "$TMP"/ref-$method/*.safetensors; do
		n=$((per / $(ls "$TMP"/ref-$method/*.safetensors | wc -l) + 1))
		"$FSXRO" -t 8 -n "$n" -m 300000 -s 42 -d 16 "$TMP/mnt-$method/$(basename "$f")" "$f" ||
			fail "$method: concurrent reads returned wrong bytes"
	done
	grep -E "cache_(misses|evictions)" "$TMP/mnt-$method/.blendfs/status" | tr '\n' ' '
	ev=$(sed -n 's/^cache_evictions: //p' "$TMP/mnt-$method/.blendfs/status")
	[ "$ev" -gt 100 ] || fail "$method: only $ev cache evictions: the cache was not under pressure"
	bf_umount "$TMP/mnt-$method"
done
ok "$OPS random concurrent reads (8 threads) over linear, ties, dare_ties with a 5% cache: 0 mismatches"
