#!/usr/bin/python3
"""conformance_check: compare a merged model directory against tests/conformance/expected/NAME.

usage: conformance_check.py CASE_NAME GOT_DIR EXPECTED_DIR CASE_YAML FIXTURES_PARENT_DIR

Rules (tests/conformance/README.md):
  layout      same tensor names, shapes and dtypes; GOT's files must be valid safetensors (index +
              shards or a single model.safetensors; the shard layout itself may differ);
              config.json equal to expected's as parsed JSON, ignoring "transformers_version";
              tokenizer files and generation_config.json byte-identical.
  deterministic methods
              every element within 1 ulp of the output dtype (ulp distance on the ordered integer
              bit patterns) and at least 99% of the elements exactly equal (per tensor of >= 100
              elements, and over the whole model).
  ties, ties_count, breadcrumbs, breadcrumbs_ties (magnitude cuts)
              bytes exactly equal except at the flat indices NAME::index of
              EXPECTED_DIR/.oracle/ties.safetensors, where the value must be one of NAME::candidates.
  sce         tensors listed in ties.safetensors: every element within max(1, NAME::slack_ulp) ulp
              or NAME::slack_abs of expected (of one of the candidates at NAME::index); the other
              tensors follow the deterministic rule.
  random methods (meta.json "random": true; dare_*, della*)
              structural check: for every element, out - base == lambda * sum_i w_i s_i m_i delta_i
              / divisor (sign consensus and divisor as the method defines) within 1 ulp, with
              inferred masks m_i in {0,1}, one L1 rescale factor s_i = sum|delta_i| / sum|m_i delta_i|
              per model and tensor (estimated by a fixed-point iteration, then checked), and the
              kept fraction of each model within 3 sigma of its keep probability (density for
              DARE, the rank-based probabilities for DELLA), summed over the model; per tensor a
              5 sigma bound is applied.  For DELLA the kept elements must also follow the trend
              of the rank-based probabilities (3 sigma).  Kept counts are sums of posterior keep
              probabilities (the prior over the mask combinations that reproduce the output).

Inputs of random cases come from the models named in CASE_YAML, relative to FIXTURES_PARENT_DIR.
exit status: 0 pass, 1 mismatch, 2 usage or IO error (unreadable expected data, bad recipe).
"""
import itertools
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402
import oracle  # noqa: E402

F32 = np.float32
TOKENIZER_FILES = oracle.TOKENIZER_FILES
MAGNITUDE_CUT = {"ties", "breadcrumbs", "breadcrumbs_ties"}
RANDOM_METHODS = {"dare_ties", "dare_linear", "della", "della_linear"}


class UsageError(Exception):
    pass


class Report:
    def __init__(self, verbose=False):
        self.fail = []
        self.verbose = verbose

    def bad(self, msg):
        self.fail.append(msg)
        print("FAIL " + msg)

    def info(self, msg):
        if self.verbose:
            print("     " + msg)


# ---------------------------------------------------------------------------------------------
# layout

def json_equal(a, b):
    """JSON value equality; bools are not numbers, 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def check_layout(rep, got, exp, got_dir, exp_dir):
    gn, en = set(got), set(exp)
    for n in sorted(en - gn):
        rep.bad("%s: missing in output" % n)
    for n in sorted(gn - en):
        rep.bad("%s: unexpected tensor in output" % n)
    common = sorted(gn & en)
    ok = []
    for n in common:
        if got.dtype(n) != exp.dtype(n):
            rep.bad("%s: dtype %s, expected %s" % (n, got.dtype(n), exp.dtype(n)))
        elif tuple(got.shape(n)) != tuple(exp.shape(n)):
            rep.bad("%s: shape %s, expected %s" % (n, list(got.shape(n)), list(exp.shape(n))))
        else:
            ok.append(n)
    # config.json
    try:
        with open(os.path.join(exp_dir, "config.json")) as f:
            ecfg = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError("expected config.json: %s" % e)
    try:
        with open(os.path.join(got_dir, "config.json")) as f:
            gcfg = json.load(f)
    except (OSError, ValueError) as e:
        rep.bad("config.json: %s" % e)
        gcfg = None
    if gcfg is not None:
        if not isinstance(gcfg, dict):
            rep.bad("config.json: not a JSON object")
        else:
            ecfg.pop("transformers_version", None)
            gcfg.pop("transformers_version", None)
            for k in sorted(set(ecfg) | set(gcfg)):
                if k not in gcfg:
                    rep.bad("config.json: key %r missing (expected %r)" % (k, ecfg[k]))
                elif k not in ecfg:
                    rep.bad("config.json: unexpected key %r = %r" % (k, gcfg[k]))
                elif not json_equal(gcfg[k], ecfg[k]):
                    rep.bad("config.json: %r = %r, expected %r" % (k, gcfg[k], ecfg[k]))
    for fn in TOKENIZER_FILES:
        ep = os.path.join(exp_dir, fn)
        gp = os.path.join(got_dir, fn)
        if os.path.exists(ep):
            if not os.path.exists(gp):
                rep.bad("%s: missing in output" % fn)
                continue
            with open(ep, "rb") as f:
                eb = f.read()
            try:
                with open(gp, "rb") as f:
                    gb = f.read()
            except OSError as e:
                rep.bad("%s: %s" % (fn, e))
                continue
            if eb != gb:
                rep.bad("%s: differs from expected (%d vs %d bytes)" % (fn, len(gb), len(eb)))
        elif os.path.exists(gp):
            rep.bad("%s: present in output but not in expected" % fn)
    return ok


# ---------------------------------------------------------------------------------------------
# numeric rules

def check_deterministic(rep, names, got, exp, totals, tol_ulp=1, slack=None):
    for n in names:
        dt = exp.dtype(n)
        d = stio.ulp_distance(got.raw(n), exp.raw(n), dt).ravel()
        bad = d > tol_ulp
        if slack is not None and n in slack:
            sabs = slack[n]["abs"]
            if sabs > 0:
                diff = np.abs(got[n].astype(np.float64) - exp[n].astype(np.float64)).ravel()
                bad &= ~(diff <= sabs)
        nexact = int(np.count_nonzero(d == 0))
        totals[0] += d.size
        totals[1] += nexact
        if bad.any():
            rep.bad("%s: %d elements beyond %d ulp (max %d ulp)" % (n, int(bad.sum()), tol_ulp, int(d.max())))
        elif d.size >= 100 and nexact < 0.99 * d.size:
            rep.bad("%s: only %d of %d elements exact (< 99%%, max %d ulp)" % (n, nexact, d.size, int(d.max())))
        else:
            rep.info("%s: ok (max %d ulp, %d/%d exact)" % (n, int(d.max()), nexact, d.size))


def load_ties(exp_dir):
    p = os.path.join(exp_dir, ".oracle", "ties.safetensors")
    if not os.path.exists(p):
        return {}
    try:
        st, _ = stio.read_safetensors(p)
    except stio.SafetensorsError as e:
        raise UsageError(str(e))
    out = {}
    for key in st:
        name, _, part = key.rpartition("::")
        out.setdefault(name, {})[part] = key
    res = {}
    for name, parts in out.items():
        ent = {}
        if "index" in parts:
            ent["index"] = np.asarray(st.raw(parts["index"]), dtype=np.int64).ravel()
        if "candidates" in parts:
            c = parts["candidates"]
            ent["cand_dtype"] = st.dtype(c)
            ent["cand_raw"] = np.array(st.raw(c))
            ent["cand_val"] = np.asarray(st[c], dtype=np.float64)
        ent["ulp"] = int(st.raw(parts["slack_ulp"]).ravel()[0]) if "slack_ulp" in parts else 0
        ent["abs"] = float(st.raw(parts["slack_abs"]).ravel()[0]) if "slack_abs" in parts else 0.0
        res[name] = ent
    return res


def check_magnitude_cut(rep, names, got, exp, ties, totals, with_slack):
    for n in names:
        dt = exp.dtype(n)
        graw = got.raw(n).ravel()
        eraw = exp.raw(n).ravel()
        ent = ties.get(n)
        if with_slack and ent is None:
            check_deterministic(rep, [n], got, exp, totals)
            continue
        idx = ent["index"] if ent is not None and "index" in ent else np.zeros(0, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= eraw.size):
            raise UsageError("%s::index out of range" % n)
        other = np.ones(eraw.size, dtype=bool)
        other[idx] = False
        totals[0] += eraw.size
        if not with_slack:
            gb = graw.view(np.uint8).reshape(eraw.size, -1)
            eb = eraw.view(np.uint8).reshape(eraw.size, -1)
            neq = np.any(gb != eb, axis=1)
            bad_other = neq & other
            totals[1] += int(np.count_nonzero(~neq))
            nbad = int(bad_other.sum())
            maxulp = int(stio.ulp_distance(graw, eraw, dt).max()) if eraw.size else 0
            bad_idx = 0
            if idx.size:
                cand = ent["cand_raw"]
                if cand.dtype != graw.dtype:
                    raise UsageError("%s::candidates dtype %s differs from the output dtype %s" %
                                     (n, ent["cand_dtype"], dt))
                cand = cand.reshape(idx.size, -1)
                gsel = graw[idx]
                ok = np.all(cand.view(np.uint8).reshape(idx.size, cand.shape[1], -1) ==
                            gsel.view(np.uint8).reshape(idx.size, 1, -1), axis=2).any(axis=1)
                bad_idx = int(np.count_nonzero(~ok))
            if nbad or bad_idx:
                rep.bad("%s: %d elements differ from expected bytes, %d tie-ambiguous elements not among "
                        "the candidates (max %d ulp)" % (n, nbad, bad_idx, maxulp))
            else:
                rep.info("%s: ok (%d tie-ambiguous)" % (n, idx.size))
        else:
            tol = max(1, ent["ulp"])
            sabs = ent["abs"]
            gv = np.asarray(got[n], dtype=np.float64).ravel()
            ev = np.asarray(exp[n], dtype=np.float64).ravel()
            d = stio.ulp_distance(graw, eraw, dt)
            totals[1] += int(np.count_nonzero(d == 0))
            okv = (d <= tol) | (np.abs(gv - ev) <= sabs)
            bad_other = int(np.count_nonzero(~okv & other))
            bad_idx = 0
            if idx.size:
                cand_v = ent["cand_val"].reshape(idx.size, -1)
                cand_raw = ent["cand_raw"].reshape(idx.size, -1)
                if cand_raw.dtype != graw.dtype:
                    raise UsageError("%s::candidates dtype differs from the output dtype" % n)
                gsel = graw[idx]
                okc = np.zeros(idx.size, dtype=bool)
                for j in range(cand_raw.shape[1]):
                    dj = stio.ulp_distance(gsel, cand_raw[:, j].copy(), dt)
                    okc |= (dj <= tol) | (np.abs(gv[idx] - cand_v[:, j]) <= sabs)
                bad_idx = int(np.count_nonzero(~okc))
            if bad_other or bad_idx:
                rep.bad("%s: %d elements beyond slack (%d ulp / %g), %d tie-ambiguous elements far from every "
                        "candidate (max %d ulp)" % (n, bad_other, tol, sabs, bad_idx, int(d.max())))
            else:
                rep.info("%s: ok within slack (max %d ulp)" % (n, int(d.max())))


# ---------------------------------------------------------------------------------------------
# random methods: structural check

def reconstruct(B, deltas, W, S, combos, cons, normalize, lam):
    """predicted outputs for every mask combination: array [n_combos, numel] (float32)."""
    preds = []
    for c in combos:
        D = [(deltas[i] * F32(c[i])) * S[i] * W[i] for i in range(len(deltas))]
        if cons is not None:
            if cons == "sum":
                sw = oracle.fsum(D)
            else:
                sw = oracle.fsum([np.sign(d) for d in D])
            maj = np.where(sw >= 0, F32(1), F32(-1))
            keep = [(np.sign(d) == maj).astype(F32) for d in D]
            mixed = oracle.fsum([D[i] * keep[i] for i in range(len(D))])
            den = oracle.fsum([W[i] * keep[i] for i in range(len(D))])
            den = np.where(den == 0, F32(1), den)
        else:
            mixed = oracle.fsum(D)
            den = oracle.fsum(list(W))
            if abs(den) < 1e-8:
                den = F32(1)
        if normalize:
            mixed = mixed / den
        if lam != 1:
            mixed = mixed * F32(lam)
        preds.append(B + mixed)
    return np.stack(preds)


# Relative uncertainty allowed on a rescale factor: an implementation sums |delta| in float32 in its
# own order, so its factor can differ from the exact L1 ratio by a few 1e-6 relative; outputs that
# cancel to near zero would otherwise demand more precision than the factor has.
RESCALE_REL_TOL = 2e-5
# elements (terms >= 8 tolerance units) a model needs in a tensor before its L1 rescale relation is
# checked there
MIN_INFORMATIVE = 30


def structural_tensor(task, outv, dt, tol=1.0):
    """Fit one tensor of a random-method output.  -> dict (see check_random)."""
    cons, sp, _, _ = oracle.GTA_VARIANTS[task.method]
    g = task.gparams
    if cons is not None:
        cons = g.get("consensus_method", cons)
    B = [m.get(rn) for (m, n, rn, pm, isb) in task.inputs if isb]
    if not B:
        raise oracle.RecipeError("%s: no base model" % task.out_name)
    B = B[0]
    deltas, pms = [], []
    for (m, n, rn, pm, isb) in task.inputs:
        if not isb:
            deltas.append((m.get(rn) - B).ravel())
            pms.append(pm)
    Bf = B.ravel()
    n = len(deltas)
    E = Bf.size
    W = oracle.f32([float(pm["weight"]) for pm in pms])
    dens = [float(pm["density"]) for pm in pms]
    rescale = bool(g["rescale"])
    normalize = bool(g["normalize"])
    lam = float(g["lambda"])
    # keep probability of every element
    P = []
    for i in range(n):
        d = dens[i]
        if d >= 1:
            P.append(np.ones(E))
        elif d <= 0:
            P.append(np.zeros(E))
        elif sp == "della_magprune":
            eps = float(pms[i]["epsilon"])
            P.append(oracle.della_probs(deltas[i].reshape(B.shape), d, eps).ravel().astype(np.float64))
        else:
            P.append(np.full(E, d))
    fixed = [dens[i] >= 1 or dens[i] <= 0 for i in range(n)]
    free = [i for i in range(n) if not fixed[i] and rescale]
    fixed_idx = [i for i in range(n) if i not in free]
    combos = [c for c in itertools.product((0, 1), repeat=n)
              if all(not fixed[i] or c[i] == (1 if dens[i] >= 1 else 0) for i in range(n))]
    carr = np.array(combos, dtype=np.float64)                  # [C, n]
    logp = np.zeros((len(combos), E))
    for i in range(n):
        pp = np.clip(P[i], 1e-12, 1 - 1e-12)
        logp += np.where(carr[:, i:i + 1] > 0, np.log(pp)[None, :], np.log1p(-pp)[None, :])
    d64 = [d.astype(np.float64) for d in deltas]
    asum = [float(oracle.sum32(np.abs(d))) for d in deltas]
    ov = outv.ravel().astype(np.float64)
    y = ov - Bf.astype(np.float64)
    ulp_out = stio.ulp_of(ov, dt)
    absB = np.abs(Bf.astype(np.float64))
    obits = stio.encode(ov.astype(np.float32), dt).view(np.uint8).reshape(1, E, -1)
    rel_final = RESCALE_REL_TOL if free else 0.0

    def fit(S, rel, idx=None):
        """error of every combination in tolerance units: [C, E'] and the unit [E']"""
        if idx is None:
            idx = slice(None)
        pred = reconstruct(Bf[idx], [d[idx] for d in deltas], W, S, combos, cons, normalize,
                           lam).astype(np.float64)
        tmag = sum(np.abs(float(W[j]) * float(S[j]) * d64[j][idx]) for j in range(n))
        # 1 ulp of the output dtype + float32 rounding of the intermediate sums (a few ulps of the
        # largest operand) + the relative uncertainty of the rescale factors
        unit = ulp_out[idx] + 8 * 2.0 ** -23 * (absB[idx] + tmag)
        err = np.abs(pred - ov[idx][None, :]) / (unit + rel * tmag)
        return err, unit + rel * tmag

    def count_ok(S, rel, idx=None):
        err, _ = fit(S, rel, idx)
        return int(np.count_nonzero((err <= tol).any(axis=0)))

    def linear_model(S, combo_idx):
        """coefficients a_ei with pred_e - B_e = sum_i a_ei S_i for the chosen combinations."""
        c = carr[combo_idx]
        D = np.stack([c[:, i] * float(W[i]) * float(S[i]) * d64[i] for i in range(n)], 1)
        if cons is not None:
            sw = D.sum(1) if cons == "sum" else np.sign(D).sum(1)
            maj = np.where(sw >= 0, 1.0, -1.0)
            keep = (np.sign(D) == maj[:, None]).astype(np.float64) * c
            den = (keep * W.astype(np.float64)[None, :]).sum(1)
            den = np.where(den == 0, 1.0, den)
        else:
            keep = c
            den = np.full(E, float(W.astype(np.float64).sum()))
            if abs(den[0]) < 1e-8:
                den[:] = 1.0
        if not normalize:
            den = np.ones(E)
        return [lam * keep[:, i] * float(W[i]) * d64[i] / den for i in range(n)]

    def with_free(S, vals):
        Sv = list(S)
        for k, i in enumerate(free):
            Sv[i] = F32(vals[k])
        return Sv

    def s_range(i, Sx, post, bad, best):
        """(factor, its L1 estimate, lowest and highest factor the inferred masks allow) of model i."""
        s_l1, bmass, vmass = l1_estimate(i, post, bad, best, d64, deltas, carr, asum)
        if asum[i] < 1e-7 or bmass < 1e-7:
            return (float(Sx[i]), 1.0, 1.0, 1.0)
        sb = math.sqrt(vmass)
        slack = 2 * RESCALE_REL_TOL * s_l1
        return (float(Sx[i]), s_l1, asum[i] / (bmass + 4 * sb) - slack,
                asum[i] / max(bmass - 4 * sb, 1e-30) + slack)

    # 1. rescale factors
    S = [F32(1.0 / dens[i]) if (rescale and 0 < dens[i] < 1) else F32(1) for i in range(n)]
    if free:
        # a) coordinate-wise scans maximizing the number of explained elements (a count is robust to
        #    misassigned elements): a geometric grid over [1, 8/density] (small tensors can be far
        #    from 1/density), then a 0.1% grid; half the step is the tolerance on the factors
        subs = {i: np.nonzero(deltas[i])[0] for i in free}
        for step, half in ((2e-2, None), (1e-3, 25)):
            for _pass in range(1 if half is None else 2):
                for i in free:
                    idx = subs[i]
                    if idx.size == 0:
                        continue
                    base_s = float(S[i])
                    if half is None:
                        grid = list(np.exp(np.arange(0.0, math.log(8.0 / dens[i]), step)))
                    else:
                        grid = [base_s * (1 + k * step) for k in range(-half, half + 1)]
                    counts = []
                    for gv in grid:
                        Sv = list(S)
                        Sv[i] = F32(gv)
                        counts.append(count_ok(Sv, step / 2, idx))
                    counts = np.array(counts)
                    cmax = counts.max()
                    top = np.nonzero(counts == cmax)[0]
                    if top.size == counts.size:
                        continue            # no information
                    cur = int(np.argmin(np.abs(np.array(grid) - base_s)))
                    k0 = top[np.argmin(np.abs(top - cur))]
                    lo_k = hi_k = k0
                    while lo_k - 1 >= 0 and counts[lo_k - 1] == cmax:
                        lo_k -= 1
                    while hi_k + 1 < len(counts) and counts[hi_k + 1] == cmax:
                        hi_k += 1
                    S[i] = F32(grid[(lo_k + hi_k) // 2])
        # b) weighted least squares over elements with a single consistent combination, the
        #    weights capped by the current uncertainty of the factors; misassigned outliers dropped
        for rel in (5e-4, 2e-4, 1e-4, 5e-5, rel_final, rel_final):
            err, unit = fit(S, rel)
            okr = err <= tol
            best = np.argmin(err - 1e-9 * logp, axis=0)
            # a single consistent prediction (combinations differing only where delta == 0 tie)
            first = err.min(axis=0)
            second = np.where(err > first[None, :] * (1 + 1e-9) + 1e-12, err, np.inf).min(axis=0)
            conf = okr.any(axis=0) & (second > tol)
            coef = linear_model(S, best)
            A = np.stack([coef[i] for i in free], 1) / unit[:, None]
            yy = (y - sum((coef[i] * float(S[i]) for i in fixed_idx), np.zeros(E))) / unit
            sel = conf & np.any(A != 0, axis=1)
            if sel.sum() < len(free):
                continue
            Aw, yw = A[sel], yy[sel]
            sol = np.linalg.lstsq(Aw, yw, rcond=None)[0]
            for _ in range(3):
                res = np.abs(Aw @ sol - yw)
                good = res <= max(2.0, 10 * float(np.median(res)))
                if good.all() or good.sum() < len(free):
                    break
                Aw, yw = Aw[good], yw[good]
                sol = np.linalg.lstsq(Aw, yw, rcond=None)[0]
            for k, i in enumerate(free):
                if np.count_nonzero(Aw[:, k]) >= 3 and np.isfinite(sol[k]) and sol[k] > 0:
                    S[i] = F32(sol[k])
        # c) the exact constraints are slabs |a_e . S - y_e| <= 1 unit; least squares may leave a
        #    few sensitive ones violated: project onto them (POCS), using only elements whose
        #    combination is unambiguous at a looser tolerance
        err, unit = fit(S, rel_final)
        first = err.min(axis=0)
        # second best distinct prediction (combinations that differ only where delta == 0 tie)
        second = np.where(err > first[None, :] * (1 + 1e-9) + 1e-12, err, np.inf).min(axis=0)
        conf = second >= 4 * np.maximum(first, 1.0)
        best = np.argmin(err - 1e-9 * logp, axis=0)
        Sd = np.array([float(S[i]) for i in free])
        for _sweep in range(50):
            err, unit = fit(S, rel_final)
            if (err <= tol).any(axis=0).all():
                break
            coef = linear_model(S, best)
            A = np.stack([coef[i] for i in free], 1) / unit[:, None]
            yy = (y - sum((coef[i] * float(S[i]) for i in fixed_idx), np.zeros(E))) / unit
            r = A @ Sd - yy
            viol = np.nonzero(conf & (np.abs(r) > 0.9) & np.any(A != 0, axis=1))[0]
            if viol.size == 0:
                break
            for e in viol[np.argsort(-np.abs(r[viol]))]:
                a = A[e]
                re = float(a @ Sd - yy[e])
                if abs(re) > 0.9:
                    Sd = Sd - (re - math.copysign(0.8, re)) * a / float(a @ a)
            S = with_free(S, Sd)
        # d) models the data cannot pin down (e.g. norm weights whose deltas vanish in bf16): when the
        #    factors are not the L1 ratios of the inferred masks, iterate S <- L1(most probable
        #    consistent masks under S) from several starting points and keep the state explaining
        #    the most elements, preferring L1-consistent ones
        def l1_state(Sx):
            post, bad, best, mapc = posterior_of(Sx, fit, tol, combos, carr, logp, obits, E, n, dt,
                                                 rel_final, Bf, deltas, W, cons, normalize, lam)
            okl = True
            for i in free:
                chk = s_range(i, Sx, post, bad, best)
                if chk is not None and not (chk[2] <= chk[0] <= chk[3]):
                    okl = False
            map_masks = [carr[mapc][:, k] for k in range(n)]
            nxt = list(Sx)
            for i in free:
                nxt[i] = F32(l1_estimate(i, map_masks, bad, best, d64, deltas, carr, asum)[0])
            return count_ok(Sx, rel_final), okl, nxt

        c_cur, ok_cur, nxt = l1_state(S)
        if not ok_cur:
            best_state = (c_cur, ok_cur, S)
            starts = [nxt, [F32(1.0 / dens[i]) if i in free else S[i] for i in range(n)],
                      [F32(1.0) if i in free else S[i] for i in range(n)]]
            for Sx in starts:
                seen = set()
                for _it in range(12):
                    key = tuple(float(v) for v in Sx)
                    if key in seen:
                        break
                    seen.add(key)
                    c, okl, nx = l1_state(Sx)
                    if (c, okl) > best_state[:2]:
                        best_state = (c, okl, Sx)
                    Sx = nx
            S = best_state[2]
    # 2. final fit: every element needs a mask combination within tolerance
    err, _ = fit(S, rel_final)
    ok = err <= tol
    bad = ~ok.any(axis=0)
    minerr = err.min(axis=0)
    post, bad, best, mapc = posterior_of(S, fit, tol, combos, carr, logp, obits, E, n, dt, rel_final,
                                         Bf, deltas, W, cons, normalize, lam)
    # 3. kept fraction (the sum of posterior keep probabilities has the sum of the keep
    #    probabilities as expectation and at most sum p(1-p) as variance) and L1 consistency
    kept, s_check, detail = [], [], []
    for i in range(n):
        if fixed[i]:
            kept.append(None)
            s_check.append(None)
            continue
        nz = (deltas[i] != 0) & ~bad
        K = float(post[i][nz].sum())
        mu = float(P[i][nz].sum())
        var = float((P[i][nz] * (1 - P[i][nz])).sum())
        # trend with the keep probability (DELLA's rank-based p): sum (post - p)(p - mean p) has
        # expectation 0 and variance at most sum p(1-p)(p - mean p)^2
        c = P[i][nz] - (P[i][nz].mean() if nz.any() else 0.0)
        T = float(((post[i][nz] - P[i][nz]) * c).sum())
        varT = float((P[i][nz] * (1 - P[i][nz]) * c * c).sum())
        kept.append((K, mu, var, int(nz.sum()), T, varT))
        detail.append((i, post[i], nz))
        if not rescale:
            s_check.append(None)
            continue
        # the L1 relation is only testable where this model's terms stand well above the output's
        # resolution (not e.g. in norm weights near 1.0 whose deltas are ~1 bf16 ulp)
        _, unit_f = fit(S, rel_final)
        informative = int(np.count_nonzero(nz & (np.abs(float(W[i]) * float(S[i]) * d64[i]) >= 8 * unit_f)))
        if informative < MIN_INFORMATIVE:
            s_check.append(None)
            continue
        s_check.append(s_range(i, S, post, bad, best))
    return {"bad": int(bad.sum()), "maxerr": float(minerr.max()) if minerr.size else 0.0,
            "kept": kept, "S": [float(v) for v in S], "s_check": s_check,
            "n": n, "numel": E, "detail": detail}


def posterior_of(S, fit, tol, combos, carr, logp, obits, E, n, dt, rel, Bf, deltas, W, cons, normalize, lam):
    """posterior keep probability of every element and model: the prior restricted to the
    combinations whose prediction rounds exactly to the output (or, when none does, because of
    float32 summation order, to those within the tolerance).
    -> (post [n][E], bad [E], closest combination [E], most probable consistent combination [E])"""
    err, _ = fit(S, rel)
    ok = err <= tol
    pred = reconstruct(Bf, deltas, W, S, combos, cons, normalize, lam)
    ex = np.stack([stio.encode(pc, dt).view(np.uint8).reshape(E, -1) for pc in pred])
    ex = np.all(ex == obits, axis=2)
    cset = np.where(ex.any(axis=0)[None, :], ex, ok)
    lik = np.where(cset, logp, -np.inf)
    mx = lik.max(axis=0)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    wts = np.exp(lik - mx[None, :])
    wsum = wts.sum(axis=0)
    safe = np.where(wsum > 0, wsum, 1.0)
    post = [np.where(wsum > 0, (wts * carr[:, i:i + 1]).sum(axis=0) / safe, 0.0) for i in range(n)]
    best = np.argmin(err - 1e-9 * logp, axis=0)
    mapc = np.where(np.isfinite(lik.max(axis=0)), np.argmax(lik, axis=0), best)
    return post, ~ok.any(axis=0), best, mapc


def l1_estimate(i, post, bad, best, d64, deltas, carr, asum):
    """L1 rescale ratio of model i implied by the posterior masks: (ratio, kept mass, its variance)."""
    ad = np.abs(d64[i])
    nz = (deltas[i] != 0) & ~bad
    bmass = float((post[i][nz] * ad[nz]).sum()) + float(ad[bad & (carr[best][:, i] > 0)].sum())
    vmass = float((post[i][nz] * (1 - post[i][nz]) * ad[nz] ** 2).sum())
    if asum[i] < 1e-7 or bmass < 1e-7:
        return 1.0, bmass, vmass
    return asum[i] / bmass, bmass, vmass


def check_random(rep, names, got, case_yaml, fixtures_dir, totals):
    try:
        plan = oracle.plan_recipe(case_yaml, fixtures_dir)
    except (oracle.RecipeError, stio.SafetensorsError) as e:
        raise UsageError("recipe: %s" % e)
    if plan.method not in RANDOM_METHODS:
        raise UsageError("method %s is not a random method" % plan.method)
    tasks = {t.out_name: t for t in plan.tasks}
    agg = {}
    nameset = set(names)
    for n in sorted(tasks):
        if n not in nameset:
            continue
        task = tasks[n]
        dt = got.dtype(n)
        outv = np.asarray(got[n], dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            r = structural_tensor(task, outv, dt)
        totals[0] += r["numel"]
        msgs = []
        if r["bad"]:
            msgs.append("%d elements fit no mask combination (error up to %.2f units)" % (r["bad"], r["maxerr"]))
        for i, sc in enumerate(r["s_check"]):
            if sc is not None and not (sc[2] <= sc[0] <= sc[3]):
                msgs.append("model %d: fitted rescale %.6g is not the L1 ratio %.6g of the inferred mask "
                            "(allowed %.6g .. %.6g)" % (i, sc[0], sc[1], sc[2], sc[3]))
        others = [inp for inp in task.inputs if not inp[4]]
        for i, kv in enumerate(r["kept"]):
            if kv is None:
                continue
            k, mu, var, det, T, varT = kv
            key = others[i][0].ref if i < len(others) else str(i)
            a = agg.setdefault(key, [0, 0.0, 0.0, 0, 0.0, 0.0])
            for j, v in enumerate((k, mu, var, det, T, varT)):
                a[j] += v
            sd = math.sqrt(var) if var > 0 else 0.0
            if det and abs(k - mu) > 5 * sd + 1:
                msgs.append("model %s: kept %.1f of %d elements (posterior), expected %.1f +- %.1f (> 5 sigma)"
                            % (key, k, det, mu, sd))
        if msgs:
            rep.bad("%s: %s" % (n, "; ".join(msgs)))
        else:
            rep.info("%s: ok (rescale %s, max error %.2f ulp)" %
                     (n, ", ".join("%.5g" % s for s in r["S"]), r["maxerr"]))
    for key, (k, mu, var, det, T, varT) in sorted(agg.items()):
        sd = math.sqrt(var) if var > 0 else 0.0
        z = (k - mu) / sd if sd > 0 else 0.0
        line = "%s: kept %.1f of %d elements (posterior), expected %.1f +- %.1f (z = %+.2f)" % (key, k, det, mu, sd, z)
        if abs(k - mu) > 3 * sd + 1:
            rep.bad("kept fraction: " + line + " beyond 3 sigma")
        else:
            print("     kept fraction: " + line)
        if varT > 1e-12:
            zt = T / math.sqrt(varT)
            line = "%s: trend of kept elements with their keep probability z = %+.2f" % (key, zt)
            if abs(zt) > 3:
                rep.bad("keep probabilities: " + line + " beyond 3 sigma (masks not drawn with these probabilities)")
            else:
                print("     keep probabilities: " + line)


# ---------------------------------------------------------------------------------------------

def main(argv):
    import argparse
    ap = argparse.ArgumentParser(
        description="Check a merged model directory against a conformance case's expected output "
                    "(rules of tests/conformance/README.md).",
        epilog="exit status: 0 pass, 1 mismatch, 2 usage or IO error")
    ap.add_argument("case", metavar="CASE_NAME")
    ap.add_argument("got", metavar="GOT_DIR", help="the merged model to check (e.g. a blendfs mount)")
    ap.add_argument("expected", metavar="EXPECTED_DIR", help="tests/conformance/expected/CASE_NAME")
    ap.add_argument("yaml", metavar="CASE_YAML", help="tests/conformance/cases/CASE_NAME.yaml")
    ap.add_argument("fixtures", metavar="FIXTURES_PARENT_DIR",
                    help="directory the recipe's model paths are relative to (tests/conformance)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print a line for every passing tensor too")
    a = ap.parse_args(argv)
    rep = Report(a.verbose)
    try:
        if not os.path.isdir(a.expected):
            raise UsageError("%s: not a directory" % a.expected)
        if not os.path.isfile(a.yaml):
            raise UsageError("%s: no such recipe" % a.yaml)
        try:
            exp = stio.read_model_dir(a.expected)
        except stio.SafetensorsError as e:
            raise UsageError("expected: %s" % e)
        meta = {}
        mp = os.path.join(a.expected, ".oracle", "meta.json")
        if os.path.exists(mp):
            try:
                with open(mp) as f:
                    meta = json.load(f)
            except (OSError, ValueError) as e:
                raise UsageError("%s: %s" % (mp, e))
        recipe = oracle.load_recipe(a.yaml)
        method = meta.get("merge_method") or recipe.get("merge_method")
        random = bool(meta.get("random", method in RANDOM_METHODS))
        if not os.path.isdir(a.got):
            rep.bad("%s: not a directory" % a.got)
            got = None
        else:
            try:
                got = stio.read_model_dir(a.got)
            except stio.SafetensorsError as e:
                rep.bad("output files invalid: %s" % e)
                got = None
        totals = [0, 0]
        if got is not None:
            names = check_layout(rep, got, exp, a.got, a.expected)
            if random:
                mode = "structural (random method)"
                check_random(rep, names, got, a.yaml, a.fixtures, totals)
            elif method in MAGNITUDE_CUT:
                mode = "exact bytes + tie candidates"
                check_magnitude_cut(rep, names, got, exp, load_ties(a.expected), totals, False)
            elif method == "sce":
                mode = "sce: 1 ulp / tie candidates with slack"
                check_magnitude_cut(rep, names, got, exp, load_ties(a.expected), totals, True)
            else:
                mode = "deterministic: 1 ulp, >= 99% exact"
                check_deterministic(rep, names, got, exp, totals)
            if not random and totals[0] and totals[1] < 0.99 * totals[0]:
                rep.bad("only %d of %d elements exact overall (< 99%%)" % (totals[1], totals[0]))
        else:
            mode = "layout"
    except UsageError as e:
        print("conformance_check: error: %s" % e, file=sys.stderr)
        return 2
    except oracle.RecipeError as e:
        print("conformance_check: error: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("conformance_check: error: %s" % e, file=sys.stderr)
        return 2
    exact = ""
    if totals[0] and not random:
        exact = ", %d/%d elements exact" % (totals[1], totals[0])
    if rep.fail:
        print("%s: FAIL (%s): %d problems%s" % (a.case, mode, len(rep.fail), exact))
        return 1
    print("%s: PASS (%s)%s" % (a.case, mode, exact))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
