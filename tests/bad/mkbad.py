#!/usr/bin/python3
"""mkbad.py OUTDIR: build malformed source models from the conformance fixture 'base'.

Each directory under OUTDIR/models/ breaks one rule of a model directory or a safetensors file
(reliability.md section 2). The bad-input tests mount recipes over them and expect a clear error,
a non-zero exit and nothing mounted.
"""
import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "..", "conformance", "fixtures", "base")


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    return hdr, b[8 + n:]


def write_raw(path, header_bytes, data, n_override=None):
    n = len(header_bytes) if n_override is None else n_override
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + header_bytes + data)


def pad(h):
    h = h.encode() if isinstance(h, str) else h
    return h + b" " * ((8 - len(h) % 8) % 8)


def copy_dir(dst, skip_weights=False):
    os.makedirs(dst)
    for f in os.listdir(BASE):
        if skip_weights and f.endswith(".safetensors"):
            continue
        shutil.copy(os.path.join(BASE, f), dst)


def main(top):
    models = os.path.join(top, "models")
    os.makedirs(models, exist_ok=True)
    src = os.path.join(BASE, "model.safetensors")
    hdr, data = read_st(src)
    raw = open(src, "rb").read()

    def d(name, skip=True):
        p = os.path.join(models, name)
        copy_dir(p, skip_weights=skip)
        return p

    # truncated data: the file is 100 bytes shorter than its header says
    p = d("truncated")
    open(os.path.join(p, "model.safetensors"), "wb").write(raw[:-100])
    # trailing bytes after the last tensor (polyglot)
    p = d("trailing")
    open(os.path.join(p, "model.safetensors"), "wb").write(raw + b"junk")
    # header length of 2^40
    p = d("header_too_large")
    open(os.path.join(p, "model.safetensors"), "wb").write(struct.pack("<Q", 1 << 40) + raw[8:])
    # header that is not JSON
    p = d("bad_json")
    h = bytearray(raw)
    h[8:12] = b"{{{{"
    open(os.path.join(p, "model.safetensors"), "wb").write(bytes(h))
    # two tensors sharing the same bytes (overlap)
    p = d("overlap")
    h2 = dict(hdr)
    names = [k for k in h2 if k != "__metadata__"]
    a, b = names[0], names[1]
    h2[b] = dict(h2[b])
    h2[b]["data_offsets"] = list(h2[a]["data_offsets"])
    h2[b]["shape"] = list(h2[a]["shape"])
    write_raw(os.path.join(p, "model.safetensors"), pad(json.dumps(h2, separators=(",", ":"))), data)
    # a duplicated key in the header JSON
    p = d("dup_key")
    js = json.dumps(hdr, separators=(",", ":"))
    first = '"%s":' % a
    i = js.index(first)
    j = js.index("}", js.index("data_offsets", i)) + 1
    js = js[:j] + "," + js[i:j] + js[j:]
    write_raw(os.path.join(p, "model.safetensors"), pad(js), data)
    # unknown dtype
    p = d("bad_dtype")
    h3 = json.loads(json.dumps(hdr))
    h3[a]["dtype"] = "BF17"
    write_raw(os.path.join(p, "model.safetensors"), pad(json.dumps(h3, separators=(",", ":"))), data)
    # shape that does not match the byte range
    p = d("size_mismatch")
    h4 = json.loads(json.dumps(hdr))
    h4[a]["shape"] = [h4[a]["shape"][0], h4[a]["shape"][1] + 1]
    write_raw(os.path.join(p, "model.safetensors"), pad(json.dumps(h4, separators=(",", ":"))), data)
    # only a pytorch checkpoint
    p = d("pytorch_only")
    open(os.path.join(p, "pytorch_model.bin"), "wb").write(b"PK\x03\x04 not really")
    # no weights at all
    d("no_weights")
    # index whose shard name escapes the directory
    p = d("index_escape")
    shutil.copy(src, os.path.join(p, "model.safetensors.x"))
    json.dump({"metadata": {}, "weight_map": {k: "../model.safetensors" for k in names}},
              open(os.path.join(p, "model.safetensors.index.json"), "w"))
    # index that maps a tensor to a shard without it
    p = d("index_missing")
    shutil.copy(src, os.path.join(p, "model-00001-of-00001.safetensors"))
    wm = {k: "model-00001-of-00001.safetensors" for k in names}
    wm["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00001.safetensors"
    json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(p, "model.safetensors.index.json"), "w"))
    # index that is not JSON
    p = d("index_bad_json")
    shutil.copy(src, os.path.join(p, "model-00001-of-00001.safetensors"))
    open(os.path.join(p, "model.safetensors.index.json"), "w").write('{"weight_map": {')
    # a tensor with a different shape (vocabulary 300 instead of 256)
    p = d("wide")
    h5 = json.loads(json.dumps(hdr))
    emb = "model.embed_tokens.weight"
    parts, off = [], 0
    order = sorted([k for k in h5 if k != "__metadata__"], key=lambda k: h5[k]["data_offsets"][0])
    out = b""
    for k in order:
        s, e = hdr[k]["data_offsets"]
        blob = data[s:e]
        if k == emb:
            blob = blob + blob[: (300 - 256) * 32 * 2]
            h5[k]["shape"] = [300, 32]
        h5[k]["data_offsets"] = [len(out), len(out) + len(blob)]
        out += blob
    write_raw(os.path.join(p, "model.safetensors"), pad(json.dumps(h5, separators=(",", ":"))), out)
    # a model without one of the tensors the others have
    p = d("missing_tensor")
    h6 = {k: v for k, v in hdr.items() if k != "model.layers.2.mlp.up_proj.weight"}
    out = b""
    for k in sorted([k for k in h6 if k != "__metadata__"], key=lambda k: hdr[k]["data_offsets"][0]):
        s, e = hdr[k]["data_offsets"]
        h6[k] = dict(h6[k])
        h6[k]["data_offsets"] = [len(out), len(out) + e - s]
        out += data[s:e]
    write_raw(os.path.join(p, "model.safetensors"), pad(json.dumps(h6, separators=(",", ":"))), out)
    # an integer tensor a merge method cannot compute over
    p = d("int_tensor")
    h7 = json.loads(json.dumps(hdr))
    h7["model.layers.0.input_layernorm.weight"]["dtype"] = "I16"
    write_raw(os.path.join(p, "model.safetensors"), pad(json.dumps(h7, separators=(",", ":"))), data)
    # config.json that is not JSON
    p = d("bad_config", skip=False)
    open(os.path.join(p, "config.json"), "w").write('{"architectures": [')
    # no config.json (the output needs one)
    p = d("no_config", skip=False)
    os.remove(os.path.join(p, "config.json"))
    # a shard that is a directory
    p = d("shard_is_dir")
    os.makedirs(os.path.join(p, "model.safetensors"))
    # an empty (0-byte) file
    p = d("empty_file")
    open(os.path.join(p, "model.safetensors"), "wb").close()
    # a gap between two tensors' byte ranges
    p = d("gap")
    hg = json.loads(json.dumps(hdr))
    last = max(names, key=lambda k: hg[k]["data_offsets"][0])
    hg[last]["data_offsets"] = [hg[last]["data_offsets"][0] + 8, hg[last]["data_offsets"][1] + 8]
    write_raw(os.path.join(p, "model.safetensors"), pad(json.dumps(hg, separators=(",", ":"))), data + b"\0" * 8)
    # reversed offsets [end, begin]
    p = d("reversed_offsets")
    hr = json.loads(json.dumps(hdr))
    hr[a]["data_offsets"] = hr[a]["data_offsets"][::-1]
    write_raw(os.path.join(p, "model.safetensors"), pad(json.dumps(hr, separators=(",", ":"))), data)
    # a real number where an integer offset belongs
    p = d("real_offset")
    js = json.dumps(hdr, separators=(",", ":")).replace('"data_offsets":[0,', '"data_offsets":[0.0,', 1)
    write_raw(os.path.join(p, "model.safetensors"), pad(js), data)
    # a negative dimension
    p = d("negative_dim")
    js = json.dumps(hdr, separators=(",", ":")).replace('"shape":[256,', '"shape":[-256,', 1)
    write_raw(os.path.join(p, "model.safetensors"), pad(js), data)
    # a tensor name that is not UTF-8
    p = d("non_utf8_name")
    js = json.dumps(hdr, separators=(",", ":")).encode().replace(b'"lm_head.weight"', b'"lm_head.\xff\xfe"', 1)
    write_raw(os.path.join(p, "model.safetensors"), pad(js), data)
    # __metadata__ with a non-string value
    p = d("metadata_number")
    hm = json.loads(json.dumps(hdr))
    hm["__metadata__"] = {"format": "pt", "step": 3}
    write_raw(os.path.join(p, "model.safetensors"), pad(json.dumps(hm, separators=(",", ":"))), data)
    # header that claims more bytes than the file has (truncated inside the header)
    p = d("header_truncated")
    open(os.path.join(p, "model.safetensors"), "wb").write(raw[:200])
    # index with a shard name holding a directory part
    p = d("index_slash")
    os.makedirs(os.path.join(p, "sub"))
    shutil.copy(src, os.path.join(p, "sub", "model.safetensors"))
    json.dump({"metadata": {}, "weight_map": {k: "sub/model.safetensors" for k in names}},
              open(os.path.join(p, "model.safetensors.index.json"), "w"))
    # index with a duplicated key
    p = d("index_dup_key")
    shutil.copy(src, os.path.join(p, "model-00001-of-00001.safetensors"))
    body = ",".join('"%s": "model-00001-of-00001.safetensors"' % k for k in names + [names[0]])
    open(os.path.join(p, "model.safetensors.index.json"), "w").write('{"weight_map": {%s}}' % body)
    # a tensor present in two shards
    p = d("index_two_shards")
    shutil.copy(src, os.path.join(p, "model-00001-of-00002.safetensors"))
    shutil.copy(src, os.path.join(p, "model-00002-of-00002.safetensors"))
    wm = {k: "model-00001-of-00002.safetensors" for k in names}
    wm[names[0]] = "model-00002-of-00002.safetensors"
    json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(p, "model.safetensors.index.json"), "w"))
    # one row of 2^31 elements (a sparse 4 GiB file: only the header is ever read), too long
    # for della's in-memory row ranking
    for name in ("huge_row_base", "huge_row_a"):
        p = d(name)
        n = 1 << 31
        h = pad(json.dumps({"model.norm.weight": {"dtype": "BF16", "shape": [n], "data_offsets": [0, 2 * n]}},
                           separators=(",", ":")))
        with open(os.path.join(p, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            f.truncate(8 + len(h) + 2 * n)
    os.symlink(os.path.abspath(os.path.join(HERE, "..", "conformance", "fixtures")),
               os.path.join(top, "fixtures"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: mkbad.py OUTDIR")
    main(sys.argv[1])
