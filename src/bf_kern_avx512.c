/* bf_kern_avx512.c: the AVX-512F variant: the AVX2 variant's table with the kernels that gain
 * from 16-lane vectors replaced (see bf_kern.h). Built with -mavx512f; chosen at run time only
 * when the CPU and the OS (ZMM state saved) have AVX-512F.
 *
 * Philox: 16 counters per vector in two interleaved groups, XORs fused by vpternlogd; 1.24x the
 * AVX2 generator on the (Zen 4) development machine, whose 512-bit multiplies run as two
 * 256-bit halves: dare_ties daemon CPU -9%. Same words, same uniforms and keep decisions, bit
 * for bit (tests/unit/test_kern.c). A 16-lane window_scan (vpcompressd) was measured too and
 * did not pay (ties within noise), so the AVX2 one stays. */
#include <immintrin.h>
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

static struct bf_kern kern_avx512;
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
}

const struct bf_kern *bf_kern_avx512(void)
{
	pthread_once(&once, build);
	return kern_avx512.name ? &kern_avx512 : NULL;
}
