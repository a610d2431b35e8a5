#!/bin/bash
# test.sh: install dependencies, build, run the whole test suite (unit, conformance through the
# mount, bad inputs, determinism, ...), then a second build with AddressSanitizer and
# UndefinedBehaviorSanitizer that runs every suite but packaging again (the mount daemon itself
# runs sanitized), and a ThreadSanitizer build (without OpenMP) that runs the unit tests with
# threads (the chunk cache, the selections fed from several threads) and the hardening, methods
# and determinism mount suites. Ends with one line "N passed, N failed" summed over all runs.
# Needs root and /dev/fuse for the mount tests.
#   BUILD=dir        the normal build (default build)
#   ASAN_BUILD=dir   the sanitizer build (default build-asan)
#   TSAN_BUILD=dir   the thread-sanitizer build (default build-tsan)
#   SANITIZE=0       skip the sanitizer passes
# Arguments are passed to the first `meson test` only.
set -u
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh || { echo "0 passed, 1 failed"; exit 1; }
BUILD=${BUILD:-build}
ASAN_BUILD=${ASAN_BUILD:-build-asan}
TSAN_BUILD=${TSAN_BUILD:-build-tsan}
meson test -C "$BUILD" --print-errorlogs --num-processes 2 "$@"
rc=$?

# sanitizer_reports BUILD DIR: print the sanitizer reports in DIR (the log_path files of a run of
# build BUILD's tests) to stderr, remove DIR, and echo how many there were. A daemon writes some
# reports (leaks) when it exits, just after its unmount: BUILD's last daemon is let go first.
sanitizer_reports() {
	local daemon n=0
	daemon=$(cd "$1" && pwd)/src/blendfs
	for _ in $(seq 100); do pgrep -f "^$daemon " >/dev/null || break; sleep 0.1; done
	for f in "$2"/*; do
		[ -e "$f" ] || continue
		n=$((n + 1))
		{ echo "---- sanitizer report $f"; head -60 "$f"; } >&2
	done
	rm -rf "$2"
	echo "$n"
}
logs=("$BUILD/meson-logs/testlog.json")
extra_failed=0   # checks outside meson's test logs: the sanitizer build, sanitizer reports

if [ "${SANITIZE:-1}" != 0 ]; then
	echo "== sanitizer pass: $ASAN_BUILD (ASan + UBSan) =="
	if ! { [ -f "$ASAN_BUILD/build.ninja" ] ||
		meson setup "$ASAN_BUILD" --wrap-mode=nodownload -Db_sanitize=address,undefined \
			-Db_lundef=false -Dc_args=-fno-sanitize-recover=all >/dev/null; } ||
		! ninja -C "$ASAN_BUILD" >/dev/null; then
		echo "FAIL: the sanitizer build $ASAN_BUILD did not build"
		extra_failed=1
		rc=1
	fi
fi
if [ "${SANITIZE:-1}" != 0 ] && [ "$extra_failed" = 0 ]; then
	# A daemonised mount's stderr is /dev/null: every sanitizer report goes to a file instead,
	# and any file there fails the run, whatever the tests said.
	san_dir=$(mktemp -d /tmp/blendfs-sanitizer.XXXXXX)
	ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:log_path=$san_dir/asan" \
	UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$san_dir/ubsan" \
		meson test -C "$ASAN_BUILD" --print-errorlogs --num-processes 2 \
		--suite unit --suite fuzz-replay --suite conformance --suite bad-input \
		--suite hardening --suite methods --suite determinism
	[ $? = 0 ] || rc=1
	logs+=("$ASAN_BUILD/meson-logs/testlog.json")
	san_reports=$(sanitizer_reports "$ASAN_BUILD" "$san_dir")
	if [ "$san_reports" != 0 ]; then
		echo "FAIL: $san_reports sanitizer report(s) (ASan/UBSan/LSan) during the sanitizer pass"
		extra_failed=1
		rc=1
	else
		echo "sanitizer pass: no ASan, UBSan or LeakSanitizer report"
	fi
fi

if [ "${SANITIZE:-1}" != 0 ]; then
	# The unit tests that run threads (the chunk cache; of test_select only its threaded test),
	# then the mount suites whose daemons run several threads (FUSE workers, prefetch, statistics
	# waits, the cache). Built without OpenMP, whose runtime is not instrumented and would
	# report its own synchronisation: its parallel loops then run in order, and the daemon's own
	# threads are what is checked. Optimised: ThreadSanitizer makes memory accesses ~10x slower.
	echo "== thread sanitizer pass: $TSAN_BUILD (test_cache, test_select's parallel feed; hardening, methods, determinism) =="
	# (a build dir from before the mount suites ran here has OpenMP and no mount tests)
	if { { [ -f "$TSAN_BUILD/build.ninja" ] &&
		meson configure "$TSAN_BUILD" -Dopenmp=disabled -Dfuse_tests=true >/dev/null; } ||
		meson setup "$TSAN_BUILD" --wrap-mode=nodownload -Db_sanitize=thread -Dbuildtype=debugoptimized \
			-Dopenmp=disabled >/dev/null; } && ninja -C "$TSAN_BUILD" >/dev/null; then
		TSAN_OPTIONS="halt_on_error=1" meson test -C "$TSAN_BUILD" --no-rebuild --print-errorlogs \
			--logbase tsan-cache cache
		[ $? = 0 ] || rc=1
		BF_TEST_ONLY=parallel_feed_threads TSAN_OPTIONS="halt_on_error=1" \
			meson test -C "$TSAN_BUILD" --no-rebuild --print-errorlogs --logbase tsan-select select
		[ $? = 0 ] || rc=1
		tsan_dir=$(mktemp -d /tmp/blendfs-tsan.XXXXXX)
		TSAN_OPTIONS="halt_on_error=1:abort_on_error=1:log_path=$tsan_dir/tsan" \
			meson test -C "$TSAN_BUILD" --no-rebuild --print-errorlogs --num-processes 2 --logbase tsan-mount \
			--suite hardening --suite methods --suite determinism
		[ $? = 0 ] || rc=1
		logs+=("$TSAN_BUILD/meson-logs/tsan-cache.json" "$TSAN_BUILD/meson-logs/tsan-select.json"
			"$TSAN_BUILD/meson-logs/tsan-mount.json")
		tsan_reports=$(sanitizer_reports "$TSAN_BUILD" "$tsan_dir")
		if [ "$tsan_reports" != 0 ]; then
			echo "FAIL: $tsan_reports ThreadSanitizer report(s) from the mount suites"
			extra_failed=$((extra_failed + 1))
			rc=1
		else
			echo "thread sanitizer pass: no ThreadSanitizer report from the mount suites"
		fi
	else
		echo "FAIL: the thread-sanitizer build $TSAN_BUILD did not build"
		extra_failed=$((extra_failed + 1))
		rc=1
	fi
fi

/usr/bin/python3 - "$extra_failed" "${logs[@]}" <<'PY'
import json, sys
passed = failed = 0
for path in sys.argv[2:]:
    for line in open(path):
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        else:
            failed += 1
failed += int(sys.argv[1])  # no sanitizer build, or sanitizer reports: one failed check
print(f"{passed} passed, {failed} failed")
PY
exit $rc
