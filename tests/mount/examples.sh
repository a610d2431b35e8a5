#!/bin/bash
# examples.sh: every recipe in examples/ runs against (small) demo models: it validates, merges,
# and the merged model is a valid safetensors model with the layer count its config claims.
. "$(dirname "$0")/lib.sh"
G="$PY $TOOLS/gen_models.py --hidden 64 --intermediate 128 --layers 8 --vocab 256 --heads 4 --kv-heads 2"
$G "$TMP/models/base" --seed 1 >/dev/null || fail "gen"
$G "$TMP/models/chat" --from "$TMP/models/base" --delta-scale 0.004 --seed 2 >/dev/null || fail "gen"
$G "$TMP/models/code" --from "$TMP/models/base" --delta-scale 0.004 --seed 3 --max-shard-bytes 200000 >/dev/null || fail "gen"
$G "$TMP/models/math" --from "$TMP/models/base" --delta-scale 0.004 --sparse 0.5 --seed 4 >/dev/null || fail "gen"
cp "$TESTS"/../examples/*.yaml "$TMP/"
n=0
for r in "$TMP"/*.yaml; do
	name=$(basename "$r" .yaml)
	"$BLENDFS" check "$r" >/dev/null || fail "example $name does not validate"
	"$BLENDFS" merge --no-sync --log-level warn "$r" "$TMP/out-$name" || fail "example $name does not merge"
	"$BLENDFS" inspect "$TMP/out-$name" >"$TMP/inspect" || fail "example $name: output invalid"
	want=$(sed -n 's/.*"num_hidden_layers": \([0-9]*\).*/\1/p' "$TMP/out-$name/config.json")
	grep -q ", $want layers (config.json)" "$TMP/inspect" || fail "example $name: layer count"
	n=$((n + 1))
done
[ "$n" -ge 12 ] || fail "only $n examples"
ok "all $n examples validate and merge against the demo models"
