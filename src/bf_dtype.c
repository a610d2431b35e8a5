/* bf_dtype.c: the dtype table and the scalar (reference) converters.
 *
 * Not here: SIMD row kernels (they are tested equal to these loops and hang off the same table).
 *
 * f32 -> f16, round to nearest even, worked on the magnitude a = |f| as bits:
 *
 *       f32:  s eeeeeeee mmmmmmmmmm ddddddddddddd     (13 low bits d are dropped for f16)
 *       f16:  s    eeeee mmmmmmmmmm
 *
 *   a >  0x7F800000            NaN           -> 0x7E00 (canonical quiet NaN, sign dropped)
 *   a >= 0x477FF000 (65520.0)  too large     -> sign|0x7C00 (65520 is the tie between 65504, the
 *                                               largest f16, and 65536; ties go to even = up)
 *   a >= 0x38800000 (2^-14)    f16 normal    -> rebias the exponent (127 -> 15), drop d with RNE;
 *                                               a carry out of the mantissa bumps the exponent,
 *                                               which is exactly right (it cannot reach 0x7C00:
 *                                               that range was taken above)
 *   otherwise                  f16 subnormal -> the value in units of 2^-24 is m * 2^(e-126)
 *                                               (m with its implicit bit); shift right by
 *                                               126 - e with RNE. A result of 0x400 is the
 *                                               smallest normal, again the right bit pattern.
 */
#include <string.h>

#include "bf_common.h"
#include "bf_dtype.h"
#include "bf_kern.h"

static inline uint16_t ld16(const void *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void st16(void *p, uint16_t v) { memcpy(p, &v, 2); }

float bf_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t mant = h & 0x3ffu;
	uint32_t u;

	if (exp == 0x1f) {
		u = sign | 0x7f800000u | (mant << 13);          /* inf, or NaN with its payload */
	} else if (exp != 0) {
		u = sign | ((exp + 112u) << 23) | (mant << 13);  /* normal: rebias 15 -> 127 */
	} else if (mant == 0) {
		u = sign;                                       /* +-0 */
	} else {
		/* subnormal: mant * 2^-24; normalise so the leading 1 sits at bit 10 */
		uint32_t e = 113;                               /* 127 - 14 */
		while (!(mant & 0x400u)) {
			mant <<= 1;
			e--;
		}
		u = sign | (e << 23) | ((mant & 0x3ffu) << 13);
	}
	float f;
	memcpy(&f, &u, 4);
	return f;
}

uint16_t bf_f32_to_f16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
	uint32_t a = u & 0x7fffffffu;

	if (a > 0x7f800000u)
		return 0x7e00u;
	if (a >= 0x477ff000u)
		return sign | 0x7c00u;
	if (a >= 0x38800000u) {
		uint32_t h = (a >> 13) - (112u << 10);
		uint32_t rem = a & 0x1fffu;
		if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
			h++;
		return sign | (uint16_t)h;
	}
	uint32_t e = a >> 23;
	if (e < 102)            /* shift >= 25: below half the smallest subnormal (f32 subnormals too) */
		return sign;
	uint32_t m = (a & 0x7fffffu) | 0x800000u;
	uint32_t s = 126u - e;  /* 14..24 */
	uint32_t q = m >> s, rem = m & ((1u << s) - 1u), half = 1u << (s - 1u);
	if (rem > half || (rem == half && (q & 1u)))
		q++;
	return sign | (uint16_t)q;
}

/* Row references. Source and destination buffers need not be aligned. */
static void f32_to_f32(const void *src, float *dst, size_t n)
{
	if (n)
		memmove(dst, src, n * 4);
}

static void f32_from_f32(const float *src, void *dst, size_t n)
{
	unsigned char *d = dst;
	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, &src[i], 4);
		if ((u & 0x7fffffffu) > 0x7f800000u)
			u = 0x7fc00000u; /* canonical NaN */
		memcpy(d + 4 * i, &u, 4);
	}
}

void bf_f16_row_to_f32(const void *src, float *dst, size_t n)
{
	const unsigned char *s = src;
	for (size_t i = 0; i < n; i++) {
		float f = bf_f16_to_f32(ld16(s + 2 * i));
		memcpy((unsigned char *)dst + 4 * i, &f, 4);
	}
}

void bf_f32_row_to_f16(const float *src, void *dst, size_t n)
{
	unsigned char *d = dst;
	for (size_t i = 0; i < n; i++) {
		float f;
		memcpy(&f, (const unsigned char *)src + 4 * i, 4);
		st16(d + 2 * i, bf_f32_to_f16(f));
	}
}

void bf_bf16_row_to_f32(const void *src, float *dst, size_t n)
{
	const unsigned char *s = src;
	for (size_t i = 0; i < n; i++) {
		float f = bf_bf16_to_f32(ld16(s + 2 * i));
		memcpy((unsigned char *)dst + 4 * i, &f, 4);
	}
}

void bf_f32_row_to_bf16(const float *src, void *dst, size_t n)
{
	unsigned char *d = dst;
	for (size_t i = 0; i < n; i++) {
		float f;
		memcpy(&f, (const unsigned char *)src + 4 * i, 4);
		st16(d + 2 * i, bf_f32_to_bf16(f));
	}
}

const struct bf_dtype_info bf_dtypes[BF_DT_COUNT] = {
	[BF_DT_BOOL]        = { "BOOL",        "bool",            8, false, NULL, NULL },
	[BF_DT_F4]          = { "F4",          NULL,              4, false, NULL, NULL },
	[BF_DT_F6_E2M3]     = { "F6_E2M3",     NULL,              6, false, NULL, NULL },
	[BF_DT_F6_E3M2]     = { "F6_E3M2",     NULL,              6, false, NULL, NULL },
	[BF_DT_U8]          = { "U8",          "uint8",           8, false, NULL, NULL },
	[BF_DT_I8]          = { "I8",          "int8",            8, false, NULL, NULL },
	[BF_DT_F8_E5M2]     = { "F8_E5M2",     "float8_e5m2",     8, false, NULL, NULL },
	[BF_DT_F8_E4M3]     = { "F8_E4M3",     "float8_e4m3fn",   8, false, NULL, NULL },
	[BF_DT_F8_E8M0]     = { "F8_E8M0",     "float8_e8m0fnu",  8, false, NULL, NULL },
	[BF_DT_F8_E4M3FNUZ] = { "F8_E4M3FNUZ", "float8_e4m3fnuz", 8, false, NULL, NULL },
	[BF_DT_F8_E5M2FNUZ] = { "F8_E5M2FNUZ", "float8_e5m2fnuz", 8, false, NULL, NULL },
	[BF_DT_I16]         = { "I16",         "int16",          16, false, NULL, NULL },
	[BF_DT_U16]         = { "U16",         "uint16",         16, false, NULL, NULL },
	[BF_DT_F16]         = { "F16",         "float16",        16, true, bf_f16_row_to_f32, bf_f32_row_to_f16 },
	[BF_DT_BF16]        = { "BF16",        "bfloat16",       16, true, bf_bf16_row_to_f32, bf_f32_row_to_bf16 },
	[BF_DT_I32]         = { "I32",         "int32",          32, false, NULL, NULL },
	[BF_DT_U32]         = { "U32",         "uint32",         32, false, NULL, NULL },
	[BF_DT_F32]         = { "F32",         "float32",        32, true, f32_to_f32, f32_from_f32 },
	[BF_DT_C64]         = { "C64",         "complex64",      64, false, NULL, NULL },
	[BF_DT_F64]         = { "F64",         "float64",        64, false, NULL, NULL },
	[BF_DT_I64]         = { "I64",         "int64",          64, false, NULL, NULL },
	[BF_DT_U64]         = { "U64",         "uint64",         64, false, NULL, NULL },
};

enum bf_dtype bf_dtype_from_st_name(const char *s, size_t len)
{
	if (!s)
		return BF_DT_NONE;
	for (int d = 0; d < BF_DT_COUNT; d++) {
		const char *n = bf_dtypes[d].st_name;
		if (strlen(n) == len && !memcmp(n, s, len))
			return (enum bf_dtype)d;
	}
	return BF_DT_NONE;
}

enum bf_dtype bf_dtype_from_torch_name(const char *s)
{
	if (!s)
		return BF_DT_NONE;
	if (!strncmp(s, "torch.", 6))
		s += 6;
	for (int d = 0; d < BF_DT_COUNT; d++)
		if (bf_dtypes[d].torch_name && !strcmp(bf_dtypes[d].torch_name, s))
			return (enum bf_dtype)d;
	return BF_DT_NONE;
}

/* The 16-bit conversions go through the selected bf_kern variant (SIMD when available; bit-
 * identical to the scalar reference in the table above, which test_kern.c checks). */
void bf_to_f32(enum bf_dtype d, const void *src, float *dst, size_t n)
{
	BF_ASSERT(d >= 0 && d < BF_DT_COUNT && bf_dtypes[d].to_f32);
	if (d == BF_DT_BF16)
		bf_kern->bf16_to_f32(src, dst, n);
	else if (d == BF_DT_F16)
		bf_kern->f16_to_f32(src, dst, n);
	else
		bf_dtypes[d].to_f32(src, dst, n);
}

void bf_from_f32(enum bf_dtype d, const float *src, void *dst, size_t n)
{
	BF_ASSERT(d >= 0 && d < BF_DT_COUNT && bf_dtypes[d].from_f32);
	if (d == BF_DT_BF16)
		bf_kern->f32_to_bf16(src, dst, n);
	else if (d == BF_DT_F16)
		bf_kern->f32_to_f16(src, dst, n);
	else
		bf_dtypes[d].from_f32(src, dst, n);
}
