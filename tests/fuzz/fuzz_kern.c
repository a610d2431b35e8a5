/* fuzz_kern.c: bytes -> one kernel of bf_kern.h, run by the scalar reference and by every SIMD
 * variant this CPU has, on the same inputs: a differential fuzzer of bf_kern.h's contract (every
 * variant gives the reference's bits; NaN results may differ only in payload and sign, as
 * tests/unit/test_kern.c allows, since every output conversion canonicalises them).
 *
 * Input: a kernel selector, the length n (0..600, so vector heads, bodies and tails all occur),
 * a model count, an element offset e0 and the kernel's flags and scalars, then the data: bf16
 * and f32 values, mask bits and keys taken from the rest of the input (cycled when it is short;
 * zeros when it is empty). Scalars and data are raw bit patterns, so NaNs, infinities,
 * subnormals, signed zeros and rounding ties are all reachable. Every kernel of struct bf_kern
 * is reached.
 *
 * On a CPU (or build) without a SIMD variant there is nothing to compare: every input passes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_kern.h"
#include "bf_select.h"
#include "fuzz.h"

enum { NMAX = 600, KMAX = BF_GTA_FUSED_MAX };

static const struct bf_kern *vars[2];
static int nvars;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	const struct bf_kern *found[2] = { bf_kern_avx2(), bf_kern_avx512() };
	for (int i = 0; i < 2; i++)
		if (found[i])
			vars[nvars++] = found[i];
	return 0;
}

/* The data pool: the input left after the parameters, read cyclically. */
struct pool {
	const uint8_t *p;
	size_t n, at;
};

static uint8_t pool_u8(struct pool *q)
{
	if (!q->n)
		return 0;
	uint8_t v = q->p[q->at];
	q->at = (q->at + 1) % q->n;
	return v;
}

static uint16_t pool_u16(struct pool *q)
{
	uint16_t lo = pool_u8(q);
	return (uint16_t)(lo | (uint16_t)pool_u8(q) << 8);
}

static uint32_t pool_u32(struct pool *q)
{
	uint32_t lo = pool_u16(q);
	return lo | (uint32_t)pool_u16(q) << 16;
}

/* Values: a control byte picks a raw bit pattern, a special value (signed zeros, infinities,
 * NaNs quiet and signalling, subnormals, the largest finite), or a short number (few mantissa
 * bits, exponents near 0): sums and products of short numbers land on rounding ties, which raw
 * patterns almost never do. */
static const uint32_t special32[] = {
	0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 0x00000001,
	0x807fffff, 0x00400000, 0x7f7fffff, 0x3f800000, 0xbf800000, 0x3f808000, 0x477ff000, 0x33800000,
};
static const uint16_t special16[] = {
	0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x7f81, 0x0001, 0x807f, 0x0040, 0x7f7f, 0x3f80,
	0xbf80, 0x3f81, 0x4780, 0x3380,
};

static uint32_t short32(struct pool *q)
{
	uint8_t r = pool_u8(q);
	uint32_t sign = (uint32_t)(r & 1) << 31, mant = (uint32_t)(r >> 1 & 7) << 20;
	uint32_t exp = 123u + (pool_u8(q) % 9u);
	return sign | exp << 23 | mant;
}

static uint16_t pool_bf16(struct pool *q)
{
	uint8_t c = pool_u8(q);
	if (c < 64)
		return pool_u16(q);
	if (c < 128)
		return special16[c % 16];
	return (uint16_t)(short32(q) >> 16);
}

static float pool_f32(struct pool *q)
{
	uint8_t c = pool_u8(q);
	uint32_t u = c < 64 ? pool_u32(q) : c < 128 ? special32[c % 16] : short32(q);
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* A kernel scalar (divisor, lambda, scale): 1, a short number or a raw pattern. */
static float scalar(struct fz_in *in)
{
	uint8_t c = fz_u8(in);
	uint32_t u = fz_u32(in);
	if (c < 64)
		return 1.0f;
	if (c < 160)
		return bits_f32((u & 0x80000000u) | (123u + u % 9u) << 23 | (u >> 8 & 7u) << 20);
	return bits_f32(u);
}

static bool same_f32(const float *a, const float *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(&a[i], &b[i], 4) != 0 && !(isnan(a[i]) && isnan(b[i])))
			return false;
	return true;
}

static bool same_f64(const double *a, const double *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(&a[i], &b[i], 8) != 0 && !(isnan(a[i]) && isnan(b[i])))
			return false;
	return true;
}

enum {
	K_WSUM, K_TA, K_PREP, K_FINISH, K_CONSENSUS, K_FUSED, K_ABS_KEYS, K_SUB, K_MASK_BITS, K_DIGIT,
	K_DOTS, K_L1, K_WINDOW, K_RANK, K_CONVERT, K_PHILOX, K_DELLA, K_COUNT
};

static uint16_t x16[KMAX][NMAX], b16[NMAX], o1[NMAX], o2[NMAX];
static float fa[KMAX * NMAX], fb[NMAX], fm[NMAX], r1[KMAX * NMAX], r2[KMAX * NMAX], d1[NMAX], d2[NMAX];
/* window_scan may collect up to start (< 8) + n entries, and write BF_SCAN_SLACK past its cap */
static uint32_t u1[NMAX + 8 + BF_SCAN_SLACK], u2[NMAX + 8 + BF_SCAN_SLACK], i1[NMAX + 8 + BF_SCAN_SLACK],
	i2[NMAX + 8 + BF_SCAN_SLACK];
static uint64_t bits[KMAX][(NMAX + 256) / 64 + 2], w1[(NMAX + 256) / 64 + 2], w2[(NMAX + 256) / 64 + 2];

/* A data-derived 16-bit value for element e (the pool is consumed by then). */
static uint16_t pool_bits_u16(size_t e)
{
	return (uint16_t)(b16[e] ^ x16[KMAX - 1][e]);
}

/* One 16-bit float type's two conversions, the reference's (r) against a variant's (v): the
 * 16-bit data widened, the f32 data rounded (NaNs included: both canonicalise them alike). */
static void convert_pair(const char *vname, const char *type, void (*rto)(const void *, float *, size_t),
			 void (*vto)(const void *, float *, size_t), void (*rfrom)(const float *, void *, size_t),
			 void (*vfrom)(const float *, void *, size_t), size_t n)
{
	rto(b16, d1, n);
	vto(b16, d2, n);
	FZ_CHECK(!memcmp(d1, d2, n * 4), "%s %s_to_f32 n=%zu", vname, type, n);
	rfrom(fa, o1, n);
	vfrom(fa, o2, n);
	FZ_CHECK(!memcmp(o1, o2, n * 2), "%s f32_to_%s n=%zu", vname, type, n);
}

/* The kernel `which` of variant v against the reference on the prepared data. */
static void compare(const struct bf_kern *v, uint32_t which, struct fz_in *in, size_t n, int k, uint64_t e0)
{
	const struct bf_kern *R = &bf_kern_ref;
	const uint16_t *xs[KMAX];
	for (int i = 0; i < k; i++)
		xs[i] = x16[i];
	float w[KMAX];
	for (int i = 0; i < k; i++)
		w[i] = fa[i]; /* weights: raw patterns from the data */
	int f1 = fz_bool(in), f2 = fz_bool(in), f3 = fz_bool(in);
	float s1 = scalar(in), s2 = scalar(in);
	switch (which) {
	case K_WSUM:
		R->wsum_bf16(o1, xs, w, k, s1, f1, n);
		v->wsum_bf16(o2, xs, w, k, s1, f1, n);
		FZ_CHECK(!memcmp(o1, o2, n * 2), "%s wsum_bf16 n=%zu k=%d", v->name, n, k);
		break;
	case K_TA:
		R->ta_bf16(o1, b16, xs, w, k, s1, f1, s2, f2, n);
		v->ta_bf16(o2, b16, xs, w, k, s1, f1, s2, f2, n);
		FZ_CHECK(!memcmp(o1, o2, n * 2), "%s ta_bf16 n=%zu k=%d", v->name, n, k);
		break;
	case K_PREP: {
		uint32_t tk = fz_u32(in);
		uint64_t ti = e0 + fz_below(in, (uint32_t)n + 2);
		const float *mk = f1 ? fm : NULL;
		R->gta_prep_bf16(d1, x16[0], b16, mk, f2, tk, ti, e0, s1, s2, n);
		v->gta_prep_bf16(d2, x16[0], b16, mk, f2, tk, ti, e0, s1, s2, n);
		FZ_CHECK(same_f32(d1, d2, n), "%s gta_prep_bf16 n=%zu", v->name, n);
		R->gta_prep(d1, fa, fb, mk, f2, tk, ti, e0, s1, s2, n);
		v->gta_prep(d2, fa, fb, mk, f2, tk, ti, e0, s1, s2, n);
		FZ_CHECK(same_f32(d1, d2, n), "%s gta_prep n=%zu", v->name, n);
		break;
	}
	case K_FINISH:
		R->gta_finish_bf16(o1, fa, fb, b16, f1, s1, f2, n);
		v->gta_finish_bf16(o2, fa, fb, b16, f1, s1, f2, n);
		FZ_CHECK(!memcmp(o1, o2, n * 2), "%s gta_finish_bf16 n=%zu", v->name, n);
		memcpy(d1, fa, n * 4);
		memcpy(d2, fa, n * 4);
		R->gta_finish(d1, fb, fm, f1, s1, f2, n);
		v->gta_finish(d2, fb, fm, f1, s1, f2, n);
		FZ_CHECK(same_f32(d1, d2, n), "%s gta_finish n=%zu", v->name, n);
		break;
	case K_CONSENSUS:
		R->consensus(d1, r1, fa, n, w, k, f1, n);
		v->consensus(d2, r2, fa, n, w, k, f1, n);
		FZ_CHECK(same_f32(d1, d2, n) && same_f32(r1, r2, n), "%s consensus n=%zu k=%d", v->name, n, k);
		break;
	case K_FUSED: {
		struct bf_gta_in m[KMAX];
		for (int i = 0; i < k; i++) {
			uint32_t mode = fz_below(in, 3);
			m[i] = (struct bf_gta_in){ .x = x16[i], .bits = mode == 0 ? bits[i] : NULL, .tk_on = mode == 1,
						   .tk = fz_u32(in), .ti = e0 + fz_below(in, (uint32_t)n + 2),
						   .scale = scalar(in), .w = w[i] };
		}
		R->gta_fused_bf16(o1, b16, m, k, f1, f2, s1, f3, e0, n);
		v->gta_fused_bf16(o2, b16, m, k, f1, f2, s1, f3, e0, n);
		FZ_CHECK(!memcmp(o1, o2, n * 2), "%s gta_fused_bf16 n=%zu k=%d e0=%llu", v->name, n, k,
			 (unsigned long long)e0);
		break;
	}
	case K_ABS_KEYS: {
		uint32_t flip = f1 ? ~0u : 0u;
		R->abs_keys_bf16(u1, x16[0], b16, flip, n);
		v->abs_keys_bf16(u2, x16[0], b16, flip, n);
		FZ_CHECK(!memcmp(u1, u2, n * 4), "%s abs_keys_bf16 n=%zu", v->name, n);
		R->abs_keys(u1, fa, fb, flip, n);
		v->abs_keys(u2, fa, fb, flip, n);
		FZ_CHECK(!memcmp(u1, u2, n * 4), "%s abs_keys n=%zu", v->name, n);
		break;
	}
	case K_SUB:
		R->sub_bf16(d1, x16[0], b16, n);
		v->sub_bf16(d2, x16[0], b16, n);
		FZ_CHECK(same_f32(d1, d2, n), "%s sub_bf16 n=%zu", v->name, n);
		break;
	case K_MASK_BITS:
		/* pack ORs into partly covered words: both start from the same words */
		memcpy(w1, bits[0], sizeof(w1));
		memcpy(w2, bits[0], sizeof(w2));
		R->mask_pack(w1, e0, fm, n);
		v->mask_pack(w2, e0, fm, n);
		FZ_CHECK(!memcmp(w1, w2, sizeof(w1)), "%s mask_pack n=%zu e0=%llu", v->name, n, (unsigned long long)e0);
		R->mask_unpack(bits[0], e0, d1, n);
		v->mask_unpack(bits[0], e0, d2, n);
		FZ_CHECK(!memcmp(d1, d2, n * 4), "%s mask_unpack n=%zu e0=%llu", v->name, n, (unsigned long long)e0);
		break;
	case K_DIGIT: {
		unsigned shift = fz_below(in, 25);
		uint32_t sub = fz_u32(in), d = fz_u8(in);
		memcpy(u1, fa, n * 4);
		if (n && fz_bool(in)) /* a digit that occurs */
			d = ((u1[fz_below(in, (uint32_t)n)] >> shift) - sub) & 255u;
		memcpy(u2, fa, n * 4);
		for (size_t e = 0; e < n; e++)
			i1[e] = i2[e] = (uint32_t)e * 3u;
		uint64_t c1 = R->digit_compact(u1, i1, n, shift, sub, d);
		uint64_t c2 = v->digit_compact(u2, i2, n, shift, sub, d);
		FZ_CHECK(c1 == c2 && !memcmp(u1, u2, c1 * 4) && !memcmp(i1, i2, c1 * 4), "%s digit_compact n=%zu",
			 v->name, n);
		break;
	}
	case K_DOTS: {
		double g1[KMAX * KMAX] = { 0 }, g2[KMAX * KMAX] = { 0 };
		R->dots_bf16(xs, k, n, g1);
		v->dots_bf16(xs, k, n, g2);
		FZ_CHECK(same_f64(g1, g2, KMAX * KMAX), "%s dots_bf16 n=%zu k=%d", v->name, n, k);
		const float *fs[KMAX];
		for (int i = 0; i < k; i++)
			fs[i] = fa + (size_t)i * n;
		memset(g1, 0, sizeof(g1));
		memset(g2, 0, sizeof(g2));
		R->dots_f64(fs, k, n, g1);
		v->dots_f64(fs, k, n, g2);
		FZ_CHECK(same_f64(g1, g2, KMAX * KMAX), "%s dots_f64 n=%zu k=%d", v->name, n, k);
		break;
	}
	case K_L1: {
		double a[2] = { s1, s1 }, b[2] = { s2, s2 };
		R->l1_pair(fa, fm, n, &a[0], &b[0]);
		v->l1_pair(fa, fm, n, &a[1], &b[1]);
		FZ_CHECK(same_f64(&a[0], &a[1], 1) && same_f64(&b[0], &b[1], 1), "%s l1_pair n=%zu", v->name, n);
		break;
	}
	case K_WINDOW: {
		uint32_t lo = fz_u32(in), wd = fz_u32(in) >> fz_below(in, 32), idx0 = fz_u32(in);
		uint64_t start = fz_below(in, 8), cap = start + fz_below(in, (uint32_t)n + 1);
		uint64_t n1 = start, n2 = start;
		memcpy(u1, fb, n * 4); /* keys */
		uint64_t b1 = R->window_scan(u1, n, lo, wd, idx0, i1, (uint32_t *)r1, &n1, cap);
		uint64_t b2 = v->window_scan(u1, n, lo, wd, idx0, i2, (uint32_t *)r2, &n2, cap);
		uint64_t kept = n1 < cap ? n1 : cap;
		FZ_CHECK(b1 == b2 && n1 == n2, "%s window_scan counts n=%zu", v->name, n);
		FZ_CHECK(kept <= start || (!memcmp(i1 + start, i2 + start, (kept - start) * 4) &&
					   !memcmp((uint32_t *)r1 + start, (uint32_t *)r2 + start, (kept - start) * 4)),
			 "%s window_scan entries n=%zu", v->name, n);
		break;
	}
	case K_RANK: {
		memcpy(u1, fb, n * 4);
		uint32_t key = fz_bool(in) && n ? u1[fz_below(in, (uint32_t)n)] : fz_u32(in);
		size_t i = fz_below(in, (uint32_t)n + 2);
		FZ_CHECK(R->stable_rank(u1, n, key, i) == v->stable_rank(u1, n, key, i), "%s stable_rank n=%zu",
			 v->name, n);
		break;
	}
	case K_CONVERT:
		convert_pair(v->name, "bf16", R->bf16_to_f32, v->bf16_to_f32, R->f32_to_bf16, v->f32_to_bf16, n);
		convert_pair(v->name, "f16", R->f16_to_f32, v->f16_to_f32, R->f32_to_f16, v->f32_to_f16, n);
		break;
	case K_PHILOX: {
		/* any key, name and starting index (heads at every counter phase), uniforms or masks */
		uint32_t key[2] = { fz_u32(in), fz_u32(in) }, nlo = fz_u32(in), nhi = fz_u32(in);
		uint64_t index0 = (uint64_t)fz_u32(in) << 32 | fz_u32(in);
		if (index0 > UINT64_MAX - NMAX)
			index0 = UINT64_MAX - NMAX; /* the contract: indices never wrap */
		float p = (float)fz_u32(in) / 4294967296.0f;
		R->philox_uniform(key, nlo, nhi, index0, n, d1);
		v->philox_uniform(key, nlo, nhi, index0, n, d2);
		FZ_CHECK(!memcmp(d1, d2, n * 4), "%s philox_uniform n=%zu", v->name, n);
		R->philox_mask(key, nlo, nhi, index0, n, p, d1);
		v->philox_mask(key, nlo, nhi, index0, n, p, d2);
		FZ_CHECK(!memcmp(d1, d2, n * 4), "%s philox_mask n=%zu", v->name, n);
		break;
	}
	case K_DELLA: {
		/* a row's three passes as bf_select_della_row chains them: keys of |d|, buckets below
		 * a base that keeps the largest key's bucket under BF_DELLA_BUCKETS, decisions against
		 * per-bucket bounds (fuzzed, in [0, 1]) */
		uint32_t zc1 = 0, zc2 = 0;
		uint32_t k1 = R->della_keys(fa, n, u1, &zc1), k2 = v->della_keys(fa, n, u2, &zc2);
		FZ_CHECK(k1 == k2 && zc1 == zc2 && !memcmp(u1, u2, n * 4), "%s della_keys n=%zu", v->name, n);
		uint32_t top = k1 >> BF_DELLA_SHIFT;
		uint32_t base = top >= BF_DELLA_BUCKETS - 2 ? top - (BF_DELLA_BUCKETS - 2) : 0;
		uint32_t nb = top - base + 2, J = nb + 1;
		static uint16_t bk1[NMAX], bk2[NMAX], hs1[NMAX], hs2[NMAX];
		R->della_buckets(u1, n, base, J, bk1, hs1);
		v->della_buckets(u1, n, base, J, bk2, hs2);
		FZ_CHECK(!memcmp(bk1, bk2, n * 2) && !memcmp(hs1, hs2, n * 2), "%s della_buckets n=%zu", v->name, n);
		static float plo[BF_DELLA_BUCKETS + 2], phi[BF_DELLA_BUCKETS + 2];
		for (uint32_t b = 0; b < nb; b++) {
			float a = (float)(fz_u8(in) % 129) / 128.0f, c = (float)(fz_u8(in) % 129) / 128.0f;
			plo[b] = a < c ? a : c;
			phi[b] = a < c ? c : a;
		}
		for (size_t e = 0; e < n; e++) /* draws in [0, 1), often on a bound */
			d1[e] = fm[e] == 0.0f ? plo[bk1[e]] : fm[e] == 1.0f ? phi[bk1[e]] :
				(float)(pool_bits_u16(e) % 256) / 256.0f;
		size_t na1 = R->della_decide(bk1, d1, plo, phi, n, r1, i1);
		size_t na2 = v->della_decide(bk1, d1, plo, phi, n, r2, i2);
		FZ_CHECK(na1 == na2 && !memcmp(i1, i2, na1 * 4) && !memcmp(r1, r2, n * 4), "%s della_decide n=%zu",
			 v->name, n);
		break;
	}
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* parameters first (a fixed-size prefix, so that the data pool starts at a known place) */
	enum { HEAD = 160 }; /* enough for the fused kernel's eight models */
	struct fz_in in = { data, size < HEAD ? size : HEAD };
	struct pool q = { data + (size < HEAD ? size : HEAD), size < HEAD ? 0 : size - HEAD, 0 };
	uint32_t which = fz_below(&in, K_COUNT);
	size_t n = fz_below(&in, NMAX + 1);
	int k = 1 + (int)fz_below(&in, KMAX);
	uint64_t e0 = fz_below(&in, 256);
	if (which == K_DOTS || which == K_CONSENSUS)
		n = n / (size_t)k; /* k arrays of n in fa */
	for (int i = 0; i < KMAX; i++)
		for (size_t e = 0; e < NMAX; e++)
			x16[i][e] = pool_bf16(&q);
	for (size_t e = 0; e < NMAX; e++) {
		b16[e] = pool_bf16(&q);
		fb[e] = pool_f32(&q);
		/* masks: mostly 0/1 as the methods make them, sometimes any pattern (the contract is != 0) */
		uint8_t c = pool_u8(&q);
		fm[e] = c < 100 ? 0.0f : c < 240 ? 1.0f : pool_f32(&q);
	}
	for (size_t e = 0; e < KMAX * NMAX; e++)
		fa[e] = pool_f32(&q);
	for (int i = 0; i < KMAX; i++)
		for (size_t j = 0; j < sizeof(bits[i]) / 8; j++)
			bits[i][j] = (uint64_t)pool_u32(&q) << 32 | pool_u32(&q);
	/* shapes that random data almost never has, each chosen by a flag: finite data (a NaN or an
	 * infinity makes every sum NaN or infinite, whatever the order of its additions), models in
	 * mirrored pairs around a zero base with equal weights (sign elections that tie), and keys
	 * crowded into a few radix digits (selections with many equal digits and keys) */
	uint8_t shape = fz_u8(&in);
	if (shape & 1) {
		for (size_t e = 0; e < KMAX * NMAX; e++)
			if (!isfinite(fa[e]))
				fa[e] = 1.0f;
		for (size_t e = 0; e < NMAX; e++) {
			if (!isfinite(fb[e]))
				fb[e] = -0.5f;
			if (!isfinite(fm[e]))
				fm[e] = 1.0f;
			for (int i = 0; i < KMAX; i++)
				if ((x16[i][e] & 0x7f80) == 0x7f80)
					x16[i][e] = 0x3f80;
			if ((b16[e] & 0x7f80) == 0x7f80)
				b16[e] = 0xbf00;
		}
	}
	if (shape & 2) {
		for (size_t e = 0; e < NMAX; e++) {
			b16[e] = 0;
			for (int i = 1; i < KMAX; i += 2)
				x16[i][e] = x16[i - 1][e] ^ 0x8000;
		}
		for (int i = 1; i < KMAX; i++)
			fa[i] = fa[0]; /* the weights */
	}
	if (shape & 4) {
		uint32_t base = fz_u32(&in), sh = fz_below(&in, 25);
		for (size_t e = 0; e < NMAX; e++) {
			uint32_t u;
			memcpy(&u, &fb[e], 4);
			u = base + ((u % 3u) << sh) + (sh ? (u >> 4) % (1u << sh) : 0);
			memcpy(&fb[e], &u, 4); /* window_scan and stable_rank keys */
		}
		for (size_t e = 0; e < KMAX * NMAX; e++) {
			uint32_t u;
			memcpy(&u, &fa[e], 4);
			u = base + ((u % 3u) << sh) + (sh ? (u >> 4) % (1u << sh) : 0);
			memcpy(&fa[e], &u, 4); /* digit_compact keys */
		}
	}
	for (int v = 0; v < nvars; v++) {
		struct fz_in again = in; /* the same kernel parameters for every variant */
		compare(vars[v], which, &again, n, k, e0);
	}
	return 0;
}
