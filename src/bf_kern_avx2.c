/* bf_kern_avx2.c: AVX2 + F16C variants of the bf_kern primitives. Built with -mavx2 -mf16c
 * (never -mfma: a fused multiply-add rounds once where the reference rounds twice), selected at
 * run time only on CPUs that have both. Each loop ends with the reference for its tail. */
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "bf_kern.h"
#include "bf_rng.h"

static void v_bf16_to_f32(const void *src, float *dst, size_t n)
{
	const unsigned char *s = src;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
		__m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
		_mm256_storeu_ps(dst + i, _mm256_castsi256_ps(u));
	}
	bf_kern_ref.bf16_to_f32(s + 2 * i, dst + i, n - i);
}

/* RNE: (u + 0x7fff + lsb) >> 16; every NaN -> 0x7fc0 (as torch) */
static inline __m128i cvt8_bf16(__m256 x)
{
	__m256i u = _mm256_castps_si256(x);
	__m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
	__m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
	__m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
	r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
	__m256i p = _mm256_packus_epi32(r, r); /* lanes: r0-3 r0-3 | r4-7 r4-7 */
	p = _mm256_permute4x64_epi64(p, 0x08);  /* r0-3 r4-7 in the low half */
	return _mm256_castsi256_si128(p);
}

static void v_f32_to_bf16(const float *src, void *dst, size_t n)
{
	unsigned char *d = dst;
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(d + 2 * i), cvt8_bf16(_mm256_loadu_ps(src + i)));
	bf_kern_ref.f32_to_bf16(src + i, d + 2 * i, n - i);
}

/* F16C quiets signalling NaNs; the reference keeps the payload bits as they are (sign, all-ones
 * exponent, mantissa << 13), so NaN lanes are rebuilt that way. */
static void v_f16_to_f32(const void *src, float *dst, size_t n)
{
	const unsigned char *s = src;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
		__m256i w = _mm256_cvtepu16_epi32(h);
		__m256i abs = _mm256_and_si256(w, _mm256_set1_epi32(0x7fff));
		__m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7c00));
		__m256i raw = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x8000)), 16),
					      _mm256_or_si256(_mm256_set1_epi32(0x7f800000),
							      _mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x3ff)), 13)));
		__m256 f = _mm256_cvtph_ps(h);
		f = _mm256_blendv_ps(f, _mm256_castsi256_ps(raw), _mm256_castsi256_ps(nan));
		_mm256_storeu_ps(dst + i, f);
	}
	bf_kern_ref.f16_to_f32(s + 2 * i, dst + i, n - i);
}

/* F16C rounds to nearest even; every NaN becomes 0x7e00 (bf_dtype.h) */
static void v_f32_to_f16(const float *src, void *dst, size_t n)
{
	unsigned char *d = dst;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 x = _mm256_loadu_ps(src + i);
		__m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		__m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
		__m256i m16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(nan, nan), 0x08);
		h = _mm_blendv_epi8(h, _mm_set1_epi16(0x7e00), _mm256_castsi256_si128(m16));
		_mm_storeu_si128((__m128i *)(d + 2 * i), h);
	}
	bf_kern_ref.f32_to_f16(src + i, d + 2 * i, n - i);
}

static void v_scale(float *out, const float *x, float w, size_t n)
{
	__m256 vw = _mm256_set1_ps(w);
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vw));
	bf_kern_ref.scale(out + i, x + i, w, n - i);
}

static void v_axpy(float *out, const float *x, float w, size_t n)
{
	__m256 vw = _mm256_set1_ps(w);
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), vw)));
	bf_kern_ref.axpy(out + i, x + i, w, n - i);
}

static void v_div(float *out, float dv, size_t n)
{
	__m256 vd = _mm256_set1_ps(dv);
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(out + i, _mm256_div_ps(_mm256_loadu_ps(out + i), vd));
	bf_kern_ref.div(out + i, dv, n - i);
}

static void v_sub(float *out, const float *a, const float *b, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(out + i, _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
	bf_kern_ref.sub(out + i, a + i, b + i, n - i);
}

static void v_add(float *out, const float *a, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_loadu_ps(a + i)));
	bf_kern_ref.add(out + i, a + i, n - i);
}

static void v_lin2(float *out, const float *a, float wa, const float *b, float wb, size_t n)
{
	__m256 va = _mm256_set1_ps(wa), vb = _mm256_set1_ps(wb);
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(a + i), va),
							_mm256_mul_ps(_mm256_loadu_ps(b + i), vb)));
	bf_kern_ref.lin2(out + i, a + i, wa, b + i, wb, n - i);
}

static inline __m256 ld8_bf16(const uint16_t *p)
{
	__m128i h = _mm_loadu_si128((const __m128i *)p);
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static void v_wsum_bf16(uint16_t *out, const uint16_t *const *x, const float *w, int k, float div, int use_div,
			size_t n)
{
	__m256 vd = _mm256_set1_ps(div);
	size_t e = 0;
	for (; e + 8 <= n; e += 8) {
		__m256 acc = _mm256_mul_ps(ld8_bf16(x[0] + e), _mm256_set1_ps(w[0]));
		for (int i = 1; i < k; i++)
			acc = _mm256_add_ps(acc, _mm256_mul_ps(ld8_bf16(x[i] + e), _mm256_set1_ps(w[i])));
		if (use_div)
			acc = _mm256_div_ps(acc, vd);
		_mm_storeu_si128((__m128i *)(out + e), cvt8_bf16(acc));
	}
	if (e < n) {
		const uint16_t *xt[64]; /* k <= 64: callers use the fused kernels only up to 64 inputs */
		for (int i = 0; i < k; i++)
			xt[i] = x[i] + e;
		bf_kern_ref.wsum_bf16(out + e, xt, w, k, div, use_div, n - e);
	}
}

static void v_ta_bf16(uint16_t *out, const uint16_t *b, const uint16_t *const *x, const float *w, int k, float den,
		      int use_den, float lam, int use_lam, size_t n)
{
	__m256 vd = _mm256_set1_ps(den), vl = _mm256_set1_ps(lam);
	size_t e = 0;
	for (; e + 8 <= n; e += 8) {
		__m256 be = ld8_bf16(b + e);
		__m256 acc = _mm256_mul_ps(_mm256_sub_ps(ld8_bf16(x[0] + e), be), _mm256_set1_ps(w[0]));
		for (int i = 1; i < k; i++)
			acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_sub_ps(ld8_bf16(x[i] + e), be), _mm256_set1_ps(w[i])));
		if (use_den)
			acc = _mm256_div_ps(acc, vd);
		if (use_lam)
			acc = _mm256_mul_ps(acc, vl);
		_mm_storeu_si128((__m128i *)(out + e), cvt8_bf16(_mm256_add_ps(acc, be)));
	}
	if (e < n) {
		const uint16_t *xt[64];
		for (int i = 0; i < k; i++)
			xt[i] = x[i] + e;
		bf_kern_ref.ta_bf16(out + e, b + e, xt, w, k, den, use_den, lam, use_lam, n - e);
	}
}

/* sign as -1/0/+1 floats; NaN -> 0 like the reference */
static inline __m256 sgn8(__m256 x)
{
	__m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
	__m256 pos = _mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_GT_OQ), one);
	__m256 neg = _mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_LT_OQ), one);
	return _mm256_sub_ps(pos, neg);
}

static void v_consensus(float *out, float *den, const float *D, size_t stride, const float *w, int k, int count,
			size_t n)
{
	__m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps(), mone = _mm256_set1_ps(-1.0f);
	size_t e = 0;
	for (; e + 8 <= n; e += 8) {
		__m256 vote = zero;
		for (int i = 0; i < k; i++) {
			__m256 d = _mm256_loadu_ps(D + (size_t)i * stride + e);
			vote = _mm256_add_ps(vote, count ? sgn8(d) : d);
		}
		__m256 s = _mm256_blendv_ps(mone, one, _mm256_cmp_ps(vote, zero, _CMP_GE_OQ));
		__m256 acc = zero, dn = zero;
		for (int i = 0; i < k; i++) {
			__m256 d = _mm256_loadu_ps(D + (size_t)i * stride + e);
			__m256 keep = _mm256_and_ps(_mm256_cmp_ps(sgn8(d), s, _CMP_EQ_OQ), one);
			acc = _mm256_add_ps(acc, _mm256_mul_ps(d, keep));
			dn = _mm256_add_ps(dn, _mm256_mul_ps(_mm256_set1_ps(w[i]), keep));
		}
		_mm256_storeu_ps(out + e, acc);
		_mm256_storeu_ps(den + e, dn);
	}
	if (e < n)
		bf_kern_ref.consensus(out + e, den + e, D + e, stride, w, k, count, n - e);
}

/* The top-k test of topk_mask, 8 lanes at a time: unsigned compares through the sign flip, and
 * the index test becomes lane index < lim within the block (n <= 2^31 - 1). */
struct topk8 {
	__m256i flip, absm, tk, tk_raw, lim;
};

static inline struct topk8 topk8_init(uint32_t tk, uint64_t ti, uint64_t e0, size_t n)
{
	int32_t lim = bf_topk_lim(ti, e0, n);
	struct topk8 c;
	c.flip = _mm256_set1_epi32((int)0x80000000u);
	c.absm = _mm256_set1_epi32(0x7fffffff);
	c.tk = _mm256_xor_si256(_mm256_set1_epi32((int)tk), c.flip);
	c.tk_raw = _mm256_set1_epi32((int)tk);
	c.lim = _mm256_set1_epi32(lim);
	return c;
}

/* 1.0f where lane (index idx within the block) is kept, else 0.0f */
static inline __m256 topk8_keep(const struct topk8 *c, __m256 d, __m256i idx)
{
	__m256i key = _mm256_xor_si256(_mm256_and_si256(_mm256_castps_si256(d), c->absm), _mm256_set1_epi32(-1));
	__m256i lt = _mm256_cmpgt_epi32(c->tk, _mm256_xor_si256(key, c->flip));
	__m256i eq = _mm256_cmpeq_epi32(key, c->tk_raw);
	__m256i keep = _mm256_or_si256(lt, _mm256_and_si256(eq, _mm256_cmpgt_epi32(c->lim, idx)));
	return _mm256_and_ps(_mm256_castsi256_ps(keep), _mm256_set1_ps(1.0f));
}

static void v_topk_mask(float *mask, const float *d, uint32_t tk, uint64_t ti, uint64_t e0, size_t n)
{
	const struct topk8 c = topk8_init(tk, ti, e0, n);
	__m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	size_t e = 0;
	if (n <= 0x7fffffffu)
		for (; e + 8 <= n; e += 8) {
			_mm256_storeu_ps(mask + e, topk8_keep(&c, _mm256_loadu_ps(d + e), idx));
			idx = _mm256_add_epi32(idx, _mm256_set1_epi32(8));
		}
	if (e < n)
		bf_kern_ref.topk_mask(mask + e, d + e, tk, ti, e0 + e, n - e);
}

/* 32x32 -> 64 multiply of 8 lanes by a constant: high and low halves */
static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi, __m256i *lo)
{
	__m256i even = _mm256_mul_epu32(a, m);
	__m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
	*lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
	*hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

/* Eight Philox states, one per lane: words c0..c3 of counters g .. g+7 */
struct philox8 {
	__m256i c0, c1, c2, c3;
};

/* counters g .. g+7, mark ORed into counter word 1 (bf_rng.h's streams) */
static inline void philox8_start(struct philox8 *p, uint64_t g, uint32_t mark, uint32_t name_lo, uint32_t name_hi)
{
	if ((uint32_t)g <= UINT32_MAX - 7) {
		/* no carry into the high word inside the group: plain lane offsets */
		p->c0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)g), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
		p->c1 = _mm256_set1_epi32((int)((uint32_t)(g >> 32) | mark));
	} else {
		uint32_t lo[8], hi[8];
		for (int l = 0; l < 8; l++) {
			lo[l] = (uint32_t)(g + (uint64_t)l);
			hi[l] = (uint32_t)((g + (uint64_t)l) >> 32) | mark;
		}
		p->c0 = _mm256_loadu_si256((const __m256i *)lo);
		p->c1 = _mm256_loadu_si256((const __m256i *)hi);
	}
	p->c2 = _mm256_set1_epi32((int)name_lo);
	p->c3 = _mm256_set1_epi32((int)name_hi);
}

static inline void philox8_round(struct philox8 *p, __m256i k0, __m256i k1)
{
	const __m256i M0 = _mm256_set1_epi32((int)BF_PHILOX_M0), M1 = _mm256_set1_epi32((int)BF_PHILOX_M1);
	__m256i h0, l0, h1, l1;
	mulhilo8(p->c0, M0, &h0, &l0);
	mulhilo8(p->c2, M1, &h1, &l1);
	p->c0 = _mm256_xor_si256(_mm256_xor_si256(h1, p->c1), k0);
	p->c1 = l1;
	p->c2 = _mm256_xor_si256(_mm256_xor_si256(h0, p->c3), k1);
	p->c3 = l0;
}

/* The 32 words of the 8 counters in element order, out[4 * lane + word] (a 4x8 transpose): as
 * uniforms, or raw (the words themselves, for the keep decisions). */
static inline void philox8_store(const struct philox8 *p, void *dst, int raw)
{
	const __m256 scale = _mm256_set1_ps(0x1p-24f);
	__m256 w0 = _mm256_castsi256_ps(p->c0), w1 = _mm256_castsi256_ps(p->c1);
	__m256 w2 = _mm256_castsi256_ps(p->c2), w3 = _mm256_castsi256_ps(p->c3);
	if (!raw) {
		w0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(p->c0, 8)), scale);
		w1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(p->c1, 8)), scale);
		w2 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(p->c2, 8)), scale);
		w3 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(p->c3, 8)), scale);
	}
	float *out = dst;
	__m256 t0 = _mm256_unpacklo_ps(w0, w1), t1 = _mm256_unpackhi_ps(w0, w1);
	__m256 t2 = _mm256_unpacklo_ps(w2, w3), t3 = _mm256_unpackhi_ps(w2, w3);
	/* u0: blocks 0 | 4, u1: 1 | 5, u2: 2 | 6, u3: 3 | 7 */
	__m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
	__m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
	_mm256_storeu_ps(out, _mm256_permute2f128_ps(u0, u1, 0x20));
	_mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
	_mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
	_mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
}

/* The 64 words of counters g .. g+15, in element order (raw) or as uniforms. Two independent
 * groups of 8 are interleaved: one group alone waits on each round's multiply. */
static inline __attribute__((always_inline)) void philox16x(const uint32_t key[2], uint64_t g, uint32_t mark,
							    uint32_t name_lo, uint32_t name_hi, void *out,
							    int raw)
{
	struct philox8 a, b;
	philox8_start(&a, g, mark, name_lo, name_hi);
	philox8_start(&b, g + 8, mark, name_lo, name_hi);
	uint32_t k0 = key[0], k1 = key[1];
	for (int r = 0; r < BF_PHILOX_ROUNDS; r++) {
		__m256i vk0 = _mm256_set1_epi32((int)k0), vk1 = _mm256_set1_epi32((int)k1);
		philox8_round(&a, vk0, vk1);
		philox8_round(&b, vk0, vk1);
		k0 += BF_PHILOX_W0;
		k1 += BF_PHILOX_W1;
	}
	philox8_store(&a, out, raw);
	philox8_store(&b, (uint32_t *)out + 32, raw);
}

static void v_philox_uniform(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t index0, size_t n,
			     float *out)
{
	/* scalar up to a counter boundary */
	size_t j = bf_kern_philox_head(&bf_kern_ref, key, name_lo, name_hi, index0, n, 0, 0.0f, out);
	uint64_t i = index0 + j;
	for (; j + 64 <= n; j += 64, i += 64)
		philox16x(key, i >> 2, 0, name_lo, name_hi, out + j, 0);
	if (j < n)
		bf_kern_ref.philox_uniform(key, name_lo, name_hi, i, n - j, out + j);
}

/* Keep decisions of n (a multiple of 8) elements from their 16-bit halves h (bf_rng.h), element
 * index i0 first; the one in 65536 that equals T draws its refinement word. */
static inline void halves_keep8(const uint16_t *h, size_t n, struct bf_bern b, const uint32_t key[2],
				uint32_t name_lo, uint32_t name_hi, uint64_t i0, float *out)
{
	const __m256i vt = _mm256_set1_epi32((int)b.t); /* T <= 2^16: signed compares do */
	const __m256 one = _mm256_set1_ps(1.0f);
	for (size_t k = 0; k < n; k += 8) {
		__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + k)));
		_mm256_storeu_ps(out + k, _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(vt, v)), one));
		unsigned eq = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(v, vt)));
		for (; eq; eq &= eq - 1) {
			unsigned l = (unsigned)__builtin_ctz(eq);
			out[k + l] = bf_bern_tie(b, key, name_lo, name_hi, i0 + k + l);
		}
	}
}

static void v_philox_mask(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t index0, size_t n,
			  float p, float *out)
{
	const struct bf_bern b = bf_bern_init(p);
	size_t j = bf_kern_philox_head(&bf_kern_ref, key, name_lo, name_hi, index0, n, 1, p, out);
	uint64_t i = index0 + j;
	uint32_t w[64];
	for (; j + 128 <= n; j += 128, i += 128) {
		philox16x(key, i >> 3, BF_RNG_HALVES, name_lo, name_hi, w, 1);
		halves_keep8((const uint16_t *)w, 128, b, key, name_lo, name_hi, i, out + j);
	}
	if (j < n)
		bf_kern_ref.philox_mask(key, name_lo, name_hi, i, n - j, p, out + j);
}

static void v_sub_bf16(float *out, const uint16_t *a, const uint16_t *b, size_t n)
{
	size_t e = 0;
	for (; e + 8 <= n; e += 8)
		_mm256_storeu_ps(out + e, _mm256_sub_ps(ld8_bf16(a + e), ld8_bf16(b + e)));
	bf_kern_ref.sub_bf16(out + e, a + e, b + e, n - e);
}

/* Four elements from e of an f32 or a bf16 vector, widened to double (exactly, through f32). */
static inline __m256d ld4_pd(const void *p, size_t e, int bf16)
{
	if (!bf16)
		return _mm256_cvtps_pd(_mm_loadu_ps((const float *)p + e));
	__m128i h = _mm_loadl_epi64((const __m128i *)((const uint16_t *)p + e));
	return _mm256_cvtps_pd(_mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h), 16)));
}

/* Tail and final sum of one pair, from its eight accumulators (lanes 0-3 in lo, 4-7 in hi):
 * the reference's order exactly. */
static inline void dots_pair_finish(__m256d lo, __m256d hi, const void *x, const void *y, int bf16, size_t e,
				    size_t n, double *g)
{
	double a[8];
	_mm256_storeu_pd(a, lo);
	_mm256_storeu_pd(a + 4, hi);
	for (; e < n; e++)
		a[e & 7] = a[e & 7] + (double)bf_kern_elem(x, e, bf16) * (double)bf_kern_elem(y, e, bf16);
	*g += bf_fold8(a);
}

/* Two vectors (slerp's norms and dot product) in one pass with the accumulators in registers:
 * each element is loaded and widened once instead of three times. Each pair keeps its eight
 * accumulators in two vectors, added to in element order, so the sums are the reference's bit
 * for bit. Other k go pair by pair. f32 or bf16 inputs. */
static inline __attribute__((always_inline)) void dots_impl(const void *const *v, int bf16, int k, size_t n,
							   double *g)
{
	const __m256d z = _mm256_setzero_pd();
	if (k == 2) {
		__m256d aa0 = z, aa1 = z, ab0 = z, ab1 = z, bb0 = z, bb1 = z;
		size_t e = 0;
		for (; e + 8 <= n; e += 8) {
			__m256d x0 = ld4_pd(v[0], e, bf16), y0 = ld4_pd(v[1], e, bf16);
			__m256d x1 = ld4_pd(v[0], e + 4, bf16), y1 = ld4_pd(v[1], e + 4, bf16);
			aa0 = _mm256_add_pd(aa0, _mm256_mul_pd(x0, x0));
			aa1 = _mm256_add_pd(aa1, _mm256_mul_pd(x1, x1));
			ab0 = _mm256_add_pd(ab0, _mm256_mul_pd(x0, y0));
			ab1 = _mm256_add_pd(ab1, _mm256_mul_pd(x1, y1));
			bb0 = _mm256_add_pd(bb0, _mm256_mul_pd(y0, y0));
			bb1 = _mm256_add_pd(bb1, _mm256_mul_pd(y1, y1));
		}
		dots_pair_finish(aa0, aa1, v[0], v[0], bf16, e, n, &g[0]);
		dots_pair_finish(ab0, ab1, v[0], v[1], bf16, e, n, &g[1]);
		dots_pair_finish(bb0, bb1, v[1], v[1], bf16, e, n, &g[3]);
		return;
	}
	for (int i = 0; i < k; i++)
		for (int j = i; j < k; j++) {
			__m256d acc0 = z, acc1 = z;
			size_t e = 0;
			for (; e + 8 <= n; e += 8) {
				acc0 = _mm256_add_pd(acc0, _mm256_mul_pd(ld4_pd(v[i], e, bf16), ld4_pd(v[j], e, bf16)));
				acc1 = _mm256_add_pd(acc1, _mm256_mul_pd(ld4_pd(v[i], e + 4, bf16), ld4_pd(v[j], e + 4, bf16)));
			}
			dots_pair_finish(acc0, acc1, v[i], v[j], bf16, e, n, &g[i * k + j]);
		}
}

static void v_dots_f64(const float *const *v, int k, size_t n, double *g)
{
	dots_impl((const void *const *)v, 0, k, n, g);
}

static void v_dots_bf16(const uint16_t *const *v, int k, size_t n, double *g)
{
	dots_impl((const void *const *)v, 1, k, n, g);
}

static void v_l1_pair(const float *d, const float *mask, size_t n, double *a, double *b)
{
	const __m128 abs = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
	__m256d va0 = _mm256_setzero_pd(), va1 = va0, vb0 = va0, vb1 = va0;
	size_t e = 0;
	for (; e + 8 <= n; e += 8) {
		__m128 x0 = _mm_loadu_ps(d + e), x1 = _mm_loadu_ps(d + e + 4);
		__m128 xm0 = _mm_mul_ps(x0, _mm_loadu_ps(mask + e)), xm1 = _mm_mul_ps(x1, _mm_loadu_ps(mask + e + 4));
		va0 = _mm256_add_pd(va0, _mm256_cvtps_pd(_mm_and_ps(x0, abs)));
		va1 = _mm256_add_pd(va1, _mm256_cvtps_pd(_mm_and_ps(x1, abs)));
		vb0 = _mm256_add_pd(vb0, _mm256_cvtps_pd(_mm_and_ps(xm0, abs)));
		vb1 = _mm256_add_pd(vb1, _mm256_cvtps_pd(_mm_and_ps(xm1, abs)));
	}
	double sa[8], sb[8];
	_mm256_storeu_pd(sa, va0);
	_mm256_storeu_pd(sa + 4, va1);
	_mm256_storeu_pd(sb, vb0);
	_mm256_storeu_pd(sb + 4, vb1);
	for (; e < n; e++) {
		sa[e & 7] = sa[e & 7] + (double)fabsf(d[e]);
		sb[e & 7] = sb[e & 7] + (double)fabsf(d[e] * mask[e]);
	}
	*a += bf_fold8(sa);
	*b += bf_fold8(sb);
}

/* 8 elements of an f32 or a bf16 array (constant-folded in each caller) */
static inline __m256 ld8_any(const void *p, size_t e, int bf16)
{
	return bf16 ? ld8_bf16((const uint16_t *)p + e) : _mm256_loadu_ps((const float *)p + e);
}

static inline __attribute__((always_inline)) void gta_prep_impl(float *d, const void *x, const void *b, int bf16,
								const float *mask, int tk_on, uint32_t tk,
								uint64_t ti, uint64_t e0, float scale, float w,
								size_t n)
{
	const struct topk8 c = topk8_init(tk, ti, e0, n);
	const __m256 vs = _mm256_set1_ps(scale), vw = _mm256_set1_ps(w);
	__m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	const int use_scale = scale != 1.0f;
	size_t e = 0;
	if (n <= 0x7fffffffu)
		for (; e + 8 <= n; e += 8) {
			__m256 v = _mm256_sub_ps(ld8_any(x, e, bf16), ld8_any(b, e, bf16));
			if (mask) {
				v = _mm256_mul_ps(v, _mm256_loadu_ps(mask + e));
			} else if (tk_on) {
				v = _mm256_mul_ps(v, topk8_keep(&c, v, idx));
			}
			if (use_scale)
				v = _mm256_mul_ps(v, vs);
			_mm256_storeu_ps(d + e, _mm256_mul_ps(v, vw));
			idx = _mm256_add_epi32(idx, _mm256_set1_epi32(8));
		}
	if (e == n)
		return;
	if (bf16)
		bf_kern_ref.gta_prep_bf16(d + e, (const uint16_t *)x + e, (const uint16_t *)b + e, mask ? mask + e : NULL,
					  tk_on, tk, ti, e0 + e, scale, w, n - e);
	else
		bf_kern_ref.gta_prep(d + e, (const float *)x + e, (const float *)b + e, mask ? mask + e : NULL, tk_on,
				     tk, ti, e0 + e, scale, w, n - e);
}

static void v_gta_prep(float *d, const float *x, const float *b, const float *mask, int tk_on, uint32_t tk,
		       uint64_t ti, uint64_t e0, float scale, float w, size_t n)
{
	gta_prep_impl(d, x, b, 0, mask, tk_on, tk, ti, e0, scale, w, n);
}

static void v_gta_prep_bf16(float *d, const uint16_t *x, const uint16_t *b, const float *mask, int tk_on,
			    uint32_t tk, uint64_t ti, uint64_t e0, float scale, float w, size_t n)
{
	gta_prep_impl(d, x, b, 1, mask, tk_on, tk, ti, e0, scale, w, n);
}

static inline __attribute__((always_inline)) void gta_finish_impl(void *dst, const float *out, const float *den,
								  const void *b, int bf16, int normalize,
								  float lam, int use_lam, size_t n)
{
	const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), vl = _mm256_set1_ps(lam);
	size_t e = 0;
	for (; e + 8 <= n; e += 8) {
		__m256 o = _mm256_loadu_ps(out + e);
		if (normalize) {
			__m256 dn = _mm256_loadu_ps(den + e);
			dn = _mm256_blendv_ps(dn, one, _mm256_cmp_ps(dn, zero, _CMP_EQ_OQ));
			o = _mm256_div_ps(o, dn);
		}
		if (use_lam)
			o = _mm256_mul_ps(o, vl);
		o = _mm256_add_ps(o, ld8_any(b, e, bf16));
		if (bf16)
			_mm_storeu_si128((__m128i *)((uint16_t *)dst + e), cvt8_bf16(o));
		else
			_mm256_storeu_ps((float *)dst + e, o);
	}
	if (e == n)
		return;
	if (bf16)
		bf_kern_ref.gta_finish_bf16((uint16_t *)dst + e, out + e, den + e, (const uint16_t *)b + e, normalize,
					    lam, use_lam, n - e);
	else
		bf_kern_ref.gta_finish((float *)dst + e, den + e, (const float *)b + e, normalize, lam, use_lam, n - e);
}

static void v_gta_finish(float *out, const float *den, const float *b, int normalize, float lam, int use_lam,
			 size_t n)
{
	gta_finish_impl(out, out, den, b, 0, normalize, lam, use_lam, n);
}

static void v_gta_finish_bf16(uint16_t *dst, const float *out, const float *den, const uint16_t *b, int normalize,
			      float lam, int use_lam, size_t n)
{
	gta_finish_impl(dst, out, den, b, 1, normalize, lam, use_lam, n);
}

static void v_mask_pack(uint64_t *w, uint64_t e0, const float *mask, size_t n)
{
	size_t head = (size_t)((64 - (e0 & 63)) & 63);
	if (head > n)
		head = n;
	bf_kern_ref.mask_pack(w, e0, mask, head);
	size_t e = head;
	const __m256 zero = _mm256_setzero_ps();
	for (; e + 64 <= n; e += 64) {
		uint64_t x = 0;
		for (unsigned g = 0; g < 8; g++) {
			__m256 v = _mm256_loadu_ps(mask + e + 8 * g);
			x |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ)) << (8 * g);
		}
		w[(e0 + e) >> 6] = x;
	}
	bf_kern_ref.mask_pack(w, e0 + e, mask + e, n - e);
}

/* Eight lanes from one byte of a word: lane j = (byte >> j) & 1. */
static void v_mask_unpack(const uint64_t *w, uint64_t e0, float *mask, size_t n)
{
	size_t head = (size_t)((8 - (e0 & 7)) & 7);
	if (head > n)
		head = n;
	bf_kern_ref.mask_unpack(w, e0, mask, head);
	size_t e = head;
	const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
	const __m256 one = _mm256_set1_ps(1.0f);
	for (; e + 8 <= n; e += 8) {
		uint64_t x = e0 + e;
		int byte = (int)((w[x >> 6] >> (x & 63)) & 0xff);
		__m256i b = _mm256_and_si256(_mm256_set1_epi32(byte), sel);
		__m256 on = _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, sel));
		_mm256_storeu_ps(mask + e, _mm256_and_ps(on, one));
	}
	bf_kern_ref.mask_unpack(w, e0 + e, mask + e, n - e);
}

static inline __attribute__((always_inline)) void abs_keys_impl(uint32_t *keys, const void *a, const void *b,
								int bf16, uint32_t flip, size_t n)
{
	const __m256i mag = _mm256_set1_epi32(0x7fffffff), vf = _mm256_set1_epi32((int)flip);
	size_t e = 0;
	for (; e + 8 <= n; e += 8) {
		__m256i d = _mm256_castps_si256(_mm256_sub_ps(ld8_any(a, e, bf16), ld8_any(b, e, bf16)));
		_mm256_storeu_si256((__m256i *)(keys + e), _mm256_xor_si256(_mm256_and_si256(d, mag), vf));
	}
	if (bf16)
		bf_kern_ref.abs_keys_bf16(keys + e, (const uint16_t *)a + e, (const uint16_t *)b + e, flip, n - e);
	else
		bf_kern_ref.abs_keys(keys + e, (const float *)a + e, (const float *)b + e, flip, n - e);
}

static void v_abs_keys(uint32_t *keys, const float *a, const float *b, uint32_t flip, size_t n)
{
	abs_keys_impl(keys, a, b, 0, flip, n);
}

static void v_abs_keys_bf16(uint32_t *keys, const uint16_t *a, const uint16_t *b, uint32_t flip, size_t n)
{
	abs_keys_impl(keys, a, b, 1, flip, n);
}

/* Left-pack permutations: byte l of pack_lut[m] is the lane of the l-th set bit of m (filled
 * once by bf_kern_avx2, before any kernel runs). */
static uint64_t pack_lut[256];

static void pack_lut_fill(void)
{
	for (unsigned m = 0; m < 256; m++) {
		uint64_t v = 0;
		unsigned l = 0;
		for (unsigned b = 0; b < 8; b++)
			if (m >> b & 1)
				v |= (uint64_t)b << (8 * l++);
		pack_lut[m] = v;
	}
}

/* 8 keys at a time, branch-free: the below count from a mask popcount, and the window's keys
 * and indices left-packed with one permutation each and stored whole at the end of the buffer
 * (which advances by the match count), while the buffer has room. */
static uint64_t v_window_scan(const uint32_t *keys, size_t n, uint32_t lo, uint32_t w, uint32_t idx0, uint32_t *ok,
			      uint32_t *oi, uint64_t *cn, uint64_t cap)
{
	const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
	const __m256i vlo = _mm256_set1_epi32((int)lo), slo = _mm256_set1_epi32((int)(lo ^ 0x80000000u));
	const __m256i sw = _mm256_set1_epi32((int)(w ^ 0x80000000u)), eight = _mm256_set1_epi32(8);
	__m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)idx0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
	uint64_t below = 0, c = *cn;
	size_t j = 0;
	for (; j + 8 <= n; j += 8) {
		__m256i k = _mm256_loadu_si256((const __m256i *)(keys + j));
		/* unsigned compares as signed ones on sign-flipped values */
		__m256i lt = _mm256_cmpgt_epi32(slo, _mm256_xor_si256(k, sign));
		__m256i out = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_sub_epi32(k, vlo), sign), sw);
		unsigned mb = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(lt));
		unsigned mi = ~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(out)) & 0xffu;
		below += (uint64_t)__builtin_popcount(mb);
		if (c < cap) {
			__m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)pack_lut[mi]));
			_mm256_storeu_si256((__m256i *)(ok + c), _mm256_permutevar8x32_epi32(k, perm));
			_mm256_storeu_si256((__m256i *)(oi + c), _mm256_permutevar8x32_epi32(idx, perm));
		}
		c += (uint64_t)__builtin_popcount(mi);
		idx = _mm256_add_epi32(idx, eight);
	}
	*cn = c;
	return below + bf_kern_ref.window_scan(keys + j, n - j, lo, w, idx0 + (uint32_t)j, ok, oi, cn, cap);
}

/* 8 entries at a time: the digit test as a lane mask, the kept keys and indices left-packed
 * with one permutation each (window_scan's table) and stored whole at k <= i: in place, the
 * store only reaches entries already loaded. */
static uint64_t v_digit_compact(uint32_t *ck, uint32_t *ci, uint64_t n, unsigned shift, uint32_t sub, uint32_t d)
{
	const __m128i sh = _mm_cvtsi32_si128((int)shift);
	const __m256i vsub = _mm256_set1_epi32((int)sub), vd = _mm256_set1_epi32((int)d), m8 = _mm256_set1_epi32(255);
	uint64_t k = 0, i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256i key = _mm256_loadu_si256((const __m256i *)(ck + i));
		__m256i id = _mm256_loadu_si256((const __m256i *)(ci + i));
		__m256i dig = _mm256_and_si256(_mm256_sub_epi32(_mm256_srl_epi32(key, sh), vsub), m8);
		unsigned m = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(dig, vd)));
		__m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)pack_lut[m]));
		_mm256_storeu_si256((__m256i *)(ck + k), _mm256_permutevar8x32_epi32(key, perm));
		_mm256_storeu_si256((__m256i *)(ci + k), _mm256_permutevar8x32_epi32(id, perm));
		k += (uint64_t)__builtin_popcount(m);
	}
	return bf_digit_compact_from(ck, ci, k, i, n, shift, sub, d);
}

/* keys <= k over [0, i), keys < k over [i, n): unsigned compares as signed ones on sign-flipped
 * values, 8 keys per step */
static uint64_t v_stable_rank(const uint32_t *keys, size_t n, uint32_t k, size_t i)
{
	const __m256i sign = _mm256_set1_epi32((int)0x80000000u), sk = _mm256_set1_epi32((int)(k ^ 0x80000000u));
	size_t m = i < n ? i : n, j = 0;
	uint64_t r = 0;
	for (; j + 8 <= m; j += 8) { /* key <= k: not key > k */
		__m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(keys + j)), sign);
		r += 8u - (unsigned)__builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(v, sk))));
	}
	for (; j < m; j++)
		r += keys[j] <= k;
	for (; j + 8 <= n; j += 8) {
		__m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(keys + j)), sign);
		r += (unsigned)__builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(sk, v))));
	}
	for (; j < n; j++)
		r += keys[j] < k;
	return r;
}

static uint32_t v_della_keys(const float *d, size_t n, uint32_t *keys, uint32_t *zc)
{
	const __m256i abs = _mm256_set1_epi32(0x7fffffff), zero = _mm256_setzero_si256();
	__m256i vmax = zero, vz = zero;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256i k = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(d + i)), abs);
		_mm256_storeu_si256((__m256i *)(keys + i), k);
		vmax = _mm256_max_epu32(vmax, k);
		vz = _mm256_sub_epi32(vz, _mm256_cmpeq_epi32(k, zero)); /* -1 per zero */
	}
	uint32_t m[8], z[8], kmax = 0, zeros = 0;
	_mm256_storeu_si256((__m256i *)m, vmax);
	_mm256_storeu_si256((__m256i *)z, vz);
	for (int l = 0; l < 8; l++) {
		kmax = m[l] > kmax ? m[l] : kmax;
		zeros += z[l];
	}
	uint32_t tz, tmax = bf_kern_ref.della_keys(d + i, n - i, keys + i, &tz);
	*zc = zeros + tz;
	return tmax > kmax ? tmax : kmax;
}

static void v_della_buckets(const uint32_t *keys, size_t n, uint32_t base, uint32_t J, uint16_t *bk, uint16_t *hs)
{
	const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1), vb = _mm256_set1_epi32((int)base);
	const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), jm = _mm256_set1_epi32(BF_DELLA_JUNK - 1);
	const __m256i vj = _mm256_set1_epi32((int)J);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256i k = _mm256_loadu_si256((const __m256i *)(keys + i));
		__m256i z = _mm256_cmpeq_epi32(k, zero);
		__m256i t = _mm256_max_epi32(_mm256_sub_epi32(_mm256_srli_epi32(k, BF_DELLA_SHIFT), vb), zero);
		__m256i b = _mm256_andnot_si256(z, _mm256_add_epi32(t, one));
		__m256i junk = _mm256_add_epi32(vj, _mm256_and_si256(_mm256_add_epi32(_mm256_set1_epi32((int)i), lane), jm));
		__m256i h = _mm256_blendv_epi8(_mm256_add_epi32(b, one), junk, z);
		/* 32 -> 16 bits: both fit (buckets and slots stay below 600) */
		__m256i pb = _mm256_permute4x64_epi64(_mm256_packus_epi32(b, h), 0xd8);
		_mm_storeu_si128((__m128i *)(bk + i), _mm256_castsi256_si128(pb));
		_mm_storeu_si128((__m128i *)(hs + i), _mm256_extracti128_si256(pb, 1));
	}
	for (; i < n; i++)
		bf_della_bucket(keys[i], i, base, J, bk, hs);
}

/* two gathers per 8 elements; the undecided (under 1%) appended lane by lane */
static size_t v_della_decide(const uint16_t *bk, const float *u, const float *plo, const float *phi, size_t n,
			     float *mask, uint32_t *amb)
{
	const __m256 one = _mm256_set1_ps(1.0f);
	size_t i = 0, na = 0;
	for (; i + 8 <= n; i += 8) {
		__m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(bk + i)));
		__m256 lo = _mm256_i32gather_ps(plo, b, 4), hi = _mm256_i32gather_ps(phi, b, 4);
		__m256 x = _mm256_loadu_ps(u + i);
		_mm256_storeu_ps(mask + i, _mm256_and_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), one));
		__m256 mid = _mm256_and_ps(_mm256_cmp_ps(x, lo, _CMP_GE_OQ), _mm256_cmp_ps(x, hi, _CMP_LT_OQ));
		for (unsigned m = (unsigned)_mm256_movemask_ps(mid); m; m &= m - 1)
			amb[na++] = (uint32_t)(i + (unsigned)__builtin_ctz(m));
	}
	size_t t = bf_kern_ref.della_decide(bk + i, u + i, plo, phi, n - i, mask + i, amb + na);
	for (size_t a = na; a < na + t; a++)
		amb[a] += (uint32_t)i;
	return na + t;
}

static void v_gta_fused_bf16(uint16_t *dst, const uint16_t *b, const struct bf_gta_in *m, int k, int count,
			     int normalize, float lam, int use_lam, uint64_t e0, size_t n)
{
	bf_kern_gta_fused_compose(bf_kern_avx2(), dst, b, m, k, count, normalize, lam, use_lam, e0, n);
}

static const struct bf_kern kern_avx2 = {
	.name = "avx2+f16c",
	.bf16_to_f32 = v_bf16_to_f32, .f32_to_bf16 = v_f32_to_bf16,
	.f16_to_f32 = v_f16_to_f32, .f32_to_f16 = v_f32_to_f16,
	.scale = v_scale, .axpy = v_axpy, .div = v_div, .sub = v_sub, .add = v_add, .lin2 = v_lin2,
	.wsum_bf16 = v_wsum_bf16, .ta_bf16 = v_ta_bf16,
	.consensus = v_consensus, .topk_mask = v_topk_mask,
	.philox_uniform = v_philox_uniform, .philox_mask = v_philox_mask, .sub_bf16 = v_sub_bf16, .dots_f64 = v_dots_f64, .l1_pair = v_l1_pair,
	.mask_pack = v_mask_pack, .mask_unpack = v_mask_unpack,
	.gta_prep = v_gta_prep, .gta_finish = v_gta_finish,
	.gta_prep_bf16 = v_gta_prep_bf16, .gta_finish_bf16 = v_gta_finish_bf16, .window_scan = v_window_scan,
	.stable_rank = v_stable_rank, .digit_compact = v_digit_compact, .gta_fused_bf16 = v_gta_fused_bf16,
	.della_keys = v_della_keys, .della_buckets = v_della_buckets, .della_decide = v_della_decide,
	.abs_keys = v_abs_keys, .abs_keys_bf16 = v_abs_keys_bf16, .dots_bf16 = v_dots_bf16,
};

/* F16C through cpuid (clang 14's __builtin_cpu_supports has no "f16c"); AVX2 through the
 * builtin, which also checks that the OS saves the YMM registers. */
const struct bf_kern *bf_kern_avx2(void)
{
	unsigned a, b, c, d;
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_F16C) ||
	    !(c & bit_POPCNT))
		return NULL;
	if (!pack_lut[255])
		pack_lut_fill();
	return &kern_avx2;
}
