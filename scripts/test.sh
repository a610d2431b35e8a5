#!/bin/bash
# test.sh: install dependencies, build, run the whole test suite (unit, conformance through the
# mount, bad inputs, determinism, ...). Ends with one line "N passed, N failed". Needs root and
# /dev/fuse for the mount tests.
set -u
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh || { echo "0 passed, 1 failed"; exit 1; }
BUILD=${BUILD:-build}
meson test -C "$BUILD" --print-errorlogs --num-processes 2 "$@"
rc=$?
/usr/bin/python3 - "$BUILD/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        passed += 1
    else:
        failed += 1
print(f"{passed} passed, {failed} failed")
PY
exit $rc
