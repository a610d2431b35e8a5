#!/bin/sh
# blendfs benchmark: see docs/performance.md, or bench/run.sh --help.
# The driver needs Debian's python3 (with numpy for the model generator), not a python3 on PATH.
exec /usr/bin/python3 "$(dirname "$0")/run.py" "$@"
