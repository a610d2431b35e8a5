#!/bin/bash
# stats_once.sh: whole-tensor statistics are computed once per tensor and kept, whatever the
# cache does: with a zero-byte chunk cache and tiny chunks, reading the whole model three times
# (dropping the page cache in between) recomputes every chunk each time but never the
# statistics.
. "$(dirname "$0")/lib.sh"
cd "$CONF" || fail "no conformance dir"
bf_mount cases/ties.yaml "$TMP/mnt" --cache-size 0 --chunk-size 1K
f=$TMP/mnt/model.safetensors
for i in 1 2 3; do
	$PY - "$f" <<'PY' || fail "read failed"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # make the next reads reach the daemon
while os.read(fd, 1 << 16):
    pass
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)
PY
done
st=$(cat "$TMP/mnt/.blendfs/status")
echo "$st"
stats=$(sed -n 's/^statistics_computed: //p' <<<"$st")
chunks=$(sed -n 's/^chunks_computed: //p' <<<"$st")
tensors=$(sed -n 's/^tensors: //p' <<<"$st")
[ "$stats" = "$tensors" ] || fail "statistics computed $stats times for $tensors tensors"
# 107072 bytes of bf16 in 1 KiB chunks is at least 105 chunks; three reads recompute them
[ "$chunks" -ge 300 ] || fail "only $chunks chunks computed: the reads did not reach the daemon"
ok "statistics computed once per tensor ($stats) while $chunks chunks were computed"
bf_umount "$TMP/mnt"
