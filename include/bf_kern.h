/* bf_kern.h: vector primitives for the hot paths, with a scalar reference and SIMD variants.
 *
 * Kernels are written once in terms of these primitives; each primitive is an elementwise
 * IEEE f32 operation (no FMA, no reassociation), so every variant gives the reference's bits
 * exactly. tests/unit/test_kern.c checks that bit for bit over random and special inputs
 * (NaN, infinities, denormals, signed zeros, rounding ties).
 *
 * bf_kern points at the variant chosen at start-up: AVX-512F (the AVX2 table with the kernels
 * that gain from 16 lanes replaced) or AVX2+F16C when the CPU has it and the build includes it,
 * else the reference. In the environment, BLENDFS_SIMD=0 forces the reference and
 * BLENDFS_SIMD=avx2 stops at AVX2.
 */
#ifndef BF_KERN_H
#define BF_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "bf_dtype.h"

/* DELLA row buckets (bf_select_della_row): 64 per octave of |d| (key >> 17); the zeros' counts
 * spread over 16 junk slots (one would be a chain of dependent increments when a third of a row
 * is zero) */
#define BF_DELLA_SHIFT 17
#define BF_DELLA_JUNK 16u

/* One element of della_buckets (below): the reference, and the vector variants' tails. */
static inline void bf_della_bucket(uint32_t k, size_t i, uint32_t base, uint32_t J, uint16_t *bk, uint16_t *hs)
{
	uint32_t nz = 0u - (uint32_t)(k != 0); /* no branch: zeros are common */
	int32_t t = (int32_t)((k >> BF_DELLA_SHIFT) - base);
	uint32_t b = (1u + (uint32_t)(t > 0 ? t : 0)) & nz;
	bk[i] = (uint16_t)b;
	hs[i] = (uint16_t)(((b + 1) & nz) | ((J + (uint32_t)(i & (BF_DELLA_JUNK - 1))) & ~nz));
}

/* The vector variants' top-k index test (topk_mask, gta_prep): an element e of a call that
 * starts at element e0 and has the threshold key keeps only when e0 + e < ti, i.e. e < this
 * bound (0..n, so that it fits the 32-bit lanes for n <= 2^31 - 1). */
static inline int32_t bf_topk_lim(uint64_t ti, uint64_t e0, size_t n)
{
	uint64_t lim = ti > e0 ? ti - e0 : 0;
	return (int32_t)(lim > n ? n : lim);
}

/* digit_compact (below) from entry i on, k entries kept so far (k <= i): the reference, and the
 * vector variants' tails. Branch-free: every entry is written at k, kept by advancing k. */
static inline uint64_t bf_digit_compact_from(uint32_t *ck, uint32_t *ci, uint64_t k, uint64_t i, uint64_t n,
					     unsigned shift, uint32_t sub, uint32_t d)
{
	for (; i < n; i++) {
		uint32_t key = ck[i], id = ci[i];
		ck[k] = key;
		ci[k] = id;
		k += (((key >> shift) - sub) & 255u) == d;
	}
	return k;
}

/* The end of dots_f64, dots_bf16 and l1_pair: their eight accumulators (element e adds to
 * a[e % 8]) added in one fixed order. Eight, so that one 8-lane double vector, or two 4-lane
 * ones, hold them and consecutive elements do not wait on each other's additions; the order of
 * every addition is part of the contract, so every variant gives the reference's bits. */
static inline double bf_fold8(const double a[8])
{
	return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* One model of gta_fused_bf16 (below): its inputs and how gta_prep_bf16 treats them. */
struct bf_gta_in {
	const uint16_t *x;       /* bf16 inputs, indexed like the call's elements */
	const uint64_t *bits;    /* its mask as bits (bit e0 + e, mask_unpack's layout), or NULL */
	int tk_on;               /* without bits: topk_mask's test with (tk, ti), or no mask */
	uint32_t tk;
	uint64_t ti;
	float scale, w;
};
#define BF_GTA_FUSED_MAX 8

/* entries past cap that window_scan may write */
#define BF_SCAN_SLACK 16

struct bf_kern {
	const char *name;
	void (*bf16_to_f32)(const void *src, float *dst, size_t n);
	void (*f32_to_bf16)(const float *src, void *dst, size_t n);
	void (*f16_to_f32)(const void *src, float *dst, size_t n);
	void (*f32_to_f16)(const float *src, void *dst, size_t n);
	void (*scale)(float *out, const float *x, float w, size_t n);              /* out = x * w */
	void (*axpy)(float *out, const float *x, float w, size_t n);               /* out = out + x * w */
	void (*div)(float *out, float d, size_t n);                                /* out = out / d */
	void (*sub)(float *out, const float *a, const float *b, size_t n);         /* out = a - b */
	void (*add)(float *out, const float *a, size_t n);                         /* out = out + a */
	void (*lin2)(float *out, const float *a, float wa, const float *b, float wb, size_t n); /* out = a*wa + b*wb */

	/* Fused bf16 -> bf16 kernels: the same f32 operations, in the same order, as the primitive
	 * sequences named below, without the f32 arrays in between (one pass over memory).
	 *   wsum: x0*w0, then acc + xi*wi for i = 1..k-1, then acc / div if use_div
	 *         (scale, axpy..., div)
	 *   ta:   acc = (x0-b)*w0, then acc + (xi-b)*wi; acc / den if use_den; acc * lam if use_lam;
	 *         acc + b   (sub+scale per input, copy+add, div, scale, add) */
	void (*wsum_bf16)(uint16_t *out, const uint16_t *const *x, const float *w, int k, float div, int use_div, size_t n);
	void (*ta_bf16)(uint16_t *out, const uint16_t *b, const uint16_t *const *x, const float *w, int k, float den,
			int use_den, float lam, int use_lam, size_t n);

	/* TIES sign consensus over k task vectors D[i*stride + e]: per element, vote = sum of D_i
	 * (or of sign D_i when count), s = vote >= 0 ? 1 : -1, keep_i = (sign D_i == s) as 1/0,
	 * out = sum of D_i * keep_i, den = sum of w_i * keep_i, all accumulated from 0 in model order. */
	void (*consensus)(float *out, float *den, const float *D, size_t stride, const float *w, int k, int count,
			  size_t n);
	/* TIES top-k mask: mask[e] = 1 when (~(bits(|d[e]|)), e0 + e) < (tk, ti) lexicographically
	 * (bf_select's stable descending rank), else 0. */
	void (*topk_mask)(float *mask, const float *d, uint32_t tk, uint64_t ti, uint64_t e0, size_t n);
	/* Dot products of k vectors: g[i*k + j] += sum_e v_i[e] * v_j[e] for i <= j, the products
	 * in double (exact), summed into 8 accumulators by e % 8 in index order, which are added
	 * as bf_fold8 adds them at the end of the call. */
	void (*dots_f64)(const float *const *v, int k, size_t n, double *g);
	/* dots_f64 of bf16 vectors (each element widened to f32 exactly, then as dots_f64). */
	void (*dots_bf16)(const uint16_t *const *v, int k, size_t n, double *g);
	/* L1 norms for DARE/DELLA rescaling: *a += sum |d[e]|, *b += sum |d[e] * mask[e]| (the
	 * product in f32), each term widened to double and summed like dots_f64 (8 accumulators by
	 * e % 8, folded by bf_fold8 at the end of the call). */
	void (*l1_pair)(const float *d, const float *mask, size_t n, double *a, double *b);
	/* One task vector of a TIES-family kernel, in one pass instead of four:
	 *   d[e] = x[e] - b[e]; then, when masked, d[e] * m[e] with m[e] = mask[e] (mask != NULL)
	 *   or the top-k test of topk_mask on that difference (mask == NULL, tk_on); then
	 *   d[e] * scale when scale != 1; then d[e] * w. The same f32 operations in the same
	 *   order as sub, (topk_mask), the mask product, scale, scale. */
	void (*gta_prep)(float *d, const float *x, const float *b, const float *mask, int tk_on, uint32_t tk,
			 uint64_t ti, uint64_t e0, float scale, float w, size_t n);
	/* The end of a TIES-family kernel: out[e] = out[e] / (den[e] == 0 ? 1 : den[e]) when
	 * normalize, then * lam when use_lam, then + b[e] (div, scale, add in one pass). */
	void (*gta_finish)(float *out, const float *den, const float *b, int normalize, float lam, int use_lam,
			   size_t n);
	/* The same two steps with bf16 x and b (widened exactly), and for finish a bf16 result
	 * (out's f32 values, finished, rounded as f32_to_bf16 rounds them) written to dst. */
	void (*gta_prep_bf16)(float *d, const uint16_t *x, const uint16_t *b, const float *mask, int tk_on,
			      uint32_t tk, uint64_t ti, uint64_t e0, float scale, float w, size_t n);
	void (*gta_finish_bf16)(uint16_t *dst, const float *out, const float *den, const uint16_t *b, int normalize,
				float lam, int use_lam, size_t n);
	/* The consensus step of a TIES-family kernel for k <= BF_GTA_FUSED_MAX bf16 models, by
	 * definition bf_kern_gta_fused_compose of this table: gta_prep_bf16 of each model (its
	 * mask = mask_unpack of its bits when it has them, else its top-k test when tk_on, else
	 * none; its scale and w), consensus of the results with the weights w, gta_finish_bf16
	 * into dst. A variant may do it in one pass, without the f32 arrays in between. */
	void (*gta_fused_bf16)(uint16_t *dst, const uint16_t *b, const struct bf_gta_in *m, int k, int count,
			       int normalize, float lam, int use_lam, uint64_t e0, size_t n);
	/* Mask bits: bit (e0 + e) of w (bit x is w[x / 64] >> (x % 64)) = mask[e] != 0, for
	 * e < n; words the range only partly covers must be zero there beforehand (they are
	 * ORed), whole words are overwritten. unpack: mask[e] = bit (e0 + e) of w, as 1.0f / 0.0f. */
	void (*mask_pack)(uint64_t *w, uint64_t e0, const float *mask, size_t n);
	void (*mask_unpack)(const uint64_t *w, uint64_t e0, float *mask, size_t n);
	/* out = a - b of bf16 inputs (widened to f32 exactly, then as sub). */
	void (*sub_bf16)(float *out, const uint16_t *a, const uint16_t *b, size_t n);
	/* Selection keys of task-vector magnitudes: keys[e] = (bits(a[e] - b[e]) & 0x7fffffff) ^ flip
	 * (flip 0: |d| ascending, bf_key_abs_asc; ~0u: descending, bf_key_abs_desc). */
	void (*abs_keys)(uint32_t *keys, const float *a, const float *b, uint32_t flip, size_t n);
	/* abs_keys of bf16 inputs (widened to f32 exactly, then as abs_keys). */
	void (*abs_keys_bf16)(uint32_t *keys, const uint16_t *a, const uint16_t *b, uint32_t flip, size_t n);
	/* bf_select's streaming window pass: returns how many keys[j] are < lo, and appends every
	 * key with lo <= key <= lo + w (key - lo <= w, unsigned) to ok[], and idx0 + j to oi[], at
	 * *cn in index order. *cn counts every match; entries at cap and beyond are not kept, and
	 * ok/oi must have room for cap + BF_SCAN_SLACK entries, which vector variants may write
	 * with whole vectors. */
	uint64_t (*window_scan)(const uint32_t *keys, size_t n, uint32_t lo, uint32_t w, uint32_t idx0, uint32_t *ok,
				uint32_t *oi, uint64_t *cn, uint64_t cap);
	/* bf_select's narrowing of a collect buffer: keeps, in order, at the front of ck and ci, the
	 * entries whose digit ((ck[j] >> shift) - sub) & 255 equals d, and returns how many (in
	 * place: an entry is written at or before the one it came from; shift < 32). */
	uint64_t (*digit_compact)(uint32_t *ck, uint32_t *ci, uint64_t n, unsigned shift, uint32_t sub, uint32_t d);
	/* The 0-based rank of element i (key k) in the stable ascending order of keys[0..n): how
	 * many keys[j] < k (unsigned), plus how many keys[j] == k with j < i (DELLA's exact ranks). */
	uint64_t (*stable_rank)(const uint32_t *keys, size_t n, uint32_t k, size_t i);
	/* The passes of a DELLA row (bf_select_della_row). della_keys: keys[i] = the bits of |d[i]|;
	 * returns the largest, and the count of zeros in *zc. della_buckets: bk[i] = 0 for key 0,
	 * else 1 + max((key >> BF_DELLA_SHIFT) - base, 0); hs[i] = its counter slot, bk[i] + 1, or
	 * for a zero J + i % BF_DELLA_JUNK. della_decide: mask[i] = u[i] < plo[bk[i]] ? 1 : 0,
	 * and every i with plo[bk[i]] <= u[i] < phi[bk[i]] appended to amb (room for n) in index
	 * order; returns how many. */
	uint32_t (*della_keys)(const float *d, size_t n, uint32_t *keys, uint32_t *zc);
	void (*della_buckets)(const uint32_t *keys, size_t n, uint32_t base, uint32_t J, uint16_t *bk, uint16_t *hs);
	size_t (*della_decide)(const uint16_t *bk, const float *u, const float *plo, const float *phi, size_t n,
			       float *mask, uint32_t *amb);
	/* Philox4x32-10 uniforms of bf_rng.h for elements index0 .. index0+n-1 (key, name words as
	 * in struct bf_rng; index0 + n <= 2^64: element indices never wrap). */
	void (*philox_uniform)(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t index0, size_t n,
			       float *out);
	/* Bernoulli(p) masks, bf_rng.h's keep decisions: out[j] = keep(index0 + j) ? 1.0f : 0.0f
	 * (DARE's keep mask), from the 16-bit halves of one Philox call per 8 elements. */
	void (*philox_mask)(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t index0, size_t n,
			    float p, float *out);
};

/* k's philox_mask when as_mask, else its philox_uniform (the vector variants' heads and tails,
 * written once for both entry points). */
static inline void bf_kern_philox(const struct bf_kern *k, const uint32_t key[2], uint32_t name_lo, uint32_t name_hi,
				  uint64_t index0, size_t n, int as_mask, float p, float *out)
{
	if (as_mask)
		k->philox_mask(key, name_lo, name_hi, index0, n, p, out);
	else
		k->philox_uniform(key, name_lo, name_hi, index0, n, out);
}

/* The vector variants' head: k's Philox over the elements before the next counter boundary (a
 * multiple of 4 for uniforms, of 8 for masks), at most n; returns how many it wrote. */
static inline size_t bf_kern_philox_head(const struct bf_kern *k, const uint32_t key[2], uint32_t name_lo,
					 uint32_t name_hi, uint64_t index0, size_t n, int as_mask, float p,
					 float *out)
{
	unsigned per = as_mask ? 8 : 4;
	size_t head = (size_t)((per - (index0 & (per - 1))) & (per - 1));
	if (head > n)
		head = n;
	if (head)
		bf_kern_philox(k, key, name_lo, name_hi, index0, head, as_mask, p, out);
	return head;
}

/* Element e of an f32 or (bf16 != 0) a bf16 array, as f32, widened exactly: the reference's and
 * the vector variants' scalar loops over either input type (bf16 is a constant in each caller). */
static inline float bf_kern_elem(const void *p, size_t e, int bf16)
{
	return bf16 ? bf_bf16_to_f32(((const uint16_t *)p)[e]) : ((const float *)p)[e];
}

/* gta_fused_bf16 as the composition of K's kernels on sub-blocks (the reference's and the AVX2
 * variant's gta_fused_bf16, and every variant's head and tail). */
void bf_kern_gta_fused_compose(const struct bf_kern *K, uint16_t *dst, const uint16_t *b, const struct bf_gta_in *m,
			       int k, int count, int normalize, float lam, int use_lam, uint64_t e0, size_t n);

extern const struct bf_kern bf_kern_ref;
/* The selected variant (never NULL). */
extern const struct bf_kern *bf_kern;
/* AVX2+F16C variant, or NULL when not built or not supported by this CPU. */
const struct bf_kern *bf_kern_avx2(void);
/* AVX-512F variant (needs the AVX2 one), or NULL likewise. */
const struct bf_kern *bf_kern_avx512(void);
/* Re-select (tests, start-up): 0 the reference, 1 the best variant this CPU runs, 2 AVX2 at
 * most. */
void bf_kern_select(int simd);

#endif
