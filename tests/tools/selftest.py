#!/usr/bin/python3
"""selftest: checks of the test helpers themselves (stio, oracle, conformance_check, gen_models).

usage: selftest.py [--quick] [--conformance DIR] [-v]
  --conformance DIR   tests/conformance (default: ../conformance next to this file)
  --quick             skip the slower random-method checks
Prints one line per check; exit 0 when all pass, 1 when any fails, 2 on a usage / IO error.
"""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import stio  # noqa: E402
import oracle  # noqa: E402
import conformance_check  # noqa: E402
import gen_models  # noqa: E402

PY = "/usr/bin/python3"
DETERMINISTIC = ["linear", "slerp_gradient", "nuslerp", "multislerp", "karcher", "task_arithmetic", "ties",
                 "ties_count", "breadcrumbs", "breadcrumbs_ties", "sce", "model_stock", "nearswap", "ram",
                 "passthrough_frankenmerge"]
RANDOM = ["dare_ties", "della"]


class T:
    def __init__(self, verbose):
        self.failed = []
        self.n = 0
        self.verbose = verbose

    def check(self, name, cond, detail=""):
        self.n += 1
        print("%s %s%s" % ("ok  " if cond else "FAIL", name, (": " + detail) if detail else ""))
        if not cond:
            self.failed.append(name)
        sys.stdout.flush()


def quiet(fn, *args):
    """run fn(*args) with stdout captured -> (return value, captured text)"""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rv = fn(*args)
    return rv, buf.getvalue()


def run_check(case, got, conf):
    return quiet(conformance_check.main, [case, got, os.path.join(conf, "expected", case),
                                          os.path.join(conf, "cases", case + ".yaml"), conf])


def rewrite_model(src_dir, dst_dir, edit):
    """copy a model dir; edit(name, dtype, raw ndarray copy) -> raw (or None to drop)."""
    shutil.copytree(src_dir, dst_dir)
    m = stio.read_model_dir(src_dir)
    files = {}
    for name in m:
        raw = np.array(m.raw(name))
        new = edit(name, m.dtype(name), raw)
        if new is not None:
            files.setdefault(m.file(name), {})[name] = (m.dtype(name), new)
    for fn in list(m.files):
        os.remove(os.path.join(dst_dir, fn))
    for fn, tensors in files.items():
        stio.write_safetensors(os.path.join(dst_dir, fn), tensors)


# ------------------------------------------------------------------------------------------------

def test_stio(t, conf, tmp):
    ref = os.path.join(conf, "expected", "linear", "model.safetensors")
    st, meta = stio.read_safetensors(ref)
    out = os.path.join(tmp, "rt.safetensors")
    stio.write_safetensors(out, {n: (st.dtype(n), st.raw(n)) for n in st}, meta)
    same_raw = open(out, "rb").read() == open(ref, "rb").read()
    stio.write_safetensors(out, {n: (st.dtype(n), st[n]) for n in st})
    same_f32 = open(out, "rb").read() == open(ref, "rb").read()
    t.check("stio: writer reproduces expected/linear/model.safetensors byte for byte (raw bits)", same_raw)
    t.check("stio: writer reproduces it from float32 values (bf16 RNE)", same_f32)
    allsame = []
    for root, dirs, fns in os.walk(conf):
        for fn in fns:
            if fn.endswith(".safetensors"):
                p = os.path.join(root, fn)
                s, md = stio.read_safetensors(p)
                stio.write_safetensors(out, {n: (s.dtype(n), s.raw(n)) for n in s}, md)
                allsame.append((p, open(out, "rb").read() == open(p, "rb").read()))
    bad = [p for p, ok in allsame if not ok]
    t.check("stio: all %d conformance .safetensors files re-written byte for byte" % len(allsame), not bad,
            ", ".join(bad))
    # numeric helpers
    x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -(1.0 + 2 ** -8), np.nan, -np.nan, np.inf,
                  np.finfo(np.float32).max, 1e-45, -0.0], dtype=np.float32)
    b = stio.f32_to_bf16_rne(x)
    want = [0x3F80, 0x3F80, 0x3F82, 0xBF80, 0x7FC0, 0x7FC0, 0x7F80, 0x7F80, 0x0000, 0x8000]
    t.check("stio: f32->bf16 RNE (ties to even, NaN -> 0x7FC0, overflow -> inf)", list(b) == want,
            " ".join("%04x" % v for v in b))
    t.check("stio: bf16->f32 exact", np.array_equal(stio.bf16_to_f32(np.array([0x3F80, 0xC000], np.uint16)),
                                                   np.array([1.0, -2.0], np.float32)))
    d = stio.ulp_distance(np.array([0x3F80, 0x8001, 0x0001, 0x7FC0], np.uint16),
                          np.array([0x3F82, 0x0001, 0x0001, 0x7FC1], np.uint16), "BF16")
    t.check("stio: ulp distance across signs / NaN", list(d) == [2, 2, 0, 0], str(list(d)))
    # header validation
    good = open(ref, "rb").read()
    n = int.from_bytes(good[:8], "little")
    hdr = json.loads(good[8:8 + n])

    def make(hdict, data_len=None, raw_header=None, prefix=None):
        h = raw_header if raw_header is not None else json.dumps(hdict, separators=(",", ":")).encode()
        h += b" " * ((-len(h)) % 8)
        body = (prefix if prefix is not None else len(h).to_bytes(8, "little")) + h
        total = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in hdict.items() if k != "__metadata__") \
            if hdict else 0
        return body + b"\0" * (total if data_len is None else data_len)

    def bad_offsets(h):
        h = json.loads(json.dumps(h))
        k = [k for k in h if k != "__metadata__"][1]
        h[k]["data_offsets"][0] += 2
        h[k]["data_offsets"][1] += 2
        return h

    def bad_shape(h):
        h = json.loads(json.dumps(h))
        k = [k for k in h if k != "__metadata__"][0]
        h[k]["shape"] = [h[k]["shape"][0], h[k]["shape"][1] + 1]
        return h

    def bad_dtype(h):
        h = json.loads(json.dumps(h))
        k = [k for k in h if k != "__metadata__"][0]
        h[k]["dtype"] = "X99"
        return h

    cases = {
        "truncated data": make(hdr, data_len=100),
        "trailing bytes": make(hdr) + b"\0\0",
        "length prefix past EOF": make(hdr, prefix=(10 ** 9).to_bytes(8, "little")),
        "not JSON": make(hdr, raw_header=b"{not json"),
        "duplicate key": make(hdr, raw_header=b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                              b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'),
        "non-contiguous offsets": make(bad_offsets(hdr)),
        "size mismatch for shape": make(bad_shape(hdr)),
        "unknown dtype": make(bad_dtype(hdr)),
        "file shorter than 8 bytes": b"\1\0\0",
    }
    rejected = []
    for what, blob in cases.items():
        p = os.path.join(tmp, "bad.safetensors")
        with open(p, "wb") as f:
            f.write(blob)
        try:
            stio.read_safetensors(p)
            rejected.append((what, False))
        except stio.SafetensorsError:
            rejected.append((what, True))
    t.check("stio: rejects malformed files (%s)" % ", ".join(w for w, _ in rejected),
            all(ok for _, ok in rejected), ", ".join(w for w, ok in rejected if not ok))
    # model dir with index
    m = stio.read_model_dir(os.path.join(conf, "fixtures", "ft_a"))
    t.check("stio: read_model_dir over index + 2 shards", len(m) == 39 and len(m.files) == 2)


def test_oracle(t, conf, tmp):
    cwd = os.getcwd()
    for case in DETERMINISTIC:
        out = os.path.join(tmp, "oracle_" + case)
        try:
            os.chdir(conf)
            rv, _ = quiet(oracle.main, [os.path.join("cases", case + ".yaml"), out])
        finally:
            os.chdir(cwd)
        if rv != 0:
            t.check("oracle reproduces %s" % case, False, "oracle exit %d" % rv)
            continue
        rc, text = run_check(case, out, conf)
        t.check("oracle reproduces expected/%s" % case, rc == 0, text.strip().splitlines()[-1] if text else "")
    # error paths
    bad = os.path.join(tmp, "bad.yaml")
    with open(bad, "w") as f:
        f.write("models:\n  - model: fixtures/ft_a\n    parameters: {weight: 1}\n"
                "  - model: fixtures/other_arch\n    parameters: {weight: 1}\nmerge_method: linear\n")
    try:
        oracle.plan_recipe(bad, conf)
        ok = False
        msg = "no error"
    except oracle.RecipeError as e:
        ok = "same number of layers" in str(e)
        msg = str(e)
    t.check("oracle: 4-layer + 6-layer slice fails clearly", ok, msg)
    # parameter evaluation examples from mergekit-spec 1.4 (40 layers, [0,0.5,0.3,0.7,1])
    g = [0, 0.5, 0.3, 0.7, 1]
    vals = [oracle.evaluate_setting("x", g, j / 39) for j in (1, 10, 20, 39)]
    t.check("oracle: gradient evaluation matches the spec's worked example",
            abs(vals[1] - 0.4948717948717949) < 1e-15 and abs(vals[2] - 0.32051282051282043) < 1e-15 and
            vals[3] == 1.0, str(vals))
    cond = [{"filter": "self_attn", "value": 0.3}, {"value": 0.5}]
    t.check("oracle: conditional parameters (first matching filter wins)",
            oracle.evaluate_setting("model.layers.0.self_attn.q_proj.weight", cond, 0) == 0.3 and
            oracle.evaluate_setting("model.layers.0.mlp.up_proj.weight", cond, 0) == 0.5)
    # other methods run and produce sane outputs on the fixtures
    extra = {
        "dare_linear": "models:\n  - model: fixtures/ft_a\n    parameters: {weight: 0.6, density: 0.5}\n"
                       "  - model: fixtures/ft_b\n    parameters: {weight: 0.4, density: 0.5}\n"
                       "base_model: fixtures/base\nmerge_method: dare_linear\ndtype: bfloat16\n",
        "della_linear": "models:\n  - model: fixtures/ft_a\n    parameters: {weight: 0.6, density: 0.5}\n"
                        "  - model: fixtures/ft_b\n    parameters: {weight: 0.4, density: 0.5}\n"
                        "base_model: fixtures/base\nmerge_method: della_linear\ndtype: bfloat16\n",
        "ramplus_tl": "models:\n  - model: fixtures/ft_a\n  - model: fixtures/ft_b\n  - model: fixtures/ft_c\n"
                      "base_model: fixtures/base\nmerge_method: ramplus_tl\nparameters: {epsilon: 0.0015}\n"
                      "dtype: bfloat16\n",
        "arcee_fusion": "models:\n  - model: fixtures/ft_a\nbase_model: fixtures/base\n"
                        "merge_method: arcee_fusion\ndtype: bfloat16\n",
        "model_stock_fw": "models:\n  - model: fixtures/ft_a\n  - model: fixtures/ft_b\n  - model: fixtures/ft_c\n"
                          "base_model: fixtures/base\nmerge_method: model_stock\nparameters: {filter_wise: true}\n"
                          "dtype: bfloat16\n",
        "nuslerp_flat": "models:\n  - model: fixtures/ft_a\n    parameters: {weight: 0.5}\n"
                        "  - model: fixtures/ft_b\n    parameters: {weight: 0.5}\n"
                        "merge_method: nuslerp\ndtype: bfloat16\n",
        "breadcrumbs_default_gamma": "models:\n  - model: fixtures/ft_a\n    parameters: {weight: 1, density: 0.9}\n"
                                     "base_model: fixtures/base\nmerge_method: breadcrumbs\ndtype: bfloat16\n",
    }
    results = {}
    for name, text in extra.items():
        p = os.path.join(tmp, name + ".yaml")
        with open(p, "w") as f:
            f.write(text)
        try:
            res = oracle.merge_full(p, conf, seed=0)
            results[name] = res
            finite = all(np.isfinite(a).all() for a in res.tensors.values())
            t.check("oracle: %s runs (%d tensors, dtype %s)" % (name, len(res.tensors), res.out_dtype),
                    finite and len(res.tensors) == 39)
        except Exception as e:  # noqa: BLE001
            t.check("oracle: %s runs" % name, False, repr(e))
    if "ramplus_tl" in results:
        t.check("oracle: ramplus_tl writes float32 without out_dtype", results["ramplus_tl"].out_dtype == "F32")
    if "arcee_fusion" in results:
        t.check("oracle: arcee_fusion writes float32 without out_dtype", results["arcee_fusion"].out_dtype == "F32")
    if "breadcrumbs_default_gamma" in results:
        r = results["breadcrumbs_default_gamma"]
        base = stio.read_model_dir(os.path.join(conf, "fixtures", "base"))
        n = "model.layers.0.input_layernorm.weight"     # 32 elements: gamma 0.01 -> n_top 0 -> all zero
        q = "model.layers.0.self_attn.q_proj.weight"    # 1024 elements: n_top 10
        t.check("oracle: breadcrumbs n_top == 0 quirk zeroes the task vector",
                np.array_equal(r.tensors[n], base.f32(n)) and not np.array_equal(r.tensors[q], base.f32(q)))


def test_check(t, conf, tmp, quick):
    exp = os.path.join(conf, "expected")
    for case in DETERMINISTIC + RANDOM:
        rc, text = run_check(case, os.path.join(exp, case), conf)
        t.check("conformance_check: expected/%s vs itself passes" % case, rc == 0,
                text.strip().splitlines()[-1] if text else "")

    def bump(k):
        def edit(name, dt, raw):
            if name == "model.layers.1.mlp.up_proj.weight":
                bits = raw.reshape(-1).view(np.uint32 if dt == "F32" else np.uint16)
                bits[7] += k            # k units in the last place (same sign, no exponent wrap here)
            return raw
        return edit

    for case, k in (("linear", 2), ("ties", 1), ("task_arithmetic", 2)):
        d = os.path.join(tmp, "bump_%s_%d" % (case, k))
        rewrite_model(os.path.join(exp, case), d, bump(k))
        rc, text = run_check(case, d, conf)
        t.check("conformance_check: %s with one element bumped by %d ulp fails" % (case, k), rc == 1,
                text.strip().splitlines()[-1])
    d = os.path.join(tmp, "bump1_linear")
    rewrite_model(os.path.join(exp, "linear"), d, bump(1))
    rc, text = run_check("linear", d, conf)
    t.check("conformance_check: linear with one element off by 1 ulp passes", rc == 0,
            text.strip().splitlines()[-1])
    # tie-ambiguous elements: another candidate passes, a non-candidate fails
    ties_st, _ = stio.read_safetensors(os.path.join(exp, "ties", ".oracle", "ties.safetensors"))
    tname = "model.embed_tokens.weight"
    idx = np.asarray(ties_st.raw(tname + "::index")).ravel()
    cand = np.asarray(ties_st.raw(tname + "::candidates")).reshape(idx.size, -1)
    expm = stio.read_model_dir(os.path.join(exp, "ties"))
    erow = np.asarray(expm.raw(tname)).ravel()
    j = next((j for j in range(idx.size) if len(set(cand[j].tolist()) - {int(erow[idx[j]])}) > 0), None)
    if j is not None:
        def set_tie_elem(v):
            # rewrite callback: element idx[j] of tname becomes v
            def edit(name, dt, raw):
                if name == tname:
                    raw.reshape(-1)[idx[j]] = v
                return raw
            return edit

        alt = [c for c in cand[j] if c != erow[idx[j]]][0]
        d = os.path.join(tmp, "ties_alt")
        rewrite_model(os.path.join(exp, "ties"), d, set_tie_elem(alt))
        rc, text = run_check("ties", d, conf)
        t.check("conformance_check: ties with another valid tie candidate passes", rc == 0,
                text.strip().splitlines()[-1])
        bad_v = int(max(cand[j].max(), erow[idx[j]])) + 5
        d = os.path.join(tmp, "ties_badcand")
        rewrite_model(os.path.join(exp, "ties"), d, set_tie_elem(bad_v))
        rc, text = run_check("ties", d, conf)
        t.check("conformance_check: ties with a non-candidate at a tie index fails", rc == 1,
                text.strip().splitlines()[-1])
    # layout problems
    d = os.path.join(tmp, "cfg")
    shutil.copytree(os.path.join(exp, "linear"), d)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["transformers_version"] = "9.9.9"
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    rc, text = run_check("linear", d, conf)
    t.check("conformance_check: config.json re-serialized with another transformers_version passes", rc == 0,
            text.strip().splitlines()[-1])
    cfg["num_hidden_layers"] = 5
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    rc, text = run_check("linear", d, conf)
    t.check("conformance_check: config.json with another num_hidden_layers fails", rc == 1)
    d = os.path.join(tmp, "tok")
    shutil.copytree(os.path.join(exp, "linear"), d)
    with open(os.path.join(d, "tokenizer_config.json"), "ab") as f:
        f.write(b"\n")
    rc, text = run_check("linear", d, conf)
    t.check("conformance_check: tokenizer_config.json differing by one byte fails", rc == 1)
    d = os.path.join(tmp, "missing")
    rewrite_model(os.path.join(exp, "linear"), d, lambda n, dt, r: None if n == "model.norm.weight" else r)
    rc, text = run_check("linear", d, conf)
    t.check("conformance_check: a missing tensor fails", rc == 1)
    d = os.path.join(tmp, "dtype")
    shutil.copytree(os.path.join(exp, "linear"), d)
    m = stio.read_model_dir(os.path.join(exp, "linear"))
    stio.write_safetensors(os.path.join(d, "model.safetensors"),
                           {n: ("F32" if n == "lm_head.weight" else m.dtype(n), m[n]) for n in m})
    rc, text = run_check("linear", d, conf)
    t.check("conformance_check: a tensor with another dtype fails", rc == 1)
    d = os.path.join(tmp, "sharded")
    shutil.copytree(os.path.join(exp, "linear"), d)
    os.remove(os.path.join(d, "model.safetensors"))
    names = sorted(m)
    half = len(names) // 2
    wm = {}
    for k, part in enumerate((names[:half], names[half:])):
        fn = "model-%05d-of-00002.safetensors" % (k + 1)
        stio.write_safetensors(os.path.join(d, fn), {n: (m.dtype(n), m.raw(n)) for n in part})
        wm.update({n: fn for n in part})
    json.dump({"metadata": {"total_size": sum(m.raw(n).nbytes for n in names)}, "weight_map": wm},
              open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)
    rc, text = run_check("linear", d, conf)
    t.check("conformance_check: the same tensors in 2 shards + index pass", rc == 0,
            text.strip().splitlines()[-1])
    with open(os.path.join(d, "model-00002-of-00002.safetensors"), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(d, "model-00002-of-00002.safetensors")) - 2)
    rc, text = run_check("linear", d, conf)
    t.check("conformance_check: a truncated shard fails", rc == 1)
    # CLI exit codes
    p = subprocess.run([PY, os.path.join(HERE, "conformance_check.py"), "linear", os.path.join(exp, "linear"),
                        os.path.join(tmp, "nonexistent"), os.path.join(conf, "cases", "linear.yaml"), conf],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t.check("conformance_check: missing EXPECTED_DIR exits 2", p.returncode == 2)
    if quick:
        return
    # random methods: oracle outputs (numpy RNG) pass; wrong rescale / density / consensus fail
    cwd = os.getcwd()

    def oracle_variant(case, seed, patch=None):
        saved = {}
        if patch:
            for k, v in patch.items():
                saved[k] = getattr(oracle, k)
                setattr(oracle, k, v)
        try:
            os.chdir(conf)
            res = oracle.merge_full(os.path.join("cases", case + ".yaml"), None, seed)
        finally:
            os.chdir(cwd)
            for k, v in saved.items():
                setattr(oracle, k, v)
        out = os.path.join(tmp, "rand_%s_%d_%s" % (case, seed, "x" if patch else "ok"))
        if os.path.exists(out):
            shutil.rmtree(out)
        oracle.write_output(res, out)
        return out

    for case in RANDOM:
        for seed in (1, 2):
            out = oracle_variant(case, seed)
            rc, text = run_check(case, out, conf)
            t.check("conformance_check: oracle %s output (seed %d, numpy masks) passes the structural check"
                    % (case, seed), rc == 0, text.strip().splitlines()[-1])
    density_of = {}
    orig_random, orig_della = oracle.sparsify_random, oracle.sparsify_della

    def rnd(x, d, r, rng):
        density_of["d"] = d
        return orig_random(x, d, r, rng)

    def dla(x, d, e, r, rng):
        density_of["d"] = d
        return orig_della(x, d, e, r, rng)

    variants = [
        ("rescale 1/density instead of the L1 ratio", "dare_ties",
         {"sparsify_random": rnd, "l1_rescale": lambda x, m: m * np.float32(1.0 / density_of["d"])}),
        ("no rescale", "dare_ties", {"l1_rescale": lambda x, m: m}),
        ("masks drawn with density + 0.1", "dare_ties",
         {"sparsify_random": lambda x, d, r, rng: orig_random(x, min(d + 0.1, 0.99), r, rng)}),
        ("rescale 1/density instead of the L1 ratio", "della",
         {"sparsify_della": dla, "l1_rescale": lambda x, m: m * np.float32(1.0 / density_of["d"])}),
        ("uniform keep probability instead of rank-based", "della",
         {"sparsify_della": lambda x, d, e, r, rng: orig_della(x, d, 1e-9, r, rng)}),
    ]
    for what, case, patch in variants:
        out = oracle_variant(case, 1, patch)
        rc, text = run_check(case, out, conf)
        t.check("conformance_check: %s output with %s fails" % (case, what), rc == 1,
                text.strip().splitlines()[-1])


def test_gen(t, conf, tmp):
    a = os.path.join(tmp, "gen_a")
    b = os.path.join(tmp, "gen_b")
    rv1, _ = quiet(gen_models.main, [a, "--seed", "7", "--shards", "2", "--threads", "1"])
    rv2, _ = quiet(gen_models.main, [b, "--seed", "7", "--shards", "2", "--threads", "3"])
    same = rv1 == 0 and rv2 == 0 and all(
        open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read() for f in os.listdir(a))
    t.check("gen_models: same seed -> identical files (1 vs 3 threads)", same)
    m = stio.read_model_dir(a)
    t.check("gen_models: Llama layout (39 tensors, GQA k_proj [16,32], 2 shards + index)",
            len(m) == 39 and tuple(m.shape("model.layers.0.self_attn.k_proj.weight")) == (16, 32) and
            len(m.files) == 2)
    fx = os.path.join(conf, "fixtures", "base")
    same_tok = all(open(os.path.join(a, f), "rb").read() == open(os.path.join(fx, f), "rb").read()
                   for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "generation_config.json"))
    t.check("gen_models: vocab-256 tokenizer/generation files equal the fixtures'", same_tok)
    norm = m.f32("model.norm.weight")
    w = m.f32("model.layers.0.mlp.up_proj.weight")
    t.check("gen_models: norm weights ~1, other weights ~N(0, 0.02)",
            abs(float(norm.mean()) - 1) < 0.02 and abs(float(w.std()) - 0.02) < 0.002)
    f = os.path.join(tmp, "gen_ft")
    rv, _ = quiet(gen_models.main, [f, "--from", a, "--seed", "8", "--sparse", "0.6"])
    fm = stio.read_model_dir(f)
    dlt = fm.f32("model.layers.0.mlp.up_proj.weight") - w
    zero = float(np.mean(dlt == 0))
    t.check("gen_models: --from fine-tune, delta std ~0.002, >= 60%% exact zeros (got %.2f)" % zero,
            rv == 0 and 0.6 <= zero < 0.75 and abs(float(dlt[dlt != 0].std()) - 0.002) < 0.0005)
    g = os.path.join(tmp, "gen_gpt2")
    rv, _ = quiet(gen_models.main, [g, "--arch", "gpt2", "--dtype", "float16", "--max-shard-bytes", "30000"])
    gm = stio.read_model_dir(g)
    cfg = json.load(open(os.path.join(g, "config.json")))
    t.check("gen_models: gpt2 layout (F16, c_attn [32,96], several shards, n_layer 4)",
            rv == 0 and gm.dtype("transformer.h.0.attn.c_attn.weight") == "F16" and
            tuple(gm.shape("transformer.h.0.attn.c_attn.weight")) == (32, 96) and len(gm.files) > 1 and
            cfg["n_layer"] == 4 and "lm_head.weight" not in gm)
    s = os.path.join(tmp, "gen_sparse")
    rv, _ = quiet(gen_models.main, [s, "--hidden", "1024", "--intermediate", "4096", "--layers", "8",
                                    "--heads", "8", "--kv-heads", "2", "--vocab", "32000", "--sparse-data",
                                    "--max-shard-bytes", "100000000"])
    sm = stio.read_model_dir(s)
    blocks = sum(os.stat(os.path.join(s, fn)).st_blocks for fn in sm.files)
    size = sum(os.path.getsize(os.path.join(s, fn)) for fn in sm.files)
    t.check("gen_models: --sparse-data writes valid headers over holes (%d MB apparent, %d KB on disk)"
            % (size >> 20, blocks // 2), rv == 0 and blocks * 512 < size // 50)
    tie = os.path.join(tmp, "gen_tie")
    rv, _ = quiet(gen_models.main, [tie, "--tie-embeddings", "--vocab", "1000"])
    tm = stio.read_model_dir(tie)
    tok = json.load(open(os.path.join(tie, "tokenizer.json")))
    t.check("gen_models: --tie-embeddings (no lm_head) and a 1000-token BPE with merges",
            rv == 0 and "lm_head.weight" not in tm and len(tok["model"]["vocab"]) == 1000 and
            len(tok["model"]["merges"]) == 1000 - 258)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="Self-test of tests/tools (stio, oracle, conformance_check, "
                                             "gen_models). Exit 0 all pass, 1 a check failed, 2 usage error.")
    ap.add_argument("--conformance", default=os.path.join(os.path.dirname(HERE), "conformance"),
                    help="the tests/conformance directory")
    ap.add_argument("--quick", action="store_true", help="skip the slower random-method checks")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    conf = os.path.abspath(a.conformance)
    if not os.path.isdir(os.path.join(conf, "expected")):
        print("selftest: %s has no expected/" % conf, file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="blendfs-tools-selftest-")
    t = T(a.verbose)
    try:
        test_stio(t, conf, tmp)
        test_gen(t, conf, tmp)
        test_oracle(t, conf, tmp)
        test_check(t, conf, tmp, a.quick)
    finally:
        if a.keep:
            print("selftest: kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("selftest: %d checks, %d failed%s" % (t.n, len(t.failed), (": " + "; ".join(t.failed)) if t.failed else ""))
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
