/* test_rng.c: Philox4x32-10 known answers, the frozen derivation, index mapping, block == scalar,
 * the uniform grid, stream separation, a pinned golden value and a distribution sanity check; the
 * keep decisions: their derivation by hand, block == scalar, and the keep rates. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "bf_kern.h"
#include "bf_rng.h"
#include "bf_test.h"

/* Random123 tests/kat_vectors, the three "philox4x32 10" rows: counter[4] key[2] -> out[4]. */
static const uint32_t kat[3][10] = {
	{ 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
	  0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 },
	{ 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
	  0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd },
	{ 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
	  0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 },
};

BF_TEST(philox_known_answers)
{
	for (int t = 0; t < 3; t++) {
		uint32_t out[4];
		bf_philox4x32_10(&kat[t][0], &kat[t][4], out);
		for (int w = 0; w < 4; w++)
			EXPECT_EQ_HEX(out[w], kat[t][6 + w]);
	}
	/* In place is not part of the contract, but a const input must not be modified. */
	uint32_t ctr[4] = { 1, 2, 3, 4 }, key[2] = { 5, 6 }, out[4];
	bf_philox4x32_10(ctr, key, out);
	EXPECT(ctr[0] == 1 && ctr[1] == 2 && ctr[2] == 3 && ctr[3] == 4 && key[0] == 5 && key[1] == 6);
}

BF_TEST(derivation_is_the_documented_one)
{
	const char *model = "org/model-a", *tensor = "model.layers.3.mlp.down_proj.weight";
	struct bf_rng r;
	bf_rng_init(&r, 1234, model, tensor);
	uint64_t k = XXH3_64bits_withSeed(model, strlen(model), 1234);
	uint64_t h = XXH3_64bits(tensor, strlen(tensor));
	EXPECT_EQ_HEX(r.key[0], (uint32_t)k);
	EXPECT_EQ_HEX(r.key[1], (uint32_t)(k >> 32));
	EXPECT_EQ_HEX(r.name_lo, (uint32_t)h);
	EXPECT_EQ_HEX(r.name_hi, (uint32_t)(h >> 32));
}

BF_TEST(u32_index_mapping)
{
	struct bf_rng r;
	bf_rng_init(&r, 7, "m", "t");
	static const uint64_t idx[] = { 0, 1, 2, 3, 4, 5, 7, 8, 11, 0xfffffffcull, 0xffffffffull,
		0x100000000ull, 0x400000001ull, (1ull << 40) + 3, UINT64_MAX - 4, UINT64_MAX };
	for (size_t t = 0; t < sizeof(idx) / sizeof(idx[0]); t++) {
		uint64_t i = idx[t], g = i / 4;
		uint32_t ctr[4] = { (uint32_t)g, (uint32_t)(g >> 32), r.name_lo, r.name_hi }, out[4];
		bf_philox4x32_10(ctr, r.key, out);
		EXPECT_EQ_HEX(bf_rng_u32(&r, i), out[i % 4]);
		EXPECT_EQ_DBL(bf_rng_uniform(&r, i), (double)(out[i % 4] >> 8) / 16777216.0);
	}
	/* The four words of one block are four different elements. */
	EXPECT(bf_rng_u32(&r, 0) != bf_rng_u32(&r, 1));
	EXPECT(bf_rng_u32(&r, 3) != bf_rng_u32(&r, 4));
}

static void check_block(const struct bf_rng *r, uint64_t index0, size_t n)
{
	float *out = malloc((n + 1) * sizeof(float));
	out[n] = -1.0f; /* sentinel: nothing past n is written */
	bf_rng_uniform_block(r, index0, n, out);
	size_t bad = 0;
	for (size_t j = 0; j < n; j++) {
		float want = bf_rng_uniform(r, index0 + j);
		if (memcmp(&out[j], &want, sizeof(float)) != 0 && bad++ < 3)
			BF_T_FAIL("block(%" PRIu64 ", %zu)[%zu] = %.9g, scalar %.9g", index0, n, j, out[j], want);
	}
	EXPECT(out[n] == -1.0f);
	free(out);
}

BF_TEST(block_equals_scalar)
{
	struct bf_rng r;
	bf_rng_init(&r, 99, "base", "lm_head.weight");
	check_block(&r, 5, 11);
	check_block(&r, (1ull << 40) + 3, 11);
	check_block(&r, (1ull << 40) + 3, 13);
	check_block(&r, 0, 0);
	check_block(&r, 0, 1);
	check_block(&r, 3, 1);
	check_block(&r, 3, 2);
	check_block(&r, 4, 4);
	check_block(&r, 1, 1000);
	check_block(&r, 0xfffffffeull, 9); /* the group index crosses 2^30 words, counter word 0 */
	check_block(&r, UINT64_MAX - 5, 11); /* wraps past UINT64_MAX, as the scalar path does */
}

BF_TEST(uniform_grid)
{
	struct bf_rng r;
	bf_rng_init(&r, 3, "x", "y");
	enum { N = 100000 };
	float *u = malloc(N * sizeof(float));
	bf_rng_uniform_block(&r, 17, N, u);
	size_t bad = 0;
	for (size_t j = 0; j < N; j++) {
		double k = (double)u[j] * 16777216.0;
		if (!(u[j] >= 0.0f && u[j] < 1.0f && k == floor(k) && k < 16777216.0) && bad++ < 3)
			BF_T_FAIL("u[%zu] = %.9g is not k * 2^-24 in [0, 1)", j, u[j]);
	}
	free(u);
	/* The largest word maps strictly below 1 in f32. */
	EXPECT((float)(UINT32_MAX >> 8) * 0x1p-24f < 1.0f);
}

static int count_equal(const struct bf_rng *a, const struct bf_rng *b)
{
	int eq = 0;
	for (uint64_t i = 0; i < 64; i++)
		eq += bf_rng_u32(a, i) == bf_rng_u32(b, i);
	return eq;
}

BF_TEST(streams_are_separate)
{
	struct bf_rng r0, r1;
	bf_rng_init(&r0, 1, "model-a", "t.weight");
	bf_rng_init(&r1, 2, "model-a", "t.weight");
	EXPECT(count_equal(&r0, &r1) == 0);
	bf_rng_init(&r1, 1, "model-b", "t.weight");
	EXPECT(count_equal(&r0, &r1) == 0);
	bf_rng_init(&r1, 1, "model-a", "t.bias");
	EXPECT(count_equal(&r0, &r1) == 0);
	bf_rng_init(&r1, 1, "model-a", "t.weight");
	EXPECT(count_equal(&r0, &r1) == 64);
	/* Seed and model are not interchangeable: the seed keys the hash of the model name. */
	bf_rng_init(&r1, 0, "", "t.weight");
	EXPECT(count_equal(&r0, &r1) == 0);
}

BF_TEST(golden_value)
{
	/* Pinned from this implementation. If this changes, every DARE/DELLA blend changes with it:
	 * the derivation is frozen, do not "fix" the expected value without a format decision. */
	struct bf_rng r;
	bf_rng_init(&r, 42, "mistralai/Mistral-7B-v0.1", "model.layers.0.self_attn.q_proj.weight");
	uint32_t w = bf_rng_u32(&r, 123456789);
	float u = bf_rng_uniform(&r, 123456789);
	printf("  golden: seed 42, Mistral-7B-v0.1, layers.0.q_proj, index 123456789 -> "
	       "0x%08" PRIx32 " (%.9g)\n", w, u);
	EXPECT_EQ_HEX(w, 0x5bbe3e5au);
	EXPECT_EQ_DBL(u, (double)(w >> 8) * 0x1p-24);
}

BF_TEST(distribution_sanity)
{
	enum { N = 1000000, BINS = 256 };
	struct bf_rng r;
	bf_rng_init(&r, 2024, "model", "tensor");
	float *u = malloc(N * sizeof(float));
	bf_rng_uniform_block(&r, 0, N, u);
	double sum = 0, sum2 = 0;
	unsigned hist[BINS] = { 0 };
	for (size_t j = 0; j < N; j++) {
		sum += u[j];
		sum2 += (double)u[j] * u[j];
		hist[(unsigned)(u[j] * BINS)]++;
	}
	free(u);
	double mean = sum / N, var = sum2 / N - mean * mean;
	double chi2 = 0, expect = (double)N / BINS;
	for (int b = 0; b < BINS; b++)
		chi2 += (hist[b] - expect) * (hist[b] - expect) / expect;
	printf("  mean %.6f  variance %.6f (1/12 = %.6f)  chi2(255 dof) %.1f\n", mean, var, 1.0 / 12, chi2);
	EXPECT_NEAR(mean, 0.5, 0.001);
	EXPECT_NEAR(var, 1.0 / 12, 0.001);
	/* 255 degrees of freedom: mean 255, sd ~22.6; 400 is > 6 sd. The input is fixed, so this is
	 * deterministic, not flaky. */
	EXPECT(chi2 < 400);
}

/* The 16-bit half of element i, derived by hand from bf_rng.h's text. */
static uint32_t half_by_hand(const struct bf_rng *r, uint64_t i)
{
	uint64_t j = i / 2, g = j / 4;
	uint32_t ctr[4] = { (uint32_t)g, (uint32_t)(g >> 32) | 0x40000000u, r->name_lo, r->name_hi }, out[4];
	bf_philox4x32_10(ctr, r->key, out);
	return i % 2 ? out[j % 4] >> 16 : out[j % 4] & 0xffff;
}

static float refine_by_hand(const struct bf_rng *r, uint64_t i)
{
	uint64_t g = i / 4;
	uint32_t ctr[4] = { (uint32_t)g, (uint32_t)(g >> 32) | 0x80000000u, r->name_lo, r->name_hi }, out[4];
	bf_philox4x32_10(ctr, r->key, out);
	return (float)(out[i % 4] >> 8) / 16777216.0f;
}

BF_TEST(keep_definition)
{
	struct bf_rng r;
	bf_rng_init(&r, 7, "input:1", "model.layers.3.mlp.down_proj.weight");
	static const uint64_t idx[] = { 0, 1, 2, 7, 8, 9, 15, 16, 0xfffffff8ull, 0x7ffffffffull, (1ull << 40) + 5,
		UINT64_MAX - 1, UINT64_MAX };
	for (size_t t = 0; t < sizeof(idx) / sizeof(idx[0]); t++) {
		uint64_t i = idx[t];
		uint32_t v = half_by_hand(&r, i);
		/* T = v + 1: kept; T = v with f = 0: dropped; T = v - 1 (if any): dropped */
		EXPECT_EQ_I64(bf_rng_keep(&r, i, (float)(v + 1) / 65536.0f), 1);
		EXPECT_EQ_I64(bf_rng_keep(&r, i, (float)v / 65536.0f), 0);
		if (v)
			EXPECT_EQ_I64(bf_rng_keep(&r, i, (float)(v - 1) / 65536.0f), 0);
		/* T = v, f = 0.25 and 0.75: the refinement word decides */
		float u = refine_by_hand(&r, i);
		EXPECT_EQ_I64(bf_rng_keep(&r, i, ((float)v + 0.25f) / 65536.0f), u < 0.25f);
		EXPECT_EQ_I64(bf_rng_keep(&r, i, ((float)v + 0.75f) / 65536.0f), u < 0.75f);
		EXPECT_EQ_I64(bf_rng_keep(&r, i, 1.0f), 1);
		EXPECT_EQ_I64(bf_rng_keep(&r, i, 0.0f), 0);
		EXPECT_EQ_I64(bf_rng_keep(&r, i, NAN), 0);
	}
	/* the three streams do not share words: the halves are not the uniforms' words */
	int same = 0;
	for (uint64_t i = 0; i < 64; i += 2)
		same += (bf_rng_u32(&r, i / 2) & 0xffff) == half_by_hand(&r, i);
	EXPECT(same < 4);
}

static void check_keep_block(const struct bf_rng *r, uint64_t index0, size_t n, float p)
{
	float *out = malloc((n + 1) * sizeof(float));
	out[n] = -1.0f; /* sentinel */
	bf_kern->philox_mask(r->key, r->name_lo, r->name_hi, index0, n, p, out);
	size_t bad = 0;
	for (size_t j = 0; j < n; j++) {
		float want = bf_rng_keep(r, index0 + j, p) ? 1.0f : 0.0f;
		if (memcmp(&out[j], &want, sizeof(float)) != 0 && bad++ < 3)
			BF_T_FAIL("keep block(%" PRIu64 ", %zu, p %.9g)[%zu] = %g, scalar %g", index0, n, (double)p, j,
				  out[j], want);
	}
	EXPECT(out[n] == -1.0f);
	free(out);
}

BF_TEST(keep_block_equals_scalar)
{
	struct bf_rng r;
	bf_rng_init(&r, 5, "input:2", "lm_head.weight");
	const float ps[] = { 0.3f, 0.9f, 1e-5f, 1.0f, 0.0f };
	for (size_t t = 0; t < sizeof(ps) / sizeof(ps[0]); t++) {
		check_keep_block(&r, 0, 1000, ps[t]);
		check_keep_block(&r, 3, 517, ps[t]);
		check_keep_block(&r, 0xfffffff0ull * 8 + 5, 700, ps[t]); /* counter word 0 wraps */
		check_keep_block(&r, UINT64_MAX - 600, 601, ps[t]);    /* ends at the last index */
	}
	/* p on a half's value (T = v, f = 0.5): the element goes through its refinement word in the
	 * vector loop */
	for (uint64_t i = 300; i < 1300; i += 97) {
		float p = ((float)half_by_hand(&r, i) + 0.5f) / 65536.0f;
		check_keep_block(&r, 0, 2048, p);
	}
}

BF_TEST(keep_rates)
{
	/* each rate within 6 standard deviations of p over N draws (fixed input: deterministic) */
	enum { N = 1 << 22 };
	struct bf_rng r;
	bf_rng_init(&r, 11, "input:1", "t");
	float *m = malloc(N * sizeof(float));
	const float ps[] = { 0.1f, 0.3f, 0.5f, 0.9f, 0.5f + 0x1p-17f, 1e-5f, 1.0f - 1e-6f };
	for (size_t t = 0; t < sizeof(ps) / sizeof(ps[0]); t++) {
		bf_kern->philox_mask(r.key, r.name_lo, r.name_hi, 0, N, ps[t], m);
		double k = 0;
		for (size_t j = 0; j < N; j++)
			k += m[j];
		double mean = (double)N * ps[t], sd = sqrt(mean * (1.0 - ps[t]));
		printf("  p %.9g: %.0f kept of %d (expected %.1f, sd %.1f)\n", (double)ps[t], k, N, mean, sd);
		EXPECT(fabs(k - mean) <= 6 * sd + 1);
	}
	free(m);
}

int main(void)
{
	RUN(philox_known_answers);
	RUN(derivation_is_the_documented_one);
	RUN(u32_index_mapping);
	RUN(block_equals_scalar);
	RUN(uniform_grid);
	RUN(streams_are_separate);
	RUN(golden_value);
	RUN(distribution_sanity);
	RUN(keep_definition);
	RUN(keep_block_equals_scalar);
	RUN(keep_rates);
	return bf_test_report();
}
