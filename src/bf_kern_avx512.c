/* bf_kern_avx512.c: the AVX-512F variant: the AVX2 variant's table with the kernels that gain
 * from 16-lane vectors replaced (see bf_kern.h). Built with -mavx512f; chosen at run time only
 * when the CPU and the OS (ZMM state saved) have AVX-512F.
 *
 * Philox: 16 counters per vector in two interleaved groups, XORs fused by vpternlogd; 1.24x the
 * AVX2 generator on the (Zen 4) development machine, whose 512-bit multiplies run as two
 * 256-bit halves: dare_ties daemon CPU -9%. Same words, same uniforms and keep decisions, bit
 * for bit (tests/unit/test_kern.c). A 16-lane window_scan (vpcompressd) was measured too and
 * did not pay (ties within noise), so the AVX2 one stays.
 *
 * The bf16 kernels of linear, task_arithmetic and the TIES family (wsum, ta, gta_prep,
 * consensus, gta_finish, abs_keys, sub, mask pack/unpack), their f32 forms, the bf16
 * conversions and the selection's digit_compact: half the instructions of the AVX2 ones (mask
 * registers for the compares, vpmovdw for the rounding's narrowing, vpcompressd into a
 * register). The double sums of dots and l1_pair hold their eight accumulators (bf_fold8) in
 * one 8-lane vector, and gta_fused_bf16 runs the TIES family's consensus step in one pass.
 * Figures in docs/performance.md, round 9. */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include "bf_kern.h"
#include "bf_rng.h"

struct philox16 {
	__m512i c0, c1, c2, c3;
};

static inline void mulhilo16(__m512i a, __m512i m, __m512i *hi, __m512i *lo)
{
	__m512i even = _mm512_mul_epu32(a, m);
	__m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
	*lo = _mm512_mask_mov_epi32(even, 0xAAAA, _mm512_slli_epi64(odd, 32));
	*hi = _mm512_mask_mov_epi32(_mm512_srli_epi64(even, 32), 0xAAAA, odd);
}

static inline void philox16_round(struct philox16 *p, __m512i k0, __m512i k1)
{
	const __m512i M0 = _mm512_set1_epi32((int)BF_PHILOX_M0), M1 = _mm512_set1_epi32((int)BF_PHILOX_M1);
	__m512i h0, l0, h1, l1;
	mulhilo16(p->c0, M0, &h0, &l0);
	mulhilo16(p->c2, M1, &h1, &l1);
	p->c0 = _mm512_ternarylogic_epi32(h1, p->c1, k0, 0x96); /* h1 ^ c1 ^ k0 */
	p->c1 = l1;
	p->c2 = _mm512_ternarylogic_epi32(h0, p->c3, k1, 0x96);
	p->c3 = l0;
}

/* counters g .. g+15, mark ORed into counter word 1 (the caller keeps the low word from wrapping
 * inside the group) */
static inline void philox16_start(struct philox16 *p, uint64_t g, uint32_t mark, uint32_t name_lo, uint32_t name_hi)
{
	p->c0 = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)g),
				 _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
	p->c1 = _mm512_set1_epi32((int)((uint32_t)(g >> 32) | mark));
	p->c2 = _mm512_set1_epi32((int)name_lo);
	p->c3 = _mm512_set1_epi32((int)name_hi);
}

/* The 64 words of 16 counters in element order, counter l's four words to out[4l .. 4l+3]: as
 * uniforms (converted first, lane by lane), or raw. Transposed 4x4 within 128-bit lanes, then
 * the lanes. */
static inline void philox16_store(const struct philox16 *p, void *dst, int raw)
{
	const __m512 scale = _mm512_set1_ps(0x1p-24f);
	__m512i w0 = p->c0, w1 = p->c1, w2 = p->c2, w3 = p->c3;
	if (!raw) {
		w0 = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(p->c0, 8)), scale));
		w1 = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(p->c1, 8)), scale));
		w2 = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(p->c2, 8)), scale));
		w3 = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(p->c3, 8)), scale));
	}
	uint32_t *out = dst;
	__m512i t0 = _mm512_unpacklo_epi32(w0, w1), t1 = _mm512_unpackhi_epi32(w0, w1);
	__m512i t2 = _mm512_unpacklo_epi32(w2, w3), t3 = _mm512_unpackhi_epi32(w2, w3);
	/* lane L of u_j: the four words of counter 4L + j */
	__m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
	__m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
	__m512i v0 = _mm512_shuffle_i32x4(u0, u1, 0x44), v1 = _mm512_shuffle_i32x4(u2, u3, 0x44);
	__m512i v2 = _mm512_shuffle_i32x4(u0, u1, 0xEE), v3 = _mm512_shuffle_i32x4(u2, u3, 0xEE);
	_mm512_storeu_si512(out, _mm512_shuffle_i32x4(v0, v1, 0x88));
	_mm512_storeu_si512(out + 16, _mm512_shuffle_i32x4(v0, v1, 0xDD));
	_mm512_storeu_si512(out + 32, _mm512_shuffle_i32x4(v2, v3, 0x88));
	_mm512_storeu_si512(out + 48, _mm512_shuffle_i32x4(v2, v3, 0xDD));
}

static const struct bf_kern *base; /* the AVX2 variant this one extends */
static struct bf_kern kern_avx512;  /* this variant's table (filled by build) */

/* The 128 words of counters g .. g+31 in element order, raw or as uniforms: two interleaved
 * groups of 16. */
static inline __attribute__((always_inline)) void philox32x(const uint32_t key[2], uint64_t g, uint32_t mark,
							    uint32_t name_lo, uint32_t name_hi, void *out,
							    int raw)
{
	struct philox16 a, b;
	philox16_start(&a, g, mark, name_lo, name_hi);
	philox16_start(&b, g + 16, mark, name_lo, name_hi);
	uint32_t k0 = key[0], k1 = key[1];
	for (int r = 0; r < BF_PHILOX_ROUNDS; r++) {
		__m512i vk0 = _mm512_set1_epi32((int)k0), vk1 = _mm512_set1_epi32((int)k1);
		philox16_round(&a, vk0, vk1);
		philox16_round(&b, vk0, vk1);
		k0 += BF_PHILOX_W0;
		k1 += BF_PHILOX_W1;
	}
	philox16_store(&a, out, raw);
	philox16_store(&b, (uint32_t *)out + 64, raw);
}

static void v512_philox_uniform(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t index0,
				size_t n, float *out)
{
	/* the AVX2 variant up to a counter boundary */
	size_t j = bf_kern_philox_head(base, key, name_lo, name_hi, index0, n, 0, 0.0f, out);
	uint64_t i = index0 + j;
	for (; j + 128 <= n; j += 128, i += 128) {
		uint64_t g = i >> 2;
		if ((uint32_t)g > UINT32_MAX - 31) /* the low counter word wraps: the AVX2 variant carries */
			base->philox_uniform(key, name_lo, name_hi, i, 128, out + j);
		else
			philox32x(key, g, 0, name_lo, name_hi, out + j, 0);
	}
	if (j < n)
		base->philox_uniform(key, name_lo, name_hi, i, n - j, out + j);
}

static void v512_philox_mask(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t index0,
			     size_t n, float p, float *out)
{
	const struct bf_bern b = bf_bern_init(p);
	const __m512i vt = _mm512_set1_epi32((int)b.t);
	const __m512 one = _mm512_set1_ps(1.0f);
	size_t j = bf_kern_philox_head(base, key, name_lo, name_hi, index0, n, 1, p, out);
	uint64_t i = index0 + j;
	uint32_t w[128];
	for (; j + 256 <= n; j += 256, i += 256) {
		uint64_t g = i >> 3;
		if ((uint32_t)g > UINT32_MAX - 31) {
			base->philox_mask(key, name_lo, name_hi, i, 256, p, out + j);
			continue;
		}
		philox32x(key, g, BF_RNG_HALVES, name_lo, name_hi, w, 1);
		/* element i + k: half k of the words (bf_rng.h), kept when below T; equal to T (one in
		 * 65536): its refinement word decides */
		const uint16_t *h = (const uint16_t *)w;
		for (size_t k = 0; k < 256; k += 16) {
			__m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(h + k)));
			_mm512_storeu_ps(out + j + k, _mm512_maskz_mov_ps(_mm512_cmplt_epu32_mask(v, vt), one));
			for (unsigned eq = _mm512_cmpeq_epi32_mask(v, vt); eq; eq &= eq - 1) {
				unsigned l = (unsigned)__builtin_ctz(eq);
				out[j + k + l] = bf_bern_tie(b, key, name_lo, name_hi, i + k + l);
			}
		}
	}
	if (j < n)
		base->philox_mask(key, name_lo, name_hi, i, n - j, p, out + j);
}

/* keys <= k over [0, i), keys < k over [i, n), 16 per step (unsigned compares into masks) */
static uint64_t v512_stable_rank(const uint32_t *keys, size_t n, uint32_t k, size_t i)
{
	const __m512i vk = _mm512_set1_epi32((int)k);
	size_t m = i < n ? i : n, j = 0;
	uint64_t r = 0;
	for (; j + 16 <= m; j += 16)
		r += (unsigned)__builtin_popcount(_mm512_cmple_epu32_mask(_mm512_loadu_si512(keys + j), vk));
	if (j < m) {
		__mmask16 t = (__mmask16)((1u << (m - j)) - 1u);
		r += (unsigned)__builtin_popcount(_mm512_mask_cmple_epu32_mask(t, _mm512_maskz_loadu_epi32(t, keys + j), vk));
		j = m;
	}
	for (; j + 16 <= n; j += 16)
		r += (unsigned)__builtin_popcount(_mm512_cmplt_epu32_mask(_mm512_loadu_si512(keys + j), vk));
	if (j < n) {
		__mmask16 t = (__mmask16)((1u << (n - j)) - 1u);
		r += (unsigned)__builtin_popcount(_mm512_mask_cmplt_epu32_mask(t, _mm512_maskz_loadu_epi32(t, keys + j), vk));
	}
	return r;
}

/* ---------------------------------------------------------------------------------------------
 * The bf16 kernels of linear and the TIES family, 16 lanes: the same f32 operations in the
 * same order as the AVX2 ones (and so as the reference), with mask registers in place of the
 * compare-and-AND sequences and vpmovdw in place of the pack-and-permute of the rounding. The
 * tails (n % 16) go to the AVX2 kernel, which finishes with the reference.
 */

static inline __m512 ld16_bf16(const uint16_t *p)
{
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

static inline __m512 ld16_any(const void *p, size_t e, int bf16)
{
	return bf16 ? ld16_bf16((const uint16_t *)p + e) : _mm512_loadu_ps((const float *)p + e);
}

/* RNE: (u + 0x7fff + lsb) >> 16; every NaN -> 0x7fc0 (as cvt8_bf16 and the reference) */
static inline __m256i cvt16_bf16(__m512 x)
{
	__m512i u = _mm512_castps_si512(x);
	__m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
	__m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
	r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
	return _mm512_cvtepi32_epi16(r);
}

static inline __m512 ones_where(__mmask16 m)
{
	return _mm512_maskz_mov_ps(m, _mm512_set1_ps(1.0f));
}

static void v512_bf16_to_f32(const void *src, float *dst, size_t n)
{
	const uint16_t *s = src;
	size_t i = 0;
	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(dst + i, ld16_bf16(s + i));
	if (i < n)
		base->bf16_to_f32(s + i, dst + i, n - i);
}

static void v512_f32_to_bf16(const float *src, void *dst, size_t n)
{
	uint16_t *d = dst;
	size_t i = 0;
	for (; i + 16 <= n; i += 16)
		_mm256_storeu_si256((__m256i *)(d + i), cvt16_bf16(_mm512_loadu_ps(src + i)));
	if (i < n)
		base->f32_to_bf16(src + i, d + i, n - i);
}

static void v512_wsum_bf16(uint16_t *out, const uint16_t *const *x, const float *w, int k, float div, int use_div,
			   size_t n)
{
	const __m512 vd = _mm512_set1_ps(div);
	size_t e = 0;
	for (; e + 16 <= n; e += 16) {
		__m512 acc = _mm512_mul_ps(ld16_bf16(x[0] + e), _mm512_set1_ps(w[0]));
		for (int i = 1; i < k; i++)
			acc = _mm512_add_ps(acc, _mm512_mul_ps(ld16_bf16(x[i] + e), _mm512_set1_ps(w[i])));
		if (use_div)
			acc = _mm512_div_ps(acc, vd);
		_mm256_storeu_si256((__m256i *)(out + e), cvt16_bf16(acc));
	}
	if (e < n) {
		const uint16_t *xt[64]; /* k <= 64, as for the AVX2 kernel */
		for (int i = 0; i < k; i++)
			xt[i] = x[i] + e;
		base->wsum_bf16(out + e, xt, w, k, div, use_div, n - e);
	}
}

/* The top-k test of 16 differences v at block indices idx: keep key < tk, or key == tk at an
 * index below lim, with key = ~bits(|v|) (unsigned). */
static inline __mmask16 topk16(__m512 v, __m512i vtk, __m512i vlim, __m512i idx)
{
	__m512i key = _mm512_andnot_si512(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)),
					  _mm512_set1_epi32(-1));
	return _mm512_cmp_epu32_mask(key, vtk, _MM_CMPINT_LT) |
	       (_mm512_cmp_epi32_mask(key, vtk, _MM_CMPINT_EQ) & _mm512_cmp_epi32_mask(idx, vlim, _MM_CMPINT_LT));
}

/* gta_prep's steps after the difference v: * m when masked (m: 1.0 / 0.0 lanes), * scale when
 * use_scale, * w. */
static inline __m512 prep16(__m512 v, int masked, __m512 m, int use_scale, __m512 vs, __m512 vw)
{
	if (masked)
		v = _mm512_mul_ps(v, m);
	if (use_scale)
		v = _mm512_mul_ps(v, vs);
	return _mm512_mul_ps(v, vw);
}

/* d = x - b, masked (mask array or topk16), * scale, * w: gta_prep's order. */
static inline __attribute__((always_inline)) void gta_prep16(float *d, const void *x, const void *b, int bf16,
							     const float *mask, int tk_on, uint32_t tk,
							     uint64_t ti, uint64_t e0, float scale, float w,
							     size_t n)
{
	const __m512i vtk = _mm512_set1_epi32((int)tk);
	const __m512i vlim = _mm512_set1_epi32(bf_topk_lim(ti, e0, n)), sixteen = _mm512_set1_epi32(16);
	const __m512 vs = _mm512_set1_ps(scale), vw = _mm512_set1_ps(w);
	__m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	const int use_scale = scale != 1.0f;
	size_t e = 0;
	if (n <= 0x7fffffffu)
		for (; e + 16 <= n; e += 16) {
			__m512 v = _mm512_sub_ps(ld16_any(x, e, bf16), ld16_any(b, e, bf16));
			__m512 m = mask ? _mm512_loadu_ps(mask + e) : tk_on ? ones_where(topk16(v, vtk, vlim, idx)) : v;
			_mm512_storeu_ps(d + e, prep16(v, mask || tk_on, m, use_scale, vs, vw));
			idx = _mm512_add_epi32(idx, sixteen);
		}
	if (e == n)
		return;
	if (bf16)
		base->gta_prep_bf16(d + e, (const uint16_t *)x + e, (const uint16_t *)b + e, mask ? mask + e : NULL,
				    tk_on, tk, ti, e0 + e, scale, w, n - e);
	else
		base->gta_prep(d + e, (const float *)x + e, (const float *)b + e, mask ? mask + e : NULL, tk_on, tk,
			       ti, e0 + e, scale, w, n - e);
}

static void v512_gta_prep(float *d, const float *x, const float *b, const float *mask, int tk_on, uint32_t tk,
			  uint64_t ti, uint64_t e0, float scale, float w, size_t n)
{
	gta_prep16(d, x, b, 0, mask, tk_on, tk, ti, e0, scale, w, n);
}

static void v512_gta_prep_bf16(float *d, const uint16_t *x, const uint16_t *b, const float *mask, int tk_on,
			       uint32_t tk, uint64_t ti, uint64_t e0, float scale, float w, size_t n)
{
	gta_prep16(d, x, b, 1, mask, tk_on, tk, ti, e0, scale, w, n);
}

/* sign(d) as 1, -1 or 0 (NaN and +-0: 0), computed as the AVX2 kernel does: pos - neg */
static inline __m512 sgn16(__m512 d)
{
	return _mm512_sub_ps(ones_where(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_GT_OQ)),
			     ones_where(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_LT_OQ)));
}

/* One 16-lane group of consensus (the AVX2 kernel's operations, with masks). */
struct cons16 {
	__m512 vote, acc, dn;
	__mmask16 spos;
};

static inline __attribute__((always_inline)) void cons16_vote(struct cons16 *c, __m512 d, int count)
{
	c->vote = _mm512_add_ps(c->vote, count ? sgn16(d) : d);
}

static inline __attribute__((always_inline)) void cons16_sum(struct cons16 *c, __m512 d, __m512 wi)
{
	/* sign(d) == s: d > 0 where s is +1, d < 0 where it is -1 */
	__mmask16 gt = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_GT_OQ);
	__mmask16 lt = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_LT_OQ);
	__m512 keep = ones_where((__mmask16)((gt & c->spos) | (lt & (__mmask16)~c->spos)));
	c->acc = _mm512_add_ps(c->acc, _mm512_mul_ps(d, keep));
	c->dn = _mm512_add_ps(c->dn, _mm512_mul_ps(wi, keep));
}

/* Two groups per step: each group's sums are chains of k dependent additions, so one group at
 * a time waits on the adder's latency; the two chains interleave. */
static void v512_consensus(float *out, float *den, const float *D, size_t stride, const float *w, int k, int count,
			   size_t n)
{
	const __m512 zero = _mm512_setzero_ps();
	size_t e = 0;
	for (; e + 32 <= n; e += 32) {
		struct cons16 a = { zero, zero, zero, 0 }, b = { zero, zero, zero, 0 };
		for (int i = 0; i < k; i++) {
			const float *Di = D + (size_t)i * stride + e;
			cons16_vote(&a, _mm512_loadu_ps(Di), count);
			cons16_vote(&b, _mm512_loadu_ps(Di + 16), count);
		}
		/* s = +1 where vote >= 0, else -1 (NaN too) */
		a.spos = _mm512_cmp_ps_mask(a.vote, zero, _CMP_GE_OQ);
		b.spos = _mm512_cmp_ps_mask(b.vote, zero, _CMP_GE_OQ);
		for (int i = 0; i < k; i++) {
			const float *Di = D + (size_t)i * stride + e;
			__m512 wi = _mm512_set1_ps(w[i]);
			cons16_sum(&a, _mm512_loadu_ps(Di), wi);
			cons16_sum(&b, _mm512_loadu_ps(Di + 16), wi);
		}
		_mm512_storeu_ps(out + e, a.acc);
		_mm512_storeu_ps(out + e + 16, b.acc);
		_mm512_storeu_ps(den + e, a.dn);
		_mm512_storeu_ps(den + e + 16, b.dn);
	}
	if (e < n)
		base->consensus(out + e, den + e, D + e, stride, w, k, count, n - e);
}

/* gta_finish's steps on 16 sums o (weights dn): o / (dn == 0 ? 1 : dn) when normalize, * lam
 * when use_lam, + b; the result before rounding. */
static inline __m512 finish16(__m512 o, __m512 dn, __m512 b, int normalize, __m512 vl, int use_lam)
{
	if (normalize)
		o = _mm512_div_ps(o, _mm512_mask_mov_ps(dn, _mm512_cmp_ps_mask(dn, _mm512_setzero_ps(), _CMP_EQ_OQ),
							 _mm512_set1_ps(1.0f)));
	if (use_lam)
		o = _mm512_mul_ps(o, vl);
	return _mm512_add_ps(o, b);
}

static void gta_in_shift(const struct bf_gta_in *m, int k, size_t off, struct bf_gta_in *out)
{
	for (int i = 0; i < k; i++) {
		out[i] = m[i];
		out[i].x = m[i].x + off;
	}
}

/* gta_fused_bf16 in one pass: each model's difference stays in a register from its prep to the
 * consensus sums, and the sums to the rounding, where the composition writes and reads five f32
 * arrays. Per element the same operations in the same order: the prep of gta_prep16 (prep16),
 * the vote and sums of cons16, the finish of gta_finish16 (finish16). Mask bits are taken 16 at
 * a time once the element index is a multiple of 16 (the head before that, the tail and k > 8
 * go through the composition of this table's kernels). */
static void v512_gta_fused_bf16(uint16_t *dst, const uint16_t *b, const struct bf_gta_in *m, int k, int count,
				int normalize, float lam, int use_lam, uint64_t e0, size_t n)
{
	if (k > BF_GTA_FUSED_MAX || n > 0x7fffffffu) {
		bf_kern_gta_fused_compose(&kern_avx512, dst, b, m, k, count, normalize, lam, use_lam, e0, n);
		return;
	}
	size_t head = (size_t)((16 - (e0 & 15)) & 15);
	if (head > n)
		head = n;
	if (head)
		bf_kern_gta_fused_compose(&kern_avx512, dst, b, m, k, count, normalize, lam, use_lam, e0, head);
	struct bf_gta_in ms[BF_GTA_FUSED_MAX];
	gta_in_shift(m, k, head, ms);
	dst += head;
	b += head;
	e0 += head;
	n -= head;
	const __m512 zero = _mm512_setzero_ps(), vl = _mm512_set1_ps(lam);
	__m512i vtk[BF_GTA_FUSED_MAX], vlim[BF_GTA_FUSED_MAX];
	__m512 vs[BF_GTA_FUSED_MAX], vw[BF_GTA_FUSED_MAX];
	for (int i = 0; i < k; i++) {
		vtk[i] = _mm512_set1_epi32((int)ms[i].tk);
		vlim[i] = _mm512_set1_epi32(bf_topk_lim(ms[i].ti, e0, n));
		vs[i] = _mm512_set1_ps(ms[i].scale);
		vw[i] = _mm512_set1_ps(ms[i].w);
	}
	/* G groups of 16 per step: one group's chain (k votes, the sign, k sums, the divide) is
	 * long, and G independent ones keep the core busy while each waits */
	enum { G = 4 };
	const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	size_t e = 0;
	for (; e + 16 * G <= n; e += 16 * G) {
		__m512 bb[G], D[BF_GTA_FUSED_MAX][G];
		struct cons16 c[G];
		for (int g = 0; g < G; g++) {
			bb[g] = ld16_bf16(b + e + 16 * g);
			c[g] = (struct cons16){ zero, zero, zero, 0 };
		}
		for (int i = 0; i < k; i++) {
			const struct bf_gta_in *mi = &ms[i];
			for (int g = 0; g < G; g++) {
				size_t eg = e + 16 * (size_t)g;
				uint64_t x = e0 + eg;
				__m512 v = _mm512_sub_ps(ld16_bf16(mi->x + eg), bb[g]);
				__m512 mk = mi->bits ? ones_where((__mmask16)(mi->bits[x >> 6] >> (x & 63))) :
					    mi->tk_on ? ones_where(topk16(v, vtk[i], vlim[i],
									  _mm512_add_epi32(_mm512_set1_epi32((int)eg), lane))) :
					    v;
				D[i][g] = prep16(v, mi->bits || mi->tk_on, mk, mi->scale != 1.0f, vs[i], vw[i]);
				cons16_vote(&c[g], D[i][g], count);
			}
		}
		for (int g = 0; g < G; g++)
			c[g].spos = _mm512_cmp_ps_mask(c[g].vote, zero, _CMP_GE_OQ);
		for (int i = 0; i < k; i++)
			for (int g = 0; g < G; g++)
				cons16_sum(&c[g], D[i][g], vw[i]);
		for (int g = 0; g < G; g++)
			_mm256_storeu_si256((__m256i *)(dst + e + 16 * g),
					    cvt16_bf16(finish16(c[g].acc, c[g].dn, bb[g], normalize, vl, use_lam)));
	}
	if (e < n) {
		struct bf_gta_in mt[BF_GTA_FUSED_MAX];
		gta_in_shift(ms, k, e, mt);
		bf_kern_gta_fused_compose(&kern_avx512, dst + e, b + e, mt, k, count, normalize, lam, use_lam, e0 + e,
					  n - e);
	}
}

/* out / (den == 0 ? 1 : den) when normalize, * lam when use_lam, + b: gta_finish's order */
static inline __attribute__((always_inline)) void gta_finish16(void *dst, const float *out, const float *den,
							       const void *b, int bf16, int normalize,
							       float lam, int use_lam, size_t n)
{
	const __m512 vl = _mm512_set1_ps(lam);
	size_t e = 0;
	for (; e + 16 <= n; e += 16) {
		__m512 o = _mm512_loadu_ps(out + e);
		o = finish16(o, normalize ? _mm512_loadu_ps(den + e) : o, ld16_any(b, e, bf16), normalize, vl, use_lam);
		if (bf16)
			_mm256_storeu_si256((__m256i *)((uint16_t *)dst + e), cvt16_bf16(o));
		else
			_mm512_storeu_ps((float *)dst + e, o);
	}
	if (e == n)
		return;
	if (bf16)
		base->gta_finish_bf16((uint16_t *)dst + e, out + e, den + e, (const uint16_t *)b + e, normalize, lam,
				      use_lam, n - e);
	else
		base->gta_finish((float *)dst + e, den + e, (const float *)b + e, normalize, lam, use_lam, n - e);
}

static void v512_gta_finish(float *out, const float *den, const float *b, int normalize, float lam, int use_lam,
			    size_t n)
{
	gta_finish16(out, out, den, b, 0, normalize, lam, use_lam, n);
}

static void v512_gta_finish_bf16(uint16_t *dst, const float *out, const float *den, const uint16_t *b,
				 int normalize, float lam, int use_lam, size_t n)
{
	gta_finish16(dst, out, den, b, 1, normalize, lam, use_lam, n);
}

static void v512_abs_keys_bf16(uint32_t *keys, const uint16_t *a, const uint16_t *b, uint32_t flip, size_t n)
{
	const __m512i mag = _mm512_set1_epi32(0x7fffffff), vf = _mm512_set1_epi32((int)flip);
	size_t e = 0;
	for (; e + 16 <= n; e += 16) {
		__m512i d = _mm512_castps_si512(_mm512_sub_ps(ld16_bf16(a + e), ld16_bf16(b + e)));
		_mm512_storeu_si512(keys + e, _mm512_xor_si512(_mm512_and_si512(d, mag), vf));
	}
	if (e < n)
		base->abs_keys_bf16(keys + e, a + e, b + e, flip, n - e);
}

static void v512_ta_bf16(uint16_t *out, const uint16_t *b, const uint16_t *const *x, const float *w, int k, float den,
			 int use_den, float lam, int use_lam, size_t n)
{
	const __m512 vd = _mm512_set1_ps(den), vl = _mm512_set1_ps(lam);
	size_t e = 0;
	for (; e + 16 <= n; e += 16) {
		__m512 be = ld16_bf16(b + e);
		__m512 acc = _mm512_mul_ps(_mm512_sub_ps(ld16_bf16(x[0] + e), be), _mm512_set1_ps(w[0]));
		for (int i = 1; i < k; i++)
			acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_sub_ps(ld16_bf16(x[i] + e), be), _mm512_set1_ps(w[i])));
		if (use_den)
			acc = _mm512_div_ps(acc, vd);
		if (use_lam)
			acc = _mm512_mul_ps(acc, vl);
		_mm256_storeu_si256((__m256i *)(out + e), cvt16_bf16(_mm512_add_ps(acc, be)));
	}
	if (e < n) {
		const uint16_t *xt[64];
		for (int i = 0; i < k; i++)
			xt[i] = x[i] + e;
		base->ta_bf16(out + e, b + e, xt, w, k, den, use_den, lam, use_lam, n - e);
	}
}

static void v512_sub_bf16(float *out, const uint16_t *a, const uint16_t *b, size_t n)
{
	size_t e = 0;
	for (; e + 16 <= n; e += 16)
		_mm512_storeu_ps(out + e, _mm512_sub_ps(ld16_bf16(a + e), ld16_bf16(b + e)));
	if (e < n)
		base->sub_bf16(out + e, a + e, b + e, n - e);
}

/* Whole words from four 16-lane compares (mask != 0, NaN included, as the reference); the
 * partly covered words at either end go to the AVX2 kernel, which ORs them in. */
static void v512_mask_pack(uint64_t *w, uint64_t e0, const float *mask, size_t n)
{
	size_t head = (size_t)((64 - (e0 & 63)) & 63);
	if (head > n)
		head = n;
	base->mask_pack(w, e0, mask, head);
	size_t e = head;
	const __m512 zero = _mm512_setzero_ps();
	for (; e + 64 <= n; e += 64) {
		uint64_t x = 0;
		for (unsigned g = 0; g < 4; g++)
			x |= (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(mask + e + 16 * g), zero, _CMP_NEQ_UQ) << (16 * g);
		w[(e0 + e) >> 6] = x;
	}
	base->mask_pack(w, e0 + e, mask + e, n - e);
}

/* Sixteen lanes from 16 bits of a word, once the bit position is a multiple of 16. */
static void v512_mask_unpack(const uint64_t *w, uint64_t e0, float *mask, size_t n)
{
	size_t head = (size_t)((16 - (e0 & 15)) & 15);
	if (head > n)
		head = n;
	base->mask_unpack(w, e0, mask, head);
	size_t e = head;
	for (; e + 16 <= n; e += 16) {
		uint64_t x = e0 + e;
		_mm512_storeu_ps(mask + e, ones_where((__mmask16)(w[x >> 6] >> (x & 63))));
	}
	base->mask_unpack(w, e0 + e, mask + e, n - e);
}

/* 16 entries at a time, vpcompressd into a register (its memory form is slow on Zen 4), stored
 * whole at k <= i as in the AVX2 kernel. */
static uint64_t v512_digit_compact(uint32_t *ck, uint32_t *ci, uint64_t n, unsigned shift, uint32_t sub, uint32_t d)
{
	const __m128i sh = _mm_cvtsi32_si128((int)shift);
	const __m512i vsub = _mm512_set1_epi32((int)sub), vd = _mm512_set1_epi32((int)d), m8 = _mm512_set1_epi32(255);
	uint64_t k = 0, i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512i key = _mm512_loadu_si512(ck + i), id = _mm512_loadu_si512(ci + i);
		__m512i dig = _mm512_and_si512(_mm512_sub_epi32(_mm512_srl_epi32(key, sh), vsub), m8);
		__mmask16 m = _mm512_cmpeq_epi32_mask(dig, vd);
		_mm512_storeu_si512(ck + k, _mm512_maskz_compress_epi32(m, key));
		_mm512_storeu_si512(ci + k, _mm512_maskz_compress_epi32(m, id));
		k += (uint64_t)__builtin_popcount((unsigned)m);
	}
	return bf_digit_compact_from(ck, ci, k, i, n, shift, sub, d);
}

/* The double sums: one 8-lane vector holds a pair's eight accumulators (bf_fold8), so each
 * step adds eight elements with one instruction, in the reference's order. */
static inline __m512d ld8_pd(const void *p, size_t e, int bf16)
{
	if (!bf16)
		return _mm512_cvtps_pd(_mm256_loadu_ps((const float *)p + e));
	__m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + e))), 16);
	return _mm512_cvtps_pd(_mm256_castsi256_ps(w));
}

static inline void dots8_finish(__m512d acc, const void *x, const void *y, int bf16, size_t e, size_t n, double *g)
{
	double a[8];
	_mm512_storeu_pd(a, acc);
	for (; e < n; e++)
		a[e & 7] = a[e & 7] + (double)bf_kern_elem(x, e, bf16) * (double)bf_kern_elem(y, e, bf16);
	*g += bf_fold8(a);
}

static inline __attribute__((always_inline)) void dots8(const void *const *v, int bf16, int k, size_t n, double *g)
{
	const __m512d z = _mm512_setzero_pd();
	if (k == 2) {
		__m512d aa = z, ab = z, bb = z;
		size_t e = 0;
		for (; e + 8 <= n; e += 8) {
			__m512d x = ld8_pd(v[0], e, bf16), y = ld8_pd(v[1], e, bf16);
			aa = _mm512_add_pd(aa, _mm512_mul_pd(x, x));
			ab = _mm512_add_pd(ab, _mm512_mul_pd(x, y));
			bb = _mm512_add_pd(bb, _mm512_mul_pd(y, y));
		}
		dots8_finish(aa, v[0], v[0], bf16, e, n, &g[0]);
		dots8_finish(ab, v[0], v[1], bf16, e, n, &g[1]);
		dots8_finish(bb, v[1], v[1], bf16, e, n, &g[3]);
		return;
	}
	for (int i = 0; i < k; i++)
		for (int j = i; j < k; j++) {
			__m512d acc = z;
			size_t e = 0;
			for (; e + 8 <= n; e += 8)
				acc = _mm512_add_pd(acc, _mm512_mul_pd(ld8_pd(v[i], e, bf16), ld8_pd(v[j], e, bf16)));
			dots8_finish(acc, v[i], v[j], bf16, e, n, &g[i * k + j]);
		}
}

static void v512_dots_f64(const float *const *v, int k, size_t n, double *g)
{
	dots8((const void *const *)v, 0, k, n, g);
}

static void v512_dots_bf16(const uint16_t *const *v, int k, size_t n, double *g)
{
	dots8((const void *const *)v, 1, k, n, g);
}

static void v512_l1_pair(const float *d, const float *mask, size_t n, double *a, double *b)
{
	const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	__m512d va = _mm512_setzero_pd(), vb = va;
	size_t e = 0;
	for (; e + 8 <= n; e += 8) {
		__m256 x = _mm256_loadu_ps(d + e);
		__m256 xm = _mm256_mul_ps(x, _mm256_loadu_ps(mask + e));
		va = _mm512_add_pd(va, _mm512_cvtps_pd(_mm256_and_ps(x, abs)));
		vb = _mm512_add_pd(vb, _mm512_cvtps_pd(_mm256_and_ps(xm, abs)));
	}
	double sa[8], sb[8];
	_mm512_storeu_pd(sa, va);
	_mm512_storeu_pd(sb, vb);
	for (; e < n; e++) {
		sa[e & 7] = sa[e & 7] + (double)fabsf(d[e]);
		sb[e & 7] = sb[e & 7] + (double)fabsf(d[e] * mask[e]);
	}
	*a += bf_fold8(sa);
	*b += bf_fold8(sb);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void build(void)
{
	/* __builtin_cpu_supports("avx512f") also checks that the OS saves the ZMM state */
	__builtin_cpu_init();
	base = bf_kern_avx2();
	if (!base || !__builtin_cpu_supports("avx512f"))
		return;
	kern_avx512 = *base;
	kern_avx512.name = "avx512f+avx2+f16c";
	kern_avx512.philox_uniform = v512_philox_uniform;
	kern_avx512.philox_mask = v512_philox_mask;
	kern_avx512.stable_rank = v512_stable_rank;
	kern_avx512.bf16_to_f32 = v512_bf16_to_f32;
	kern_avx512.f32_to_bf16 = v512_f32_to_bf16;
	kern_avx512.wsum_bf16 = v512_wsum_bf16;
	kern_avx512.gta_prep = v512_gta_prep;
	kern_avx512.gta_finish = v512_gta_finish;
	kern_avx512.gta_prep_bf16 = v512_gta_prep_bf16;
	kern_avx512.consensus = v512_consensus;
	kern_avx512.gta_finish_bf16 = v512_gta_finish_bf16;
	kern_avx512.abs_keys_bf16 = v512_abs_keys_bf16;
	kern_avx512.ta_bf16 = v512_ta_bf16;
	kern_avx512.sub_bf16 = v512_sub_bf16;
	kern_avx512.mask_pack = v512_mask_pack;
	kern_avx512.mask_unpack = v512_mask_unpack;
	kern_avx512.digit_compact = v512_digit_compact;
	kern_avx512.dots_f64 = v512_dots_f64;
	kern_avx512.dots_bf16 = v512_dots_bf16;
	kern_avx512.l1_pair = v512_l1_pair;
	kern_avx512.gta_fused_bf16 = v512_gta_fused_bf16;
}

const struct bf_kern *bf_kern_avx512(void)
{
	pthread_once(&once, build);
	return kern_avx512.name ? &kern_avx512 : NULL;
}
