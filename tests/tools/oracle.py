#!/usr/bin/python3
"""oracle: an independent numpy implementation of mergekit recipe semantics and merge methods.

Written from /work/shared/docs/mergekit-spec.md (sections 1 and 2), following blendfs's numeric
contract: every input is widened exactly to float32, every method computes in float32 (following
mergekit's order of operations as the spec describes it), and the result is rounded ONCE
(round-to-nearest-even) to the output dtype: out_dtype if set, else float32 for
ramplus_tl / arcee_fusion, else dtype, else the stored dtype (of the base model if any, else of
the first source).

CLI:   oracle.py RECIPE.yaml OUTDIR [--seed N] [--models-dir DIR]
       writes OUTDIR/model.safetensors, config.json and the donor's tokenizer files +
       generation_config.json (copied byte for byte, as mergekit does).
Module:
       merge(recipe_path, models_dir=None, seed=0) -> (dict name -> float32 array, out_dtype)
       merge_full(...) -> MergeResult (tensors, out_dtype, config dict, donor dir, plan)
       plan_recipe(recipe_path, models_dir=None) -> Plan (used by conformance_check.py)

Random methods (dare_*, della*) draw their masks from numpy.random.default_rng(seed) in a fixed
order (output tensor names sorted, then models in gather order).  They will not match blendfs or
mergekit bit for bit; use them for structural checks only.
"""
import json
import math
import os
import re
import shutil
import sys

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

F32 = np.float32


class RecipeError(Exception):
    pass


REQUIRED = object()

GTA_VARIANTS = {
    # name: (consensus, sparsification, normalize default, rescale default)
    "task_arithmetic": (None, None, False, False),
    "ties": ("sum", "magnitude", True, False),
    "dare_ties": ("sum", "random", False, True),
    "dare_linear": (None, "random", False, True),
    "breadcrumbs": (None, "magnitude_outliers", False, False),
    "breadcrumbs_ties": ("sum", "magnitude_outliers", False, False),
    "della": ("sum", "della_magprune", True, True),
    "della_linear": (None, "della_magprune", False, True),
}


def method_params(method):
    """-> (global defaults, per-model defaults)"""
    if method in GTA_VARIANTS:
        cons, sp, norm, resc = GTA_VARIANTS[method]
        g = {"int8_mask": False, "normalize": norm, "rescale": resc, "lambda": 1.0}
        if cons is not None:
            g["consensus_method"] = cons
        pm = {"weight": REQUIRED, "density": 1.0}
        if sp == "magnitude_outliers":
            pm["gamma"] = 0.01
        if sp == "della_magprune":
            pm["epsilon"] = 0.15
        return g, pm
    table = {
        "linear": ({"normalize": True}, {"weight": REQUIRED}),
        "slerp": ({"t": REQUIRED}, {}),
        "nuslerp": ({"nuslerp_row_wise": False, "nuslerp_flatten": True}, {"weight": REQUIRED}),
        "multislerp": ({"normalize_weights": True, "eps": 1e-8}, {"weight": REQUIRED}),
        "karcher": ({"max_iter": 10, "tol": 1e-5}, {}),
        "sce": ({"int8_mask": False, "select_topk": 1.0}, {}),
        "ram": ({"epsilon": 1e-5}, {}),
        "ramplus_tl": ({"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}, {}),
        "model_stock": ({"filter_wise": False}, {}),
        "nearswap": ({"t": REQUIRED}, {}),
        "arcee_fusion": ({}, {}),
        "passthrough": ({}, {"scale": None}),
    }
    if method not in table:
        raise RecipeError("Unimplemented merge method %r" % method)
    return table[method]


# methods that take the base model apart from the other inputs
USES_BASE = set(GTA_VARIANTS) | {"slerp", "nuslerp", "multislerp", "sce", "ram", "ramplus_tl",
                                 "model_stock", "nearswap", "arcee_fusion"}
F32_OUTPUT = {"ramplus_tl", "arcee_fusion"}


# ----------------------------------------------------------------------------------------------
# parameter evaluation (mergekit-spec 1.4)

def _is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) or isinstance(x, bool)


def evaluate_setting(tensor_name, setting, t):
    if setting is None:
        return None
    if isinstance(setting, (bool, int, float, str)):
        return setting
    if isinstance(setting, list):
        if len(setting) == 0:
            raise RecipeError("empty parameter list")
        if all(_is_num(x) for x in setting):
            L = [float(x) for x in setting]
            n = len(L)
            s = t * (n - 1)
            i0 = int(s)
            i1 = min(n - 1, i0 + 1)
            f = s - i0
            return (1 - f) * L[i0] + f * L[i1]
        if all(isinstance(x, dict) for x in setting):
            for ent in setting:
                if "value" not in ent:
                    raise RecipeError("conditional parameter entry without 'value': %r" % (ent,))
                flt = ent.get("filter")
                if flt is None or flt == "*" or str(flt) in tensor_name:
                    return evaluate_setting(tensor_name, ent["value"], t)
            return None
        raise RecipeError("Unexpected setting value %r" % (setting,))
    raise RecipeError("Unexpected setting value %r" % (setting,))


# ----------------------------------------------------------------------------------------------
# models and architectures

LAYER_RE = re.compile(r"^(.*?\.)(\d+)\.(.+)$")


class Model:
    def __init__(self, ref, path):
        self.ref = ref
        self.path = path
        try:
            with open(os.path.join(path, "config.json")) as f:
                self.config = json.load(f)
        except (OSError, ValueError) as e:
            raise RecipeError("model %s: cannot read config.json: %s" % (ref, e))
        try:
            self.tensors = stio.read_model_dir(path)
        except stio.SafetensorsError as e:
            raise RecipeError("model %s: %s" % (ref, e))
        layers = set()
        for n in self.tensors:
            m = LAYER_RE.match(n)
            if m:
                layers.add(int(m.group(2)))
        self.num_layers = None
        for k in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(self.config.get(k), int):
                self.num_layers = self.config[k]
                self.layers_key = k
                break
        if self.num_layers is None:
            self.layers_key = None
            self.num_layers = (max(layers) + 1) if layers else 0

    def stored_dtype(self, name):
        return self.tensors.dtype(name)

    def has(self, name):
        return name in self.tensors

    def get(self, name):
        return self.tensors.f32(name)


class Arch:
    """pre / layer / post weight templates, inferred from a model's tensor names."""

    def __init__(self, model):
        names = list(model.tensors)
        arch = (model.config.get("architectures") or [""])[0]
        self.name = arch
        templates = []
        seen = set()
        nonlayer = []
        for n in names:
            m = LAYER_RE.match(n)
            if m:
                key = (m.group(1), m.group(3))
                if key not in seen:
                    seen.add(key)
                    templates.append(key)
            else:
                nonlayer.append(n)
        self.layer_templates = sorted(templates)
        if arch.startswith("GPT2") or "transformer.wte.weight" in nonlayer:
            pre = ["transformer.wte.weight", "transformer.wpe.weight"]
            embed = "transformer.wte.weight"
        else:
            pre = [n for n in nonlayer if "embed" in n or n.endswith("wte.weight") or n.endswith("wpe.weight")]
            embed = pre[0] if pre else None
        self.pre = [n for n in pre if n in nonlayer]
        post = [n for n in nonlayer if n not in self.pre and n != "lm_head.weight"]
        post.append("lm_head.weight")
        self.post = post
        self.optional = {"lm_head.weight"}
        self.tied = {"lm_head.weight": [embed]} if embed else {}
        self.embed_like = set(self.pre) | {"lm_head.weight"}
        self.embed_like.discard("transformer.wpe.weight")

    def layer_name(self, tpl, idx):
        return "%s%d.%s" % (tpl[0], idx, tpl[1])


# ----------------------------------------------------------------------------------------------
# planning (mergekit-spec 1.3 / 1.4)

class Source:
    def __init__(self, model, layer_range, params, is_base):
        self.model = model
        self.layer_range = layer_range
        self.params = params or {}
        self.is_base = is_base


class TensorTask:
    """One output tensor: inputs in gather order + evaluated parameters."""

    def __init__(self, out_name, method):
        self.out_name = out_name
        self.method = method
        self.inputs = []        # list of (Model, input tensor name, resolved name, per-model params dict, is_base)
        self.gparams = {}
        self.t = 0.0


class Plan:
    def __init__(self):
        self.tasks = []
        self.recipe = None
        self.method = None
        self.donor = None
        self.out_dtype = None
        self.dtype = None
        self.out_layers = None
        self.slices_form = False
        self.models = {}


def _ref_of(entry):
    m = entry
    if isinstance(m, dict):
        if "path" in m:
            m = m["path"]
        elif "model" in m:
            m = m["model"]
            if isinstance(m, dict):
                m = m.get("path")
        if isinstance(entry, dict) and entry.get("lora"):
            raise RecipeError("LoRA references are not supported by the oracle")
    if not isinstance(m, str) or not m:
        raise RecipeError("bad model reference %r" % (entry,))
    if "+" in m:
        raise RecipeError("LoRA references (%s) are not supported by the oracle" % m)
    return m


def load_recipe(path):
    try:
        with open(path) as f:
            r = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError("%s: %s" % (path, e))
    if not isinstance(r, dict):
        raise RecipeError("%s: recipe is not a mapping" % path)
    return r


def plan_recipe(recipe_path, models_dir=None):
    r = load_recipe(recipe_path)
    return plan_from_dict(r, models_dir if models_dir is not None else os.getcwd())


def plan_from_dict(r, models_dir):
    p = Plan()
    p.recipe = r
    method = r.get("merge_method")
    if not isinstance(method, str):
        raise RecipeError("merge_method is required")
    p.method = method
    gdef, pmdef = method_params(method)
    forms = [k for k in ("models", "slices", "modules") if r.get(k) is not None]
    if len(forms) != 1:
        raise RecipeError("exactly one of models / slices / modules is required (got %s)" % forms)
    if forms[0] == "modules":
        raise RecipeError("the modules: form is not supported by the oracle")
    if r.get("tokenizer_source") is not None or r.get("tokenizer") is not None:
        raise RecipeError("tokenizer_source / tokenizer are not supported by the oracle")
    for k in ("dtype", "out_dtype"):
        v = r.get(k)
        if v is not None:
            vv = str(v)[6:] if str(v).startswith("torch.") else str(v)
            if vv not in ("bfloat16", "float16", "float32"):
                raise RecipeError("Unimplemented dtype %r" % v)
    p.dtype = stio.st_dtype(r.get("dtype")) if r.get("dtype") is not None else None
    p.out_dtype_cfg = stio.st_dtype(r.get("out_dtype")) if r.get("out_dtype") is not None else None

    def model(ref):
        if ref not in p.models:
            path = ref if os.path.isabs(ref) else os.path.join(models_dir, ref)
            if not os.path.isdir(path):
                raise RecipeError("model %s: directory %s does not exist" % (ref, path))
            p.models[ref] = Model(ref, path)
        return p.models[ref]

    base_ref = _ref_of(r["base_model"]) if r.get("base_model") is not None else None
    top_params = r.get("parameters") or {}

    # normalize to slices
    slices = []
    if forms[0] == "models":
        if not isinstance(r["models"], list) or not r["models"]:
            raise RecipeError("models: must be a non-empty list")
        srcs = []
        for ent in r["models"]:
            if not isinstance(ent, dict):
                raise RecipeError("bad models entry %r" % (ent,))
            ref = _ref_of(ent.get("model"))
            m = model(ref)
            srcs.append(Source(m, (0, m.num_layers), ent.get("parameters"), ref == base_ref))
        if base_ref is not None and not any(s.model.ref == base_ref for s in srcs):
            m = model(base_ref)
            srcs.append(Source(m, (0, m.num_layers), None, True))
        slices.append({"sources": srcs, "params": {}, "base": base_ref})
    else:
        p.slices_form = True
        if not isinstance(r["slices"], list) or not r["slices"]:
            raise RecipeError("slices: must be a non-empty list")
        for sl in r["slices"]:
            if not isinstance(sl, dict) or not isinstance(sl.get("sources"), list) or not sl["sources"]:
                raise RecipeError("every slice needs a non-empty sources list")
            sbase = _ref_of(sl["base_model"]) if sl.get("base_model") is not None else base_ref
            srcs = []
            for ent in sl["sources"]:
                ref = _ref_of(ent.get("model"))
                m = model(ref)
                lr = ent.get("layer_range")
                if lr is None:
                    lr = [0, m.num_layers]
                if (not isinstance(lr, list) or len(lr) != 2 or not all(isinstance(x, int) for x in lr)
                        or lr[0] < 0 or lr[1] < lr[0] or lr[1] > m.num_layers):
                    raise RecipeError("bad layer_range %r for %s (%d layers)" % (lr, ref, m.num_layers))
                srcs.append(Source(m, tuple(lr), ent.get("parameters"), ref == sbase))
            slices.append({"sources": srcs, "params": sl.get("parameters") or {}, "base": sbase})
    for sl in slices:
        lens = {s.layer_range[1] - s.layer_range[0] for s in sl["sources"]}
        if len(lens) != 1:
            raise RecipeError("All inputs to a slice must contain the same number of layers (%s)" %
                              ", ".join("%s:%d" % (s.model.ref, s.layer_range[1] - s.layer_range[0])
                                        for s in sl["sources"]))
        sl["len"] = lens.pop()

    # donor (config / tokenizer): base_model, else the first model of the recipe
    p.donor = model(base_ref) if base_ref is not None else slices[0]["sources"][0].model
    arch = Arch(p.donor)
    p.arch = arch
    for mref, m in p.models.items():
        if (m.config.get("architectures") or [None])[0] != (p.donor.config.get("architectures") or [None])[0]:
            raise RecipeError("model %s has architecture %s, donor %s has %s" %
                              (mref, m.config.get("architectures"), p.donor.ref, p.donor.config.get("architectures")))

    def per_model_param(name, src, sl, in_name, t):
        # 1. source params (first source in the slice for that model)
        for s in sl["sources"]:
            if s.model is src.model:
                v = evaluate_setting(in_name, s.params.get(name), t)
                if v is not None:
                    return v
                break
        for level in (sl["params"], top_params):
            v = evaluate_setting(in_name, level.get(name), t)
            if v is not None:
                return v
        d = pmdef[name]
        if d is REQUIRED:
            if src.is_base:
                return None
            raise RecipeError("Missing required parameter %s for %s.%s" % (name, src.model.ref, in_name))
        return d

    def global_param(name, sl, out_name, t):
        for level in (sl["params"], top_params):
            v = evaluate_setting(out_name, level.get(name), t)
            if v is not None:
                return v
        d = gdef[name]
        if d is REQUIRED:
            raise RecipeError("Missing required parameter %s for %s" % (name, out_name))
        return d

    def resolve(m, name):
        if m.has(name):
            return name
        for alt in arch.tied.get(name, []):
            if alt and m.has(alt):
                return alt
        return None

    def make_task(out_name, sl, in_names, t):
        task = TensorTask(out_name, method)
        task.t = t
        task.slice_base = sl["base"]
        optional = any(n in arch.optional for n in in_names)
        if optional and not any(s.model.has(n) for s, n in zip(sl["sources"], in_names)):
            return None  # no model has it by name: skipped
        for s, n in zip(sl["sources"], in_names):
            rn = resolve(s.model, n)
            if rn is None:
                if n in arch.optional:
                    continue
                raise RecipeError("Tensor %s required but not present in model %s" % (n, s.model.ref))
            pm = {k: per_model_param(k, s, sl, n, t) for k in pmdef}
            task.inputs.append((s.model, n, rn, pm, s.is_base))
        task.gparams = {k: global_param(k, sl, out_name, t) for k in gdef}
        return task

    # pre weights: slice 0's sources, t = 0
    sl0 = slices[0]
    for name in arch.pre:
        tk = make_task(name, sl0, [name] * len(sl0["sources"]), 0.0)
        if tk:
            p.tasks.append(tk)
    out_idx = 0
    for sl in slices:
        N = sl["len"]
        for j in range(N):
            t = j / (N - 1) if N > 1 else 1.0
            for tpl in arch.layer_templates:
                out_name = arch.layer_name(tpl, out_idx)
                in_names = [arch.layer_name(tpl, s.layer_range[0] + j) for s in sl["sources"]]
                tk = make_task(out_name, sl, in_names, t)
                if tk:
                    p.tasks.append(tk)
            out_idx += 1
    slN = slices[-1]
    for name in arch.post:
        tk = make_task(name, slN, [name] * len(slN["sources"]), 0.0)
        if tk:
            p.tasks.append(tk)
    p.out_layers = out_idx
    p.slices = slices
    return p


# ----------------------------------------------------------------------------------------------
# float32 helpers

def f32(x):
    return np.asarray(x, dtype=F32)


def fsum(arrs):
    """sequential float32 sum in index order (torch sum over dim 0 of a stack)."""
    acc = f32(arrs[0]).copy()
    for a in arrs[1:]:
        acc = acc + f32(a)
    return acc


def norm32(x, axis=None, keepdims=False):
    """L2 norm accumulated in float64, returned as float32."""
    x64 = np.asarray(x, dtype=np.float64)
    return f32(np.sqrt(np.sum(x64 * x64, axis=axis, keepdims=keepdims)))


def dot32(a, b, axis=None, keepdims=False):
    """sum of float32 products, accumulated in float64, returned as float32."""
    prod = f32(a) * f32(b)
    return f32(np.sum(prod.astype(np.float64), axis=axis, keepdims=keepdims))


def sum32(x, axis=None, keepdims=False):
    return f32(np.sum(np.asarray(x, dtype=np.float64), axis=axis, keepdims=keepdims))


def mean32(x):
    return f32(np.mean(np.asarray(x, dtype=np.float64)))


def stable_desc_order(mag):
    """indices sorted by (-mag, index): stable descending."""
    return np.argsort(-f32(mag).ravel(), kind="stable")


def stable_asc_order(mag):
    return np.argsort(f32(mag).ravel(), kind="stable")


# ----------------------------------------------------------------------------------------------
# sparsification (mergekit-spec 2.7)

def l1_rescale(x, m):
    """m = x*mask; returns m * (sum|x| / sum|m|) unless either sum < 1e-7."""
    a = sum32(np.abs(x))
    b = sum32(np.abs(m))
    if a < 1e-7 or b < 1e-7:
        return m
    return m * (F32(a) / F32(b))


def sparsify_magnitude(x, density, rescale):
    if density >= 1:
        return x
    n = x.size
    k = int(density * n)
    if k <= 0:
        raise RecipeError("magnitude sparsification: density %g keeps 0 of %d elements" % (density, n))
    order = stable_desc_order(np.abs(x))
    mask = np.zeros(n, dtype=F32)
    mask[order[:k]] = 1
    m = x * mask.reshape(x.shape)
    return l1_rescale(x, m) if rescale else m


def breadcrumbs_bounds(n, density, gamma):
    target = int(n * density)
    n_top = int(n * gamma)
    n_bot = n - target - n_top
    if n_bot < 0:
        n_top += n_bot
        n_bot = 0
    return n_bot, n_top


def sparsify_outliers(x, density, gamma, rescale):
    if density >= 1:
        return x
    n = x.size
    n_bot, n_top = breadcrumbs_bounds(n, density, gamma)
    order = stable_asc_order(np.abs(x))
    mask = np.zeros(n, dtype=F32)
    if n_top > 0:               # quirk: n_top == 0 keeps nothing (slice [n_bot:-0] is empty)
        mask[order[n_bot:n - n_top]] = 1
    m = x * mask.reshape(x.shape)
    return l1_rescale(x, m) if rescale else m


def sparsify_random(x, density, rescale, rng):
    if density >= 1:
        return x, None
    mask = (rng.random(x.shape) < density).astype(F32)
    m = x * mask
    return (l1_rescale(x, m) if rescale else m), mask


def della_probs(x, density, epsilon):
    """rank-based keep probabilities per row (1-D: one row)."""
    x2 = x.reshape(1, -1) if x.ndim <= 1 else x.reshape(-1, x.shape[-1])
    L = x2.shape[1]
    order = np.argsort(np.abs(x2), axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(x2.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, L + 1)[None, :]
    r = ranks.astype(F32)
    with np.errstate(invalid="ignore", divide="ignore"):
        rn = (r - F32(1)) / F32(L - 1)
    rn = np.clip(rn, 0, 1)
    p = F32(density - epsilon) + F32(2 * epsilon) * rn
    return p.reshape(x.shape)


def sparsify_della(x, density, epsilon, rescale, rng):
    if density >= 1:
        return x, None
    if density <= 0:
        return np.zeros_like(x), np.zeros_like(x)
    if not (0 < density - epsilon and density + epsilon < 1):
        raise RecipeError("della: need 0 < density-epsilon and density+epsilon < 1 (density %g, epsilon %g)"
                          % (density, epsilon))
    p = della_probs(x, density, epsilon)
    mask = (rng.random(x.shape) < p).astype(F32)
    m = x * mask
    return (l1_rescale(x, m) if rescale else m), mask


# ----------------------------------------------------------------------------------------------
# methods

def rectify_min(arrs, names_embed):
    if not names_embed or any(a.ndim != 2 for a in arrs):
        return arrs
    r = min(a.shape[0] for a in arrs)
    c = min(a.shape[1] for a in arrs)
    return [a[:r, :c] for a in arrs]


def check_same_shape(arrs, name):
    s = {a.shape for a in arrs}
    if len(s) != 1:
        raise RecipeError("Tensor size mismatch for %s: %s" % (name, sorted(s)))


def m_linear(task, X, W, g, embed):
    if any(w is None for w in W):
        raise RecipeError("linear: every input (base included) needs a weight (%s)" % task.out_name)
    X = rectify_min(X, embed)
    check_same_shape(X, task.out_name)
    Wt = f32([float(w) for w in W])
    R = fsum([Wt[i] * X[i] for i in range(len(X))])
    if g["normalize"]:
        R = R / fsum(list(Wt))
    return R


def m_slerp(task, B, others, g):
    if len(others) == 0:
        return B
    if len(others) != 1:
        raise RecipeError("slerp needs exactly 2 tensors (base + 1) for %s" % task.out_name)
    t = float(g["t"])
    v0 = f32(B)
    v1 = f32(others[0])
    shape = v0.shape
    a0 = v0.ravel()
    a1 = v1.ravel()
    n0 = np.linalg.norm(a0)
    n1 = np.linalg.norm(a1)
    u0 = a0 / n0 if n0 > 1e-8 else a0
    u1 = a1 / n1 if n1 > 1e-8 else a1
    d = np.sum(u0 * u1)                        # float32 (numpy pairwise)
    if np.abs(d) > 0.9995:
        R = F32(1 - t) * a0 + F32(t) * a1
        return R.reshape(shape)
    theta0 = np.arccos(d)                      # float32
    sin0 = np.sin(theta0)                      # float32
    theta_t = theta0 * t                       # float64 (numpy 1.x scalar promotion)
    sin_t = np.sin(theta_t)
    s0 = np.sin(theta0 - theta_t) / sin0
    s1 = sin_t / sin0
    R = F32(s0) * a0 + F32(s1) * a1
    return R.reshape(shape)


def _nuslerp_vec(t, a, b, flatten, row_wise):
    shape = a.shape
    if flatten or a.ndim <= 1:
        A = a.reshape(1, -1)
        Bv = b.reshape(1, -1)
        back = lambda r: r.reshape(shape)
    elif row_wise:
        A = np.moveaxis(a, 0, -1).reshape(-1, shape[0])
        Bv = np.moveaxis(b, 0, -1).reshape(-1, shape[0])
        tshape = np.moveaxis(a, 0, -1).shape
        back = lambda r: np.moveaxis(r.reshape(tshape), -1, 0)
    else:
        A = a.reshape(-1, shape[-1])
        Bv = b.reshape(-1, shape[-1])
        back = lambda r: r.reshape(shape)
    na = np.maximum(norm32(A, axis=1, keepdims=True), F32(1e-7))
    nb = np.maximum(norm32(Bv, axis=1, keepdims=True), F32(1e-7))
    au = A / na
    bu = Bv / nb
    c = dot32(au, bu, axis=1, keepdims=True)
    theta = np.arccos(np.clip(c, F32(-1), F32(1)))
    sin_t = np.sin(theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        R = (np.sin(F32(1 - t) * theta) * A + np.sin(F32(t) * theta) * Bv) / sin_t
    col = (np.abs(sin_t) < 1e-8).ravel()
    if col.any():
        R[col] = F32(1 - t) * A[col] + F32(t) * Bv[col]
    return back(R)


def m_nuslerp(task, B, others, W, g):
    if len(others) + (B is not None) == 1:
        return others[0] if others else B      # a single tensor is returned unchanged
    if len(others) != 2:
        raise RecipeError("nuslerp needs exactly 2 non-base models (the base, if any, must be a third "
                          "model) for %s" % task.out_name)
    w0, w1 = float(W[0]), float(W[1])
    t = 0.5 if abs(w0 + w1) < 1e-6 else w1 / (w0 + w1)
    flatten = bool(g["nuslerp_flatten"])
    row_wise = bool(g["nuslerp_row_wise"])
    if B is not None:
        return B + _nuslerp_vec(t, others[0] - B, others[1] - B, flatten, row_wise)
    return _nuslerp_vec(t, others[0], others[1], flatten, row_wise)


def m_multislerp(task, B, others, W, g):
    if len(others) == 1 and B is None:
        return others[0]
    if len(others) == 0:
        return B
    shape = others[0].shape
    X = [f32(x).ravel() for x in others]
    if B is not None:
        b = f32(B).ravel()
        X = [x - b for x in X]
    eps = F32(float(g["eps"]))
    w = f32([float(x) for x in W])
    if g["normalize_weights"]:
        w = w / fsum(list(w))
    n = [norm32(x) for x in X]
    U = [X[i] / (n[i] + eps) for i in range(len(X))]
    M = fsum([w[i] * U[i] for i in range(len(U))])
    nM = norm32(M)
    if nM < eps:
        if len(X) == 2:
            R = fsum([w[i] * X[i] for i in range(len(X))])
            if B is not None:
                R = R + b
            return R.reshape(shape)
        raise RecipeError("multislerp: weighted mean of directions is ~0 for %s" % task.out_name)
    M = M / nM
    T = []
    for i in range(len(U)):
        di = dot32(U[i], M)
        T.append(U[i] - di * M)
    Tm = fsum([w[i] * T[i] for i in range(len(T))])
    tau = norm32(Tm) + eps
    R = np.cos(tau) * M + (np.sin(tau) / tau) * Tm
    scale = fsum([w[i] * n[i] for i in range(len(n))])
    R = R * scale
    if B is not None:
        R = R + b
    return R.reshape(shape)


def m_karcher(task, X, g):
    if len(X) == 1:
        return X[0]
    max_iter = int(g["max_iter"])
    tol = float(g["tol"])
    shape = X[0].shape
    V = [f32(x).ravel() for x in X]
    nn = len(V)
    alphas = [1.0 / nn] * nn
    norms = [float(norm32(v)) for v in V]
    U = [(v / F32(nv)) if nv != 0 else np.zeros_like(v) for v, nv in zip(V, norms)]
    valid = [i for i in range(nn) if norms[i] > tol]
    if not valid:
        return np.zeros(shape, dtype=F32)
    va = [alphas[i] for i in valid]
    s = sum(va)
    va = [a / s for a in va]
    VU = [U[i] for i in valid]
    u = fsum([F32(va[i]) * VU[i] for i in range(len(VU))])
    nu = float(norm32(u))
    if nu < tol:
        u = VU[0].copy()
    else:
        u = u / F32(nu)
    for _ in range(max_iter):
        T = np.zeros_like(u)
        for a, ui in zip(va, VU):
            d = float(np.clip(dot32(u, ui), -1.0, 1.0))
            d32 = F32(d)
            th = float(np.arccos(d32))
            if th < tol:
                continue
            coef = F32(a * (th / math.sin(th)))
            T = T + coef * (ui - d32 * u)
        nT = float(norm32(T))
        if nT < tol:
            break
        u = F32(math.cos(nT)) * u + F32(math.sin(nT)) * (T / F32(nT))
        nu = float(norm32(u))
        if nu > tol:
            u = u / F32(nu)
    scale = F32(sum(alphas[i] * norms[i] for i in range(nn)))
    return (scale * u).reshape(shape)


def gta_sparsify(variant_sp, x, pm, rescale, rng):
    d = float(pm["density"])
    if variant_sp is None:
        return x
    if variant_sp == "magnitude":
        return sparsify_magnitude(x, d, rescale)
    if variant_sp == "magnitude_outliers":
        return sparsify_outliers(x, d, float(pm["gamma"]), rescale)
    if variant_sp == "random":
        return sparsify_random(x, d, rescale, rng)[0]
    if variant_sp == "della_magprune":
        return sparsify_della(x, d, float(pm["epsilon"]), rescale, rng)[0]
    raise RecipeError("unknown sparsification %s" % variant_sp)


def m_gta(task, B, others, PM, g, embed, rng):
    cons, sp, _, _ = GTA_VARIANTS[task.method]
    if cons is not None:
        cm = g.get("consensus_method", cons)
        if cm not in ("sum", "count"):
            raise RecipeError("consensus_method must be sum or count, got %r" % (cm,))
        cons = cm
    B = f32(B)
    deltas, ws = [], []
    for X, pm in zip(others, PM):
        X = f32(X)
        if embed and X.ndim == 2 and B.ndim == 2:
            if X.shape[0] < B.shape[0] or X.shape[1] < B.shape[1]:
                raise RecipeError("%s: model tensor %s smaller than base %s" % (task.out_name, X.shape, B.shape))
            X = X[:B.shape[0], :B.shape[1]]
        if X.shape != B.shape:
            print("warning: %s: skipping a model with shape %s (base %s)" % (task.out_name, X.shape, B.shape),
                  file=sys.stderr)
            continue
        if pm["weight"] is None:
            raise RecipeError("Missing required parameter weight for %s" % task.out_name)
        deltas.append(X - B)
        ws.append(pm)
    if not deltas:
        return B
    rescale = bool(g["rescale"])
    sp_d = [gta_sparsify(sp, d, pm, rescale, rng) for d, pm in zip(deltas, ws)]
    W = f32([float(pm["weight"]) for pm in ws])
    D = [sp_d[i] * W[i] for i in range(len(sp_d))]
    if cons is not None:
        if cons == "sum":
            sw = fsum(D)
        else:
            sw = fsum([np.sign(d) for d in D])
        maj = np.where(sw >= 0, F32(1), F32(-1))
        keep = [(np.sign(d) == maj).astype(F32) for d in D]
        mixed = fsum([D[i] * keep[i] for i in range(len(D))])
        den = fsum([W[i] * keep[i] for i in range(len(D))])
        den = np.where(den == 0, F32(1), den)
    else:
        mixed = fsum(D)
        den = fsum(list(W))
        if abs(den) < 1e-8:
            den = F32(1)
    if g["normalize"]:
        mixed = mixed / den
    lam = float(g["lambda"])
    if lam != 1:
        mixed = mixed * F32(lam)
    return B + mixed


def m_sce(task, B, others, g):
    B = f32(B)
    T = [f32(x) - B for x in others]
    n = len(T)
    if n == 0:
        return B
    topk = float(g["select_topk"])
    if topk < 1:
        if topk <= 0:
            T = [np.zeros_like(t) for t in T]
        else:
            stack = np.stack([t.astype(np.float64) for t in T])
            v = f32(np.mean((stack - stack.mean(axis=0)) ** 2, axis=0))
            nz = int(np.count_nonzero(v))
            k = int(F32(nz) * F32(topk))
            mask = np.zeros(v.size, dtype=F32)
            if k > 0:
                order = stable_desc_order(np.abs(v))
                mask[order[:k]] = 1
            mask = mask.reshape(B.shape)
            T = [t * mask for t in T]
    s = fsum(T)
    maj = np.where(s >= 0, F32(1), F32(-1))
    E = [(np.sign(t) == maj).astype(F32) for t in T]
    q = [mean32(t.astype(np.float64) ** 2) for t in T]
    Q = float(fsum([f32(x) for x in q]))
    if abs(Q) < 1e-6:
        qn = [F32(1) / F32(n)] * n
    else:
        qn = [F32(x) / F32(Q) for x in q]
    num = fsum([T[i] * qn[i] * E[i] for i in range(n)])
    den = fsum([qn[i] * E[i] for i in range(n)])
    den = np.maximum(den, F32(1e-6))
    return B + num / den


def m_ram(task, B, others, g, plus):
    B = f32(B)
    T = [f32(x) - B for x in others]
    if not T:
        return B
    eps = float(g["epsilon"])
    A = [(np.abs(t) > eps) for t in T]
    c = np.zeros(B.shape, dtype=np.int64)
    for a in A:
        c += a
    uniq = c == 1
    shared = c > 1
    cden = np.maximum(c, 1).astype(F32)
    lam = [F32(1)] * len(T)
    if plus:
        r = float(g["r"])
        alpha = float(g["alpha"])
        lam = []
        for a in A:
            S = F32(np.count_nonzero(a & shared))
            U = F32(np.count_nonzero(a & uniq))
            rho = S / np.maximum(U, F32(eps))
            lam.append(F32(1) + F32(r) * np.clip(rho, F32(0), F32(alpha)))
    terms = []
    for i, t in enumerate(T):
        u = t * (A[i] & uniq).astype(F32)
        if plus:
            u = u * lam[i]
        sh = t * (A[i] & shared).astype(F32) / cden
        terms.append(u + sh)
    return B + fsum(terms)


def m_model_stock(task, B, others, g, embed):
    if len(others) == 0:
        return B
    if len(others) < 2:
        raise RecipeError("model_stock needs a base and at least 2 other models for %s" % task.out_name)
    arrs = rectify_min([f32(B)] + [f32(x) for x in others], embed)
    B, X = arrs[0], arrs[1:]
    shape = B.shape
    fw = bool(g["filter_wise"])
    if fw:
        Bv = B.reshape(1, -1) if B.ndim <= 1 else B.reshape(-1, shape[-1])
        Xv = [x.reshape(Bv.shape) for x in X]
    else:
        Bv = B.reshape(1, -1)
        Xv = [x.reshape(1, -1) for x in X]
    O = [x - Bv for x in Xv]
    nO = [norm32(o, axis=1, keepdims=True) for o in O]
    cos = []
    N = len(O)
    for i in range(N):
        for j in range(i + 1, N):
            d = dot32(O[i], O[j], axis=1, keepdims=True)
            cs = d / np.maximum(nO[i] * nO[j], F32(1e-6))
            cos.append(np.clip(cs, F32(-1), F32(1)))
    c = fsum(cos) / F32(len(cos))
    t = (F32(N) * c) / (F32(1) + F32(N - 1) * c)
    avg = fsum(Xv) / F32(N)
    R = t * avg + (F32(1) - t) * Bv
    return R.reshape(shape)


def m_nearswap(task, B, others, g):
    if len(others) != 1:
        raise RecipeError("nearswap needs the base and exactly one other model for %s" % task.out_name)
    a = f32(B)
    b = f32(others[0])
    t = F32(float(g["t"]))
    w = t / np.maximum(np.abs(a - b), F32(1e-6))
    w = np.clip(np.nan_to_num(w), F32(0), F32(1))
    return w * b + (F32(1) - w) * a


def m_arcee_fusion(task, B, others, embed, rng):
    if len(others) == 0:
        return B
    if len(others) != 1:
        raise RecipeError("arcee_fusion needs the base and exactly one other model for %s" % task.out_name)
    a, b = rectify_min([f32(B), f32(others[0])], embed)
    a2 = a.reshape(1, -1) if a.ndim <= 1 else a.reshape(-1, a.shape[-1])
    b2 = b.reshape(a2.shape)

    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True, dtype=F32)

    p = softmax(b2) + F32(1e-8)
    q = softmax(a2) + F32(1e-8)
    kl = np.sum(p * np.log(p / q), axis=-1, keepdims=True, dtype=F32)
    diff = b2 - a2
    imp = np.abs(diff) * kl
    flat = imp.ravel()
    if flat.size > 1000000:
        flat = flat[rng.permutation(flat.size)[:1000000]]
    s = np.sort(flat)
    n = s.size

    def idx(qq):
        return int(np.floor(F32(qq) * F32(n - 1)))

    med = s[idx(0.5)]
    q1 = s[idx(0.25)]
    q3 = s[idx(0.75)]
    thr = med + F32(1.5) * (q3 - q1)
    mask = (imp >= thr).astype(F32)
    R = a2 + diff * mask
    return R.reshape(a.shape)


def m_passthrough(task, X, PM):
    if len(X) != 1:
        raise RecipeError("Passthrough merge expects exactly one tensor (%s has %d)" % (task.out_name, len(X)))
    sc = PM[0].get("scale")
    if sc is not None:
        return f32(X[0]) * F32(float(sc))
    return f32(X[0])


def run_task(task, arch, rng):
    method = task.method
    embed = task.out_name in arch.embed_like
    X = [m.get(rn) for (m, n, rn, pm, isb) in task.inputs]
    PM = [pm for (m, n, rn, pm, isb) in task.inputs]
    isbase = [isb for (m, n, rn, pm, isb) in task.inputs]
    g = task.gparams
    if method == "linear":
        return m_linear(task, X, [pm["weight"] for pm in PM], g, embed)
    if method == "karcher":
        return m_karcher(task, X, g)
    if method == "passthrough":
        return m_passthrough(task, X, PM)
    # methods with a separate base
    B = None
    others, opm = [], []
    for x, pm, isb in zip(X, PM, isbase):
        if isb and B is None:
            B = x
        else:
            others.append(x)
            opm.append(pm)
    if method == "slerp":
        if B is None:
            raise RecipeError("Base model not in input tensors (%s)" % task.out_name)
        return m_slerp(task, B, others, g)
    if method == "nuslerp":
        return m_nuslerp(task, B, others, [pm["weight"] for pm in opm], g)
    if method == "multislerp":
        return m_multislerp(task, B, others, [pm["weight"] for pm in opm], g)
    if B is None:
        raise RecipeError("Base model tensor required but not present (%s, method %s)" % (task.out_name, method))
    if method in GTA_VARIANTS:
        return m_gta(task, B, others, opm, g, embed, rng)
    if method == "sce":
        return m_sce(task, B, others, g)
    if method == "ram":
        return m_ram(task, B, others, g, False)
    if method == "ramplus_tl":
        return m_ram(task, B, others, g, True)
    if method == "model_stock":
        return m_model_stock(task, B, others, g, embed)
    if method == "nearswap":
        return m_nearswap(task, B, others, g)
    if method == "arcee_fusion":
        return m_arcee_fusion(task, B, others, embed, rng)
    raise RecipeError("Unimplemented merge method %r" % method)


# ----------------------------------------------------------------------------------------------
# whole merge

class MergeResult:
    pass


def output_dtype(plan, task):
    if plan.out_dtype_cfg:
        return plan.out_dtype_cfg
    if plan.method in F32_OUTPUT:
        return "F32"
    if plan.dtype:
        return plan.dtype
    for (m, n, rn, pm, isb) in task.inputs:
        if isb:
            return m.stored_dtype(rn)
    m, n, rn, pm, isb = task.inputs[0]
    return m.stored_dtype(rn)


def merge_full(recipe_path, models_dir=None, seed=0):
    plan = plan_recipe(recipe_path, models_dir)
    rng = np.random.default_rng(seed)
    out = {}
    dtypes = {}
    for task in sorted(plan.tasks, key=lambda t: t.out_name):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            R = run_task(task, plan.arch, rng)
        if R is None:
            continue
        out[task.out_name] = f32(R)
        dtypes[task.out_name] = output_dtype(plan, task)
    res = MergeResult()
    res.plan = plan
    res.tensors = out
    res.dtypes = dtypes
    odt = set(dtypes.values())
    res.out_dtype = odt.pop() if len(odt) == 1 else None
    res.config = output_config(plan)
    res.donor = plan.donor.path
    return res


def merge(recipe_path, models_dir=None, seed=0):
    """-> (dict name -> float32 array (unrounded), out dtype string like 'BF16')."""
    res = merge_full(recipe_path, models_dir, seed)
    return res.tensors, res.out_dtype


def output_config(plan):
    cfg = json.loads(json.dumps(plan.donor.config))
    name = plan.out_dtype_cfg or plan.dtype
    if name:
        key = "dtype" if ("dtype" in cfg and "torch_dtype" not in cfg) else "torch_dtype"
        cfg[key] = stio.ST_TO_NAME[name]
    if plan.slices_form:
        key = plan.donor.layers_key or "num_hidden_layers"
        cfg[key] = plan.out_layers
    return cfg


TOKENIZER_FILES = ["tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                   "added_tokens.json", "merges.txt", "chat_template.jinja", "generation_config.json",
                   "chat_template.json", "video_preprocessor_config.json", "vocab.json"]


def write_output(res, outdir):
    os.makedirs(outdir, exist_ok=True)
    tensors = {n: (res.dtypes[n], a) for n, a in res.tensors.items()}
    stio.write_safetensors(os.path.join(outdir, "model.safetensors"), tensors)
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(res.config, f, indent=2, sort_keys=True)
        f.write("\n")
    donor = res.donor
    if os.path.exists(os.path.join(donor, "tokenizer_config.json")) and (
            os.path.exists(os.path.join(donor, "tokenizer.json")) or
            os.path.exists(os.path.join(donor, "tokenizer.model"))):
        for fn in TOKENIZER_FILES:
            src = os.path.join(donor, fn)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(outdir, fn))


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(
        description="Reference (numpy, float32, single final rounding) implementation of a mergekit "
                    "recipe: writes OUTDIR/model.safetensors, config.json and the donor's tokenizer files.",
        epilog="exit status: 0 ok, 2 usage / recipe / IO error")
    ap.add_argument("recipe", help="mergekit YAML recipe")
    ap.add_argument("outdir", help="output directory (created)")
    ap.add_argument("--seed", type=int, default=0, help="seed of numpy's default_rng for dare/della masks (default 0)")
    ap.add_argument("--models-dir", default=None,
                    help="directory relative model paths are resolved against (default: current directory)")
    a = ap.parse_args(argv)
    try:
        res = merge_full(a.recipe, a.models_dir, a.seed)
        write_output(res, a.outdir)
    except (RecipeError, stio.SafetensorsError, OSError) as e:
        print("oracle: error: %s" % e, file=sys.stderr)
        return 2
    print("oracle: %s: %d tensors, method %s, dtype %s -> %s" %
          (a.recipe, len(res.tensors), res.plan.method, res.out_dtype, a.outdir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
