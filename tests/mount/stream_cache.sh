#!/bin/bash
# stream_cache.sh: how the chunk cache treats streams and random reads (bf_cache_put_once,
# bf_exec's stream detection).
#  1. A sequential read of the whole model computes every chunk exactly once (prefetch never
#     recomputes a chunk the reader has consumed) and leaves few chunks cached, although the
#     budget could hold them all: chunks a stream has read to their end are recycled first.
#  2. Scattered page reads, none starting where one of the four previous reads ended (or one
#     page later), are not taken for streams, even when they fall in the same or the next chunk
#     as an earlier read: nothing is prefetched for them.
#  3. The bytes are the same as `blendfs merge` writes.
#  4. With four prefetch threads (the default on machines of 5 CPUs or more; 1 here), 8 chunks
#     queued ahead, a sequential read still computes every chunk once and reads those bytes.
. "$(dirname "$0")/lib.sh"
cd "$CONF" || fail "no conformance dir"
# read-ahead of 4 KiB: the kernel asks for the ~105 KiB file page by page, as a stream
bf_mount cases/ties.yaml "$TMP/mnt" --cache-size 4M --chunk-size 1K --readahead-kb 4
f=$TMP/mnt/model.safetensors
field() { sed -n "s/^$1: //p" "$TMP/mnt/.blendfs/status"; }

$PY - "$f" <<'PY' || fail "sequential read failed"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
while os.read(fd, 4096):
    pass
os.close(fd)
PY
out=$(field output_bytes)
computed=$(field bytes_computed)
entries=$(field cache_entries)
chunks=$(field chunks_computed)
echo "after the stream: output_bytes $out bytes_computed $computed chunks $chunks cache_entries $entries"
[ "$computed" = "$out" ] || fail "a sequential read computed $computed bytes for $out: chunks were computed twice"
# 1 KiB chunks: ~100 of them fit the 4 MiB budget many times over; use-once keeps 16 consumed
# chunks, plus the ones prefetched ahead and the first request's (not yet a stream)
[ "$entries" -le 40 ] || fail "$entries chunks cached after one sequential read (use-once keeps ~20)"
ok "sequential read: every chunk computed once ($chunks), $entries left cached"

bf_umount "$TMP/mnt"

# 64 KiB chunks: every page read lands in or next to the chunk of an earlier read, so only byte
# contiguity can tell a stream from scattered reads
bf_mount cases/ties.yaml "$TMP/mnt" --cache-size 4M --chunk-size 64K --readahead-kb 4
pf0=$(field chunks_prefetched)
$PY - "$f" <<'PY' || fail "random reads failed"
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # make the reads reach the daemon
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
rng = random.Random(7)
pages = size // 4096
ends = []
done = 0
while done < 60:
    off = rng.randrange(pages) * 4096
    if any(off in (e, e + 4096) for e in ends[-4:]):
        continue                                     # would continue a recent read
    os.pread(fd, 4096, off)
    os.posix_fadvise(fd, off, 4096, os.POSIX_FADV_DONTNEED)
    ends.append(off + 4096)
    done += 1
os.close(fd)
PY
pf1=$(field chunks_prefetched)
[ "$pf1" = "$pf0" ] || fail "scattered reads were taken for a stream: $((pf1 - pf0)) chunks prefetched"
ok "scattered page reads prefetch nothing"

"$BLENDFS" merge --log-level warn cases/ties.yaml "$TMP/merged" >/dev/null || fail "merge failed"
cmp -s "$f" "$TMP/merged/model.safetensors" || fail "mounted bytes differ from blendfs merge"
ok "bytes equal blendfs merge"
bf_umount "$TMP/mnt"

bf_mount cases/ties.yaml "$TMP/mnt" --cache-size 4M --chunk-size 1K --readahead-kb 4 --prefetch 4
$PY - "$f" "$TMP/seq4" <<'PY' || fail "sequential read with 4 prefetch threads failed"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
with open(sys.argv[2], "wb") as out:
    while True:
        b = os.read(fd, 4096)
        if not b:
            break
        out.write(b)
os.close(fd)
PY
out=$(field output_bytes)
computed=$(field bytes_computed)
pf=$(field chunks_prefetched)
[ "$computed" = "$out" ] || fail "4 prefetch threads: $computed bytes computed for $out: chunks computed twice"
[ "$pf" -gt 0 ] || fail "4 prefetch threads prefetched nothing"
cmp -s "$TMP/seq4" "$TMP/merged/model.safetensors" || fail "4 prefetch threads: bytes differ from blendfs merge"
ok "4 prefetch threads: every chunk computed once ($pf of them ahead), bytes equal blendfs merge"
bf_umount "$TMP/mnt"
