#!/bin/bash
# par_stats.sh: the statistics of one tensor computed by several threads at once (a mount with
# --prefetch 4 spreads the blocks of one tensor over 4-5 OpenMP threads) give the bytes of
# `blendfs merge`, whose statistics run on one thread per tensor:
# - the L1 sums of dare_ties and della (block sums added in block order afterwards, where merge
#   adds them straight into the totals; mask bits on words two blocks share ORed in
#   atomically), against a merge with no mask bits at all
#   (BLENDFS_MASK_BITS=0: every mask drawn again where it is used, so the bits are checked
#   against an independent draw): with every mask kept as bits, and with a budget so small that
#   tensors keep a prefix;
# - the magnitude selections of ties and breadcrumbs_ties (the window pass after the first block
#   fed from several threads, each block's matches in a place of its own, put back in block
#   order before the tie-break), with .blendfs/status showing such passes ran;
# - the whole-tensor dot products of slerp, nuslerp and model_stock (block sums added in block
#   order; merge adds straight into the sums, so the two paths are checked against each other).
# Rows of 500 and 1000 elements make statistics blocks of 65500 and 65000 elements, so block
# boundaries fall inside 64-bit mask words; tensors of 250000-500000 elements have 4-8 blocks.
# bf16 models take the raw-bytes pass, fp16 ones the pass over f32 views.
. "$(dirname "$0")/lib.sh"
G="$PY $TOOLS/gen_models.py --hidden 500 --intermediate 1000 --layers 1 --vocab 1000 --heads 10 --kv-heads 10"
for dt in bfloat16 float16; do
	M=$TMP/m-$dt
	$G "$M/base" --dtype $dt --seed 1 >/dev/null || fail "gen"
	$G "$M/a" --from "$M/base" --delta-scale 0.004 --seed 2 >/dev/null || fail "gen"
	$G "$M/b" --from "$M/base" --delta-scale 0.004 --sparse 0.3 --seed 3 >/dev/null || fail "gen"
	for method in dare_ties della ties breadcrumbs_ties; do
		r=$TMP/$method-$dt.yaml
		ref=$TMP/ref-$method-$dt
		{
			echo "models:"
			for m in a b; do
				printf '  - model: %s/%s\n    parameters: {weight: 0.5, density: 0.5}\n' "$M" "$m"
			done
			echo "base_model: $M/base"
			echo "merge_method: $method"
			echo "dtype: $dt"
			echo "random_seed: 7"
		} >"$r"
		against="blendfs merge without mask bits"
		case $method in ties | breadcrumbs_ties) against="blendfs merge (one thread per tensor)" ;; esac
		BLENDFS_MASK_BITS=0 "$BLENDFS" merge --no-sync --log-level warn "$r" "$ref" || fail "merge $method"
		budgets=("" 200000) # mask bits: kept whole, or over a prefix
		case $method in ties | breadcrumbs_ties) budgets=("") ;; esac
		for bits in "${budgets[@]}"; do
			what="$method ($dt), 4 threads per tensor${bits:+, mask budget $bits}"
			BLENDFS_MASK_BITS=$bits bf_mount "$r" "$TMP/mnt" --prefetch 4
			cmp "$TMP/mnt/model.safetensors" "$ref/model.safetensors" ||
				fail "$what: bytes differ from $against"
			st=$(grep -E '^(statistics_computed|mask_bits_kept|mask_bits_partial|select_windows_par):' "$TMP/mnt/.blendfs/status" | tr '\n' ' ')
			case $method in ties | breadcrumbs_ties)
				p=$(sed -n 's/^select_windows_par: //p' "$TMP/mnt/.blendfs/status")
				h=$(sed -n 's/^select_windows_hit: //p' "$TMP/mnt/.blendfs/status")
				[ "$p" -gt 0 ] || fail "$what: no selection pass ran on several threads ($st)"
				[ "$h" -ge "$p" ] || fail "$what: fewer window passes settled than ran in parallel ($st, hit $h)" ;;
			esac
			if [ -n "$bits" ]; then
				p=$(sed -n 's/^mask_bits_partial: //p' "$TMP/mnt/.blendfs/status")
				[ "$p" -gt 0 ] || fail "$what: the budget kept every mask whole ($st)"
			fi
			bf_umount "$TMP/mnt"
			ok "$what: same bytes as $against ($st)"
		done
	done
	for method in slerp nuslerp model_stock; do
		r=$TMP/$method-$dt.yaml
		ref=$TMP/ref-$method-$dt
		if [ $method = slerp ]; then
			printf 'models:\n  - model: %s/base\n  - model: %s/a\nbase_model: %s/base\n' "$M" "$M" "$M"
			printf 'merge_method: slerp\nparameters: {t: 0.3}\ndtype: %s\n' "$dt"
		elif [ $method = model_stock ]; then
			printf 'models:\n  - model: %s/a\n  - model: %s/b\n' "$M" "$M"
			printf 'base_model: %s/base\nmerge_method: model_stock\ndtype: %s\n' "$M" "$dt"
		else
			printf 'models:\n  - model: %s/a\n    parameters: {weight: 0.6}\n' "$M"
			printf '  - model: %s/b\n    parameters: {weight: 0.4}\n' "$M"
			printf 'base_model: %s/base\nmerge_method: nuslerp\ndtype: %s\n' "$M" "$dt"
		fi >"$r"
		"$BLENDFS" merge --no-sync --log-level warn "$r" "$ref" || fail "merge $method"
		bf_mount "$r" "$TMP/mnt" --prefetch 4
		cmp "$TMP/mnt/model.safetensors" "$ref/model.safetensors" ||
			fail "$method ($dt), 4 threads per tensor: bytes differ from blendfs merge (one thread per tensor)"
		bf_umount "$TMP/mnt"
		ok "$method ($dt), 4 threads per tensor: same bytes as blendfs merge (one thread per tensor)"
	done
done
