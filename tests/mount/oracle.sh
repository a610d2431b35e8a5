#!/bin/bash
# oracle.sh CASE: blendfs's merge of tests/cases/CASE.yaml against tools/oracle.py, an independent
# numpy implementation of the same recipe (mergekit-spec.md), with conformance_check's rules
# (1 ulp and >= 99% exact; magnitude cuts exact; random methods structurally).
. "$(dirname "$0")/lib.sh"
case=${1:?usage: oracle.sh CASE}
recipe=$TESTS/cases/$case.yaml
cd "$CONF" || fail "no conformance dir"
"$BLENDFS" merge --no-sync --log-level warn "$recipe" "$TMP/got" || fail "blendfs merge failed"
$PY "$TOOLS/oracle.py" "$recipe" "$TMP/want" >/dev/null || fail "oracle.py failed"
if [ "$case" = arcee_fusion ]; then
	# a per-element choice between base and fine-tune through an ill-conditioned threshold:
	# every value must be one of the two, and the choices must agree with the oracle's
	$PY "$TOOLS/mask_check.py" "$TMP/got" "$TMP/want" fixtures/base fixtures/ft_a ||
		fail "$case differs from the numpy oracle"
else
	$PY "$TOOLS/conformance_check.py" "$case" "$TMP/got" "$TMP/want" "$recipe" . ||
		fail "$case differs from the numpy oracle"
fi
ok "$case matches the independent numpy implementation"
