#!/bin/bash
# fuzz.sh: run blendfs's libFuzzer targets with ASan + UBSan (tests/fuzz/README.md).
#
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER-ARGS...]  fuzz one target for SECONDS
#   scripts/fuzz.sh all SECONDS                        all five, two at a time (one per core)
#   scripts/fuzz.sh --merge TARGET|all                 fold what the runs found into the
#                                                      committed corpus (only inputs that add
#                                                      an edge: -merge=1 -use_counters=0)
#   TARGET: st_header | index | recipe | plan | kern
#
# Builds $BUILD_FUZZ (default build-fuzz) with clang and -Dfuzzing_engine=libfuzzer. A run reads
# the committed corpus tests/fuzz/corpus/TARGET and writes new inputs to $BUILD_FUZZ/corpus/TARGET
# (never to the tree); crashes, leaks and timeouts land in $BUILD_FUZZ/artifacts/ and the script
# exits non-zero. The last lines of each log ($BUILD_FUZZ/TARGET.log) are libFuzzer's final
# statistics (executions, exec/s) and its DONE line (cov, ft, corpus size).
set -u
cd "$(dirname "$0")/.."
TARGETS="st_header index recipe plan kern"
B=${BUILD_FUZZ:-build-fuzz}

usage() { sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
valid() { [[ " $TARGETS " == *" $1 "* ]]; }

build() {
	command -v clang >/dev/null || { echo "fuzz.sh: needs clang (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
	if [ ! -f "$B/build.ninja" ]; then
		CC=clang meson setup "$B" --wrap-mode=nodownload -Dfuzzing_engine=libfuzzer \
			-Dfuse_tests=false >/dev/null || exit 2
	else
		# build dirs made before fuzz_kern had simd=false: it needs the variants it compares
		meson configure "$B" -Dsimd=true >/dev/null || exit 2
	fi
	ninja -C "$B" $(for t in $TARGETS; do echo "tests/fuzz/fuzz_$t"; done) >/dev/null || exit 2
}

dict_for() {
	case $1 in
	recipe) echo "-dict=tests/fuzz/recipe.dict" ;;
	st_header | index) echo "-dict=tests/fuzz/json.dict" ;;
	esac
}

# run TARGET SECONDS [ARGS...]: one fuzzing session; prints its summary line
run() {
	local t=$1 secs=$2
	shift 2
	mkdir -p "$B/corpus/$t" "$B/artifacts"
	# shellcheck disable=SC2046
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
		"$B/tests/fuzz/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -timeout=20 \
		-rss_limit_mb=2048 -artifact_prefix="$B/artifacts/$t-" $(dict_for "$t") "$@" \
		"$B/corpus/$t" "tests/fuzz/corpus/$t" >"$B/$t.log" 2>&1
	local rc=$?
	local done execs
	done=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$B/$t.log" | tail -1)
	execs=$(grep -E '^stat::number_of_executed_units' "$B/$t.log" | awk '{print $2}')
	if [ "$rc" = 0 ]; then
		echo "fuzz $t: ${secs}s, ${execs:-?} executions; $done"
	else
		echo "fuzz $t: FINDING (exit $rc) after ${execs:-?} executions; see $B/$t.log and $B/artifacts/"
		grep -E 'ERROR:|invariant failed|SUMMARY' "$B/$t.log" | head -5
	fi
	return $rc
}

merge() {
	local t=$1
	[ -d "$B/corpus/$t" ] || { echo "fuzz.sh: nothing to merge for $t (run it first)"; return 0; }
	local before after
	before=$(ls "tests/fuzz/corpus/$t" | wc -l)
	"$B/tests/fuzz/fuzz_$t" -merge=1 -use_counters=0 "tests/fuzz/corpus/$t" "$B/corpus/$t" >"$B/$t.merge.log" 2>&1 ||
		{ echo "fuzz.sh: merge of $t failed, see $B/$t.merge.log"; return 1; }
	after=$(ls "tests/fuzz/corpus/$t" | wc -l)
	echo "fuzz $t: corpus $before -> $after files"
}

[ $# -ge 2 ] || usage
if [ "$1" = --merge ]; then
	build
	if [ "$2" = all ]; then
		for t in $TARGETS; do merge "$t" || exit 1; done
	else
		valid "$2" || usage
		merge "$2"
	fi
	exit
fi
t=$1 secs=$2
shift 2
[[ $secs =~ ^[0-9]+$ ]] || usage
[ "$t" = all ] || valid "$t" || usage
build
if [ "$t" = all ]; then
	set -- $TARGETS
	rc=0
	while [ $# -gt 0 ]; do
		run "$1" "$secs" & p1=$!
		p2=
		[ $# -gt 1 ] && { run "$2" "$secs" & p2=$!; }
		wait $p1 || rc=1
		[ -n "$p2" ] && { wait "$p2" || rc=1; }
		shift; [ $# -gt 0 ] && shift
	done
	exit $rc
fi
run "$t" "$secs" "$@"
