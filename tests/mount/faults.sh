#!/bin/bash
# faults.sh: sources changing under a live mount (a frankenmerge of both shards of A and of B). Replacing a source by rename is harmless (the
# daemon holds the old file); overwriting a source in place or truncating it makes exactly the
# reads that depend on it fail with EIO, with one log line naming the file, while reads of
# tensors from other files keep working; no read ever returns bytes that differ from the
# original blend (never a mix of old and new); the daemon stays up.
. "$(dirname "$0")/lib.sh"
cp -r "$CONF/fixtures/ft_a" "$TMP/A"
cp -r "$CONF/fixtures/ft_b" "$TMP/B"
chmod -R u+w "$TMP/A" "$TMP/B"
cat >"$TMP/r.yaml" <<Y
slices:
  - sources:
      - model: $TMP/A
        layer_range: [0, 1]
  - sources:
      - model: $TMP/A
        layer_range: [2, 3]
  - sources:
      - model: $TMP/B
        layer_range: [2, 4]
        parameters:
          scale: 0.5
merge_method: passthrough
Y
"$BLENDFS" merge --no-sync --log-level warn "$TMP/r.yaml" "$TMP/ref" || fail "merge"
bf_mount "$TMP/r.yaml" "$TMP/mnt" --cache-size 0 --log-file "$TMP/log"

# readall [STALE_SHARD...]: read every tensor of the mount. Fails on any byte that differs from
# the original blend (a "mix"). A read may fail (EIO, or short: the kernel reads whole pages, so
# a page shared with a failing tensor fails too) only if the tensor comes from one of the stale
# shards or shares a page with such a tensor. Prints "name ok|EIO".
readall() {
	$PY - "$TMP/mnt/model.safetensors" "$TMP/ref/model.safetensors" "$TMP/A" "$@" <<'PY'
import errno, json, os, struct, sys
path, ref, A, stale = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3], sys.argv[4:]
n = struct.unpack("<Q", ref[:8])[0]
hdr = {k: v for k, v in json.loads(ref[8:8 + n]).items() if k != "__metadata__"}
wm = json.load(open(os.path.join(A, "model.safetensors.index.json")))["weight_map"] if stale else {}
def from_stale(name):
    # output layer 0 is A's layer 0, output layer 1 is A's layer 2, the embeddings are A's
    if name.startswith("model.layers.1."):
        src = "model.layers.2." + name[len("model.layers.1."):]
    elif name.startswith("model.layers.0.") or name == "model.embed_tokens.weight":
        src = name
    else:
        return False
    return any(wm.get(src) == os.path.basename(s) for s in stale)
bad_pages = set()
for name, v in hdr.items():
    if from_stale(name):
        b, e = (8 + n + x for x in v["data_offsets"])
        bad_pages.update(range(b // 4096, (e - 1) // 4096 + 1))
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
failed = 0
for name, v in sorted(hdr.items()):
    b, e = (8 + n + x for x in v["data_offsets"])
    try:
        got = os.pread(fd, e - b, b)
    except OSError as ex:
        assert ex.errno == errno.EIO, ex
        got = None
    if got is not None and got != ref[b:b + len(got)]:
        print("MIX", name)
        sys.exit(1)
    if got is None or len(got) < e - b:
        if not bad_pages & set(range(b // 4096, (e - 1) // 4096 + 1)):
            print("UNEXPECTED EIO", name)
            sys.exit(1)
        failed += 1
        print(name, "EIO")
    else:
        print(name, "ok")
os.close(fd)
if stale and not failed:
    print("NO READ FAILED")
    sys.exit(1)
PY
}
out=$(readall) || fail "wrong bytes before any change"
grep -q EIO <<<"$out" && fail "EIO before any change"

# 1. a new file renamed over a source: the daemon keeps the old one
cp "$CONF/fixtures/ft_c/model.safetensors" "$TMP/B/model.safetensors.new"
mv "$TMP/B/model.safetensors.new" "$TMP/B/model.safetensors"
out=$(readall) || fail "wrong bytes after a rename over a source"
grep -q EIO <<<"$out" && fail "EIO after a rename (the old file is still held)"
ok "rename over a source: reads keep the original bytes"

# 2. overwrite shard 1 of A in place: its tensors fail, everything else still reads
shard1=$TMP/A/model-00001-of-00002.safetensors
size=$(stat -c %s "$shard1")
dd if=/dev/urandom of="$shard1" bs=1 seek=$((size - 4000)) count=1000 conv=notrunc status=none
out=$(readall "$shard1") || { echo "$out"; fail "after an in-place overwrite: a mix, or an unrelated read failed"; }
grep -q "model.layers.3.* ok" <<<"$out" || fail "tensors from B stopped working"
[ "$(grep -c "source changed while mounted: $shard1" "$TMP/log")" = 1 ] || { cat "$TMP/log"; fail "expected one log line naming $shard1"; }
ok "in-place overwrite: dependent reads fail with EIO, one log line, other reads fine"

# 3. truncate shard 2 of A
shard2=$TMP/A/model-00002-of-00002.safetensors
truncate -s 1000 "$shard2"
out=$(readall "$shard1" "$shard2") || { echo "$out"; fail "after truncation: a mix, or an unrelated read failed"; }
grep -q "model.layers.3.* ok" <<<"$out" || fail "tensors from B stopped working after truncation"
[ "$(grep -c "source changed while mounted: $shard2" "$TMP/log")" = 1 ] || { cat "$TMP/log"; fail "expected one log line naming $shard2"; }
cp "$TMP/A/model.safetensors.index.json" "$TMP/index.json"
rm -rf "$TMP/A"
mkdir "$TMP/A" && cp "$TMP/index.json" "$TMP/A/model.safetensors.index.json"
out=$(readall "$shard1" "$shard2") || { echo "$out"; fail "after removing a source: a mix, or an unrelated read failed"; }
grep -q "model.layers.3.* ok" <<<"$out" || fail "tensors from B stopped working after rm"
grep -q "^read_errors: [1-9]" "$TMP/mnt/.blendfs/status" || fail "daemon not answering (or counted no read errors)"
ok "truncate and rm: dependent reads fail, the daemon stays up"
bf_umount "$TMP/mnt"
