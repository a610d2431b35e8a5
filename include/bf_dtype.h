/* bf_dtype.h: the dtype table.
 *
 * Every dtype decision is a lookup here: safetensors name, torch name, bit width, the rank used to
 * order tensors inside a shard (safetensors' own enum order, which its writer sorts on), and for
 * the three math dtypes the row converters to and from f32.
 *
 * Conversion contract (bit-exact, tested against hand-made vectors):
 *   bf16 -> f32: exact (u16 << 16).
 *   f16  -> f32: exact, denormals included.
 *   f32  -> bf16: round to nearest, ties to even; denormals kept (no flush); every NaN becomes
 *                 0x7FC0, as torch's c10::BFloat16 does.
 *   f32  -> f16: round to nearest, ties to even, IEEE overflow to +-inf, denormals kept; every
 *                NaN becomes 0x7E00 (torch keeps the sign; blendfs drops it because the sign of
 *                a NaN produced by arithmetic is not reproducible across instruction sets).
 *   f32  -> f32: identity, except that every NaN becomes 0x7FC00000.
 * So an output never depends on NaN payloads or signs, which IEEE leaves to the hardware.
 *
 *       bf16: s eeeeeeee mmmmmmm          (top half of an f32)
 *       f16:  s eeeee mmmmmmmmmm
 *       f32:  s eeeeeeee mmmmmmmmmmmmmmmmmmmmmmm
 *
 * Loads and stores go through memcpy-sized helpers: source buffers are not aligned.
 */
#ifndef BF_DTYPE_H
#define BF_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdbool.h>

/* Order = safetensors' Dtype enum order (BOOL < F4 < ... < U64); shards sort on it descending. */
enum bf_dtype {
	BF_DT_BOOL = 0, BF_DT_F4, BF_DT_F6_E2M3, BF_DT_F6_E3M2, BF_DT_U8, BF_DT_I8,
	BF_DT_F8_E5M2, BF_DT_F8_E4M3, BF_DT_F8_E8M0, BF_DT_F8_E4M3FNUZ, BF_DT_F8_E5M2FNUZ,
	BF_DT_I16, BF_DT_U16, BF_DT_F16, BF_DT_BF16, BF_DT_I32, BF_DT_U32, BF_DT_F32,
	BF_DT_C64, BF_DT_F64, BF_DT_I64, BF_DT_U64,
	BF_DT_COUNT,
	BF_DT_NONE = -1,
};

typedef void (*bf_to_f32_fn)(const void *src, float *dst, size_t n);
typedef void (*bf_from_f32_fn)(const float *src, void *dst, size_t n);

struct bf_dtype_info {
	const char *st_name;     /* "BF16" */
	const char *torch_name;  /* "bfloat16" (config.json torch_dtype), NULL if torch has none */
	unsigned bits;           /* bit width of one element (4 and 6 for the sub-byte floats) */
	bool math;               /* F32/F16/BF16: merge methods may compute over it */
	bf_to_f32_fn to_f32;     /* scalar reference, NULL unless math */
	bf_from_f32_fn from_f32; /* scalar reference, NULL unless math */
};

extern const struct bf_dtype_info bf_dtypes[BF_DT_COUNT];

static inline unsigned bf_dtype_size(enum bf_dtype d) { return bf_dtypes[d].bits / 8; }
/* "BF16" -> BF_DT_BF16; BF_DT_NONE if unknown. len-delimited (header strings need not be NUL-terminated). */
enum bf_dtype bf_dtype_from_st_name(const char *s, size_t len);
/* Recipe dtype names: "bfloat16", "float16", "float32" with optional "torch." prefix (also
 * "bf16"/"fp16"/"fp32"? no: mergekit accepts only the torch spellings). BF_DT_NONE if unknown. */
enum bf_dtype bf_dtype_from_torch_name(const char *s);

/* Scalar element converters (the reference the row functions and SIMD variants must match). */
static inline float bf_bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t bf_f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return 0x7fc0;
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float bf_f16_to_f32(uint16_t h);
uint16_t bf_f32_to_f16(float f);

/* Scalar row converters for the 16-bit dtypes: the dtype table's entries, and the reference
 * variant of bf_kern (whose SIMD variants are tested equal to them). */
void bf_bf16_row_to_f32(const void *src, float *dst, size_t n);
void bf_f32_row_to_bf16(const float *src, void *dst, size_t n);
void bf_f16_row_to_f32(const void *src, float *dst, size_t n);
void bf_f32_row_to_f16(const float *src, void *dst, size_t n);

/* Row converters for any math dtype (dispatch on the table; SIMD when available, tested equal
 * to the scalar reference). */
void bf_to_f32(enum bf_dtype d, const void *src, float *dst, size_t n);
void bf_from_f32(enum bf_dtype d, const float *src, void *dst, size_t n);

#endif
