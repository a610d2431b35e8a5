/* bf_kern.c: scalar reference primitives and run-time selection (see bf_kern.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_common.h"
#include "bf_config.h"
#include "bf_dtype.h"
#include "bf_kern.h"
#include "bf_rng.h"

static void ref_scale(float *out, const float *x, float w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = x[i] * w;
}

static void ref_axpy(float *out, const float *x, float w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = out[i] + x[i] * w;
}

static void ref_div(float *out, float d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = out[i] / d;
}

static void ref_sub(float *out, const float *a, const float *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = a[i] - b[i];
}

static void ref_add(float *out, const float *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = out[i] + a[i];
}

static void ref_lin2(float *out, const float *a, float wa, const float *b, float wb, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = a[i] * wa + b[i] * wb;
}

static inline float ld_bf16(const uint16_t *p)
{
	uint16_t h;
	memcpy(&h, p, 2);
	return bf_bf16_to_f32(h);
}

static inline void st_bf16(uint16_t *p, float f)
{
	uint16_t h = bf_f32_to_bf16(f);
	memcpy(p, &h, 2);
}

static void ref_wsum_bf16(uint16_t *out, const uint16_t *const *x, const float *w, int k, float div, int use_div,
			  size_t n)
{
	for (size_t e = 0; e < n; e++) {
		float acc = ld_bf16(x[0] + e) * w[0];
		for (int i = 1; i < k; i++)
			acc = acc + ld_bf16(x[i] + e) * w[i];
		if (use_div)
			acc = acc / div;
		st_bf16(out + e, acc);
	}
}

static void ref_ta_bf16(uint16_t *out, const uint16_t *b, const uint16_t *const *x, const float *w, int k, float den,
			int use_den, float lam, int use_lam, size_t n)
{
	for (size_t e = 0; e < n; e++) {
		float be = ld_bf16(b + e);
		float acc = (ld_bf16(x[0] + e) - be) * w[0];
		for (int i = 1; i < k; i++)
			acc = acc + (ld_bf16(x[i] + e) - be) * w[i];
		if (use_den)
			acc = acc / den;
		if (use_lam)
			acc = acc * lam;
		st_bf16(out + e, acc + be);
	}
}

static inline float sgnf(float x) { return (float)((x > 0.0f) - (x < 0.0f)); }

static void ref_consensus(float *out, float *den, const float *D, size_t stride, const float *w, int k, int count,
			  size_t n)
{
	for (size_t e = 0; e < n; e++) {
		float vote = 0.0f;
		for (int i = 0; i < k; i++)
			vote = vote + (count ? sgnf(D[(size_t)i * stride + e]) : D[(size_t)i * stride + e]);
		float s = vote >= 0.0f ? 1.0f : -1.0f, acc = 0.0f, dn = 0.0f;
		for (int i = 0; i < k; i++) {
			float d = D[(size_t)i * stride + e];
			float keep = sgnf(d) == s ? 1.0f : 0.0f;
			acc = acc + d * keep;
			dn = dn + w[i] * keep;
		}
		out[e] = acc;
		den[e] = dn;
	}
}

/* The top-k test of element idx with difference d: 1 when (~bits(|d|), idx) < (tk, ti). */
static inline float topk_keep(float d, uint32_t tk, uint64_t ti, uint64_t idx)
{
	uint32_t u;
	memcpy(&u, &d, 4);
	uint32_t key = ~(u & 0x7fffffffu);
	return key < tk || (key == tk && idx < ti) ? 1.0f : 0.0f;
}

static void ref_topk_mask(float *mask, const float *d, uint32_t tk, uint64_t ti, uint64_t e0, size_t n)
{
	for (size_t e = 0; e < n; e++)
		mask[e] = topk_keep(d[e], tk, ti, e0 + e);
}

static void ref_philox_uniform(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t index0, size_t n,
			       float *out)
{
	uint64_t i = index0;
	size_t j = 0;
	while (j < n) {
		uint32_t w[4];
		const uint32_t ctr[4] = { (uint32_t)(i >> 2), (uint32_t)(i >> 34), name_lo, name_hi };
		bf_philox4x32_10(ctr, key, w);
		for (unsigned lane = (unsigned)(i & 3); lane < 4 && j < n; lane++, j++, i++)
			out[j] = (float)(w[lane] >> 8) * 0x1p-24f;
	}
}

/* bf_rng.h's keep decisions, one Philox call per 8 elements */
static void ref_philox_mask(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t index0, size_t n,
			    float p, float *out)
{
	const struct bf_bern b = bf_bern_init(p);
	uint64_t i = index0;
	size_t j = 0;
	while (j < n) {
		uint32_t w[4];
		const uint32_t ctr[4] = { (uint32_t)(i >> 3), (uint32_t)(i >> 35) | BF_RNG_HALVES, name_lo, name_hi };
		bf_philox4x32_10(ctr, key, w);
		for (unsigned h = (unsigned)(i & 7); h < 8 && j < n; h++, j++, i++) {
			uint32_t v = (w[h >> 1] >> (16 * (h & 1))) & 0xffffu;
			/* 1.0f when v < T without a branch (the outcome is a coin flip): v - T wraps
			 * below zero exactly then, both being at most 2^16 */
			uint32_t one = (0u - ((v - b.t) >> 31)) & 0x3f800000u;
			memcpy(&out[j], &one, sizeof(one));
			if (__builtin_expect(v == b.t, 0))
				out[j] = bf_bern_tie(b, key, name_lo, name_hi, i);
		}
	}
}

static void ref_sub_bf16(float *out, const uint16_t *a, const uint16_t *b, size_t n)
{
	for (size_t e = 0; e < n; e++)
		out[e] = bf_bf16_to_f32(a[e]) - bf_bf16_to_f32(b[e]);
}

static inline void dots_impl(const void *const *v, int bf16, int k, size_t n, double *g)
{
	for (int i = 0; i < k; i++)
		for (int j = i; j < k; j++) {
			double a[8] = { 0 };
			for (size_t e = 0; e < n; e++)
				a[e & 7] = a[e & 7] + (double)bf_kern_elem(v[i], e, bf16) * (double)bf_kern_elem(v[j], e, bf16);
			g[i * k + j] += bf_fold8(a);
		}
}

static void ref_dots_f64(const float *const *v, int k, size_t n, double *g)
{
	dots_impl((const void *const *)v, 0, k, n, g);
}

static void ref_dots_bf16(const uint16_t *const *v, int k, size_t n, double *g)
{
	dots_impl((const void *const *)v, 1, k, n, g);
}

static void ref_l1_pair(const float *d, const float *mask, size_t n, double *a, double *b)
{
	double sa[8] = { 0 }, sb[8] = { 0 };
	for (size_t e = 0; e < n; e++) {
		sa[e & 7] = sa[e & 7] + (double)fabsf(d[e]);
		sb[e & 7] = sb[e & 7] + (double)fabsf(d[e] * mask[e]);
	}
	*a += bf_fold8(sa);
	*b += bf_fold8(sb);
}

static inline void gta_prep_impl(float *d, const void *x, const void *b, int bf16, const float *mask, int tk_on,
				 uint32_t tk, uint64_t ti, uint64_t e0, float scale, float w, size_t n)
{
	for (size_t e = 0; e < n; e++) {
		float v = bf_kern_elem(x, e, bf16) - bf_kern_elem(b, e, bf16);
		if (mask) {
			v = v * mask[e];
		} else if (tk_on) {
			v = v * topk_keep(v, tk, ti, e0 + e);
		}
		if (scale != 1.0f)
			v = v * scale;
		d[e] = v * w;
	}
}

static void ref_gta_prep(float *d, const float *x, const float *b, const float *mask, int tk_on, uint32_t tk,
			 uint64_t ti, uint64_t e0, float scale, float w, size_t n)
{
	gta_prep_impl(d, x, b, 0, mask, tk_on, tk, ti, e0, scale, w, n);
}

static void ref_gta_prep_bf16(float *d, const uint16_t *x, const uint16_t *b, const float *mask, int tk_on,
			      uint32_t tk, uint64_t ti, uint64_t e0, float scale, float w, size_t n)
{
	gta_prep_impl(d, x, b, 1, mask, tk_on, tk, ti, e0, scale, w, n);
}

/* out (f32) finished, with b of either type, stored to dst as f32 or bf16 */
static inline void gta_finish_impl(void *dst, const float *out, const float *den, const void *b, int bf16,
				   int normalize, float lam, int use_lam, size_t n)
{
	for (size_t e = 0; e < n; e++) {
		float o = out[e];
		if (normalize)
			o = o / (den[e] == 0.0f ? 1.0f : den[e]);
		if (use_lam)
			o = o * lam;
		o = o + bf_kern_elem(b, e, bf16);
		if (bf16)
			((uint16_t *)dst)[e] = bf_f32_to_bf16(o);
		else
			((float *)dst)[e] = o;
	}
}

static void ref_gta_finish(float *out, const float *den, const float *b, int normalize, float lam, int use_lam,
			   size_t n)
{
	gta_finish_impl(out, out, den, b, 0, normalize, lam, use_lam, n);
}

static void ref_gta_finish_bf16(uint16_t *dst, const float *out, const float *den, const uint16_t *b, int normalize,
				float lam, int use_lam, size_t n)
{
	gta_finish_impl(dst, out, den, b, 1, normalize, lam, use_lam, n);
}

static void ref_mask_pack(uint64_t *w, uint64_t e0, const float *mask, size_t n)
{
	size_t e = 0;
	for (; e < n && ((e0 + e) & 63); e++)
		w[(e0 + e) >> 6] |= (uint64_t)(mask[e] != 0.0f) << ((e0 + e) & 63);
	for (; e + 64 <= n; e += 64) {
		uint64_t x = 0; /* built in a register: one store per word */
		for (unsigned b = 0; b < 64; b++)
			x |= (uint64_t)(mask[e + b] != 0.0f) << b;
		w[(e0 + e) >> 6] = x;
	}
	for (; e < n; e++)
		w[(e0 + e) >> 6] |= (uint64_t)(mask[e] != 0.0f) << ((e0 + e) & 63);
}

static void ref_mask_unpack(const uint64_t *w, uint64_t e0, float *mask, size_t n)
{
	for (size_t e = 0; e < n; e++) {
		uint64_t x = e0 + e;
		mask[e] = (w[x >> 6] >> (x & 63)) & 1 ? 1.0f : 0.0f;
	}
}

static inline void abs_keys_impl(uint32_t *keys, const void *a, const void *b, int bf16, uint32_t flip, size_t n)
{
	for (size_t e = 0; e < n; e++) {
		float d = bf_kern_elem(a, e, bf16) - bf_kern_elem(b, e, bf16);
		uint32_t u;
		memcpy(&u, &d, 4);
		keys[e] = (u & 0x7fffffffu) ^ flip;
	}
}

static void ref_abs_keys(uint32_t *keys, const float *a, const float *b, uint32_t flip, size_t n)
{
	abs_keys_impl(keys, a, b, 0, flip, n);
}

static void ref_abs_keys_bf16(uint32_t *keys, const uint16_t *a, const uint16_t *b, uint32_t flip, size_t n)
{
	abs_keys_impl(keys, a, b, 1, flip, n);
}

static uint64_t ref_window_scan(const uint32_t *keys, size_t n, uint32_t lo, uint32_t w, uint32_t idx0, uint32_t *ok,
				uint32_t *oi, uint64_t *cn, uint64_t cap)
{
	uint64_t below = 0, c = *cn;
	for (size_t j = 0; j < n; j++) {
		uint32_t k = keys[j];
		below += k < lo;
		if (k - lo <= w) {
			if (c < cap) {
				ok[c] = k;
				oi[c] = idx0 + (uint32_t)j;
			}
			c++;
		}
	}
	*cn = c;
	return below;
}

static uint64_t ref_digit_compact(uint32_t *ck, uint32_t *ci, uint64_t n, unsigned shift, uint32_t sub, uint32_t d)
{
	return bf_digit_compact_from(ck, ci, 0, 0, n, shift, sub, d);
}

static uint64_t ref_stable_rank(const uint32_t *keys, size_t n, uint32_t k, size_t i)
{
	uint64_t r = 0;
	for (size_t j = 0; j < n; j++)
		r += keys[j] < k || (keys[j] == k && j < i);
	return r;
}

static uint32_t ref_della_keys(const float *d, size_t n, uint32_t *keys, uint32_t *zc)
{
	uint32_t kmax = 0, z = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t k;
		memcpy(&k, &d[i], 4);
		k &= 0x7fffffffu;
		keys[i] = k;
		kmax = k > kmax ? k : kmax;
		z += k == 0;
	}
	*zc = z;
	return kmax;
}

static void ref_della_buckets(const uint32_t *keys, size_t n, uint32_t base, uint32_t J, uint16_t *bk, uint16_t *hs)
{
	for (size_t i = 0; i < n; i++)
		bf_della_bucket(keys[i], i, base, J, bk, hs);
}

static size_t ref_della_decide(const uint16_t *bk, const float *u, const float *plo, const float *phi, size_t n,
			       float *mask, uint32_t *amb)
{
	static const float f01[2] = { 0.0f, 1.0f };
	size_t na = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t b = bk[i];
		float x = u[i], lo = plo[b], hi = phi[b];
		mask[i] = f01[x < lo]; /* a load, not a branch: keep or drop is a coin flip */
		amb[na] = (uint32_t)i;
		na += (x >= lo) & (x < hi);
	}
	return na;
}

void bf_kern_gta_fused_compose(const struct bf_kern *K, uint16_t *dst, const uint16_t *b, const struct bf_gta_in *m,
			       int k, int count, int normalize, float lam, int use_lam, uint64_t e0, size_t n)
{
	enum { SUB = 256 }; /* on the stack: 8 models' differences and the sums, 11 KiB */
	float D[BF_GTA_FUSED_MAX * SUB], mask[SUB], out[SUB], den[SUB], w[BF_GTA_FUSED_MAX];
	BF_ASSERT(k >= 1 && k <= BF_GTA_FUSED_MAX);
	for (int i = 0; i < k; i++)
		w[i] = m[i].w;
	for (size_t s = 0; s < n; s += SUB) {
		size_t c = n - s < SUB ? n - s : SUB;
		for (int i = 0; i < k; i++) {
			const float *mk = NULL;
			if (m[i].bits) {
				K->mask_unpack(m[i].bits, e0 + s, mask, c);
				mk = mask;
			}
			K->gta_prep_bf16(D + (size_t)i * c, m[i].x + s, b + s, mk, !m[i].bits && m[i].tk_on, m[i].tk,
					 m[i].ti, e0 + s, m[i].scale, m[i].w, c);
		}
		K->consensus(out, den, D, c, w, k, count, c);
		K->gta_finish_bf16(dst + s, out, den, b + s, normalize, lam, use_lam, c);
	}
}

static void ref_gta_fused_bf16(uint16_t *dst, const uint16_t *b, const struct bf_gta_in *m, int k, int count,
			       int normalize, float lam, int use_lam, uint64_t e0, size_t n)
{
	bf_kern_gta_fused_compose(&bf_kern_ref, dst, b, m, k, count, normalize, lam, use_lam, e0, n);
}

const struct bf_kern bf_kern_ref = {
	.name = "scalar",
	.bf16_to_f32 = bf_bf16_row_to_f32, .f32_to_bf16 = bf_f32_row_to_bf16,
	.f16_to_f32 = bf_f16_row_to_f32, .f32_to_f16 = bf_f32_row_to_f16,
	.scale = ref_scale, .axpy = ref_axpy, .div = ref_div, .sub = ref_sub, .add = ref_add,
	.lin2 = ref_lin2,
	.wsum_bf16 = ref_wsum_bf16, .ta_bf16 = ref_ta_bf16,
	.consensus = ref_consensus, .topk_mask = ref_topk_mask,
	.philox_uniform = ref_philox_uniform, .philox_mask = ref_philox_mask, .sub_bf16 = ref_sub_bf16, .dots_f64 = ref_dots_f64, .l1_pair = ref_l1_pair,
	.mask_pack = ref_mask_pack, .mask_unpack = ref_mask_unpack,
	.gta_prep = ref_gta_prep, .gta_finish = ref_gta_finish,
	.gta_prep_bf16 = ref_gta_prep_bf16, .gta_finish_bf16 = ref_gta_finish_bf16, .window_scan = ref_window_scan,
	.stable_rank = ref_stable_rank, .digit_compact = ref_digit_compact, .gta_fused_bf16 = ref_gta_fused_bf16,
	.della_keys = ref_della_keys, .della_buckets = ref_della_buckets, .della_decide = ref_della_decide,
	.abs_keys = ref_abs_keys, .abs_keys_bf16 = ref_abs_keys_bf16, .dots_bf16 = ref_dots_bf16,
};

const struct bf_kern *bf_kern = &bf_kern_ref;

#if !BF_SIMD
const struct bf_kern *bf_kern_avx2(void) { return NULL; }
const struct bf_kern *bf_kern_avx512(void) { return NULL; }
#endif

void bf_kern_select(int simd)
{
	const struct bf_kern *k = simd == 1 ? bf_kern_avx512() : NULL;
	if (!k && simd)
		k = bf_kern_avx2();
	bf_kern = k ? k : &bf_kern_ref;
}

__attribute__((constructor)) static void kern_init(void)
{
	const char *e = getenv("BLENDFS_SIMD");
	bf_kern_select(e && !strcmp(e, "0") ? 0 : e && !strcmp(e, "avx2") ? 2 : 1);
}
