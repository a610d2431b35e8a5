#!/usr/bin/python3
"""mask_check.py GOT_DIR WANT_DIR BASE_DIR OTHER_DIR [--min-agree 0.98]

For methods that choose, per element, between the base and another model (arcee_fusion): every
element of GOT must be exactly the base's value or the other model's value (as f32), and the
choice must agree with the oracle's (WANT) for at least --min-agree of the elements. The choice
itself depends on a threshold over an ill-conditioned statistic (KL of near-equal softmaxes),
which float32 implementations only approximate, so exact agreement is not expected.
"""
import argparse
import sys

import numpy as np

import stio


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("got")
    ap.add_argument("want")
    ap.add_argument("base")
    ap.add_argument("other")
    ap.add_argument("--min-agree", type=float, default=0.98)
    a = ap.parse_args()
    got = stio.read_model_dir(a.got)
    want = stio.read_model_dir(a.want)
    base = stio.read_model_dir(a.base)
    other = stio.read_model_dir(a.other)
    bad = 0
    total = agree = 0
    for name in sorted(want):
        g = got.f32(name).ravel()
        w = want.f32(name).ravel()
        b = base.f32(name).ravel()
        o = other.f32(name).ravel()
        is_b, is_o = g == b, g == o
        if not np.all(is_b | is_o):
            print("FAIL %s: %d elements are neither the base's nor the other model's value"
                  % (name, int(np.sum(~(is_b | is_o)))))
            bad += 1
        took_g = is_o & ~is_b
        took_w = (w == o) & ~(w == b)
        undecided = b == o
        total += int(np.sum(~undecided))
        agree += int(np.sum((took_g == took_w) & ~undecided))
    frac = agree / total if total else 1.0
    print("mask_check: %d/%d choices agree with the oracle (%.4f)" % (agree, total, frac))
    if frac < a.min_agree:
        print("FAIL: agreement below %.2f" % a.min_agree)
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
