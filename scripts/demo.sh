#!/bin/bash
# demo.sh: install dependencies, build, generate four small Llama-shaped models (a base and
# three fine-tunes, ~60 MB each, in examples/models/), then mount examples/slerp.yaml (or the
# recipe given), list and read the mount, show what was computed, and unmount.
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
B=${BUILD:-build}/src/blendfs
GEN="/usr/bin/python3 tests/tools/gen_models.py"
RECIPE=${1:-examples/slerp.yaml}
M=examples/models
SHAPE="--hidden 512 --intermediate 1408 --layers 8 --vocab 4096 --heads 8 --kv-heads 4"
if [ ! -f $M/math/config.json ]; then
	echo "== generating demo models in $M"
	# shellcheck disable=SC2086
	$GEN $M/base $SHAPE --seed 1
	$GEN $M/chat --from $M/base --delta-scale 0.004 --seed 2
	$GEN $M/code --from $M/base --delta-scale 0.004 --seed 3 --max-shard-bytes 20000000
	$GEN $M/math --from $M/base --delta-scale 0.004 --sparse 0.5 --seed 4
fi
MNT=$(mktemp -d /tmp/blendfs-demo.XXXXXX)
trap '"$B" umount "$MNT" 2>/dev/null; rmdir "$MNT"' EXIT
echo "== blendfs check $RECIPE"
"$B" check "$RECIPE" | head -25
echo "== blendfs mount $RECIPE $MNT"
time "$B" mount "$RECIPE" "$MNT"
echo "== the mounted model directory"
ls -la "$MNT"
echo "== config.json (torch_dtype and layer count as mergekit writes them)"
grep -E '"(torch_dtype|num_hidden_layers)"' "$MNT/config.json"
echo "== tensors of the merged model (headers computed at mount from the sources' headers)"
"$B" inspect "$MNT" | tail -4
echo "== reading every byte (computed now, chunk by chunk)"
time cat "$MNT"/*.safetensors | sha256sum
echo "== reading again (page cache)"
time cat "$MNT"/*.safetensors | sha256sum
echo "== what the daemon computed"
cat "$MNT/.blendfs/status"
echo "== blendfs umount $MNT"
"$B" umount "$MNT"
trap 'rmdir "$MNT"' EXIT
echo "demo: ok"
