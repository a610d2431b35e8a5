#!/bin/bash
# check_output.sh: `blendfs check` shows what every gradient and filter resolved to, per tensor
# group, and `blendfs inspect` lists a model; both compute nothing.
. "$(dirname "$0")/lib.sh"
cd "$CONF" || fail "no conformance dir"
out=$("$BLENDFS" check cases/linear.yaml) || fail "check failed"
echo "$out"
# ft_c's weight gradient [0.1, 0.25, 0.4] over 4 layers: 0.1, 0.2, 0.3, 0.4; mlp: normalize off
grep -Eq "model\.layers\.N\.mlp\.down_proj\.weight +BF16 +inputs 0,1,2 +weight=\[1,0\.5,0\.2\] normalize=false +layers 1" <<<"$out" ||
	fail "layer 1 mlp group not resolved as expected"
grep -Eq "model\.layers\.N\.self_attn\.q_proj\.weight +BF16 +inputs 0,1,2 +weight=\[1,0\.5,0\.4\] normalize=true +layers 3" <<<"$out" ||
	fail "layer 3 attention group not resolved as expected"
grep -q "output:      39 tensors, 4 layers, 107072 bytes in 1 shard" <<<"$out" || fail "summary line"
out=$("$BLENDFS" check cases/slerp_gradient.yaml) || fail "check failed"
# t gradient [0, 0.5, 0.3, 0.7, 1] for self_attn at layer 1 of 4: s = 4/3, 0.5 + 1/3 * -0.2
grep -Eq "self_attn\.o_proj\.weight +BF16 +inputs 0\(base\),1 +t=0\.433333 +layers 1" <<<"$out" ||
	fail "slerp t for layer 1 attention not 0.433333"
grep -Eq "model\.norm\.weight +BF16 +inputs 0\(base\),1 +t=0\.5" <<<"$out" || fail "fallback t=0.5 for the norm"
out=$("$BLENDFS" check --shard-size 40000 cases/passthrough_frankenmerge.yaml) || fail "check failed"
grep -q "output:      57 tensors, 6 layers" <<<"$out" || fail "frankenmerge layer count"
grep -q "model-00001-of-00004.safetensors" <<<"$out" || fail "sharding by --shard-size"
grep -q "copied from source" <<<"$out" || fail "passthrough copies not shown"
out=$("$BLENDFS" inspect fixtures/ft_a) || fail "inspect failed"
grep -Eq "^model\.embed_tokens\.weight +BF16 +\[256, 32\] 16384$" <<<"$out" || fail "inspect line"
grep -q "39 tensors, 107072 bytes in 2 shards, 4 layers" <<<"$out" || fail "inspect summary"
ok "check and inspect show the resolved plan"
