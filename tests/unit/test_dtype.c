/* test_dtype.c: the dtype table and the bit-exact f16/bf16 <-> f32 converters.
 *
 * The f32 -> f16 and f32 -> bf16 converters are checked exhaustively where the input space is
 * small (all 65536 16-bit patterns) and against slow references written from first principles
 * (double arithmetic, frexp/ldexp, nearbyint in the default round-to-nearest-even mode) over
 * ten million pseudo-random f32 bit patterns.
 */
#include <fenv.h>
#include <math.h>
#include <stdlib.h>

#include "bf_common.h"
#include "bf_dtype.h"
#include "bf_test.h"

static float f_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t u_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd32(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* Reference f32 -> f16 from the definition: find the f16 grid around |x| and round to nearest,
 * ties to even, with nearbyint on exact doubles. */
static uint16_t ref_f32_to_f16(float f)
{
	uint16_t sign = (u_of(f) >> 31) ? 0x8000 : 0;
	if (isnan(f))
		return 0x7e00;
	double x = fabs((double)f);
	if (isinf(x))
		return sign | 0x7c00;
	if (x == 0)
		return sign;
	int e;
	(void)frexp(x, &e);        /* x = m * 2^e, m in [0.5, 1): x = 1.f * 2^(e-1) */
	int E = e - 1;
	if (E < -14) {
		double q = nearbyint(ldexp(x, 24));   /* units of 2^-24; exact scaling */
		return sign | (uint16_t)q;            /* 1024 is the smallest normal: same bits */
	}
	double r = nearbyint(ldexp(x, 10 - E)); /* [1024, 2048] */
	if (r == 2048) {
		r = 1024;
		E++;
	}
	if (E > 15)
		return sign | 0x7c00;
	return sign | (uint16_t)(((E + 15) << 10) | ((int)r - 1024));
}

/* Reference f32 -> bf16 the same way (8-bit exponent like f32, 7 explicit mantissa bits). */
static uint16_t ref_f32_to_bf16(float f)
{
	uint16_t sign = (u_of(f) >> 31) ? 0x8000 : 0;
	if (isnan(f))
		return 0x7fc0;
	double x = fabs((double)f);
	if (isinf(x))
		return sign | 0x7f80;
	if (x == 0)
		return sign;
	int e;
	(void)frexp(x, &e);
	int E = e - 1;
	if (E < -126) {
		double q = nearbyint(ldexp(x, 133));  /* units of 2^-133 (smallest bf16 subnormal) */
		return sign | (uint16_t)q;
	}
	double r = nearbyint(ldexp(x, 7 - E));  /* [128, 256] */
	if (r == 256) {
		r = 128;
		E++;
	}
	if (E > 127)
		return sign | 0x7f80;
	return sign | (uint16_t)(((E + 127) << 7) | ((int)r - 128));
}

/* Reference f16 -> f32 from the definition (value = (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m). */
static float ref_f16_to_f32(uint16_t h)
{
	int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	double v;
	if (e == 31)
		v = m ? NAN : INFINITY;
	else if (e == 0)
		v = ldexp(m, -24);
	else
		v = ldexp(1024 + m, e - 25);
	return (float)(s ? -v : v);
}

BF_TEST(table)
{
	static const char *const st[] = { "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2",
		"F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32",
		"U32", "F32", "C64", "F64", "I64", "U64" };
	static const unsigned bits[] = { 8, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 32, 32, 32,
		64, 64, 64, 64 };
	static const char *const torch[] = { "bool", NULL, NULL, NULL, "uint8", "int8", "float8_e5m2",
		"float8_e4m3fn", "float8_e8m0fnu", "float8_e4m3fnuz", "float8_e5m2fnuz", "int16",
		"uint16", "float16", "bfloat16", "int32", "uint32", "float32", "complex64", "float64",
		"int64", "uint64" };
	EXPECT_EQ_U64(BF_ARRAY_LEN(st), BF_DT_COUNT);
	for (int d = 0; d < BF_DT_COUNT; d++) {
		EXPECT_STR_EQ(bf_dtypes[d].st_name, st[d]);
		EXPECT_EQ_U64(bf_dtypes[d].bits, bits[d]);
		if (torch[d])
			EXPECT_STR_EQ(bf_dtypes[d].torch_name, torch[d]);
		else
			EXPECT(bf_dtypes[d].torch_name == NULL);
		bool math = d == BF_DT_F16 || d == BF_DT_BF16 || d == BF_DT_F32;
		EXPECT(bf_dtypes[d].math == math);
		EXPECT((bf_dtypes[d].to_f32 != NULL) == math);
		EXPECT((bf_dtypes[d].from_f32 != NULL) == math);
		EXPECT_EQ_I64(bf_dtype_from_st_name(st[d], strlen(st[d])), d);
		if (torch[d]) {
			char buf[64];
			EXPECT_EQ_I64(bf_dtype_from_torch_name(torch[d]), d);
			snprintf(buf, sizeof(buf), "torch.%s", torch[d]);
			EXPECT_EQ_I64(bf_dtype_from_torch_name(buf), d);
		}
	}
	EXPECT_EQ_U64(bf_dtype_size(BF_DT_BF16), 2);
	EXPECT_EQ_U64(bf_dtype_size(BF_DT_F32), 4);
	EXPECT_EQ_U64(bf_dtype_size(BF_DT_I64), 8);
	/* enum order is safetensors' order (the writer sorts on it) */
	EXPECT(BF_DT_F16 < BF_DT_BF16 && BF_DT_BF16 < BF_DT_F32 && BF_DT_F32 < BF_DT_I64);
}

BF_TEST(name_lookup)
{
	/* length-delimited: a prefix of a longer buffer, no NUL needed */
	EXPECT_EQ_I64(bf_dtype_from_st_name("BF16xyz", 4), BF_DT_BF16);
	EXPECT_EQ_I64(bf_dtype_from_st_name("F8_E4M3FNUZ", 7), BF_DT_F8_E4M3);
	EXPECT_EQ_I64(bf_dtype_from_st_name("BF1", 3), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_st_name("bf16", 4), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_st_name("", 0), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_st_name("F32\0", 4), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_st_name(NULL, 0), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_torch_name("bfloat16"), BF_DT_BF16);
	EXPECT_EQ_I64(bf_dtype_from_torch_name("torch.float16"), BF_DT_F16);
	EXPECT_EQ_I64(bf_dtype_from_torch_name("float32"), BF_DT_F32);
	EXPECT_EQ_I64(bf_dtype_from_torch_name("int64"), BF_DT_I64);
	EXPECT_EQ_I64(bf_dtype_from_torch_name("bf16"), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_torch_name("fp16"), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_torch_name("BF16"), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_torch_name("torch."), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_torch_name("torch.torch.float32"), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_torch_name(""), BF_DT_NONE);
	EXPECT_EQ_I64(bf_dtype_from_torch_name(NULL), BF_DT_NONE);
}

BF_TEST(f16_exhaustive)
{
	int bad_rt = 0, bad_ref = 0, nans = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = bf_f16_to_f32((uint16_t)h);
		float r = ref_f16_to_f32((uint16_t)h);
		bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
		if (is_nan) {
			nans++;
			/* payload kept: mant << 13 under an all-ones exponent */
			if (!isnan(f) || u_of(f) != (((h & 0x8000u) << 16) | 0x7f800000u | ((h & 0x3ffu) << 13)))
				bad_ref++;
			if (bf_f32_to_f16(f) != 0x7e00)
				bad_rt++;
			continue;
		}
		if (u_of(f) != u_of(r))
			bad_ref++;
		if (bf_f32_to_f16(f) != h)
			bad_rt++;
	}
	EXPECT_EQ_U64(nans, 2 * 1023);
	EXPECT_EQ_U64(bad_ref, 0);
	EXPECT_EQ_U64(bad_rt, 0);
}

BF_TEST(bf16_exhaustive)
{
	int bad = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = bf_bf16_to_f32((uint16_t)h);
		if (u_of(f) != h << 16)
			bad++;
		bool is_nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
		uint16_t want = is_nan ? 0x7fc0 : (uint16_t)h;
		if (bf_f32_to_bf16(f) != want)
			bad++;
	}
	EXPECT_EQ_U64(bad, 0);
}

BF_TEST(bf16_rounding)
{
	/* ties to even */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x3F808000)), 0x3F80);  /* tie, even below */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x3F818000)), 0x3F82);  /* tie, odd below -> up */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x3F808001)), 0x3F81);  /* just above the tie */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x3F807FFF)), 0x3F80);  /* just below the tie */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0xBF818000)), 0xBF82);  /* sign-symmetric */
	/* denormals are kept, not flushed */
	EXPECT_EQ_HEX(bf_f32_to_bf16(1e-39f), 0x000b);
	EXPECT_EQ_HEX(bf_f32_to_bf16(-1e-39f), 0x800b);
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x00000001)), 0x0000);  /* rounds to +0 */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x00008000)), 0x0000);  /* tie to even 0 */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x00018000)), 0x0002);  /* tie to even 2 */
	/* overflow: the largest f32 rounds to inf; inf stays inf */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x7F7FFFFF)), 0x7F80);
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x7F7F7FFF)), 0x7F7F);
	EXPECT_EQ_HEX(bf_f32_to_bf16(INFINITY), 0x7F80);
	EXPECT_EQ_HEX(bf_f32_to_bf16(-INFINITY), 0xFF80);
	/* zeros */
	EXPECT_EQ_HEX(bf_f32_to_bf16(0.0f), 0x0000);
	EXPECT_EQ_HEX(bf_f32_to_bf16(-0.0f), 0x8000);
	/* every NaN becomes 0x7FC0, sign and payload dropped */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x7FC00000)), 0x7FC0);
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0xFFC00000)), 0x7FC0);
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x7F800001)), 0x7FC0);  /* sNaN that would round to inf */
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0x7FFFFFFF)), 0x7FC0);
	EXPECT_EQ_HEX(bf_f32_to_bf16(f_of(0xFF800001)), 0x7FC0);
	EXPECT_EQ_DBL(bf_bf16_to_f32(0x3F80), 1.0);
	EXPECT_EQ_HEX(u_of(bf_bf16_to_f32(0x8000)), 0x80000000u);
}

BF_TEST(f16_rounding)
{
	EXPECT_EQ_HEX(bf_f32_to_f16(1.0f), 0x3C00);
	EXPECT_EQ_HEX(bf_f32_to_f16(-2.0f), 0xC000);
	EXPECT_EQ_HEX(bf_f32_to_f16(65504.0f), 0x7BFF);
	/* 65520 is the tie between 65504 (odd mantissa) and 65536: to even = overflow */
	EXPECT_EQ_HEX(bf_f32_to_f16(65520.0f), 0x7C00);
	EXPECT_EQ_HEX(bf_f32_to_f16(-65520.0f), 0xFC00);
	EXPECT_EQ_HEX(bf_f32_to_f16(65519.99f), 0x7BFF);
	EXPECT_EQ_HEX(bf_f32_to_f16(1e10f), 0x7C00);
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0x7F7FFFFF)), 0x7C00);
	EXPECT_EQ_HEX(bf_f32_to_f16(INFINITY), 0x7C00);
	EXPECT_EQ_HEX(bf_f32_to_f16(-INFINITY), 0xFC00);
	/* ties to even in the normal range: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0x3F801000)), 0x3C00);
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0x3F803000)), 0x3C02);
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0x3F801001)), 0x3C01);
	/* mantissa carry bumps the exponent: 2 - 2^-12 -> 2.0 */
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0x3FFFF000)), 0x4000);
	/* subnormals: smallest 2^-24, largest 1023 * 2^-24, and the boundary with normals */
	EXPECT_EQ_HEX(bf_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);
	EXPECT_EQ_HEX(bf_f32_to_f16(ldexpf(1023.0f, -24)), 0x03FF);
	EXPECT_EQ_HEX(bf_f32_to_f16(ldexpf(1.0f, -14)), 0x0400);
	EXPECT_EQ_HEX(bf_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400);   /* tie, odd -> up into normals */
	EXPECT_EQ_HEX(bf_f32_to_f16(ldexpf(2.5f, -24)), 0x0002);      /* tie to even */
	EXPECT_EQ_HEX(bf_f32_to_f16(ldexpf(3.5f, -24)), 0x0004);
	EXPECT_EQ_HEX(bf_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);      /* tie with 0 -> 0 */
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0x33000001)), 0x0001);       /* just above -> 2^-24 */
	EXPECT_EQ_HEX(bf_f32_to_f16(-ldexpf(1.0f, -25)), 0x8000);
	EXPECT_EQ_HEX(bf_f32_to_f16(ldexpf(1.0f, -30)), 0x0000);
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0x00000001)), 0x0000);       /* f32 subnormal */
	/* zeros */
	EXPECT_EQ_HEX(bf_f32_to_f16(0.0f), 0x0000);
	EXPECT_EQ_HEX(bf_f32_to_f16(-0.0f), 0x8000);
	EXPECT_EQ_HEX(u_of(bf_f16_to_f32(0x8000)), 0x80000000u);
	/* NaN: canonical 0x7E00, sign dropped */
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0x7FC00000)), 0x7E00);
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0xFFC00000)), 0x7E00);
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0x7F800001)), 0x7E00);
	EXPECT_EQ_HEX(bf_f32_to_f16(f_of(0xFFFFFFFF)), 0x7E00);
	/* f16 -> f32 spot values */
	EXPECT_EQ_DBL(bf_f16_to_f32(0x0001), ldexp(1, -24));
	EXPECT_EQ_DBL(bf_f16_to_f32(0x03FF), ldexp(1023, -24));
	EXPECT_EQ_DBL(bf_f16_to_f32(0x7BFF), 65504.0);
	EXPECT_EQ_DBL(bf_f16_to_f32(0xC000), -2.0);
	EXPECT(isinf(bf_f16_to_f32(0x7C00)) && bf_f16_to_f32(0x7C00) > 0);
}

BF_TEST(f16_random_vs_reference)
{
	EXPECT_EQ_I64(fegetround(), FE_TONEAREST);
	const uint32_t N = 10000000;
	uint32_t bad = 0, bad_bf = 0;
	for (uint32_t i = 0; i < N; i++) {
		uint32_t u = rnd32();
		/* every 4th draw lands near the f16 range so both paths get dense coverage */
		if ((i & 3) == 0)
			u = (u & 0x80000000u) | (0x33000000u + (u % (0x47800000u - 0x33000000u)));
		float f = f_of(u);
		uint16_t got = bf_f32_to_f16(f), want = ref_f32_to_f16(f);
		if (got != want) {
			if (bad < 5)
				printf("  f16: 0x%08x -> 0x%04x, want 0x%04x\n", u, got, want);
			bad++;
		}
		uint16_t gb = bf_f32_to_bf16(f), wb = ref_f32_to_bf16(f);
		if (gb != wb) {
			if (bad_bf < 5)
				printf("  bf16: 0x%08x -> 0x%04x, want 0x%04x\n", u, gb, wb);
			bad_bf++;
		}
	}
	EXPECT_EQ_U64(bad, 0);
	EXPECT_EQ_U64(bad_bf, 0);
}

BF_TEST(rows)
{
	/* unaligned byte buffers on the 16-bit side; row converters equal the scalar references */
	enum { N = 1000 };
	static unsigned char src[4 * N + 3], dst[4 * N + 3];
	static float f[N], tmp[N], back[N];
	static const enum bf_dtype half[] = { BF_DT_BF16, BF_DT_F16 };
	for (int k = 0; k < 2; k++) {
		enum bf_dtype d = half[k];
		for (int i = 0; i < N; i++) {
			uint32_t u = rnd32();
			memcpy(src + 1 + 4 * i, &u, 4);
		}
		bf_to_f32(d, src + 1, f, N);
		int bad = 0;
		for (int i = 0; i < N; i++) {
			uint16_t h;
			memcpy(&h, src + 1 + 2 * i, 2);
			float want = d == BF_DT_BF16 ? bf_bf16_to_f32(h) : bf_f16_to_f32(h);
			if (u_of(f[i]) != u_of(want))
				bad++;
		}
		EXPECT_EQ_U64(bad, 0);
		for (int i = 0; i < N; i++)
			tmp[i] = f_of(rnd32());
		bf_from_f32(d, tmp, dst + 3, N);
		bad = 0;
		for (int i = 0; i < N; i++) {
			uint16_t h;
			memcpy(&h, dst + 3 + 2 * i, 2);
			uint16_t want = d == BF_DT_BF16 ? bf_f32_to_bf16(tmp[i]) : bf_f32_to_f16(tmp[i]);
			if (h != want)
				bad++;
		}
		EXPECT_EQ_U64(bad, 0);
	}
	/* f32 in is a bit copy, NaN payloads included; f32 out is a bit copy except that NaNs become
	 * the canonical 0x7FC00000 (bf_dtype.h); both from and to unaligned bytes */
	for (int i = 0; i < N; i++) {
		uint32_t u = i == 0 ? 0x7F800123u : rnd32();
		memcpy(src + 1 + 4 * i, &u, 4);
	}
	bf_to_f32(BF_DT_F32, src + 1, back, N);
	EXPECT(memcmp(back, src + 1, 4 * N) == 0);
	bf_from_f32(BF_DT_F32, back, dst + 1, N);
	int badf = 0;
	for (int i = 0; i < N; i++) {
		uint32_t in, out;
		memcpy(&in, src + 1 + 4 * i, 4);
		memcpy(&out, dst + 1 + 4 * i, 4);
		uint32_t want = (in & 0x7fffffffu) > 0x7f800000u ? 0x7fc00000u : in;
		badf += out != want;
	}
	EXPECT_EQ_U64(badf, 0);
	/* n = 0 touches nothing */
	bf_to_f32(BF_DT_BF16, NULL, NULL, 0);
	bf_from_f32(BF_DT_F16, NULL, NULL, 0);
	bf_to_f32(BF_DT_F32, NULL, NULL, 0);
	bf_from_f32(BF_DT_F32, NULL, NULL, 0);
}

int main(void)
{
	RUN(table);
	RUN(name_lookup);
	RUN(f16_exhaustive);
	RUN(bf16_exhaustive);
	RUN(bf16_rounding);
	RUN(f16_rounding);
	RUN(f16_random_vs_reference);
	RUN(rows);
	return bf_test_report();
}
