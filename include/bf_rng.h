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

#endif
