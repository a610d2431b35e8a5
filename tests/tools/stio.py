#!/usr/bin/python3
"""stio: strict safetensors reader / byte-exact writer for blendfs test helpers.

Standard library + numpy only.  Import it from the other tools:

    from stio import read_safetensors, read_model_dir, write_safetensors

read_safetensors(path) -> (SafeTensors, metadata)
    SafeTensors is a read-only mapping name -> numpy array.  BF16 tensors are
    returned widened (exactly) to float32; every other dtype in its native numpy
    dtype.  The stored bits are available with .raw(name) (uint16 for BF16 and
    F16, the native array otherwise), the safetensors dtype string with
    .dtype(name), the shape with .shape(name).  The header is fully validated
    (length prefix, UTF-8 JSON object, no duplicate keys, known dtypes,
    shapes, offsets contiguous from 0, data size == file size).

read_model_dir(dir) -> ModelTensors (same interface, plus .file(name)) for a
    Hugging Face model directory with model.safetensors or
    model.safetensors.index.json + shards (weight_map checked against shards).

write_safetensors(path, tensors, metadata={"format": "pt"})
    tensors: dict name -> (dtype, data[, shape]); dtype a safetensors dtype
    string ("BF16", "F16", "F32", ...) or a torch-style name ("bfloat16").
    data: numpy array (converted to dtype; float -> BF16 rounds to nearest
    even, NaN -> 0x7FC0; a uint16 array for BF16 is taken as raw bits) or raw
    bytes (shape required, or 1-D inferred).  Produces the same bytes as
    safetensors.torch.save_file(..., metadata={"format": "pt"}).

Run `stio.py --help` for a small CLI (dump a header / tensor list).
"""
import json
import mmap
import os
import struct
import sys
from collections.abc import Mapping

import numpy as np

# safetensors Dtype enum order (serialization sorts by it, descending)
DTYPE_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
               "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16",
               "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
DTYPE_RANK = {d: i for i, d in enumerate(DTYPE_ORDER)}

# bits per element for each dtype (F4/F6 are sub-byte)
DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
              "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
              "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "C64": 64, "F64": 64, "I64": 64, "U64": 64}

# numpy storage dtype for the raw bits
NP_RAW = {"BOOL": np.dtype(np.bool_), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
          "F8_E5M2": np.dtype("u1"), "F8_E4M3": np.dtype("u1"), "F8_E8M0": np.dtype("u1"),
          "F8_E4M3FNUZ": np.dtype("u1"), "F8_E5M2FNUZ": np.dtype("u1"),
          "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"),
          "BF16": np.dtype("<u2"), "I32": np.dtype("<i4"), "U32": np.dtype("<u4"),
          "F32": np.dtype("<f4"), "C64": np.dtype("<c8"), "F64": np.dtype("<f8"),
          "I64": np.dtype("<i8"), "U64": np.dtype("<u8")}

NAME_TO_ST = {"bfloat16": "BF16", "bf16": "BF16", "float16": "F16", "fp16": "F16",
              "half": "F16", "float32": "F32", "fp32": "F32", "float": "F32",
              "float64": "F64", "double": "F64", "int64": "I64", "int32": "I32",
              "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}
ST_TO_NAME = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
              "BOOL": "bool"}

MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(Exception):
    """Raised for any malformed file or directory."""


def st_dtype(name):
    """Normalize a dtype name ('bfloat16', 'torch.float16', 'BF16') to the safetensors string."""
    if name is None:
        return None
    s = str(name)
    if s.startswith("torch."):
        s = s[6:]
    if s in DTYPE_RANK:
        return s
    if s.lower() in NAME_TO_ST:
        return NAME_TO_ST[s.lower()]
    raise SafetensorsError("unknown dtype %r" % (name,))


# ----------------------------------------------------------------------------------------
# numeric helpers

def f32_to_bf16_rne(arr):
    """float array -> uint16 bf16 bits, round to nearest even; any NaN -> 0x7FC0."""
    a = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
    b = a.view(np.uint32)
    r = ((b + (np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        r[nan] = 0x7FC0
    return r


def bf16_to_f32(bits):
    """uint16 bf16 bits -> float32 array (exact)."""
    b = np.asarray(bits, dtype=np.uint16)
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_f16(arr):
    """float32 -> float16 (numpy's cast is round-to-nearest-even)."""
    return np.asarray(arr, dtype=np.float32).astype(np.float16)


def round_to(arr, dtype):
    """float32 array -> values rounded once to dtype (returned as float32 array)."""
    d = st_dtype(dtype)
    a = np.asarray(arr, dtype=np.float32)
    if d == "BF16":
        return bf16_to_f32(f32_to_bf16_rne(a))
    if d == "F16":
        return a.astype(np.float16).astype(np.float32)
    if d == "F32":
        return a
    raise SafetensorsError("round_to: unsupported dtype %s" % d)


def encode(arr, dtype):
    """numpy array -> (raw numpy array of the storage type) for safetensors dtype."""
    d = st_dtype(dtype)
    a = np.asarray(arr)
    if d == "BF16":
        if a.dtype == np.uint16:
            return np.ascontiguousarray(a)
        return f32_to_bf16_rne(a.astype(np.float32, copy=False))
    if d == "F16":
        if a.dtype == np.uint16:
            return np.ascontiguousarray(a).view("<f2")
        return np.ascontiguousarray(a.astype(np.float32, copy=False).astype("<f2"))
    if d in NP_RAW:
        return np.ascontiguousarray(a.astype(NP_RAW[d], copy=False))
    raise SafetensorsError("encode: unsupported dtype %s" % d)


def decode(raw, dtype):
    """raw storage array -> value array (BF16 widened to float32)."""
    d = st_dtype(dtype)
    if d == "BF16":
        return bf16_to_f32(raw)
    return raw


def ordered_bits(raw, dtype):
    """Map raw bits to signed integers ordered like the float values (for ulp distances).
    +0 and -0 both map to 0.  Returns int64 array."""
    d = st_dtype(dtype)
    if d in ("BF16", "F16"):
        u = np.asarray(raw).view(np.uint16).astype(np.int64)
        mag = u & 0x7FFF
        return np.where(u & 0x8000, -mag, mag)
    if d == "F32":
        u = np.asarray(raw).view(np.uint32).astype(np.int64)
        mag = u & 0x7FFFFFFF
        return np.where(u & 0x80000000, -mag, mag)
    if d == "F64":
        u = np.asarray(raw).view(np.uint64)
        mag = (u & np.uint64(0x7FFFFFFFFFFFFFFF)).astype(np.int64)
        return np.where(u >> np.uint64(63), -mag, mag)
    raise SafetensorsError("ordered_bits: unsupported dtype %s" % d)


def ulp_distance(raw_a, raw_b, dtype):
    """Elementwise ulp distance between two raw arrays of the same float dtype (int64).
    NaN vs NaN is 0, NaN vs number is a huge distance."""
    oa = ordered_bits(raw_a, dtype)
    ob = ordered_bits(raw_b, dtype)
    dist = np.abs(oa - ob)
    fa = np.asarray(decode(np.asarray(raw_a), dtype), dtype=np.float64)
    fb = np.asarray(decode(np.asarray(raw_b), dtype), dtype=np.float64)
    na, nb = np.isnan(fa), np.isnan(fb)
    if na.any() or nb.any():
        dist = np.where(na & nb, 0, dist)
        dist = np.where(na ^ nb, np.int64(1) << 40, dist)
    return dist


def ulp_of(values, dtype):
    """Size of one ulp of dtype at |values| (float64 array)."""
    d = st_dtype(dtype)
    v = np.abs(np.asarray(values, dtype=np.float64))
    mant = {"BF16": 7, "F16": 10, "F32": 23, "F64": 52}[d]
    emin = {"BF16": -126, "F16": -14, "F32": -126, "F64": -1022}[d]
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(v > 0, v, 1.0)))
    e = np.maximum(e, emin)
    return np.ldexp(1.0, (e - mant).astype(np.int64))


# ----------------------------------------------------------------------------------------
# reading

def _no_dup_pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise SafetensorsError("duplicate key %r in header" % k)
        d[k] = v
    return d


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def parse_header(buf, file_size, path="<buffer>"):
    """Validate a safetensors file start.  buf: at least the first 8+N bytes.
    Returns (header_len, entries {name: (dtype, shape, begin, end)}, metadata)."""
    if file_size < 8:
        raise SafetensorsError("%s: file too short (%d bytes) for the 8-byte length prefix" % (path, file_size))
    (n,) = struct.unpack("<Q", bytes(buf[:8]))
    if n == 0:
        raise SafetensorsError("%s: header length is 0" % path)
    if n > MAX_HEADER:
        raise SafetensorsError("%s: header length %d exceeds %d" % (path, n, MAX_HEADER))
    if 8 + n > file_size:
        raise SafetensorsError("%s: header length %d runs past end of file (%d bytes)" % (path, n, file_size))
    raw = bytes(buf[8:8 + n])
    if not raw.startswith(b"{"):
        raise SafetensorsError("%s: header does not start with '{'" % path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError("%s: header is not UTF-8: %s" % (path, e))
    try:
        hdr = json.loads(text, object_pairs_hook=_no_dup_pairs)
    except SafetensorsError:
        raise
    except ValueError as e:
        raise SafetensorsError("%s: header is not valid JSON: %s" % (path, e))
    if not isinstance(hdr, dict):
        raise SafetensorsError("%s: header is not a JSON object" % path)
    meta = hdr.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise SafetensorsError("%s: __metadata__ must map strings to strings" % path)
    data_len = file_size - 8 - n
    entries = {}
    spans = []
    for name, info in hdr.items():
        if not isinstance(info, dict):
            raise SafetensorsError("%s: entry %r is not an object" % (path, name))
        extra = set(info) - {"dtype", "shape", "data_offsets"}
        missing = {"dtype", "shape", "data_offsets"} - set(info)
        if missing:
            raise SafetensorsError("%s: entry %r lacks %s" % (path, name, sorted(missing)))
        if extra:
            raise SafetensorsError("%s: entry %r has unknown keys %s" % (path, name, sorted(extra)))
        dt = info["dtype"]
        if dt not in DTYPE_RANK:
            raise SafetensorsError("%s: entry %r has unknown dtype %r" % (path, name, dt))
        shape = info["shape"]
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise SafetensorsError("%s: entry %r has a bad shape %r" % (path, name, shape))
        offs = info["data_offsets"]
        if (not isinstance(offs, list) or len(offs) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)):
            raise SafetensorsError("%s: entry %r has bad data_offsets %r" % (path, name, offs))
        b, e = offs
        if e < b:
            raise SafetensorsError("%s: entry %r has end < begin" % (path, name))
        nbits = _numel(shape) * DTYPE_BITS[dt]
        if nbits % 8:
            raise SafetensorsError("%s: entry %r: %d bits is not a whole number of bytes" % (path, name, nbits))
        if e - b != nbits // 8:
            raise SafetensorsError("%s: entry %r: data size %d != %d (shape %s x %s)" %
                                   (path, name, e - b, nbits // 8, shape, dt))
        entries[name] = (dt, tuple(shape), b, e)
        spans.append((b, e, name))
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise SafetensorsError("%s: data of %r starts at %d, expected %d (offsets not contiguous)" % (path, name, b, pos))
        pos = e
    if pos != data_len:
        raise SafetensorsError("%s: tensors cover %d data bytes but the file holds %d" % (path, pos, data_len))
    return n, entries, meta


class SafeTensors(Mapping):
    """Read-only mapping name -> decoded numpy array (BF16 as float32)."""

    def __init__(self, path):
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise SafetensorsError("%s: cannot open: %s" % (path, e))
        try:
            size = os.fstat(fd).st_size
            if size < 8:
                raise SafetensorsError("%s: file too short (%d bytes) for the 8-byte length prefix" % (path, size))
            try:
                self._mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                # e.g. a FUSE mount with direct_io: read the whole file instead
                chunks = []
                got = 0
                while got < size:
                    b = os.pread(fd, min(1 << 26, size - got), got)
                    if not b:
                        raise SafetensorsError("%s: short read at %d of %d bytes" % (path, got, size))
                    chunks.append(b)
                    got += len(b)
                self._mm = b"".join(chunks)
        except OSError as e:
            raise SafetensorsError("%s: cannot read: %s" % (path, e))
        finally:
            os.close(fd)
        self.file_size = size
        self.header_len, self.entries, self.metadata = parse_header(self._mm, size, path)
        self.data_start = 8 + self.header_len
        self.header_bytes = bytes(self._mm[8:8 + self.header_len])

    def __len__(self):
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __contains__(self, k):
        return k in self.entries

    def dtype(self, name):
        return self.entries[name][0]

    def shape(self, name):
        return self.entries[name][1]

    def nbytes(self, name):
        e = self.entries[name]
        return e[3] - e[2]

    def raw_bytes(self, name):
        dt, shape, b, e = self.entries[name]
        return self._mm[self.data_start + b:self.data_start + e]

    def raw(self, name):
        """Stored values as a numpy array (uint16 bits for BF16, float16 for F16...)."""
        dt, shape, b, e = self.entries[name]
        if dt not in NP_RAW:
            raise SafetensorsError("%s: dtype %s of %r cannot be viewed as a numpy array" % (self.path, dt, name))
        a = np.frombuffer(self._mm, dtype=NP_RAW[dt], count=_numel(shape), offset=self.data_start + b)
        return a.reshape(shape)

    def bits(self, name):
        """uint16 bits for 16-bit floats, uint32 for F32 (for exact comparisons)."""
        dt = self.dtype(name)
        r = self.raw(name)
        if dt in ("BF16", "F16"):
            return r.view(np.uint16)
        if dt == "F32":
            return r.view(np.uint32)
        return r

    def __getitem__(self, name):
        if name not in self.entries:
            raise KeyError(name)
        return decode(self.raw(name), self.entries[name][0])

    def f32(self, name):
        """Value widened to float32 (exact for BF16/F16)."""
        return np.asarray(self[name], dtype=np.float32)


def read_safetensors(path):
    """-> (SafeTensors mapping, metadata dict or None).  Raises SafetensorsError."""
    st = SafeTensors(path)
    return st, st.metadata


class ModelTensors(Mapping):
    """Tensors of a model directory (single file or index + shards)."""

    def __init__(self, files, where, index=None):
        self.files = files      # filename -> SafeTensors
        self.where = where      # tensor name -> filename
        self.index = index      # parsed index json or None

    def __len__(self):
        return len(self.where)

    def __iter__(self):
        return iter(self.where)

    def __contains__(self, k):
        return k in self.where

    def _st(self, name):
        return self.files[self.where[name]]

    def __getitem__(self, name):
        if name not in self.where:
            raise KeyError(name)
        return self._st(name)[name]

    def file(self, name):
        return self.where[name]

    def dtype(self, name):
        return self._st(name).dtype(name)

    def shape(self, name):
        return self._st(name).shape(name)

    def raw(self, name):
        return self._st(name).raw(name)

    def bits(self, name):
        return self._st(name).bits(name)

    def raw_bytes(self, name):
        return self._st(name).raw_bytes(name)

    def f32(self, name):
        return self._st(name).f32(name)


INDEX_NAME = "model.safetensors.index.json"


def read_model_dir(d):
    """Open a model directory; validate model.safetensors, or the index and every shard."""
    if not os.path.isdir(d):
        raise SafetensorsError("%s: not a directory" % d)
    idx_path = os.path.join(d, INDEX_NAME)
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(idx_path):
        try:
            with open(idx_path, "rb") as f:
                idx = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_dup_pairs)
        except SafetensorsError:
            raise
        except (OSError, ValueError) as e:
            raise SafetensorsError("%s: cannot parse: %s" % (idx_path, e))
        if not isinstance(idx, dict) or not isinstance(idx.get("weight_map"), dict):
            raise SafetensorsError("%s: no weight_map object" % idx_path)
        wm = idx["weight_map"]
        files = {}
        for name, fn in wm.items():
            if not isinstance(fn, str) or "/" in fn or fn in ("", ".", ".."):
                raise SafetensorsError("%s: bad shard name %r for %r" % (idx_path, fn, name))
            if fn not in files:
                p = os.path.join(d, fn)
                if not os.path.isfile(p):
                    raise SafetensorsError("%s: shard %s (for %r) does not exist" % (idx_path, fn, name))
                files[fn] = SafeTensors(p)
            if name not in files[fn]:
                raise SafetensorsError("%s: %r is mapped to %s but that shard lacks it" % (idx_path, name, fn))
        for fn, st in files.items():
            for name in st:
                if wm.get(name) != fn:
                    raise SafetensorsError("%s: shard %s holds %r which the index maps to %r" %
                                           (idx_path, fn, name, wm.get(name)))
        meta = idx.get("metadata")
        if isinstance(meta, dict) and "total_size" in meta:
            total = sum(st.nbytes(n) for fn, st in files.items() for n in st)
            if meta["total_size"] != total:
                raise SafetensorsError("%s: metadata.total_size %r != sum of tensor bytes %d" %
                                       (idx_path, meta["total_size"], total))
        return ModelTensors(files, dict(wm), idx)
    if os.path.exists(single):
        st = SafeTensors(single)
        return ModelTensors({"model.safetensors": st}, {n: "model.safetensors" for n in st})
    raise SafetensorsError("%s: neither model.safetensors nor %s" % (d, INDEX_NAME))


# ----------------------------------------------------------------------------------------
# writing

def _norm_item(name, item):
    """-> (dtype, shape tuple, bytes-like producer size, data) where data is raw np array or bytes."""
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise SafetensorsError("tensor %r: expected (dtype, data[, shape])" % name)
    dt = st_dtype(item[0])
    data = item[1]
    shape = tuple(item[2]) if len(item) == 3 else None
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if shape is None:
            bits = DTYPE_BITS[dt]
            if (len(data) * 8) % bits:
                raise SafetensorsError("tensor %r: %d bytes is not a whole number of %s" % (name, len(data), dt))
            shape = (len(data) * 8 // bits,)
        need = _numel(shape) * DTYPE_BITS[dt]
        if need != len(data) * 8:
            raise SafetensorsError("tensor %r: %d bytes for shape %s x %s" % (name, len(data), shape, dt))
        return dt, shape, data
    arr = np.asarray(data)
    if shape is None:
        shape = arr.shape
    raw = encode(arr, dt)
    if _numel(shape) != raw.size:
        raise SafetensorsError("tensor %r: shape %s does not match %d elements" % (name, shape, raw.size))
    return dt, tuple(int(s) for s in shape), raw


def build_header(specs, metadata={"format": "pt"}):
    """specs: list of (name, dtype, shape).  Returns (header bytes incl. 8-byte prefix,
    ordered list of (name, dtype, shape, begin, end))."""
    order = sorted(specs, key=lambda s: (-DTYPE_RANK[s[1]], s[0].encode("utf-8")))
    hdr = {}
    if metadata is not None:
        hdr["__metadata__"] = metadata
    pos = 0
    laid = []
    for name, dt, shape in order:
        nb = _numel(shape) * DTYPE_BITS[dt] // 8
        hdr[name] = {"dtype": dt, "shape": [int(s) for s in shape], "data_offsets": [pos, pos + nb]}
        laid.append((name, dt, tuple(shape), pos, pos + nb))
        pos += nb
    text = json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    pad = (-len(text)) % 8
    text += b" " * pad
    return struct.pack("<Q", len(text)) + text, laid


def write_safetensors(path, tensors, metadata={"format": "pt"}):
    """Write tensors (name -> (dtype, ndarray|bytes[, shape])) exactly like safetensors' save_file."""
    items = {n: _norm_item(n, t) for n, t in tensors.items()}
    head, laid = build_header([(n, v[0], v[1]) for n, v in items.items()], metadata)
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(head)
        for name, dt, shape, b, e in laid:
            data = items[name][2]
            if isinstance(data, bytes):
                f.write(data)
            else:
                f.write(memoryview(np.ascontiguousarray(data)).cast("B"))
    os.replace(tmp, path)


def write_safetensors_stream(path, specs, producer, metadata={"format": "pt"}, sparse=False):
    """Streaming writer for big files.  specs: list of (name, dtype, shape).
    producer(name, dtype, shape) yields bytes-like chunks whose total is the tensor size.
    sparse=True writes only the header and extends the file with a hole (no data)."""
    head, laid = build_header(specs, metadata)
    total = len(head) + (laid[-1][4] if laid else 0)
    with open(path, "wb") as f:
        f.write(head)
        if sparse:
            f.truncate(total)
            return total
        for name, dt, shape, b, e in laid:
            got = 0
            for chunk in producer(name, dt, shape):
                mv = memoryview(chunk).cast("B")
                f.write(mv)
                got += mv.nbytes
            if got != e - b:
                raise SafetensorsError("producer for %r gave %d bytes, expected %d" % (name, got, e - b))
    return total


# ----------------------------------------------------------------------------------------
# CLI

def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(
        description="Validate and list a safetensors file or model directory (strict header checks).",
        epilog="exit status: 0 valid, 2 invalid or unreadable")
    ap.add_argument("path", help="a .safetensors file or a model directory")
    ap.add_argument("--stats", action="store_true", help="print min/max/mean of every tensor")
    a = ap.parse_args(argv)
    try:
        if os.path.isdir(a.path):
            m = read_model_dir(a.path)
        else:
            m, meta = read_safetensors(a.path)
            print("metadata:", json.dumps(meta))
        for n in m:
            line = "%-60s %-5s %s" % (n, m.dtype(n), list(m.shape(n)))
            if a.stats:
                v = np.asarray(m[n], dtype=np.float64)
                if v.size:
                    line += "  min %.6g max %.6g mean %.6g" % (v.min(), v.max(), v.mean())
            print(line)
        print("%d tensors OK" % len(m))
    except SafetensorsError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    except BrokenPipeError:
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
