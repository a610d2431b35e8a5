/* bf_rng.c: Philox4x32-10 and the frozen (seed, model, tensor, element) -> uniform derivation.
 *
 * Philox in one paragraph
 * -----------------------
 * Philox (Salmon, Moraes, Dror, Shaw, "Parallel Random Numbers: As Easy as 1, 2, 3", SC'11) is a
 * keyed bijection on 128-bit counters, built as a Feistel-like network whose S-box is a 32x32->64
 * bit multiplication: the high half of the product is mixed with the other words and the key,
 * the low half is carried over. Four-word variant, one round:
 *
 *     p0 = M0 * c0              M0 = 0xD2511F53
 *     p1 = M1 * c2              M1 = 0xCD9E8D57
 *     c' = { hi(p1) ^ c1 ^ k0,  lo(p1),  hi(p0) ^ c3 ^ k1,  lo(p0) }
 *
 * Between rounds the key is bumped by a Weyl sequence (k0 += 0x9E3779B9, k1 += 0xBB67AE85, the
 * fractional parts of the golden ratio and sqrt(3)), so every round sees a different key. Ten
 * rounds is the paper's recommended variant ("Philox4x32-10"); it passes BigCrush with a wide
 * margin. There is no state: the output for a counter depends on (counter, key) only, which is
 * exactly what a filesystem needs when any thread may compute any chunk in any order.
 *
 * The derivation on top of it is documented (and frozen) in bf_rng.h. It is deliberately dull:
 * XXH3 of the model reference keyed by the seed gives the Philox key, XXH3 of the output tensor
 * name fills the upper half of the counter, and the element index / 4 fills the lower half. Word
 * i % 4 of the block feeds element i, and the top 24 bits of the word become a float in [0, 1)
 * that f32 represents exactly, so no rounding mode or compiler flag can perturb it. DARE's keep
 * decisions need only a comparison with p, so they take 16-bit halves of the words (one call per
 * 8 elements) and settle the rare tie with p's 16-bit prefix from a second word: integer
 * compares, exact probabilities.
 *
 * Verified against Random123's known-answer vectors (tests/unit/test_rng.c).
 */
#include <string.h>
#include <xxhash.h>

#include "bf_common.h"
#include "bf_kern.h"
#include "bf_rng.h"

static inline void philox_round(uint32_t c[4], uint32_t k0, uint32_t k1)
{
	uint64_t p0 = (uint64_t)BF_PHILOX_M0 * c[0];
	uint64_t p1 = (uint64_t)BF_PHILOX_M1 * c[2];
	uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
	uint32_t n1 = (uint32_t)p1;
	uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
	uint32_t n3 = (uint32_t)p0;
	c[0] = n0;
	c[1] = n1;
	c[2] = n2;
	c[3] = n3;
}

void bf_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
	uint32_t c[4] = { ctr[0], ctr[1], ctr[2], ctr[3] };
	uint32_t k0 = key[0], k1 = key[1];
	for (int r = 0; r < BF_PHILOX_ROUNDS; r++) {
		philox_round(c, k0, k1);
		/* Unsigned wrap-around is the intended Weyl step. The bump after the last round is
		 * dead, so skip it. */
		if (r + 1 < BF_PHILOX_ROUNDS) {
			k0 += BF_PHILOX_W0;
			k1 += BF_PHILOX_W1;
		}
	}
	memcpy(out, c, sizeof(c));
}

void bf_rng_init(struct bf_rng *r, uint64_t seed, const char *model_id, const char *tensor_name)
{
	BF_ASSERT(r && model_id && tensor_name);
	uint64_t k = XXH3_64bits_withSeed(model_id, strlen(model_id), seed);
	uint64_t h = XXH3_64bits(tensor_name, strlen(tensor_name));
	r->key[0] = (uint32_t)k;
	r->key[1] = (uint32_t)(k >> 32);
	r->name_lo = (uint32_t)h;
	r->name_hi = (uint32_t)(h >> 32);
}

/* The block of four words that holds elements 4*group .. 4*group+3. */
static inline void rng_block(const struct bf_rng *r, uint64_t group, uint32_t out[4])
{
	const uint32_t ctr[4] = { (uint32_t)group, (uint32_t)(group >> 32), r->name_lo, r->name_hi };
	bf_philox4x32_10(ctr, r->key, out);
}

uint32_t bf_rng_u32(const struct bf_rng *r, uint64_t index)
{
	uint32_t w[4];
	rng_block(r, index >> 2, w);
	return w[index & 3];
}

void bf_rng_uniform_block(const struct bf_rng *r, uint64_t index0, size_t n, float *out)
{
	/* the selected bf_kern variant (AVX2: 8 counters per step); every variant is checked
	 * against the per-element path in test_rng.c and test_kern.c */
	bf_kern->philox_uniform(r->key, r->name_lo, r->name_hi, index0, n, out);
}

float bf_rng_refine(const uint32_t key[2], uint32_t name_lo, uint32_t name_hi, uint64_t i)
{
	uint32_t w[4];
	const uint32_t ctr[4] = { (uint32_t)(i >> 2), (uint32_t)(i >> 34) | BF_RNG_REFINE, name_lo, name_hi };
	bf_philox4x32_10(ctr, key, w);
	return (float)(w[i & 3] >> 8) * 0x1p-24f;
}

int bf_rng_keep(const struct bf_rng *r, uint64_t i, float p)
{
	uint32_t w[4];
	uint64_t j = i >> 1;
	const uint32_t ctr[4] = { (uint32_t)(j >> 2), (uint32_t)(j >> 34) | BF_RNG_HALVES, r->name_lo, r->name_hi };
	bf_philox4x32_10(ctr, r->key, w);
	uint32_t v = (w[j & 3] >> (16 * (i & 1))) & 0xffffu;
	return bf_bern_keep(bf_bern_init(p), v, r->key, r->name_lo, r->name_hi, i);
}
