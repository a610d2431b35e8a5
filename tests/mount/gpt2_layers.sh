#!/bin/bash
# gpt2_layers.sh: layer handling beyond the Llama family. A passthrough frankenmerge of two
# GPT-2 layout models (transformer.h.N.*, transformer.ln_f, tied embeddings): layers are
# renumbered, wte/wpe come from the first slice, ln_f from the last, n_layer is updated, and
# every output tensor is byte-identical to the source tensor it was taken from.
. "$(dirname "$0")/lib.sh"
G="$PY $TOOLS/gen_models.py --arch gpt2 --hidden 32 --layers 4 --vocab 64 --heads 4"
$G "$TMP/a" --seed 11 >/dev/null || fail "gen a"
$G "$TMP/b" --seed 12 >/dev/null || fail "gen b"
cat >"$TMP/r.yaml" <<'Y'
slices:
  - sources:
      - model: a
        layer_range: [0, 3]
  - sources:
      - model: b
        layer_range: [1, 4]
merge_method: passthrough
Y
bf_mount "$TMP/r.yaml" "$TMP/mnt"
grep -q '"n_layer": 6' "$TMP/mnt/config.json" || fail "n_layer not updated to 6"
$PY - "$TOOLS" "$TMP" <<'PY' || fail "tensor mapping wrong"
import sys
sys.path.insert(0, sys.argv[1])
import stio
t = sys.argv[2]
out, a, b = (stio.read_model_dir(t + d) for d in ("/mnt", "/a", "/b"))
def src(name):
    if name.startswith("transformer.h."):
        i = int(name.split(".")[2])
        rest = name.split(".", 3)[3]
        return (a, "transformer.h.%d.%s" % (i, rest)) if i < 3 else (b, "transformer.h.%d.%s" % (i - 2, rest))
    return (b, name) if name.startswith("transformer.ln_f") else (a, name)
names = sorted(out)
assert any(n.startswith("transformer.h.5.") for n in names) and not any(n.startswith("transformer.h.6.") for n in names), names
for n in names:
    m, sn = src(n)
    assert out.raw_bytes(n) == m.raw_bytes(sn), (n, sn)
print("ok    %d tensors mapped to their sources" % len(names))
PY
ok "GPT-2 frankenmerge: layers renumbered, embeddings from slice 1, ln_f from the last"
bf_umount "$TMP/mnt"
