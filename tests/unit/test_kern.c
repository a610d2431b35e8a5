/* test_kern.c: every SIMD primitive gives the scalar reference's bits exactly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_kern.h"
#include "bf_rng.h"
#include "bf_select.h"
#include "bf_test.h"

static uint64_t st = 0x9E3779B97F4A7C15ull;
static uint32_t r32(void)
{
	st ^= st << 13;
	st ^= st >> 7;
	st ^= st << 17;
	return (uint32_t)(st >> 16);
}

/* random f32 bit patterns mixed with the special values that trip conversions */
static float rf(void)
{
	static const uint32_t special[] = {
		0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001,
		0x00000001, 0x807fffff, 0x00400000, 0x3f808000, 0x3f818000, 0x477ff000, 0x477fefff,
		0x38800000, 0x387fc000, 0x33800000, 0x33000000, 0x7f7fffff, 0x3f800000,
	};
	uint32_t u = r32() % 8 == 0 ? special[r32() % (sizeof(special) / 4)] : r32();
	if (r32() % 4 == 0) /* values near 1 where rounding ties are common */
		u = 0x3f800000u | (r32() & 0x007fffffu);
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* rf()'s value rounded toward zero to bf16: its top 16 bits (specials and ties included) */
static uint16_t rbf16(void)
{
	float v = rf();
	uint32_t u;
	memcpy(&u, &v, 4);
	return (uint16_t)(u >> 16);
}

static const struct bf_kern *simd;

/* f32 results must match bit for bit, except that two NaNs count as equal: IEEE leaves the
 * payload and sign of a NaN result to the hardware, and every output conversion canonicalises
 * NaNs (bf_dtype.h), so they never reach a file. */
static int same_f32(const float *a, const float *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(&a[i], &b[i], 4) && !(isnan(a[i]) && isnan(b[i])))
			return 0;
	return 1;
}

BF_TEST(widen_exhaustive)
{
	if (!simd)
		return;
	uint16_t *h = malloc(65536 * 2);
	float *a = malloc(65536 * 4), *b = malloc(65536 * 4);
	for (uint32_t i = 0; i < 65536; i++)
		h[i] = (uint16_t)i;
	bf_kern_ref.bf16_to_f32(h, a, 65536);
	simd->bf16_to_f32(h, b, 65536);
	EXPECT(memcmp(a, b, 65536 * 4) == 0);
	bf_kern_ref.f16_to_f32(h, a, 65536);
	simd->f16_to_f32(h, b, 65536);
	size_t bad = 0;
	for (uint32_t i = 0; i < 65536; i++)
		if (memcmp(&a[i], &b[i], 4)) {
			if (bad++ < 5) {
				uint32_t x, y;
				memcpy(&x, &a[i], 4);
				memcpy(&y, &b[i], 4);
				BF_T_FAIL("f16 0x%04x: ref 0x%08x simd 0x%08x", i, x, y);
			}
		}
	EXPECT(bad == 0);
	free(h);
	free(a);
	free(b);
}

BF_TEST(narrow_random)
{
	if (!simd)
		return;
	size_t n = 1 << 20;
	float *x = malloc(n * 4);
	uint16_t *a = malloc(n * 2), *b = malloc(n * 2);
	for (int round = 0; round < 8; round++) {
		for (size_t i = 0; i < n; i++)
			x[i] = rf();
		bf_kern_ref.f32_to_bf16(x, a, n);
		simd->f32_to_bf16(x, b, n);
		EXPECT(memcmp(a, b, n * 2) == 0);
		bf_kern_ref.f32_to_f16(x, a, n);
		simd->f32_to_f16(x, b, n);
		size_t bad = 0;
		for (size_t i = 0; i < n; i++)
			if (a[i] != b[i] && bad++ < 5) {
				uint32_t u;
				memcpy(&u, &x[i], 4);
				BF_T_FAIL("f32 0x%08x -> f16: ref 0x%04x simd 0x%04x", u, a[i], b[i]);
			}
		EXPECT(bad == 0);
	}
	free(x);
	free(a);
	free(b);
}

BF_TEST(arithmetic_random_with_tails)
{
	if (!simd)
		return;
	for (int round = 0; round < 200; round++) {
		size_t n = 1 + r32() % 300; /* odd lengths exercise the scalar tails */
		float *x = malloc(n * 4), *y = malloc(n * 4), *o1 = malloc(n * 4), *o2 = malloc(n * 4);
		for (size_t i = 0; i < n; i++) {
			x[i] = rf();
			y[i] = rf();
		}
		float w = rf(), v = rf();
		bf_kern_ref.scale(o1, x, w, n);
		simd->scale(o2, x, w, n);
		EXPECT(same_f32(o1, o2, n));
		memcpy(o2, o1, n * 4);
		bf_kern_ref.axpy(o1, y, v, n);
		simd->axpy(o2, y, v, n);
		EXPECT(same_f32(o1, o2, n));
		memcpy(o2, o1, n * 4);
		bf_kern_ref.div(o1, w, n);
		simd->div(o2, w, n);
		EXPECT(same_f32(o1, o2, n));
		bf_kern_ref.sub(o1, x, y, n);
		simd->sub(o2, x, y, n);
		EXPECT(same_f32(o1, o2, n));
		memcpy(o2, o1, n * 4);
		bf_kern_ref.add(o1, x, n);
		simd->add(o2, x, n);
		EXPECT(same_f32(o1, o2, n));
		bf_kern_ref.lin2(o1, x, w, y, v, n);
		simd->lin2(o2, x, w, y, v, n);
		EXPECT(same_f32(o1, o2, n));
		free(x);
		free(y);
		free(o1);
		free(o2);
	}
}

/* The fused bf16 kernels give exactly the bytes of the primitive sequences they replace, in
 * both variants. */
static void compose_wsum(const struct bf_kern *k, uint16_t *out, uint16_t **x, const float *w, int kk, float div,
			 int use_div, size_t n)
{
	float *acc = malloc(n * 4), *tmp = malloc(n * 4);
	k->bf16_to_f32(x[0], tmp, n);
	k->scale(acc, tmp, w[0], n);
	for (int i = 1; i < kk; i++) {
		k->bf16_to_f32(x[i], tmp, n);
		k->axpy(acc, tmp, w[i], n);
	}
	if (use_div)
		k->div(acc, div, n);
	k->f32_to_bf16(acc, out, n);
	free(acc);
	free(tmp);
}

static void compose_ta(const struct bf_kern *k, uint16_t *out, uint16_t *b, uint16_t **x, const float *w, int kk,
		       float den, int use_den, float lam, int use_lam, size_t n)
{
	float *acc = malloc(n * 4), *tmp = malloc(n * 4), *bf = malloc(n * 4), *d = malloc(n * 4);
	k->bf16_to_f32(b, bf, n);
	for (int i = 0; i < kk; i++) {
		k->bf16_to_f32(x[i], tmp, n);
		k->sub(d, tmp, bf, n);
		k->scale(d, d, w[i], n);
		if (i == 0)
			memcpy(acc, d, n * 4);
		else
			k->add(acc, d, n);
	}
	if (use_den)
		k->div(acc, den, n);
	if (use_lam)
		k->scale(acc, acc, lam, n);
	k->add(acc, bf, n);
	k->f32_to_bf16(acc, out, n);
	free(acc);
	free(tmp);
	free(bf);
	free(d);
}

BF_TEST(fused_equal_primitives)
{
	for (int round = 0; round < 300; round++) {
		size_t n = 1 + r32() % 200;
		int kk = 1 + (int)(r32() % 5);
		uint16_t *x[6], *b = malloc(n * 2), *o1 = malloc(n * 2), *o2 = malloc(n * 2), *o3 = malloc(n * 2);
		float w[6];
		for (int i = 0; i < kk; i++) {
			x[i] = malloc(n * 2);
			for (size_t e = 0; e < n; e++)
				x[i][e] = (uint16_t)(r32() % 8 ? (0x3c00u + r32() % 0x0800u) ^ (r32() & 0x8000u) : r32());
			w[i] = rf();
			if (r32() % 2)
				w[i] = (float)(r32() % 1000) / 1000.0f;
		}
		for (size_t e = 0; e < n; e++)
			b[e] = (uint16_t)(0x3c00u + r32() % 0x0800u);
		float div = (float)(1 + r32() % 7) / 3.0f, lam = rf();
		int ud = (int)(r32() % 2), ul = (int)(r32() % 2);
		compose_wsum(&bf_kern_ref, o1, x, w, kk, div, ud, n);
		bf_kern_ref.wsum_bf16(o2, (const uint16_t *const *)x, w, kk, div, ud, n);
		EXPECT(memcmp(o1, o2, n * 2) == 0);
		if (simd) {
			simd->wsum_bf16(o3, (const uint16_t *const *)x, w, kk, div, ud, n);
			EXPECT(memcmp(o1, o3, n * 2) == 0);
		}
		compose_ta(&bf_kern_ref, o1, b, x, w, kk, div, ud, lam, ul, n);
		bf_kern_ref.ta_bf16(o2, b, (const uint16_t *const *)x, w, kk, div, ud, lam, ul, n);
		EXPECT(memcmp(o1, o2, n * 2) == 0);
		if (simd) {
			simd->ta_bf16(o3, b, (const uint16_t *const *)x, w, kk, div, ud, lam, ul, n);
			EXPECT(memcmp(o1, o3, n * 2) == 0);
		}
		for (int i = 0; i < kk; i++)
			free(x[i]);
		free(b);
		free(o1);
		free(o2);
		free(o3);
	}
}

BF_TEST(consensus_and_topk)
{
	for (int round = 0; round < 300; round++) {
		size_t n = 1 + r32() % 150, stride = n + r32() % 5;
		int k = 1 + (int)(r32() % 5), count = (int)(r32() % 2);
		float *D = malloc(stride * (size_t)k * 4), w[5];
		float *o1 = malloc(n * 4), *o2 = malloc(n * 4), *d1 = malloc(n * 4), *d2 = malloc(n * 4);
		for (size_t i = 0; i < stride * (size_t)k; i++)
			D[i] = r32() % 5 == 0 ? 0.0f : rf() * (r32() % 2 ? 1e-3f : 1.0f);
		for (int i = 0; i < k; i++)
			w[i] = (float)(r32() % 100) / 37.0f;
		bf_kern_ref.consensus(o1, d1, D, stride, w, k, count, n);
		/* the reference against a literal reading of mergekit's get_mask + sums */
		for (size_t e = 0; e < n; e++) {
			float vote = 0.0f;
			for (int i = 0; i < k; i++) {
				float d = D[(size_t)i * stride + e];
				vote += count ? (float)((d > 0) - (d < 0)) : d;
			}
			float sg = vote >= 0 ? 1.0f : -1.0f, acc = 0.0f, dn = 0.0f;
			for (int i = 0; i < k; i++) {
				float d = D[(size_t)i * stride + e];
				if ((float)((d > 0) - (d < 0)) == sg) {
					acc = acc + d;
					dn = dn + w[i];
				} else {
					acc = acc + d * 0.0f;
				}
			}
			EXPECT(same_f32(&acc, &o1[e], 1) || (acc == 0.0f && o1[e] == 0.0f));
			EXPECT(dn == d1[e]);
		}
		if (simd) {
			simd->consensus(o2, d2, D, stride, w, k, count, n);
			EXPECT(same_f32(o1, o2, n));
			EXPECT(memcmp(d1, d2, n * 4) == 0);
			/* top-k mask: thresholds drawn from the data, ti on either side of the block */
			uint32_t u;
			memcpy(&u, &D[r32() % n], 4);
			uint32_t tk = ~(u & 0x7fffffffu);
			uint64_t e0 = r32() % 1000, ti = r32() % 3 == 0 ? 0 : e0 + r32() % (n + 20);
			bf_kern_ref.topk_mask(o1, D, tk, ti, e0, n);
			simd->topk_mask(o2, D, tk, ti, e0, n);
			EXPECT(memcmp(o1, o2, n * 4) == 0);
		}
		free(D);
		free(o1);
		free(o2);
		free(d1);
		free(d2);
	}
}

BF_TEST(philox_block)
{
	if (!simd)
		return;
	static const uint64_t starts[] = { 0, 1, 3, 5, 31, 33, (1ull << 34) - 37, (1ull << 40) + 2, UINT64_MAX - 70 };
	for (int round = 0; round < 200; round++) {
		uint32_t key[2] = { r32(), r32() };
		uint32_t nl = r32(), nh = r32();
		uint64_t i0 = round < 9 ? starts[round] : ((uint64_t)r32() << 20) + r32() % 64;
		size_t n = 1 + r32() % 700; /* head, 64- to 256-wide blocks, tail */
		if (n - 1 > UINT64_MAX - i0)
			n = (size_t)(UINT64_MAX - i0) + 1; /* indices end at 2^64 - 1: they do not wrap */
		float a[700], b[700], m1[700], m2[700];
		bf_kern_ref.philox_uniform(key, nl, nh, i0, n, a);
		simd->philox_uniform(key, nl, nh, i0, n, b);
		EXPECT(memcmp(a, b, n * 4) == 0);
		/* keep masks, bf_rng_keep's decisions in every variant; every third round p sits on
		 * an element's 16-bit half, so that element's refinement word decides */
		struct bf_rng rg = { { key[0], key[1] }, nl, nh };
		float p = (float)(r32() % 1000) / 1000.0f;
		if (round % 3 == 0) {
			uint64_t e = i0 + r32() % n;
			uint32_t w[4], ctr[4] = { (uint32_t)(e >> 3), (uint32_t)(e >> 35) | BF_RNG_HALVES, nl, nh };
			bf_philox4x32_10(ctr, key, w);
			p = ((float)((w[(e >> 1) & 3] >> (16 * (e & 1))) & 0xffff) + 0.5f) / 65536.0f;
		}
		bf_kern_ref.philox_mask(key, nl, nh, i0, n, p, m1);
		simd->philox_mask(key, nl, nh, i0, n, p, m2);
		int same = 1;
		for (size_t e = 0; e < n; e++)
			same &= m1[e] == (bf_rng_keep(&rg, i0 + e, p) ? 1.0f : 0.0f);
		EXPECT(same);
		EXPECT(memcmp(m1, m2, n * 4) == 0);
	}
}

/* Full-precision values over 40 octaves, either sign: their double sums round, so a variant
 * that adds in another order than bf_fold8's gives other bits (the /997 values above are too
 * short to round at all). */
static float wide_value(void)
{
	float x = ldexpf(1.0f + (float)(r32() & 0xffffff) / 16777216.0f, (int)(r32() % 40) - 20);
	return r32() % 2 ? -x : x;
}

BF_TEST(sum_order)
{
	/* by hand: 2^30 at e = 0 (accumulator 0) and sixteen 2^-25 at e = 4, 12, ..., 124 (all
	 * accumulator 4). Each 2^-25 added to 2^30 would be lost (56 bits apart); added to each
	 * other they make 2^-21, and 2^30 + 2^-21 is exact. So the e % 8 accumulators and their fold
	 * give 2^30 + 2^-21, where a plain sum or four accumulators by e % 4 give 2^30. */
	float d[128] = { 0 }, one[128], sq[128] = { 0 };
	d[0] = 0x1p30f;
	sq[0] = 0x1p15f; /* squares: 2^30, and 2^-26 for 2^-13 */
	for (int j = 0; j < 16; j++) {
		d[4 + 8 * j] = -0x1p-25f; /* l1 takes |d| */
		sq[4 + 8 * j] = 0x1p-13f;
	}
	for (int e = 0; e < 128; e++)
		one[e] = 1.0f;
	const float *sv[1] = { sq };
	const struct bf_kern *ks[2] = { &bf_kern_ref, simd };
	for (int v = 0; v < 2 && ks[v]; v++) {
		double a = 0, b = 0, g = 0;
		ks[v]->l1_pair(d, one, 128, &a, &b);
		EXPECT(a == 0x1p30 + 0x1p-21 && b == a);
		ks[v]->dots_f64(sv, 1, 128, &g);
		EXPECT(g == 0x1p30 + 0x1p-22);
	}
}

BF_TEST(dots)
{
	if (!simd)
		return;
	for (int round = 0; round < 100; round++) {
		size_t n = 1 + r32() % 300;
		int k = 1 + (int)(r32() % 8); /* the fused pass (k <= 6) and the per-pair one */
		float *v[8];
		for (int i = 0; i < k; i++) {
			v[i] = malloc(n * 4);
			for (size_t e = 0; e < n; e++)
				v[i][e] = round % 2 ? wide_value() : (float)((int)(r32() % 20001) - 10000) / 997.0f;
		}
		double g1[64] = { 0 }, g2[64] = { 0 };
		bf_kern_ref.dots_f64((const float *const *)v, k, n, g1);
		simd->dots_f64((const float *const *)v, k, n, g2);
		EXPECT(memcmp(g1, g2, sizeof(g1)) == 0);
		/* against a plain double sum (the same to rounding) */
		double plain = 0;
		for (size_t e = 0; e < n; e++)
			plain += (double)v[0][e] * v[0][e];
		EXPECT_NEAR(g1[0], plain, 1e-9 * (plain > 1 ? plain : 1) + 1e-300);
		for (int i = 0; i < k; i++)
			free(v[i]);
	}
}

static int same_or_nan(const float *a, const float *b, size_t n);

/* bf16-input kernels equal widening first and running the f32 kernel, in every variant */
BF_TEST(bf16_input_kernels)
{
	for (int round = 0; round < 200; round++) {
		size_t n = r32() % 300;
		int k = 1 + (int)(r32() % 4);
		uint16_t h[4][300];
		float f[4][300];
		for (int i = 0; i < k; i++)
			for (size_t e = 0; e < n; e++) {
				uint16_t h16 = rbf16();
				h[i][e] = r32() % 16 ? h16 : h[0][e]; /* equal values too */
			}
		for (int i = 0; i < k; i++)
			bf_kern_ref.bf16_to_f32(h[i], f[i], n);
		const uint16_t *hv[4] = { h[0], h[1], h[2], h[3] };
		const float *fv[4] = { f[0], f[1], f[2], f[3] };
		const struct bf_kern *ks[2] = { &bf_kern_ref, simd };
		for (int v = 0; v < 2 && ks[v]; v++) {
			double g1[16] = { 0 }, g2[16] = { 0 };
			bf_kern_ref.dots_f64(fv, k, n, g1);
			ks[v]->dots_bf16(hv, k, n, g2);
			int same = 1;
			for (int j = 0; j < 16; j++) /* NaN sums compare as NaN, whatever the payload */
				same &= memcmp(&g1[j], &g2[j], 8) == 0 || (isnan(g1[j]) && isnan(g2[j]));
			EXPECT(same);
			if (k >= 2) {
				float s1[300], s2[300];
				bf_kern_ref.sub(s1, f[1], f[0], n);
				ks[v]->sub_bf16(s2, h[1], h[0], n);
				EXPECT(same_or_nan(s1, s2, n));
			}
			if (k >= 2)
				for (int desc = 0; desc < 2; desc++) {
					uint32_t k1[300], k2[300];
					bf_kern_ref.abs_keys(k1, f[1], f[0], desc ? ~0u : 0u, n);
					ks[v]->abs_keys_bf16(k2, h[1], h[0], desc ? ~0u : 0u, n);
					EXPECT(n == 0 || memcmp(k1, k2, n * 4) == 0);
				}
		}
	}
}

BF_TEST(l1_pair)
{
	if (!simd)
		return;
	for (int round = 0; round < 100; round++) {
		size_t n = 1 + r32() % 300;
		float *d = malloc(n * 4), *m = malloc(n * 4);
		for (size_t e = 0; e < n; e++) {
			d[e] = round % 2 ? wide_value() : (float)((int)(r32() % 20001) - 10000) / 997.0f;
			m[e] = r32() % 3 ? 1.0f : 0.0f;
		}
		double a1 = 0.5, b1 = 0.25, a2 = 0.5, b2 = 0.25;
		bf_kern_ref.l1_pair(d, m, n, &a1, &b1);
		simd->l1_pair(d, m, n, &a2, &b2);
		EXPECT(memcmp(&a1, &a2, 8) == 0 && memcmp(&b1, &b2, 8) == 0);
		/* against plain sums (the same to rounding), added to what was there */
		double pa = 0.5, pb = 0.25;
		for (size_t e = 0; e < n; e++) {
			pa += fabs((double)d[e]);
			pb += m[e] ? fabs((double)d[e]) : 0.0;
		}
		EXPECT_NEAR(a1, pa, 1e-9 * pa);
		EXPECT_NEAR(b1, pb, 1e-9 * (pb > 1 ? pb : 1));
		free(d);
		free(m);
	}
}

BF_TEST(mask_bits)
{
	/* pack then unpack round-trips through every variant, at any alignment; the simd variant's
	 * words equal the reference's, and the reference's bits equal a plain per-bit loop */
	for (int round = 0; round < 200; round++) {
		size_t n = 1 + r32() % 400;
		uint64_t e0 = r32() % 200;
		float m[400], back[400];
		/* masks are 0/1, but the contract is mask != 0: -0 packs as 0, NaN and 0.25 as 1 */
		static const float vals[6] = { 1.0f, 1.0f, 0.0f, -0.0f, NAN, 0.25f };
		for (size_t e = 0; e < n; e++)
			m[e] = vals[r32() % 6];
		uint64_t w1[10] = { 0 }, w2[10] = { 0 };
		bf_kern_ref.mask_pack(w1, e0, m, n);
		int bits_ok = 1;
		for (size_t e = 0; e < n; e++)
			bits_ok &= (int)((w1[(e0 + e) / 64] >> ((e0 + e) % 64)) & 1) == (m[e] != 0.0f);
		EXPECT(bits_ok);
		bf_kern_ref.mask_unpack(w1, e0, back, n);
		for (size_t e = 0; e < n; e++)
			bits_ok &= back[e] == (m[e] != 0.0f ? 1.0f : 0.0f);
		EXPECT(bits_ok);
		if (simd) {
			simd->mask_pack(w2, e0, m, n);
			EXPECT(memcmp(w1, w2, sizeof(w1)) == 0);
			float back2[400];
			simd->mask_unpack(w1, e0, back2, n);
			EXPECT(memcmp(back, back2, n * 4) == 0);
		}
	}
}

/* The parameters of one TIES-family step test: mode 0 no mask, 1 mask array, 2 top-k with a
 * threshold key taken from the data (so that ties at the key occur). */
struct gta_case {
	int mode, norm, ul;
	float scale, w, lam;
	uint64_t e0, ti;
	uint32_t tk;
};

static struct gta_case gta_case_draw(const float *x, const float *b, size_t n)
{
	struct gta_case c;
	c.mode = (int)(r32() % 3);
	c.scale = r32() % 2 ? 1.0f : rf();
	c.w = rf();
	c.e0 = r32() % 1000;
	c.ti = c.e0 + r32() % (n + 2);
	float pick = x[r32() % n] - b[r32() % n];
	uint32_t u;
	memcpy(&u, &pick, 4);
	c.tk = ~(u & 0x7fffffffu);
	c.norm = (int)(r32() % 2);
	c.ul = (int)(r32() % 2);
	c.lam = (float)(r32() % 4001) / 1000.0f - 2.0f; /* a recipe's lambda: finite */
	return c;
}


/* gta_prep_bf16 and gta_finish_bf16 against widening, the f32 step, and rounding, in every
 * variant */
BF_TEST(gta_bf16_steps)
{
	for (int round = 0; round < 300; round++) {
		size_t n = 1 + r32() % 300;
		uint16_t x16[300], b16[300], r1[300], r2[300];
		float xf[300], bf[300], m[300], d1[300], d2[300], out[300], den[300], o1[300];
		for (size_t e = 0; e < n; e++) {
			x16[e] = rbf16();
			b16[e] = r32() % 5 ? (uint16_t)(r32() >> 16) : x16[e];
			m[e] = (float)(r32() % 2);
			out[e] = rf();
			den[e] = r32() % 4 ? rf() : 0.0f;
		}
		bf_kern_ref.bf16_to_f32(x16, xf, n);
		bf_kern_ref.bf16_to_f32(b16, bf, n);
		struct gta_case c = gta_case_draw(xf, bf, n);
		const float *mk = c.mode == 1 ? m : NULL;
		bf_kern_ref.gta_prep(d1, xf, bf, mk, c.mode == 2, c.tk, c.ti, c.e0, c.scale, c.w, n);
		memcpy(o1, out, n * 4);
		bf_kern_ref.gta_finish(o1, den, bf, c.norm, c.lam, c.ul, n);
		bf_kern_ref.f32_to_bf16(o1, r1, n);
		const struct bf_kern *ks[2] = { &bf_kern_ref, simd };
		for (int v = 0; v < 2 && ks[v]; v++) {
			ks[v]->gta_prep_bf16(d2, x16, b16, mk, c.mode == 2, c.tk, c.ti, c.e0, c.scale, c.w, n);
			EXPECT(same_or_nan(d1, d2, n));
			ks[v]->gta_finish_bf16(r2, out, den, b16, c.norm, c.lam, c.ul, n);
			EXPECT(memcmp(r1, r2, n * 2) == 0);
		}
	}
}

/* gta_fused_bf16 of every variant against the composition of the reference's kernels over the
 * whole call (the reference itself composes them on 256-element sub-blocks): 1-8 models, each
 * with mask bits, a top-k test (its key taken from the data, so that ties occur) or neither;
 * scales, weights, count or sum votes, normalize, lambda; element offsets that are not
 * multiples of 16 (the vector variant's head) and lengths over several sub-blocks */
BF_TEST(gta_fused)
{
	enum { N = 700 };
	static uint16_t x16[BF_GTA_FUSED_MAX][N], b16[N], r1[N], r2[N];
	static float D[BF_GTA_FUSED_MAX * N], mask[N], out[N], den[N];
	static uint64_t bits[BF_GTA_FUSED_MAX][(N + 300) / 64 + 2];
	for (int round = 0; round < 400; round++) {
		size_t n = r32() % 4 ? r32() % N : 16 * (r32() % 40);
		int k = 1 + (int)(r32() % BF_GTA_FUSED_MAX), count = (int)(r32() % 2), norm = (int)(r32() % 2);
		int ul = (int)(r32() % 2);
		float lam = (float)(r32() % 4001) / 1000.0f - 2.0f, w[BF_GTA_FUSED_MAX];
		uint64_t e0 = r32() % 300;
		for (size_t e = 0; e < n; e++) {
			b16[e] = rbf16();
		}
		struct bf_gta_in m[BF_GTA_FUSED_MAX];
		for (int i = 0; i < k; i++) {
			for (size_t e = 0; e < n; e++) {
				uint16_t h16 = rbf16();
				x16[i][e] = r32() % 6 ? h16 : b16[e]; /* zero differences too */
			}
			for (size_t j = 0; j < sizeof(bits[i]) / 8; j++)
				bits[i][j] = ((uint64_t)r32() << 32) ^ r32();
			int mode = (int)(r32() % 3);
			uint32_t tk = 0;
			uint64_t ti = e0 + r32() % (n + 2);
			if (n) {
				/* the key of element j, and the index cut just before or after it: j's own
				 * keep decision rests on the index test */
				size_t j = r32() % n;
				float pick = bf_bf16_to_f32(x16[i][j]) - bf_bf16_to_f32(b16[j]);
				uint32_t u;
				memcpy(&u, &pick, 4);
				tk = ~(u & 0x7fffffffu);
				if (r32() % 2)
					ti = e0 + j + r32() % 2;
			}
			w[i] = rf();
			m[i] = (struct bf_gta_in){ .x = x16[i], .bits = mode == 0 ? bits[i] : NULL, .tk_on = mode == 1,
						   .tk = tk, .ti = ti, .scale = r32() % 2 ? 1.0f : rf(), .w = w[i] };
		}
		for (int i = 0; i < k; i++) {
			const float *mk = NULL;
			if (m[i].bits) {
				bf_kern_ref.mask_unpack(m[i].bits, e0, mask, n);
				mk = mask;
			}
			bf_kern_ref.gta_prep_bf16(D + (size_t)i * n, m[i].x, b16, mk, m[i].tk_on, m[i].tk, m[i].ti, e0,
						  m[i].scale, m[i].w, n);
		}
		bf_kern_ref.consensus(out, den, D, n, w, k, count, n);
		bf_kern_ref.gta_finish_bf16(r1, out, den, b16, norm, lam, ul, n);
		const struct bf_kern *ks[2] = { &bf_kern_ref, simd };
		for (int v = 0; v < 2 && ks[v]; v++) {
			ks[v]->gta_fused_bf16(r2, b16, m, k, count, norm, lam, ul, e0, n);
			EXPECT(n == 0 || memcmp(r1, r2, n * 2) == 0);
		}
	}
}

BF_TEST(abs_keys)
{
	/* the reference equals bf_select.h's key maps of the f32 difference; SIMD equals it bit
	 * for bit (special values included: NaN keys keep the payload of a - b) */
	for (int round = 0; round < 200; round++) {
		size_t n = r32() % 300;
		float a[300], b[300];
		for (size_t e = 0; e < n; e++) {
			a[e] = rf();
			b[e] = r32() % 4 ? rf() : a[e]; /* exact zeros too */
		}
		for (int desc = 0; desc < 2; desc++) {
			uint32_t k1[300], k2[300];
			bf_kern_ref.abs_keys(k1, a, b, desc ? ~0u : 0u, n);
			int ok = 1;
			for (size_t e = 0; e < n; e++)
				ok &= k1[e] == (desc ? bf_key_abs_desc(a[e] - b[e]) : bf_key_abs_asc(a[e] - b[e]));
			EXPECT(ok);
			if (simd) {
				simd->abs_keys(k2, a, b, desc ? ~0u : 0u, n);
				EXPECT(n == 0 || memcmp(k1, k2, n * 4) == 0);
			}
		}
	}
}

BF_TEST(window_scan)
{
	/* below-count and left-packed collect against a plain loop, in every variant: windows that
	 * take none, some or all keys, at the top and bottom of the key range, buffers that fill up
	 * mid-call, calls that continue a partly filled buffer */
	for (int round = 0; round < 2000; round++) {
		size_t n = r32() % 300;
		uint32_t keys[300], lo, w;
		int shape = round % 4;
		lo = shape == 0 ? 0 : shape == 1 ? 0xffff0000u : 0x40000000u + (r32() % 8) * 0x10000u;
		w = shape == 1 ? 0xffffu : (r32() % 4) * 0x10000u + 0xffffu;
		for (size_t j = 0; j < n; j++) /* keys near the window, with its edges hit exactly */
			keys[j] = r32() % 5 == 0 ? lo + w * (r32() % 2) : r32() % 5 == 1 ? lo - 1 - r32() % 3 :
				  lo + (r32() % 7) * 0x10000u + r32() % 0x20000u;
		uint64_t start = r32() % 20, cap = r32() % 4 == 0 ? start + r32() % 8 : 400;
		uint32_t ek[400], ei[400];
		uint64_t ebelow = 0, en = start;
		for (size_t j = 0; j < n; j++) {
			ebelow += keys[j] < lo;
			if (keys[j] >= lo && keys[j] - lo <= w) {
				if (en < cap) {
					ek[en] = keys[j];
					ei[en] = 1000 + (uint32_t)j;
				}
				en++;
			}
		}
		const struct bf_kern *ks[2] = { &bf_kern_ref, simd };
		for (int v = 0; v < 2 && ks[v]; v++) {
			uint32_t ok[400 + BF_SCAN_SLACK], oi[400 + BF_SCAN_SLACK];
			uint64_t cn = start;
			EXPECT(ks[v]->window_scan(keys, n, lo, w, 1000, ok, oi, &cn, cap) == ebelow);
			EXPECT(cn == en);
			uint64_t kept = (en < cap ? en : cap);
			for (uint64_t i = start; i < kept; i++) {
				EXPECT(ok[i] == ek[i]);
				EXPECT(oi[i] == ei[i]);
			}
		}
	}
}

BF_TEST(digit_compact)
{
	/* by hand: keys 0x100 0x201 0x1ff 0x2ff, digit (key >> 8) - 1: 0 1 0 1; keep digit 1 */
	uint32_t hk[4] = { 0x100, 0x201, 0x1ff, 0x2ff }, hi[4] = { 10, 11, 12, 13 };
	EXPECT(bf_kern_ref.digit_compact(hk, hi, 4, 8, 1, 1) == 2);
	EXPECT(hk[0] == 0x201 && hk[1] == 0x2ff && hi[0] == 11 && hi[1] == 13);
	/* every variant against a plain filter: lengths around the vector widths, keys crowded into
	 * a few digits (as a window's are), the subtraction wrapping, a digit that is absent */
	for (int round = 0; round < 3000; round++) {
		size_t n = r32() % 300;
		unsigned shift = (unsigned)(r32() % 3) * 8;
		uint32_t sub = round % 3 ? 0 : r32() % 256, base = r32(), d = r32() % 4 == 0 ? r32() % 256 : 0;
		uint32_t keys[300], ek[300], ei[300];
		uint64_t en = 0;
		for (size_t j = 0; j < n; j++) {
			keys[j] = base + ((r32() % 3) << shift) + (shift ? r32() % (1u << shift) : 0);
			if (j == n / 2 && r32() % 4)
				d = (((keys[j] >> shift) - sub) & 255u); /* usually present */
		}
		for (size_t j = 0; j < n; j++)
			if ((((keys[j] >> shift) - sub) & 255u) == d) {
				ek[en] = keys[j];
				ei[en++] = 7 * (uint32_t)j;
			}
		const struct bf_kern *ks[2] = { &bf_kern_ref, simd };
		for (int v = 0; v < 2 && ks[v]; v++) {
			uint32_t ck[300], ci[300];
			memcpy(ck, keys, n * 4);
			for (size_t j = 0; j < n; j++)
				ci[j] = 7 * (uint32_t)j;
			EXPECT(ks[v]->digit_compact(ck, ci, n, shift, sub, d) == en);
			EXPECT(en == 0 || (memcmp(ck, ek, en * 4) == 0 && memcmp(ci, ei, en * 4) == 0));
		}
	}
}

BF_TEST(stable_rank)
{
	/* by hand: keys 5 3 5 1 5, element 2 (a 5): 3 and 1 below, one 5 before it -> 3 */
	const uint32_t hand[5] = { 5, 3, 5, 1, 5 };
	EXPECT(bf_kern_ref.stable_rank(hand, 5, 5, 2) == 3);
	EXPECT(bf_kern_ref.stable_rank(hand, 5, 5, 0) == 2);
	EXPECT(bf_kern_ref.stable_rank(hand, 5, 1, 3) == 0);
	/* every variant against the reference: lengths around the vector widths, keys with many
	 * ties and with the top bit set (unsigned order), i anywhere from 0 to past the end */
	uint32_t keys[700];
	const struct bf_kern *ks[2] = { &bf_kern_ref, simd };
	for (int round = 0; round < 3000; round++) {
		size_t n = r32() % 700;
		uint32_t spread = round % 3 == 0 ? 4 : round % 3 == 1 ? 1000 : 0xffffffffu;
		for (size_t j = 0; j < n; j++)
			keys[j] = (round & 4 ? 0x80000000u : 0u) + r32() % spread;
		uint32_t k = n && r32() % 4 ? keys[r32() % n] : r32();
		size_t i = r32() % (n + 20);
		uint64_t want = 0;
		for (size_t j = 0; j < n; j++)
			want += keys[j] < k || (keys[j] == k && j < i);
		for (int v = 0; v < 2 && ks[v]; v++)
			EXPECT(ks[v]->stable_rank(keys, n, k, i) == want);
	}
}

BF_TEST(della_passes)
{
	/* every variant against the reference: rows of 0..300 (the vector tails), task-vector-like
	 * values with zeros (+0 and -0), subnormals, Inf and NaN; buckets from keys at both ends of
	 * the range; decisions with u right at the bounds and buckets of equal bounds */
	float d[300], u[300], plo[600], phi[600], m1[300], m2[300];
	uint32_t k1[300], k2[300], a1[300], a2[300];
	uint16_t b1[300], b2[300], h1[300], h2[300];
	const struct bf_kern *ks[2] = { &bf_kern_ref, simd };
	for (int round = 0; round < 2000; round++) {
		size_t n = r32() % 300;
		for (size_t i = 0; i < n; i++) {
			uint32_t c = r32() % 16, bits;
			float g = (float)((int32_t)r32() % 100000) * 1e-7f;
			d[i] = c < 5 ? 0.0f : c == 5 ? -0.0f : c == 6 ? 1e-40f : c == 7 ? -INFINITY : c == 8 ? NAN : g;
			if (c == 9) {
				bits = r32();
				memcpy(&d[i], &bits, 4);
			}
		}
		uint32_t z1 = 0, z2 = 0, mx1 = bf_kern_ref.della_keys(d, n, k1, &z1);
		uint32_t base = r32() % 2 ? (mx1 >> BF_DELLA_SHIFT) - (mx1 >> BF_DELLA_SHIFT) % 7 : r32() % 20000;
		uint32_t J = 500 + r32() % 30;
		bf_kern_ref.della_buckets(k1, n, base, J, b1, h1);
		for (int j = 0; j < 600; j++) { /* some buckets with lo == hi, some with lo < hi */
			plo[j] = (float)(r32() % 64) / 64.0f;
			phi[j] = r32() % 4 ? plo[j] + (float)(r32() % 16) / 64.0f : plo[j];
		}
		for (size_t i = 0; i < n; i++) {
			uint32_t c = r32() % 4, b = b1[i] % 600;
			b1[i] = (uint16_t)b; /* in the tables' range, for the decision test */
			u[i] = c == 0 ? plo[b] : c == 1 ? phi[b] : c == 2 ? nextafterf(plo[b], 0.0f) : (float)(r32() >> 8) * 0x1p-24f;
		}
		size_t na1 = bf_kern_ref.della_decide(b1, u, plo, phi, n, m1, a1);
		if (!ks[1])
			continue;
		uint32_t mx2 = simd->della_keys(d, n, k2, &z2);
		EXPECT(mx2 == mx1 && z2 == z1 && !memcmp(k1, k2, n * 4));
		bf_kern_ref.della_buckets(k1, n, base, J, b1, h1); /* again: b1 was folded above */
		simd->della_buckets(k1, n, base, J, b2, h2);
		EXPECT(!memcmp(b1, b2, n * 2) && !memcmp(h1, h2, n * 2));
		for (size_t i = 0; i < n; i++)
			b2[i] = (uint16_t)(b1[i] % 600);
		size_t na2 = simd->della_decide(b2, u, plo, phi, n, m2, a2);
		EXPECT(na2 == na1 && !memcmp(a1, a2, na1 * 4) && !memcmp(m1, m2, n * 4));
	}
	/* by hand: bucket 1 bounds [0.25, 0.5): u 0.2 keeps, 0.25 and 0.4 wait, 0.5 drops */
	uint16_t hb[4] = { 1, 1, 1, 1 };
	float hu[4] = { 0.2f, 0.25f, 0.4f, 0.5f }, hl[2] = { 0, 0.25f }, hh[2] = { 0, 0.5f }, hm[4];
	uint32_t ha[4];
	for (int v = 0; v < 2 && ks[v]; v++) {
		EXPECT(ks[v]->della_decide(hb, hu, hl, hh, 4, hm, ha) == 2);
		EXPECT(hm[0] == 1.0f && hm[1] == 0.0f && hm[2] == 0.0f && hm[3] == 0.0f && ha[0] == 1 && ha[1] == 2);
	}
}

/* Equal bits, or both NaN: which payload survives when two NaNs meet is left open by IEEE 754,
 * and compilers swap the operands of commutative operations differently at each -O level. */
static int same_or_nan(const float *a, const float *b, size_t n)
{
	for (size_t e = 0; e < n; e++)
		if (memcmp(&a[e], &b[e], 4) != 0 && !(isnan(a[e]) && isnan(b[e])))
			return 0;
	return 1;
}

/* gta_prep and gta_finish against the primitive sequences they replace, in every variant */
BF_TEST(gta_fused_steps)
{
	for (int round = 0; round < 300; round++) {
		size_t n = 1 + r32() % 300;
		float x[300], b[300], m[300], d1[300], d2[300], d3[300], out[300], den[300], o1[300], o2[300];
		for (size_t e = 0; e < n; e++) {
			x[e] = rf();
			b[e] = r32() % 5 ? rf() : x[e]; /* some differences exactly 0 */
			m[e] = (float)(r32() % 2);
			out[e] = rf();
			den[e] = r32() % 4 ? rf() : (r32() % 2 ? 0.0f : -0.0f);
		}
		struct gta_case c = gta_case_draw(x, b, n);
		int mode = c.mode;
		float scale = c.scale, w = c.w;
		uint64_t e0 = c.e0, ti = c.ti;
		uint32_t tk = c.tk;
		/* the sequence gta_kernel used: sub, mask product, scale when != 1, scale by w */
		bf_kern_ref.sub(d1, x, b, n);
		if (mode) {
			float mm[300];
			if (mode == 1)
				memcpy(mm, m, n * 4);
			else
				bf_kern_ref.topk_mask(mm, d1, tk, ti, e0, n);
			for (size_t e = 0; e < n; e++)
				d1[e] = d1[e] * mm[e];
			if (scale != 1.0f)
				bf_kern_ref.scale(d1, d1, scale, n);
		}
		bf_kern_ref.scale(d1, d1, w, n);
		float sc = mode ? scale : 1.0f;
		bf_kern_ref.gta_prep(d2, x, b, mode == 1 ? m : NULL, mode == 2, tk, ti, e0, sc, w, n);
		EXPECT(same_or_nan(d1, d2, n));
		if (simd) {
			simd->gta_prep(d3, x, b, mode == 1 ? m : NULL, mode == 2, tk, ti, e0, sc, w, n);
			EXPECT(same_or_nan(d1, d3, n));
		}
		int norm = c.norm, ul = c.ul;
		float lam = c.lam;
		memcpy(o1, out, n * 4);
		for (size_t e = 0; e < n; e++) {
			if (norm)
				o1[e] = o1[e] / (den[e] == 0.0f ? 1.0f : den[e]);
		}
		if (ul)
			bf_kern_ref.scale(o1, o1, lam, n);
		bf_kern_ref.add(o1, b, n);
		memcpy(o2, out, n * 4);
		bf_kern_ref.gta_finish(o2, den, b, norm, lam, ul, n);
		EXPECT(same_or_nan(o1, o2, n));
		if (simd) {
			memcpy(o2, out, n * 4);
			simd->gta_finish(o2, den, b, norm, lam, ul, n);
			EXPECT(same_or_nan(o1, o2, n));
		}
	}
}

BF_TEST(reference_values)
{
	/* the reference itself against hand-worked values */
	float f[4] = { 1.0f, 0x1.01p0f, 0x1.03p0f, 1e-39f };
	uint16_t h[4];
	bf_kern_ref.f32_to_bf16(f, h, 4);
	EXPECT_EQ_HEX(h[0], 0x3f80);
	EXPECT_EQ_HEX(h[1], 0x3f80); /* 1 + 2^-8: a tie, rounds to even */
	EXPECT_EQ_HEX(h[2], 0x3f82); /* 1 + 3*2^-8: a tie, rounds up to even */
	EXPECT_EQ_HEX(h[3], 0x000b); /* denormals are kept, not flushed */
	float out[3], a[3] = { 1, 2, 3 }, b[3] = { 4, 5, 6 };
	bf_kern_ref.lin2(out, a, 0.5f, b, 2.0f, 3);
	EXPECT_EQ_DBL(out[0], 8.5);
	EXPECT_EQ_DBL(out[2], 13.5);
}

int main(void)
{
	/* every test compares the reference with `simd`: run them all for each SIMD variant this
	 * CPU and build have (the reference-only checks run again, harmlessly) */
	const struct bf_kern *found[2] = { bf_kern_avx2(), bf_kern_avx512() }, *list[2] = { NULL, NULL };
	int n = 0;
	for (int v = 0; v < 2; v++)
		if (found[v])
			list[n++] = found[v];
	for (int v = 0; v < (n ? n : 1); v++) {
		simd = list[v];
		printf("simd variant: %s\n", simd ? simd->name : "none on this CPU/build (reference only)");
		RUN(widen_exhaustive);
		RUN(narrow_random);
		RUN(arithmetic_random_with_tails);
		RUN(fused_equal_primitives);
		RUN(consensus_and_topk);
		RUN(philox_block);
		RUN(sum_order);
		RUN(dots);
		RUN(bf16_input_kernels);
		RUN(l1_pair);
		RUN(mask_bits);
		RUN(gta_fused_steps);
		RUN(gta_bf16_steps);
		RUN(gta_fused);
		RUN(abs_keys);
		RUN(window_scan);
		RUN(digit_compact);
		RUN(stable_rank);
		RUN(della_passes);
		RUN(reference_values);
	}
	return bf_test_report();
}
