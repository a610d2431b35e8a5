#!/usr/bin/python3
"""gen_models: deterministic synthetic Hugging Face model generator (Llama or GPT-2 layout).

Examples
  gen_models.py /tmp/m/base --seed 1                         # tiny Llama, bf16, like the fixtures
  gen_models.py /tmp/m/ft --from /tmp/m/base --seed 2 --delta-scale 0.002 --sparse 0.6
  gen_models.py /tmp/m/big --size-gb 3 --shards 2            # ~3 GB, 2 shards
  gen_models.py /tmp/m/70b --hidden 8192 --intermediate 28672 --layers 80 --heads 64 \\
                --kv-heads 8 --vocab 128256 --max-shard-bytes 5000000000 --sparse-data

Values: norm weights 1 + 0.02 N(0,1), everything else 0.02 N(0,1) (GPT-2 LayerNorm biases too).
Every tensor (and every 4M-element chunk of it) has its own random stream derived from
(seed, tensor name, chunk), so the bytes do not depend on sharding or on the number of threads.
A fine-tune (--from) is base + delta-scale N(0,1), with a fraction --sparse of the delta elements
set to exactly 0, computed in float32 and rounded once (round-to-nearest-even) to the dtype.
--sparse-data writes real headers but leaves tensor data as holes (truncate to full size).
Exit status: 0 ok, 2 usage or IO error.
"""
import concurrent.futures
import json
import math
import os
import shutil
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

CHUNK = 1 << 22          # elements per random chunk
TRANSFORMERS_VERSION = "4.46.0"


class GenError(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# layouts

def llama_tensors(hidden, inter, layers, vocab, heads, kv_heads, tie):
    if hidden % heads:
        raise GenError("--hidden %d is not a multiple of --heads %d" % (hidden, heads))
    if heads % kv_heads:
        raise GenError("--heads %d is not a multiple of --kv-heads %d" % (heads, kv_heads))
    hd = hidden // heads
    kv = kv_heads * hd
    t = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = "model.layers.%d." % i
        t += [(p + "self_attn.q_proj.weight", (hidden, hidden)),
              (p + "self_attn.k_proj.weight", (kv, hidden)),
              (p + "self_attn.v_proj.weight", (kv, hidden)),
              (p + "self_attn.o_proj.weight", (hidden, hidden)),
              (p + "mlp.gate_proj.weight", (inter, hidden)),
              (p + "mlp.up_proj.weight", (inter, hidden)),
              (p + "mlp.down_proj.weight", (hidden, inter)),
              (p + "input_layernorm.weight", (hidden,)),
              (p + "post_attention_layernorm.weight", (hidden,))]
    t.append(("model.norm.weight", (hidden,)))
    if not tie:
        t.append(("lm_head.weight", (vocab, hidden)))
    return t


def gpt2_tensors(hidden, inter, layers, vocab, positions):
    t = [("transformer.wte.weight", (vocab, hidden)), ("transformer.wpe.weight", (positions, hidden))]
    for i in range(layers):
        p = "transformer.h.%d." % i
        t += [(p + "ln_1.weight", (hidden,)), (p + "ln_1.bias", (hidden,)),
              (p + "attn.c_attn.weight", (hidden, 3 * hidden)), (p + "attn.c_attn.bias", (3 * hidden,)),
              (p + "attn.c_proj.weight", (hidden, hidden)), (p + "attn.c_proj.bias", (hidden,)),
              (p + "ln_2.weight", (hidden,)), (p + "ln_2.bias", (hidden,)),
              (p + "mlp.c_fc.weight", (hidden, inter)), (p + "mlp.c_fc.bias", (inter,)),
              (p + "mlp.c_proj.weight", (inter, hidden)), (p + "mlp.c_proj.bias", (hidden,))]
    t += [("transformer.ln_f.weight", (hidden,)), ("transformer.ln_f.bias", (hidden,))]
    return t


def is_norm_weight(name):
    return name.endswith(".weight") and ("norm" in name or ".ln_" in name)


def llama_config(a, dtype_name):
    return {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 1, "head_dim": a.hidden // a.heads, "hidden_act": "silu",
        "hidden_size": a.hidden, "initializer_range": 0.02, "intermediate_size": a.intermediate,
        "max_position_embeddings": a.max_positions, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": a.heads, "num_hidden_layers": a.layers, "num_key_value_heads": a.kv_heads,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0,
        "tie_word_embeddings": bool(a.tie_embeddings), "torch_dtype": dtype_name,
        "transformers_version": TRANSFORMERS_VERSION, "use_cache": True, "vocab_size": a.vocab}


def gpt2_config(a, dtype_name):
    return {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 0, "embd_pdrop": 0.1, "eos_token_id": 1, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": a.max_positions, "n_embd": a.hidden,
        "n_head": a.heads, "n_inner": a.intermediate, "n_layer": a.layers, "n_positions": a.max_positions,
        "reorder_and_upcast_attn": False, "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True, "tie_word_embeddings": True, "torch_dtype": dtype_name,
        "transformers_version": TRANSFORMERS_VERSION, "use_cache": True, "vocab_size": a.vocab}


# ------------------------------------------------------------------------------------------------
# tokenizer (byte-level BPE, resized to the vocab)

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    m = dict(zip(bs, cs))
    # bytes 0xC0 and 0xC1 never occur in UTF-8: they come last (so vocab 256 matches the
    # conformance fixtures' tokenizer exactly)
    order = [b for b in range(256) if b not in (0xC0, 0xC1)] + [0xC0, 0xC1]
    return [chr(m[b]) for b in order]


def tokenizer_files(vocab):
    special = [{"id": 0, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True},
               {"id": 1, "content": "</s>", "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True}]
    chars = bytes_to_unicode()
    v = {"<s>": 0, "</s>": 1}
    merges = []
    for c in chars:
        if len(v) >= vocab:
            break
        v[c] = len(v)
    # beyond 258 tokens: merged tokens (pairs, then triples...), each with its merge rule
    level = list(chars)
    while len(v) < vocab:
        nxt = []
        for left in level:
            for c in chars:
                if len(v) >= vocab:
                    break
                tok = left + c
                if tok in v:
                    continue
                v[tok] = len(v)
                merges.append("%s %s" % (left, c))
                nxt.append(tok)
            if len(v) >= vocab:
                break
        level = nxt
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                     "ignore_merges": False, "vocab": v, "merges": merges}}
    tcfg = {"added_tokens_decoder": {str(s["id"]): {k: s[k] for k in ("content", "single_word", "lstrip", "rstrip",
                                                                       "normalized", "special")}
                                     for s in special},
            "bos_token": "<s>", "eos_token": "</s>", "clean_up_tokenization_spaces": False,
            "model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast"}
    smap = {"bos_token": "<s>", "eos_token": "</s>"}
    gen = {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1,
           "transformers_version": TRANSFORMERS_VERSION}
    return {"tokenizer.json": tok, "tokenizer_config.json": tcfg, "special_tokens_map.json": smap,
            "generation_config.json": gen}


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ------------------------------------------------------------------------------------------------
# data

def chunk_rng(seed, name, k, salt=0):
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, zlib.crc32(name.encode()), k, salt]))


def encode_chunk(x, dt):
    """float32 chunk (modified in place) -> bytes-like in dtype dt."""
    if dt == "BF16":
        b = x.view(np.uint32)
        nan = np.isnan(x)
        b += np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))
        out = (b >> np.uint32(16)).astype(np.uint16)
        if nan.any():
            out[nan] = 0x7FC0
        return out
    if dt == "F16":
        return x.astype(np.float16)
    return x


def synth_chunk(seed, name, k, count, dt):
    rng = chunk_rng(seed, name, k)
    x = rng.standard_normal(count, dtype=np.float32)
    x *= np.float32(0.02)
    if is_norm_weight(name):
        x += np.float32(1.0)
    return encode_chunk(x, dt)


def finetune_chunk(seed, name, k, base_flat, lo, hi, dt, scale, sparse):
    rng = chunk_rng(seed, name, k, salt=1)
    d = rng.standard_normal(hi - lo, dtype=np.float32)
    d *= np.float32(scale)
    if sparse > 0:
        d[rng.random(hi - lo, dtype=np.float32) < np.float32(sparse)] = 0
    x = np.asarray(base_flat[lo:hi], dtype=np.float32) + d
    return encode_chunk(x, dt)


class Producer:
    """Generates tensor chunks on a thread pool, in file order, with a bounded look-ahead."""

    def __init__(self, jobs, workers):
        self.jobs = jobs             # list of callables, in write order
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        self.window = 2 * workers + 2

    def run(self):
        futs = []
        it = iter(self.jobs)
        for job in it:
            futs.append(self.pool.submit(job))
            if len(futs) >= self.window:
                break
        while futs:
            r = futs.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                futs.append(self.pool.submit(nxt))
            yield r

    def close(self):
        self.pool.shutdown(wait=True)


# ------------------------------------------------------------------------------------------------
# sizing

def size_for(gb, vocab, elsize, tie):
    """Llama proportions for about gb * 1e9 bytes: head_dim 128 (64 below 8 heads), heads a
    multiple of 8 from 16 on, grouped-query attention 4:1 (8:1 from 32 heads), intermediate
    3.5x hidden (multiple of 256), layers ~ hidden/128, then the layer count adjusted."""
    target = gb * 1e9 / elsize
    best = None
    heads = 2
    while heads <= 256:
        hd = 128 if heads >= 8 else 64
        h = heads * hd
        kv = heads // 8 if heads >= 32 else (heads // 4 if heads % 4 == 0 else heads)
        inter = max(256, int(math.ceil(3.5 * h / 256.0)) * 256)
        per_layer = 2 * h * h + 2 * h * kv * hd + 3 * h * inter + 2 * h
        emb = vocab * h * (1 if tie else 2) + h
        L = max(1, round(h / 128))
        if emb + L * per_layer > target and best is not None:
            break
        best = (h, inter, heads, kv, per_layer, emb)
        heads = heads + 2 if heads < 8 else (heads + 4 if heads < 16 else heads + 8)
    h, inter, heads, kv, per_layer, emb = best
    L = max(1, int(round((target - emb) / per_layer)))
    return h, inter, L, heads, kv


# ------------------------------------------------------------------------------------------------

def shard_plan(specs, dt, shards, max_bytes):
    """specs in module order -> list of lists (tensors per shard), transformers-style."""
    sizes = [int(np.prod(s)) * stio.DTYPE_BITS[dt] // 8 for _, s in specs]
    if max_bytes:
        out, cur, cur_b = [], [], 0
        for (name, shape), sz in zip(specs, sizes):
            if cur and cur_b + sz > max_bytes:
                out.append(cur)
                cur, cur_b = [], 0
            cur.append((name, shape))
            cur_b += sz
        if cur:
            out.append(cur)
        return out
    if shards <= 1:
        return [list(specs)]
    total = sum(sizes)
    groups = [[] for _ in range(shards)]
    pos = 0
    for (name, shape), sz in zip(specs, sizes):
        k = min(shards - 1, (pos * shards) // max(total, 1))
        groups[k].append((name, shape))
        pos += sz
    out = [g for g in groups if g]
    if len(out) != shards:
        print("gen_models: warning: %d shards requested, %d non-empty" % (shards, len(out)), file=sys.stderr)
    return out


def generate(a):
    dt_name = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}[a.dtype] if a.dtype else None
    base = None
    if a.from_dir:
        try:
            base = stio.read_model_dir(a.from_dir)
            with open(os.path.join(a.from_dir, "config.json")) as f:
                cfg = json.load(f)
        except (stio.SafetensorsError, OSError, ValueError) as e:
            raise GenError("--from %s: %s" % (a.from_dir, e))
        names = list(base)
        # module order: keep the base's index order if any, else a natural sort
        specs = [(n, tuple(base.shape(n))) for n in sorted(names, key=natural_key)]
        if dt_name is None:
            dts = {base.dtype(n) for n in names}
            dt = dts.pop() if len(dts) == 1 else "BF16"
            dt_name = stio.ST_TO_NAME[dt]
        dt = stio.st_dtype(dt_name)
        for key in ("torch_dtype", "dtype"):
            if key in cfg:
                cfg[key] = dt_name
        if "torch_dtype" not in cfg and "dtype" not in cfg:
            cfg["torch_dtype"] = dt_name
        extra_files = {}
    else:
        dt_name = dt_name or "bfloat16"
        dt = stio.st_dtype(dt_name)
        if a.size_gb:
            h, inter, L, heads, kv = size_for(a.size_gb, a.vocab, stio.DTYPE_BITS[dt] // 8,
                                              a.tie_embeddings or a.arch == "gpt2")
            a.hidden, a.intermediate, a.layers, a.heads, a.kv_heads = h, inter, L, heads, kv
            if a.arch == "gpt2":
                a.kv_heads = a.heads
            print("gen_models: --size-gb %g -> hidden %d, intermediate %d, layers %d, heads %d, kv-heads %d"
                  % (a.size_gb, h, inter, L, heads, a.kv_heads))
        if a.arch == "llama":
            specs = llama_tensors(a.hidden, a.intermediate, a.layers, a.vocab, a.heads, a.kv_heads, a.tie_embeddings)
            cfg = llama_config(a, dt_name)
        else:
            if a.hidden % a.heads:
                raise GenError("--hidden %d is not a multiple of --heads %d" % (a.hidden, a.heads))
            specs = gpt2_tensors(a.hidden, a.intermediate, a.layers, a.vocab, a.max_positions)
            cfg = gpt2_config(a, dt_name)
        extra_files = tokenizer_files(a.vocab)
    os.makedirs(a.outdir, exist_ok=True)
    groups = shard_plan(specs, dt, a.shards, a.max_shard_bytes)
    nsh = len(groups)
    fnames = ["model.safetensors"] if nsh == 1 else \
        ["model-%05d-of-%05d.safetensors" % (i + 1, nsh) for i in range(nsh)]
    total_bytes = 0
    weight_map = {}
    workers = a.threads or min(8, os.cpu_count() or 1)
    for fn, group in zip(fnames, groups):
        st_specs = [(n, dt, s) for n, s in group]
        head, laid = stio.build_header(st_specs)
        jobs = []
        for name, _dt, shape, b, e in laid:
            numel = int(np.prod(shape))
            if base is not None:
                flat = np.asarray(base.raw(name)).reshape(-1)
                if base.dtype(name) == "BF16":
                    flat = stio.bf16_to_f32(flat)
            for k in range(0, max(numel, 1), CHUNK):
                cnt = min(CHUNK, numel - k)
                if cnt <= 0:
                    break
                if base is None:
                    jobs.append(lambda s=a.seed, n=name, kk=k // CHUNK, c=cnt: synth_chunk(s, n, kk, c, dt))
                else:
                    jobs.append(lambda s=a.seed, n=name, kk=k // CHUNK, fl=flat, lo=k, hi=k + cnt:
                                finetune_chunk(s, n, kk, fl, lo, hi, dt, a.delta_scale, a.sparse))
            weight_map[name] = fn
            total_bytes += e - b
        path = os.path.join(a.outdir, fn)
        if a.sparse_data:
            stio.write_safetensors_stream(path, st_specs, None, sparse=True)
            continue
        prod = Producer(jobs, workers)
        try:
            gen = prod.run()

            def producer(name, _dt, shape, gen=gen):
                numel = int(np.prod(shape))
                for _ in range(0, numel, CHUNK):
                    yield next(gen)
            stio.write_safetensors_stream(path, st_specs, producer)
        finally:
            prod.close()
    if nsh > 1:
        idx = {"metadata": {"total_size": total_bytes},
               "weight_map": {k: weight_map[k] for k in sorted(weight_map)}}
        write_json(os.path.join(a.outdir, "model.safetensors.index.json"), idx)
    write_json(os.path.join(a.outdir, "config.json"), dict(sorted(cfg.items())))
    if base is not None:
        for fn in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                   "tokenizer.model"):
            src = os.path.join(a.from_dir, fn)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(a.outdir, fn))
    for fn, obj in extra_files.items():
        write_json(os.path.join(a.outdir, fn), obj)
    return len(specs), nsh, total_bytes


def natural_key(name):
    import re
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(
        description="Deterministic synthetic Hugging Face model generator (Llama / GPT-2 layouts).",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--intermediate", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--max-positions", type=int, default=512,
                    help="max_position_embeddings / n_positions (GPT-2 wpe rows); default 512")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                    help="default bfloat16 (with --from: the base's dtype)")
    ap.add_argument("--seed", type=int, default=0)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--shards", type=int, default=1, help="split into N shards of about equal size")
    g.add_argument("--max-shard-bytes", type=int, default=0,
                   help="greedy sharding: start a new shard when the next tensor would pass B bytes")
    ap.add_argument("--from", dest="from_dir", default=None, help="make a fine-tune of this model directory")
    ap.add_argument("--delta-scale", type=float, default=0.002, help="std of the fine-tune delta (default 0.002)")
    ap.add_argument("--sparse", type=float, default=0.0,
                    help="fraction of fine-tune delta elements set to exactly 0 (default 0)")
    ap.add_argument("--tie-embeddings", action="store_true", help="no lm_head (tie_word_embeddings true)")
    ap.add_argument("--sparse-data", action="store_true",
                    help="write headers only; tensor data are holes (file truncated to its full size)")
    ap.add_argument("--size-gb", type=float, default=None,
                    help="pick hidden/intermediate/layers/heads for about X GB (Llama proportions)")
    ap.add_argument("--threads", type=int, default=0, help="generator threads (default min(8, CPUs))")
    a = ap.parse_args(argv)
    a.outdir = a.outdir
    try:
        for k in ("hidden", "intermediate", "layers", "vocab", "heads", "kv_heads", "max_positions"):
            if getattr(a, k) <= 0:
                raise GenError("--%s must be positive" % k.replace("_", "-"))
        if not (0 <= a.sparse < 1):
            raise GenError("--sparse must be in [0, 1)")
        if a.shards < 1 or a.max_shard_bytes < 0:
            raise GenError("--shards must be >= 1 and --max-shard-bytes >= 0")
        if a.from_dir and (a.sparse_data or a.size_gb):
            raise GenError("--from cannot be combined with --sparse-data or --size-gb")
        if a.size_gb is not None and a.size_gb <= 0:
            raise GenError("--size-gb must be positive")
        n, nsh, total = generate(a)
    except (GenError, stio.SafetensorsError, OSError) as e:
        print("gen_models: error: %s" % e, file=sys.stderr)
        return 2
    print("gen_models: %s: %d tensors, %d shard(s), %d data bytes%s" %
          (a.outdir, n, nsh, total, " (sparse)" if a.sparse_data else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
