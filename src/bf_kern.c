/* bf_kern.c: scalar reference primitives and run-time selection (see bf_kern.h). */
#include <stdlib.h>
#include <string.h>

#include "bf_config.h"
#include "bf_dtype.h"
#include "bf_kern.h"

static void ref_bf16_to_f32(const void *src, float *dst, size_t n)
{
	const unsigned char *s = src;
	for (size_t i = 0; i < n; i++) {
		uint16_t h;
		memcpy(&h, s + 2 * i, 2);
		dst[i] = bf_bf16_to_f32(h);
	}
}

static void ref_f32_to_bf16(const float *src, void *dst, size_t n)
{
	unsigned char *d = dst;
	for (size_t i = 0; i < n; i++) {
		uint16_t h = bf_f32_to_bf16(src[i]);
		memcpy(d + 2 * i, &h, 2);
	}
}

static void ref_f16_to_f32(const void *src, float *dst, size_t n)
{
	const unsigned char *s = src;
	for (size_t i = 0; i < n; i++) {
		uint16_t h;
		memcpy(&h, s + 2 * i, 2);
		dst[i] = bf_f16_to_f32(h);
	}
}

static void ref_f32_to_f16(const float *src, void *dst, size_t n)
{
	unsigned char *d = dst;
	for (size_t i = 0; i < n; i++) {
		uint16_t h = bf_f32_to_f16(src[i]);
		memcpy(d + 2 * i, &h, 2);
	}
}

static void ref_scale(float *out, const float *x, float w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = x[i] * w;
}

static void ref_axpy(float *out, const float *x, float w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = out[i] + x[i] * w;
}

static void ref_div(float *out, float d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = out[i] / d;
}

static void ref_sub(float *out, const float *a, const float *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = a[i] - b[i];
}

static void ref_add(float *out, const float *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = out[i] + a[i];
}

static void ref_lin2(float *out, const float *a, float wa, const float *b, float wb, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = a[i] * wa + b[i] * wb;
}

const struct bf_kern bf_kern_ref = {
	.name = "scalar",
	.bf16_to_f32 = ref_bf16_to_f32, .f32_to_bf16 = ref_f32_to_bf16,
	.f16_to_f32 = ref_f16_to_f32, .f32_to_f16 = ref_f32_to_f16,
	.scale = ref_scale, .axpy = ref_axpy, .div = ref_div, .sub = ref_sub, .add = ref_add,
	.lin2 = ref_lin2,
};

const struct bf_kern *bf_kern = &bf_kern_ref;

#if !BF_SIMD
const struct bf_kern *bf_kern_avx2(void) { return NULL; }
#endif

void bf_kern_select(int simd)
{
	const struct bf_kern *k = simd ? bf_kern_avx2() : NULL;
	bf_kern = k ? k : &bf_kern_ref;
}

__attribute__((constructor)) static void kern_init(void)
{
	const char *e = getenv("BLENDFS_SIMD");
	bf_kern_select(!(e && !strcmp(e, "0")));
}
