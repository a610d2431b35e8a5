/* bf_rng.h: counter-based random numbers for the random merge methods (DARE, DELLA, ...).
 *
 * Philox4x32-10 (Salmon et al., SC'11): out = f(counter, key), no state, so any chunk on any
 * thread regenerates exactly the bits it needs, and the output never depends on read order,
 * thread count, chunk size or cache state.
 *
 * Derivation (frozen: changing it changes every random blend):
 *   key[0..1]   = low/high 32 bits of XXH3_64bits_withSeed(model_id, strlen(model_id), seed)
 *   counter     = { lo32(i/4), hi32(i/4), lo32(h), hi32(h) },  h = XXH3_64bits(tensor_name)
 *   element i uses word (i % 4) of philox(counter, key)
 *   uniform     = (word >> 8) * 2^-24, in [0, 1), exactly representable in f32
 * model_id is "input:N", N the model's position among the output tensor's inputs (base first),
 * so moving or renaming model directories never changes a blend; tensor_name is the OUTPUT name.
 * Verified against Random123's known-answer vectors (tests/unit/test_rng.c).
 *
 * Bernoulli(p) keep decisions (DARE's masks), frozen too, from half as many Philox calls:
 *   v_i    = 16-bit half (i % 2, low half first) of word (j % 4) of philox(ctr, key), j = i/2,
 *            ctr = { lo32(j/4), hi32(j/4) | BF_RNG_HALVES, lo32(h), hi32(h) }
 *   P      = p * 2^16 (exact in f32), T = floor(P) in [0, 2^16], f = P - T (exact)
 *   keep_i = v_i < T, or v_i == T and r_i < f, with r_i = (w >> 8) * 2^-24, w = word (i % 4) of
 *            philox({ lo32(i/4), hi32(i/4) | BF_RNG_REFINE, lo32(h), hi32(h) }, key)
 * so P(keep) = T/2^16 + f/2^16 = p exactly (f in steps of 2^-24); p >= 1 keeps all, p <= 0 and
 * NaN none. One element in 65536 needs the refinement word. i/8 < 2^61 and i/4 < 2^62 leave
 * the two marks clear of the index, so uniforms, halves and refinements never share a counter.
 */
#ifndef BF_RNG_H
#define BF_RNG_H

#include <stddef.h>
#include <stdint.h>

struct bf_rng {
	uint32_t key[2];
	uint32_t name_lo, name_hi;
};

void bf_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
void bf_rng_init(struct bf_rng *r, uint64_t seed, const char *model_id, const char *tensor_name);
uint32_t bf_rng_u32(const struct bf_rng *r, uint64_t index);
static inline float bf_rng_uniform(const struct bf_rng *r, uint64_t index)
{
	return (float)(bf_rng_u32(r, index) >> 8) * 0x1p-24f;
}
/* out[j] = uniform for element index0 + j, j < n (one Philox call per 4 elements). */
void bf_rng_uniform_block(const struct bf_rng *r, uint64_t index0, size_t n, float *out);

/* Philox4x32-10's multipliers, key increments (a Weyl sequence) and rounds: the reference
 * (bf_rng.c) and the vector variants (bf_kern_avx2.c, bf_kern_avx512.c) share them. */
#define BF_PHILOX_M0 UINT32_C(0xD2511F53)
#define BF_PHILOX_M1 UINT32_C(0xCD9E8D57)
#define BF_PHILOX_W0 UINT32_C(0x9E3779B9)
#define BF_PHILOX_W1 UINT32_C(0xBB67AE85)
#define BF_PHILOX_ROUNDS 10

#define BF_RNG_HALVES (UINT32_C(1) << 30) /* counter word 1 marks, see above */
#define BF_RNG_REFINE (UINT32_C(1) << 31)

/* A Bernoulli threshold: t = T, f as above. */
struct bf_bern {
	uint32_t t;
	float f;
};

static inline struct bf_bern bf_bern_init(float p)
{
	struct bf_bern b = { 0, 0.0f };
	if (p >= 1.0f) {
		b.t = 1u << 16;
	} else if (p > 0.0f) { /* NaN fails both tests */
		float P = p * 65536.0f;
		b.t = (uint32_t)P;
		b.f = P - (float)b.t;
	}
	return b;
}

/* The refinement uniform r_i of element i (see above). */
float bf_rng_refine(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t i);

/* keep_i, as 1.0f or 0.0f, of an element i whose half word equals T (the rare tie: its
 * refinement word decides). */
static inline float bf_bern_tie(struct bf_bern b, const uint32_t key[2], uint32_t name_lo, uint32_t name_hi,
				uint64_t i)
{
	return bf_rng_refine(key, name_lo, name_hi, i) < b.f ? 1.0f : 0.0f;
}

/* keep_i for element i of a half word v (see above): 1 or 0. */
static inline int bf_bern_keep(struct bf_bern b, uint32_t v, const uint32_t key[2], uint32_t name_lo,
			       uint32_t name_hi, uint64_t i)
{
	return v < b.t || (v == b.t && bf_bern_tie(b, key, name_lo, name_hi, i) != 0.0f);
}

/* keep_i for one element of stream r, from its definition (one Philox call; for tests and
 * single elements: bf_kern's philox_mask is the block path). */
int bf_rng_keep(const struct bf_rng *r, uint64_t i, float p);

#endif
