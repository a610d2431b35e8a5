/* m_interp.c: interpolation-style methods: linear, passthrough, slerp, nuslerp, multislerp,
 * karcher, nearswap (mergekit-spec.md 2.1-2.5, 2.11, 2.13).
 *
 * Elementwise arithmetic is f32 in mergekit's operation order (so results match it bit for bit
 * wherever mergekit's own f32 math is deterministic); scalar statistics (norms, dot products,
 * angles) are accumulated in double in flat-index order and rounded to f32 where mergekit holds
 * an f32 scalar.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_kern.h"
#include "bf_log.h"
#include "bf_method.h"
#include "bf_plan.h"

#define ANY_MIN (-HUGE_VAL)
#define ANY_MAX HUGE_VAL

/* ---------------------------------------------------------------------------------------------
 * linear: R = sum_i w_i x_i, divided by sum_i w_i when normalize (no guard, as mergekit)
 */
enum { LIN_WEIGHT, LIN_NORMALIZE };
static const struct bf_param_def linear_params[] = {
	[LIN_WEIGHT] = { .name = "weight", .type = BF_PT_NUM, .per_model = true, .required = true,
			 .min = ANY_MIN, .max = ANY_MAX, .help = "weight of this model" },
	[LIN_NORMALIZE] = { .name = "normalize", .type = BF_PT_BOOL, .def = 1, .min = 0, .max = 1,
			    .help = "divide by the sum of the weights" },
};

static int linear_kernel(const struct bf_kargs *a)
{
	const struct bf_otensor *t = a->t;
	float wsum = 0.0f;
	for (uint32_t i = 0; i < t->n_in; i++)
		wsum += (float)t->in[i].p[LIN_WEIGHT];
	/* sum_i w_i x_i in input order, then / sum w (mergekit's order of operations) */
	bf_kern->scale(a->out, a->in[0], (float)t->in[0].p[LIN_WEIGHT], a->n);
	for (uint32_t i = 1; i < t->n_in; i++)
		bf_kern->axpy(a->out, a->in[i], (float)t->in[i].p[LIN_WEIGHT], a->n);
	if (t->g[LIN_NORMALIZE] != 0)
		bf_kern->div(a->out, wsum, a->n);
	return 0;
}

/* (the fused kernels take up to 64 inputs) */
static bool all_bf16(const struct bf_otensor *t)
{
	return t->n_in <= 64 && bf_all_bf16(t);
}

static int linear_fused(const struct bf_fargs *a)
{
	const struct bf_otensor *t = a->t;
	if (!all_bf16(t))
		return -ENOTSUP;
	float w[64], wsum = 0.0f;
	for (uint32_t i = 0; i < t->n_in; i++) {
		w[i] = (float)t->in[i].p[LIN_WEIGHT];
		wsum += w[i];
	}
	bf_kern->wsum_bf16(a->out, (const uint16_t *const *)a->raw, w, (int)t->n_in, wsum, t->g[LIN_NORMALIZE] != 0, a->n);
	return 0;
}

const struct bf_method bf_m_linear = {
	.name = "linear", .pretty = "Linear", .paper = "https://arxiv.org/abs/2203.05482",
	.params = linear_params, .n_params = BF_ARRAY_LEN(linear_params),
	.base = BF_BASE_INPUT, .min_others = 1, .max_others = 1000,
	.kernel = linear_kernel, .fused = linear_fused,
};

/* ---------------------------------------------------------------------------------------------
 * passthrough: one input, optionally scaled
 */
enum { PT_SCALE };
static const struct bf_param_def passthrough_params[] = {
	[PT_SCALE] = { .name = "scale", .type = BF_PT_NUM, .per_model = true, .def = NAN,
		       .min = ANY_MIN, .max = ANY_MAX, .help = "multiply the tensor by this factor" },
};

static int passthrough_kernel(const struct bf_kargs *a)
{
	double s = a->t->in[0].p[PT_SCALE];
	if (isnan(s)) {
		memcpy(a->out, a->in[0], a->n * sizeof(float));
		return 0;
	}
	bf_kern->scale(a->out, a->in[0], (float)s, a->n);
	return 0;
}

static int passthrough_fused(const struct bf_fargs *a)
{
	double sc = a->t->in[0].p[PT_SCALE];
	if (!all_bf16(a->t) || isnan(sc))
		return -ENOTSUP;
	float w = (float)sc;
	bf_kern->wsum_bf16(a->out, (const uint16_t *const *)a->raw, &w, 1, 1.0f, 0, a->n);
	return 0;
}

const struct bf_method bf_m_passthrough = {
	.name = "passthrough", .pretty = "Passthrough", .paper = NULL,
	.params = passthrough_params, .n_params = BF_ARRAY_LEN(passthrough_params),
	.base = BF_BASE_INPUT, .min_others = 1, .max_others = 1,
	.kernel = passthrough_kernel, .fused = passthrough_fused,
};

/* ---------------------------------------------------------------------------------------------
 * Shared: sums of squares and products over whole tensors, in double, in index order
 */
struct gram_ctx {
	uint32_t n;              /* vectors */
	const float *base;       /* subtract in[0] from the others (task vectors) */
	bool sub_base;
	struct bf_block_sums g;  /* into n x n, upper triangle filled then mirrored */
};

static int gram_block(void *ctx, const float *const *in, uint64_t e0, size_t n)
{
	struct gram_ctx *c = ctx;
	const float *v[BF_MAX_MODELS * 4 + 1];
	if (c->sub_base) {
		float *d = bf_scratch(0, (size_t)c->n * n * sizeof(float));
		if (!d)
			return -ENOMEM;
		for (uint32_t i = 0; i < c->n; i++) {
			bf_kern->sub(d + (size_t)i * n, in[i + 1], in[0], n);
			v[i] = d + (size_t)i * n;
		}
	} else {
		for (uint32_t i = 0; i < c->n; i++)
			v[i] = in[i];
	}
	bf_kern->dots_f64(v, (int)c->n, n, bf_block_sums_at(&c->g, e0));
	return 0;
}

/* The same sums straight from bf16 inputs (no task vectors): no widening pass. */
static int gram_block_bf16(void *ctx, const void *const *raw, uint64_t e0, size_t n)
{
	struct gram_ctx *c = ctx;
	bf_kern->dots_bf16((const uint16_t *const *)raw, (int)c->n, n, bf_block_sums_at(&c->g, e0));
	return 0;
}

/* Gram matrix of the inputs (minus the base when sub_base): g[i*n+j] = <v_i, v_j>. Each block's
 * dots_f64 adds its own sums, so blocks may run on several threads (bf_block_sums). */
static int gram(struct bf_stream *s, const struct bf_otensor *t, bool sub_base, double *g, uint32_t n)
{
	struct gram_ctx c = { .n = n, .sub_base = sub_base };
	memset(g, 0, n * n * sizeof(double));
	bf_block_sums_init(&c.g, s, t, g, (size_t)n * n);
	bool raw = !sub_base && bf_all_bf16(t);
	int r = bf_block_sums_run(s, t, &c.g, raw ? NULL : gram_block, raw ? gram_block_bf16 : NULL, &c);
	bf_block_sums_fold(&c.g);
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < i; j++)
			g[i * n + j] = g[j * n + i];
	return r;
}

struct coef2 {
	float c0, c1, div;       /* R = (c0*a + c1*b) / div   (div == 1 -> no division) */
};

static void free_plain(void *p) { free(p); }

/* ---------------------------------------------------------------------------------------------
 * slerp (2.2): spherical interpolation of the whole flattened tensors, t = 0 gives the base
 */
enum { SLERP_T };
static const struct bf_param_def slerp_params[] = {
	[SLERP_T] = { .name = "t", .type = BF_PT_NUM, .required = true, .min = 0, .max = 1,
		      .help = "interpolation factor: 0 = base model, 1 = the other model" },
};

static struct coef2 slerp_coefs(double t, double dot_f32)
{
	struct coef2 c = { .div = 1.0f };
	if (fabs(dot_f32) > 0.9995) {
		c.c0 = (float)(1.0 - t);
		c.c1 = (float)t;
		return c;
	}
	double th0 = acos(dot_f32), s0 = sin(th0), tht = th0 * t;
	c.c0 = (float)(sin(th0 - tht) / s0);
	c.c1 = (float)(sin(tht) / s0);
	return c;
}

static int slerp_stats(struct bf_stream *s, const struct bf_otensor *t, void **out)
{
	double g[4];
	int r = gram(s, t, false, g, 2);
	if (r)
		return r;
	/* numpy's f32 norms; vectors are normalised only when the norm exceeds 1e-8 */
	double n0 = (float)sqrt(g[0]), n1 = (float)sqrt(g[3]);
	double d0 = n0 > 1e-8 ? n0 : 1.0, d1 = n1 > 1e-8 ? n1 : 1.0;
	float dot = (float)(g[1] / (d0 * d1));
	struct coef2 *c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	*c = slerp_coefs(t->g[SLERP_T], dot);
	*out = c;
	return 0;
}

static int coef2_kernel(const struct bf_kargs *a)
{
	const struct coef2 *c = a->stats;
	bf_kern->lin2(a->out, a->in[0], c->c0, a->in[1], c->c1, a->n);
	return 0;
}

static int coef2_fused(const struct bf_fargs *a)
{
	const struct coef2 *c = a->stats;
	if (!all_bf16(a->t))
		return -ENOTSUP;
	float w[2] = { c->c0, c->c1 };
	bf_kern->wsum_bf16(a->out, (const uint16_t *const *)a->raw, w, 2, 1.0f, 0, a->n);
	return 0;
}

const struct bf_method bf_m_slerp = {
	.name = "slerp", .pretty = "SLERP", .paper = "https://en.wikipedia.org/wiki/Slerp",
	.params = slerp_params, .n_params = BF_ARRAY_LEN(slerp_params),
	.base = BF_BASE_REQUIRED, .min_others = 1, .max_others = 1,
	.stats = slerp_stats, .free_stats = free_plain, .kernel = coef2_kernel, .fused = coef2_fused,
};

/* ---------------------------------------------------------------------------------------------
 * nuslerp (2.3): slerp of two models (or their task vectors against an optional base), over the
 * whole tensor, each row, or each column; t = w1 / (w0 + w1)
 */
enum { NU_WEIGHT, NU_FLATTEN, NU_ROWWISE };
static const struct bf_param_def nuslerp_params[] = {
	[NU_WEIGHT] = { .name = "weight", .type = BF_PT_NUM, .per_model = true, .required = true,
			.min = ANY_MIN, .max = ANY_MAX, .help = "relative weight of this model" },
	[NU_FLATTEN] = { .name = "nuslerp_flatten", .type = BF_PT_BOOL, .def = 1, .min = 0, .max = 1,
			 .help = "treat the whole tensor as one vector" },
	[NU_ROWWISE] = { .name = "nuslerp_row_wise", .type = BF_PT_BOOL, .def = 0, .min = 0, .max = 1,
			 .help = "interpolate each column (mergekit's dim 0) instead of each row" },
};

struct nu_stats {
	size_t n;                /* 1 (flatten) or row_len (per column) */
	struct coef2 c[];
};

static double nu_t(const struct bf_otensor *t)
{
	uint32_t o = t->has_base ? 1 : 0;
	double w0 = t->in[o].p[NU_WEIGHT], w1 = t->in[o + 1].p[NU_WEIGHT];
	return fabs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
}

static struct coef2 nu_coefs(double t, double aa, double bb, double ab)
{
	struct coef2 c;
	double na = fmax(sqrt(aa), 1e-7), nb = fmax(sqrt(bb), 1e-7);
	double cs = ab / (na * nb);
	cs = cs < -1 ? -1 : cs > 1 ? 1 : cs;
	double th = acos(cs), st = sin(th);
	if (fabs(st) < 1e-8) {
		c.c0 = (float)(1.0 - t);
		c.c1 = (float)t;
		c.div = 1.0f;
	} else {
		c.c0 = (float)sin((1.0 - t) * th);
		c.c1 = (float)sin(t * th);
		c.div = (float)st;
	}
	return c;
}

static int nu_check(const struct bf_otensor *t, struct bf_err *err)
{
	if (t->has_base)
		for (uint32_t i = 1; i < t->n_in; i++)
			if (t->in[i].model == t->in[0].model)
				return bf_errf(err, "nuslerp's base model can not be one of the two models to merge");
	return 0;
}

struct col_ctx {
	const struct bf_otensor *t;
	double *acc;             /* 3 per column: aa, bb, ab */
};

static int nu_col_block(void *ctx, const float *const *in, uint64_t e0, size_t n)
{
	struct col_ctx *c = ctx;
	const struct bf_otensor *t = c->t;
	uint64_t L = t->row_len;
	uint32_t o = t->has_base ? 1 : 0;
	for (size_t e = 0; e < n; e++) {
		uint64_t col = (e0 + e) % L;
		float a = in[o][e], b = in[o + 1][e];
		if (t->has_base) {
			a -= in[0][e];
			b -= in[0][e];
		}
		c->acc[3 * col] += (double)a * a;
		c->acc[3 * col + 1] += (double)b * b;
		c->acc[3 * col + 2] += (double)a * b;
	}
	return 0;
}

static int nu_stats(struct bf_stream *s, const struct bf_otensor *t, void **out)
{
	bool flatten = t->g[NU_FLATTEN] != 0, cols = t->g[NU_ROWWISE] != 0 && t->ndim >= 2;
	double tt = nu_t(t);
	if (!flatten && !cols) {
		*out = NULL; /* row mode: the kernel works row by row, no statistics */
		return 0;
	}
	size_t n = flatten ? 1 : (size_t)t->row_len;
	struct nu_stats *st = malloc(sizeof(*st) + n * sizeof(struct coef2));
	double *acc = calloc(3 * n, sizeof(double));
	if (!st || !acc) {
		free(st);
		free(acc);
		return -ENOMEM;
	}
	st->n = n;
	int r;
	if (flatten) {
		double g[4];
		r = gram(s, t, t->has_base, g, 2);
		acc[0] = g[0];
		acc[1] = g[3];
		acc[2] = g[1];
	} else {
		struct col_ctx c = { t, acc };
		r = bf_stream_run(s, t, nu_col_block, &c);
	}
	for (size_t i = 0; i < n; i++)
		st->c[i] = nu_coefs(tt, acc[3 * i], acc[3 * i + 1], acc[3 * i + 2]);
	free(acc);
	if (r) {
		free(st);
		return r;
	}
	*out = st;
	return 0;
}

static int nu_kernel(const struct bf_kargs *a)
{
	const struct bf_otensor *t = a->t;
	const struct nu_stats *st = a->stats;
	uint32_t o = t->has_base ? 1 : 0;
	const float *B = t->has_base ? a->in[0] : NULL, *x0 = a->in[o], *x1 = a->in[o + 1];
	double tt = nu_t(t);
	uint64_t L = t->row_len;
	for (size_t r0 = 0; r0 < a->n; r0 += L) {
		struct coef2 rc;
		if (!st) {
			double aa = 0, bb = 0, ab = 0;
			for (size_t e = r0; e < r0 + L; e++) {
				float va = B ? x0[e] - B[e] : x0[e], vb = B ? x1[e] - B[e] : x1[e];
				aa += (double)va * va;
				bb += (double)vb * vb;
				ab += (double)va * vb;
			}
			rc = nu_coefs(tt, aa, bb, ab);
		}
		for (size_t e = r0; e < r0 + L && e < a->n; e++) {
			const struct coef2 *c = !st ? &rc : st->n == 1 ? &st->c[0] : &st->c[(a->e0 + e) % L];
			float va = B ? x0[e] - B[e] : x0[e], vb = B ? x1[e] - B[e] : x1[e];
			float r = c->c0 * va + c->c1 * vb;
			if (c->div != 1.0f)
				r = r / c->div;
			a->out[e] = B ? B[e] + r : r;
		}
	}
	return 0;
}

const struct bf_method bf_m_nuslerp = {
	.name = "nuslerp", .pretty = "NuSLERP", .paper = NULL,
	.params = nuslerp_params, .n_params = BF_ARRAY_LEN(nuslerp_params),
	.base = BF_BASE_OPTIONAL, .min_others = 2, .max_others = 2, .row_local = true,
	.check = nu_check, .stats = nu_stats, .free_stats = free_plain, .kernel = nu_kernel,
};

/* ---------------------------------------------------------------------------------------------
 * multislerp (2.4): barycentric interpolation on the hypersphere, optionally of task vectors
 */
enum { MS_WEIGHT, MS_NORMW, MS_EPS };
static const struct bf_param_def multislerp_params[] = {
	[MS_WEIGHT] = { .name = "weight", .type = BF_PT_NUM, .per_model = true, .required = true,
			.min = ANY_MIN, .max = ANY_MAX, .help = "weight of this model" },
	[MS_NORMW] = { .name = "normalize_weights", .type = BF_PT_BOOL, .def = 1, .min = 0, .max = 1,
		       .help = "divide the weights by their sum" },
	[MS_EPS] = { .name = "eps", .type = BF_PT_NUM, .def = 1e-8, .min = 0, .max = 1, .max_open = true,
		     .help = "numerical guard" },
};

struct ms_stats {
	bool linear;             /* the weighted mean of the unit vectors vanished: weighted sum instead */
	uint32_t n;
	float w[BF_MAX_MODELS];  /* normalised weights */
	float inv_n[BF_MAX_MODELS]; /* 1 / (n_i + eps) */
	float inv_m;             /* 1 / ||M|| */
	float d[BF_MAX_MODELS];  /* U_i . M^ */
	float cos_tau, sinc_tau, scale;
};

struct ms_ctx {
	const struct bf_otensor *t;
	struct ms_stats *st;
	int pass;
	double acc[BF_MAX_MODELS + 2];
};

/* f32 per-element pieces shared by the statistics passes and the kernel */
static inline float ms_vec(const struct bf_otensor *t, const float *const *in, uint32_t i, size_t e)
{
	uint32_t o = t->has_base ? 1 : 0;
	return t->has_base ? in[o + i][e] - in[0][e] : in[o + i][e];
}

static int ms_block(void *ctx, const float *const *in, uint64_t e0, size_t n)
{
	struct ms_ctx *c = ctx;
	const struct bf_otensor *t = c->t;
	struct ms_stats *st = c->st;
	(void)e0;
	for (size_t e = 0; e < n; e++) {
		if (c->pass == 0) {
			for (uint32_t i = 0; i < st->n; i++) {
				float v = ms_vec(t, in, i, e);
				c->acc[i] += (double)v * v;
			}
			continue;
		}
		float u[BF_MAX_MODELS], m = 0.0f;
		for (uint32_t i = 0; i < st->n; i++) {
			u[i] = ms_vec(t, in, i, e) * st->inv_n[i];
			m += st->w[i] * u[i];
		}
		if (c->pass == 1) {
			c->acc[st->n] += (double)m * m;
			for (uint32_t i = 0; i < st->n; i++)
				c->acc[i] += (double)u[i] * m;
		} else {
			float mh = m * st->inv_m, tv = 0.0f;
			for (uint32_t i = 0; i < st->n; i++)
				tv += st->w[i] * (u[i] - st->d[i] * mh);
			c->acc[0] += (double)tv * tv;
		}
	}
	return 0;
}

static int ms_stats(struct bf_stream *s, const struct bf_otensor *t, void **out)
{
	struct ms_stats *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	uint32_t o = t->has_base ? 1 : 0;
	st->n = t->n_in - o;
	double wsum = 0, eps = t->g[MS_EPS];
	for (uint32_t i = 0; i < st->n; i++)
		wsum += t->in[o + i].p[MS_WEIGHT];
	for (uint32_t i = 0; i < st->n; i++) {
		double w = t->in[o + i].p[MS_WEIGHT];
		st->w[i] = (float)(t->g[MS_NORMW] != 0 ? w / wsum : w);
	}
	struct ms_ctx c = { .t = t, .st = st };
	int r = bf_stream_run(s, t, ms_block, &c);
	double norms[BF_MAX_MODELS], scale = 0;
	for (uint32_t i = 0; i < st->n && !r; i++) {
		norms[i] = (float)sqrt(c.acc[i]);
		st->inv_n[i] = (float)(1.0 / (norms[i] + eps));
		scale += (double)st->w[i] * norms[i];
	}
	st->scale = (float)scale;
	if (!r) {
		memset(c.acc, 0, sizeof(c.acc));
		c.pass = 1;
		r = bf_stream_run(s, t, ms_block, &c);
	}
	if (!r) {
		double mn = sqrt(c.acc[st->n]);
		if (mn < eps) {
			st->linear = true;
			if (st->n != 2)
				bf_warn("multislerp: tensor '%s': the weighted mean direction vanished; using the "
					"weighted sum (mergekit raises an error here)", t->name);
		} else {
			st->inv_m = (float)(1.0 / mn);
			for (uint32_t i = 0; i < st->n; i++)
				st->d[i] = (float)(c.acc[i] / mn);
			memset(c.acc, 0, sizeof(c.acc));
			c.pass = 2;
			r = bf_stream_run(s, t, ms_block, &c);
			double tau = sqrt(c.acc[0]) + eps;
			st->cos_tau = (float)cos(tau);
			st->sinc_tau = (float)(sin(tau) / tau);
		}
	}
	if (r) {
		free(st);
		return r;
	}
	*out = st;
	return 0;
}

static int ms_kernel(const struct bf_kargs *a)
{
	const struct bf_otensor *t = a->t;
	const struct ms_stats *st = a->stats;
	for (size_t e = 0; e < a->n; e++) {
		float r;
		if (st->n == 1) {
			r = ms_vec(t, a->in, 0, e);
		} else if (st->linear) {
			r = 0.0f;
			for (uint32_t i = 0; i < st->n; i++)
				r += st->w[i] * ms_vec(t, a->in, i, e);
		} else {
			float u[BF_MAX_MODELS], m = 0.0f;
			for (uint32_t i = 0; i < st->n; i++) {
				u[i] = ms_vec(t, a->in, i, e) * st->inv_n[i];
				m += st->w[i] * u[i];
			}
			float mh = m * st->inv_m, tv = 0.0f;
			for (uint32_t i = 0; i < st->n; i++)
				tv += st->w[i] * (u[i] - st->d[i] * mh);
			r = (st->cos_tau * mh + st->sinc_tau * tv) * st->scale;
		}
		a->out[e] = t->has_base ? r + a->in[0][e] : r;
	}
	return 0;
}

static int ms_check(const struct bf_otensor *t, struct bf_err *err)
{
	if (t->n_in - (t->has_base ? 1 : 0) > BF_MAX_MODELS)
		return bf_errf(err, "multislerp takes at most %d models", BF_MAX_MODELS);
	return 0;
}

const struct bf_method bf_m_multislerp = {
	.name = "multislerp", .pretty = "Multi-SLERP", .paper = NULL,
	.params = multislerp_params, .n_params = BF_ARRAY_LEN(multislerp_params),
	.base = BF_BASE_OPTIONAL, .min_others = 1, .max_others = BF_MAX_MODELS,
	.check = ms_check, .stats = ms_stats, .free_stats = free_plain, .kernel = ms_kernel,
};

/* ---------------------------------------------------------------------------------------------
 * karcher (2.5): the Riemannian (Karcher) mean of the directions, scaled by the mean norm.
 * u always stays a linear combination of the inputs, so the iteration runs on coefficients
 * against the Gram matrix of the inputs (one statistics pass), exactly and in double; the
 * kernel is then a weighted sum.
 */
enum { KA_MAXITER, KA_TOL };
static const struct bf_param_def karcher_params[] = {
	[KA_MAXITER] = { .name = "max_iter", .type = BF_PT_INT, .def = 10, .min = 1, .max = 100000,
			 .help = "maximum iterations" },
	[KA_TOL] = { .name = "tol", .type = BF_PT_NUM, .def = 1e-5, .min = 0, .max = 1, .max_open = true,
		     .help = "convergence tolerance" },
};

struct ka_stats {
	uint32_t n;
	float k[];               /* R = sum_j k_j x_j */
};

static double quad(const double *g, const double *c, uint32_t n)
{
	double s = 0;
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < n; j++)
			s += c[i] * g[i * n + j] * c[j];
	return s;
}

static int ka_stats(struct bf_stream *s, const struct bf_otensor *t, void **out)
{
	uint32_t n = t->n_in;
	double *g = calloc((size_t)n * n * 2, sizeof(double));
	struct ka_stats *st = calloc(1, sizeof(*st) + n * sizeof(float));
	if (!g || !st) {
		free(g);
		free(st);
		return -ENOMEM;
	}
	double *gu = g + (size_t)n * n;
	int r = gram(s, t, false, g, n);
	if (r) {
		free(g);
		free(st);
		return r;
	}
	st->n = n;
	double tol = t->g[KA_TOL];
	int max_iter = (int)t->g[KA_MAXITER];
	double nrm[BF_MAX_MODELS * 4 + 1], a[BF_MAX_MODELS * 4 + 1], c[BF_MAX_MODELS * 4 + 1],
		tc[BF_MAX_MODELS * 4 + 1];
	bool valid[BF_MAX_MODELS * 4 + 1];
	double asum = 0, scale = 0;
	uint32_t nvalid = 0;
	int first = -1;
	for (uint32_t i = 0; i < n; i++) {
		nrm[i] = (float)sqrt(g[i * n + i]);
		valid[i] = nrm[i] > tol;
		scale += nrm[i] / n;
		if (valid[i]) {
			asum += 1.0 / n;
			nvalid++;
			if (first < 0)
				first = (int)i;
		}
	}
	/* Gram matrix of the unit vectors U_i = x_i / n_i */
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < n; j++)
			gu[i * n + j] = valid[i] && valid[j] ? g[i * n + j] / (nrm[i] * nrm[j]) : 0.0;
	if (nvalid) {
		for (uint32_t i = 0; i < n; i++)
			a[i] = valid[i] ? (1.0 / n) / asum : 0.0;
		memcpy(c, a, n * sizeof(double));
		double un = sqrt(quad(gu, c, n));
		if (un < tol) {
			memset(c, 0, n * sizeof(double));
			c[first] = 1.0;
		} else {
			for (uint32_t i = 0; i < n; i++)
				c[i] /= un;
		}
		for (int it = 0; it < max_iter; it++) {
			memset(tc, 0, n * sizeof(double));
			for (uint32_t i = 0; i < n; i++) {
				if (!valid[i])
					continue;
				double d = 0;
				for (uint32_t j = 0; j < n; j++)
					d += c[j] * gu[j * n + i];
				d = d < -1 ? -1 : d > 1 ? 1 : d;
				double th = acos(d);
				if (th < tol)
					continue;
				double f = a[i] * th / sin(th);
				tc[i] += f;
				for (uint32_t j = 0; j < n; j++)
					tc[j] -= f * d * c[j];
			}
			double tn = sqrt(fmax(quad(gu, tc, n), 0.0));
			if (tn < tol)
				break;
			double ct = cos(tn), stn = sin(tn) / tn;
			for (uint32_t j = 0; j < n; j++)
				c[j] = ct * c[j] + stn * tc[j];
			double un2 = sqrt(fmax(quad(gu, c, n), 0.0));
			if (un2 > tol)
				for (uint32_t j = 0; j < n; j++)
					c[j] /= un2;
		}
		for (uint32_t j = 0; j < n; j++)
			st->k[j] = valid[j] ? (float)(scale * c[j] / nrm[j]) : 0.0f;
	}
	free(g);
	*out = st;
	return 0;
}

static int ka_kernel(const struct bf_kargs *a)
{
	const struct ka_stats *st = a->stats;
	for (size_t e = 0; e < a->n; e++) {
		float r = 0.0f;
		for (uint32_t j = 0; j < st->n; j++)
			r += st->k[j] * a->in[j][e];
		a->out[e] = r;
	}
	return 0;
}

const struct bf_method bf_m_karcher = {
	.name = "karcher", .pretty = "Karcher Mean", .paper = "https://en.wikipedia.org/wiki/Karcher_mean",
	.params = karcher_params, .n_params = BF_ARRAY_LEN(karcher_params),
	.base = BF_BASE_INPUT, .min_others = 1, .max_others = 4 * BF_MAX_MODELS,
	.stats = ka_stats, .free_stats = free_plain, .kernel = ka_kernel,
};

/* ---------------------------------------------------------------------------------------------
 * nearswap (2.11): take the other model's value where it is near the base's
 */
enum { NS_T };
static const struct bf_param_def nearswap_params[] = {
	[NS_T] = { .name = "t", .type = BF_PT_NUM, .required = true, .min = 0, .max = ANY_MAX,
		   .help = "similarity threshold: |a-b| at or below it takes the other model's value" },
};

static int ns_kernel(const struct bf_kargs *a)
{
	float t = (float)a->t->g[NS_T];
	const float *va = a->in[0], *vb = a->in[1];
	for (size_t e = 0; e < a->n; e++) {
		float d = fabsf(va[e] - vb[e]);
		float w = t / (d > 1e-6f ? d : 1e-6f);
		w = w < 0.0f ? 0.0f : w > 1.0f ? 1.0f : w;
		a->out[e] = w * vb[e] + (1.0f - w) * va[e];
	}
	return 0;
}

const struct bf_method bf_m_nearswap = {
	.name = "nearswap", .pretty = "NearSwap", .paper = NULL,
	.params = nearswap_params, .n_params = BF_ARRAY_LEN(nearswap_params),
	.base = BF_BASE_REQUIRED, .min_others = 1, .max_others = 1,
	.kernel = ns_kernel,
};
