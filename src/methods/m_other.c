/* m_other.c: sce, ram, ramplus_tl, model_stock, arcee_fusion (mergekit-spec.md 2.8-2.10, 2.12).
 * Task vectors T_i = x_i - B in f32; whole-tensor statistics in double, fixed order.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_log.h"
#include "bf_method.h"
#include "bf_plan.h"
#include "bf_select.h"

static void free_plain(void *p) { free(p); }

/* ---------------------------------------------------------------------------------------------
 * sce (2.8): select the top-k positions by variance across models, erase minority signs,
 * weight each model by its mean squared (kept) task vector
 */
enum { SCE_TOPK, SCE_INT8 };
static const struct bf_param_def sce_params[] = {
	[SCE_TOPK] = { .name = "select_topk", .type = BF_PT_NUM, .def = 1.0, .min = 0, .max = 1,
		       .help = "fraction of positions (by variance across models) kept" },
	[SCE_INT8] = { .name = "int8_mask", .type = BF_PT_BOOL, .def = 0, .min = 0, .max = 1,
		       .help = "accepted for compatibility (no effect on the result)" },
};

struct sce_stats {
	uint32_t n;
	bool select, zero;       /* select: a variance cut applies; zero: nothing is kept */
	struct bf_select sel;    /* descending |variance| */
	float q[BF_MAX_MODELS * 4];
};

static inline float sce_var(const float *const *in, uint32_t n, size_t e)
{
	float mean = 0.0f, v = 0.0f;
	for (uint32_t i = 0; i < n; i++)
		mean += in[i + 1][e] - in[0][e];
	mean = mean / (float)n;
	for (uint32_t i = 0; i < n; i++) {
		float d = (in[i + 1][e] - in[0][e]) - mean;
		v += d * d;
	}
	return v / (float)n;
}

struct sce_pass {
	struct sce_stats *st;
	int kind;                /* 0: count nonzero variances, 1: selection, 2: mean squares */
	uint64_t nz;
	double sq[BF_MAX_MODELS * 4];
};

static inline bool sce_keep(const struct sce_stats *st, const float *const *in, size_t e, uint64_t idx)
{
	if (st->zero)
		return false;
	if (!st->select)
		return true;
	return bf_select_below(&st->sel, bf_key_abs_desc(sce_var(in, st->n, e)), idx);
}

static int sce_block(void *ctx, const float *const *in, uint64_t e0, size_t n)
{
	struct sce_pass *ps = ctx;
	struct sce_stats *st = ps->st;
	if (ps->kind == 0) {
		for (size_t e = 0; e < n; e++)
			ps->nz += sce_var(in, st->n, e) != 0.0f;
	} else if (ps->kind == 1) {
		uint32_t *keys = bf_scratch(0, n * sizeof(uint32_t));
		if (!keys)
			return -ENOMEM;
		for (size_t e = 0; e < n; e++)
			keys[e] = bf_key_abs_desc(sce_var(in, st->n, e));
		bf_select_feed(&st->sel, keys, e0, n);
	} else {
		for (size_t e = 0; e < n; e++) {
			if (!sce_keep(st, in, e, e0 + e))
				continue;
			for (uint32_t i = 0; i < st->n; i++) {
				float d = in[i + 1][e] - in[0][e];
				ps->sq[i] += (double)d * d;
			}
		}
	}
	return 0;
}

static void sce_free(void *p)
{
	struct sce_stats *st = p;
	if (st)
		bf_select_free(&st->sel);
	free(st);
}

static int sce_stats(struct bf_stream *s, const struct bf_otensor *t, void **out)
{
	struct sce_stats *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->n = t->n_in - 1;
	double topk = t->g[SCE_TOPK];
	struct sce_pass ps = { .st = st };
	int r = 0;
	if (topk < 1.0) {
		if (topk <= 0) {
			st->zero = true;
		} else {
			r = bf_stream_run(s, t, sce_block, &ps);
			/* mergekit: int(nonzero_count * select_topk), a float32 product */
			uint64_t k = (uint64_t)((float)ps.nz * (float)topk);
			if (!r && k == 0)
				st->zero = true;
			else if (!r) {
				st->select = true;
				if (bf_select_init(&st->sel, k, t->numel))
					r = -ENOMEM;
				ps.kind = 1;
				while (!r && !bf_select_done(&st->sel)) {
					r = bf_stream_run(s, t, sce_block, &ps);
					bf_select_next_pass(&st->sel);
					if (bf_select_failed(&st->sel))
						r = -ENOMEM;
				}
			}
		}
	}
	if (!r) {
		ps.kind = 2;
		r = bf_stream_run(s, t, sce_block, &ps);
	}
	if (r) {
		sce_free(st);
		return r;
	}
	double Q = 0;
	float q[BF_MAX_MODELS * 4];
	for (uint32_t i = 0; i < st->n; i++) {
		q[i] = (float)(ps.sq[i] / (double)t->numel);
		Q += q[i];
	}
	for (uint32_t i = 0; i < st->n; i++)
		st->q[i] = fabs(Q) < 1e-6 ? 1.0f / (float)st->n : (float)(q[i] / Q);
	*out = st;
	return 0;
}

static int sce_kernel(const struct bf_kargs *a)
{
	const struct sce_stats *st = a->stats;
	const float *B = a->in[0];
	float T[BF_MAX_MODELS * 4];
	for (size_t e = 0; e < a->n; e++) {
		bool keep = sce_keep(st, a->in, e, a->e0 + e);
		float sum = 0.0f;
		for (uint32_t i = 0; i < st->n; i++) {
			T[i] = keep ? a->in[i + 1][e] - B[e] : 0.0f;
			sum += T[i];
		}
		float sgn = sum >= 0.0f ? 1.0f : -1.0f, num = 0.0f, den = 0.0f;
		for (uint32_t i = 0; i < st->n; i++) {
			float e_i = (float)((T[i] > 0.0f) - (T[i] < 0.0f)) == sgn ? 1.0f : 0.0f;
			num += T[i] * st->q[i] * e_i;
			den += st->q[i] * e_i;
		}
		a->out[e] = B[e] + num / (den > 1e-6f ? den : 1e-6f);
	}
	return 0;
}

static int many_check(const struct bf_otensor *t, struct bf_err *err)
{
	if (t->n_in - 1 > BF_MAX_MODELS * 4)
		return bf_errf(err, "%s takes at most %d models", t->method->name, BF_MAX_MODELS * 4);
	return 0;
}

const struct bf_method bf_m_sce = {
	.name = "sce", .pretty = "SCE", .paper = "https://arxiv.org/abs/2408.07990",
	.params = sce_params, .n_params = BF_ARRAY_LEN(sce_params),
	.base = BF_BASE_REQUIRED, .min_others = 1, .max_others = 4 * BF_MAX_MODELS,
	.check = many_check, .stats = sce_stats, .free_stats = sce_free, .kernel = sce_kernel,
};

/* ---------------------------------------------------------------------------------------------
 * ram / ramplus_tl (2.9): average where task vectors overlap, keep unique contributions
 */
enum { RAM_EPS };
static const struct bf_param_def ram_params[] = {
	[RAM_EPS] = { .name = "epsilon", .type = BF_PT_NUM, .def = 1e-5, .min = 0, .max = HUGE_VAL,
		      .help = "|task vector| above this counts as a contribution" },
};
enum { RPT_R, RPT_ALPHA, RPT_EPS };
static const struct bf_param_def ramplus_params[] = {
	[RPT_R] = { .name = "r", .type = BF_PT_NUM, .def = 0.1, .min = 0, .max = HUGE_VAL,
		    .help = "boost of unique contributions" },
	[RPT_ALPHA] = { .name = "alpha", .type = BF_PT_NUM, .def = 0.2, .min = 0, .max = HUGE_VAL,
			.help = "cap of the shared/unique ratio" },
	[RPT_EPS] = { .name = "epsilon", .type = BF_PT_NUM, .def = 1e-5, .min = 0, .max = HUGE_VAL,
		      .help = "|task vector| above this counts as a contribution" },
};

struct ram_stats {
	float lam[BF_MAX_MODELS * 4]; /* per-model boost of unique elements (1 for plain ram) */
};

static inline float ram_eps(const struct bf_otensor *t)
{
	return (float)t->g[strcmp(t->method->name, "ram") ? RPT_EPS : RAM_EPS];
}

static int ram_kernel(const struct bf_kargs *a)
{
	const struct bf_otensor *t = a->t;
	const struct ram_stats *st = a->stats;
	uint32_t n = t->n_in - 1;
	float eps = ram_eps(t);
	const float *B = a->in[0];
	for (size_t e = 0; e < a->n; e++) {
		float c = 0.0f;
		for (uint32_t i = 0; i < n; i++)
			c += fabsf(a->in[i + 1][e] - B[e]) > eps ? 1.0f : 0.0f;
		float uniq = c == 1.0f ? 1.0f : 0.0f, shared = c > 1.0f ? 1.0f : 0.0f;
		float div = c > 1.0f ? c : 1.0f, sum = 0.0f;
		for (uint32_t i = 0; i < n; i++) {
			float T = a->in[i + 1][e] - B[e];
			float act = fabsf(T) > eps ? 1.0f : 0.0f;
			float lam = st ? st->lam[i] : 1.0f;
			sum += T * act * uniq * lam + T * act * shared / div;
		}
		a->out[e] = B[e] + sum;
	}
	return 0;
}

const struct bf_method bf_m_ram = {
	.name = "ram", .pretty = "RAM", .paper = NULL,
	.params = ram_params, .n_params = BF_ARRAY_LEN(ram_params),
	.base = BF_BASE_REQUIRED, .min_others = 1, .max_others = 4 * BF_MAX_MODELS,
	.check = many_check, .kernel = ram_kernel,
};

struct rpt_ctx {
	const struct bf_otensor *t;
	uint64_t S[BF_MAX_MODELS * 4], U[BF_MAX_MODELS * 4];
};

static int rpt_block(void *ctx, const float *const *in, uint64_t e0, size_t n)
{
	struct rpt_ctx *c = ctx;
	uint32_t m = c->t->n_in - 1;
	float eps = ram_eps(c->t);
	(void)e0;
	for (size_t e = 0; e < n; e++) {
		uint32_t cnt = 0;
		for (uint32_t i = 0; i < m; i++)
			cnt += fabsf(in[i + 1][e] - in[0][e]) > eps;
		for (uint32_t i = 0; i < m; i++) {
			if (!(fabsf(in[i + 1][e] - in[0][e]) > eps))
				continue;
			if (cnt == 1)
				c->U[i]++;
			else if (cnt > 1)
				c->S[i]++;
		}
	}
	return 0;
}

static int rpt_stats(struct bf_stream *s, const struct bf_otensor *t, void **out)
{
	struct rpt_ctx *c = calloc(1, sizeof(*c));
	struct ram_stats *st = calloc(1, sizeof(*st));
	if (!c || !st) {
		free(c);
		free(st);
		return -ENOMEM;
	}
	c->t = t;
	int r = bf_stream_run(s, t, rpt_block, c);
	float eps = (float)t->g[RPT_EPS], rr = (float)t->g[RPT_R], alpha = (float)t->g[RPT_ALPHA];
	for (uint32_t i = 0; i < t->n_in - 1; i++) {
		float u = (float)c->U[i];
		float rho = (float)c->S[i] / (u > eps ? u : eps);
		rho = rho < 0.0f ? 0.0f : rho > alpha ? alpha : rho;
		st->lam[i] = 1.0f + rr * rho;
	}
	free(c);
	if (r) {
		free(st);
		return r;
	}
	*out = st;
	return 0;
}

const struct bf_method bf_m_ramplus_tl = {
	.name = "ramplus_tl", .pretty = "RAM+ (TL)", .paper = NULL,
	.params = ramplus_params, .n_params = BF_ARRAY_LEN(ramplus_params),
	.base = BF_BASE_REQUIRED, .min_others = 1, .max_others = 4 * BF_MAX_MODELS, .out_f32 = true,
	.check = many_check, .stats = rpt_stats, .free_stats = free_plain, .kernel = ram_kernel,
};

/* ---------------------------------------------------------------------------------------------
 * model_stock (2.10): move from the base towards the average by the angle between task vectors
 */
enum { MS_FILTERWISE };
static const struct bf_param_def model_stock_params[] = {
	[MS_FILTERWISE] = { .name = "filter_wise", .type = BF_PT_BOOL, .def = 0, .min = 0, .max = 1,
			    .help = "compute the interpolation per row instead of per tensor" },
};

struct mst_ctx {
	uint32_t n;
	double g[BF_MAX_MODELS * BF_MAX_MODELS];
	struct bf_block_sums sums; /* into g, per block (mst_stats) */
};

/* Adds the dot products of the task vectors over [e_begin, e_end) into g (n x n, upper). */
static void mst_accumulate(uint32_t n, double *g, const float *const *in, size_t e_begin, size_t e_end)
{
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = i; j < n; j++) {
			double acc = 0;
			for (size_t e = e_begin; e < e_end; e++)
				acc += (double)(in[i + 1][e] - in[0][e]) * (double)(in[j + 1][e] - in[0][e]);
			g[i * n + j] += acc;
		}
}

static int mst_block(void *ctx, const float *const *in, uint64_t e0, size_t n)
{
	struct mst_ctx *c = ctx;
	mst_accumulate(c->n, bf_block_sums_at(&c->sums, e0), in, 0, n);
	return 0;
}

static float mst_t(const struct mst_ctx *c)
{
	uint32_t n = c->n;
	double sum = 0;
	uint32_t pairs = 0;
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = i + 1; j < n; j++) {
			double den = sqrt(c->g[i * n + i]) * sqrt(c->g[j * n + j]);
			double cs = c->g[i * n + j] / (den > 1e-6 ? den : 1e-6);
			sum += cs < -1 ? -1 : cs > 1 ? 1 : cs;
			pairs++;
		}
	float cosv = (float)(sum / pairs);
	return ((float)n * cosv) / (1.0f + (float)(n - 1) * cosv);
}

static int mst_check(const struct bf_otensor *t, struct bf_err *err)
{
	if (t->n_in - 1 > BF_MAX_MODELS)
		return bf_errf(err, "model_stock takes at most %d models", BF_MAX_MODELS);
	return 0;
}

static int mst_stats(struct bf_stream *s, const struct bf_otensor *t, void **out)
{
	if (t->g[MS_FILTERWISE] != 0) {
		*out = NULL;
		return 0;
	}
	struct mst_ctx *c = calloc(1, sizeof(*c));
	float *tv = malloc(sizeof(float));
	if (!c || !tv) {
		free(c);
		free(tv);
		return -ENOMEM;
	}
	c->n = t->n_in - 1;
	bf_block_sums_init(&c->sums, s, t, c->g, (size_t)c->n * c->n);
	int r = bf_block_sums_run(s, t, &c->sums, mst_block, NULL, c);
	bf_block_sums_fold(&c->sums);
	*tv = mst_t(c);
	free(c);
	if (r) {
		free(tv);
		return r;
	}
	*out = tv;
	return 0;
}

static int mst_kernel(const struct bf_kargs *a)
{
	const struct bf_otensor *t = a->t;
	uint32_t n = t->n_in - 1;
	uint64_t L = a->stats ? a->n : t->row_len;
	for (size_t r0 = 0; r0 < a->n; r0 += L) {
		float tt;
		if (a->stats) {
			tt = *(const float *)a->stats;
		} else {
			struct mst_ctx c = { .n = n };
			mst_accumulate(n, c.g, a->in, r0, r0 + L);
			tt = mst_t(&c);
		}
		for (size_t e = r0; e < r0 + L; e++) {
			float sum = 0.0f;
			for (uint32_t i = 0; i < n; i++)
				sum += a->in[i + 1][e];
			float avg = sum / (float)n;
			a->out[e] = tt * avg + (1.0f - tt) * a->in[0][e];
		}
	}
	return 0;
}

const struct bf_method bf_m_model_stock = {
	.name = "model_stock", .pretty = "Model Stock", .paper = "https://arxiv.org/abs/2403.19522",
	.params = model_stock_params, .n_params = BF_ARRAY_LEN(model_stock_params),
	.base = BF_BASE_REQUIRED, .min_others = 2, .max_others = BF_MAX_MODELS, .row_local = true,
	.check = mst_check, .stats = mst_stats, .free_stats = free_plain, .kernel = mst_kernel,
};

/* ---------------------------------------------------------------------------------------------
 * arcee_fusion (2.12): keep the other model's change where its importance |b-a| * KL(row)
 * exceeds median + 1.5 IQR of all importances (exact quantiles: blendfs never samples)
 */
struct af_stats {
	float thr;
};

/* importance of each element of rows [0, n) (n a multiple of L) into imp */
static void af_importance(const float *A, const float *Bv, size_t n, uint64_t L, float *imp)
{
	for (size_t r0 = 0; r0 < n; r0 += L) {
		double ma = -HUGE_VAL, mb = -HUGE_VAL, sa = 0, sb = 0;
		for (size_t e = r0; e < r0 + L; e++) {
			ma = fmax(ma, A[e]);
			mb = fmax(mb, Bv[e]);
		}
		for (size_t e = r0; e < r0 + L; e++) {
			sa += exp(A[e] - ma);
			sb += exp(Bv[e] - mb);
		}
		double kl = 0;
		for (size_t e = r0; e < r0 + L; e++) {
			double p = exp(Bv[e] - mb) / sb + 1e-8, q = exp(A[e] - ma) / sa + 1e-8;
			kl += p * log(p / q);
		}
		float klf = (float)kl;
		for (size_t e = r0; e < r0 + L; e++)
			imp[e] = fabsf(Bv[e] - A[e]) * klf;
	}
}

struct af_pass {
	const struct bf_otensor *t;
	struct bf_select sel[3];
};

static int af_block(void *ctx, const float *const *in, uint64_t e0, size_t n)
{
	struct af_pass *ps = ctx;
	float *imp = bf_scratch(0, n * sizeof(float));
	uint32_t *keys = bf_scratch(1, n * sizeof(uint32_t));
	if (!imp || !keys)
		return -ENOMEM;
	af_importance(in[0], in[1], n, ps->t->row_len, imp);
	for (size_t e = 0; e < n; e++)
		keys[e] = bf_key_float_asc(imp[e]);
	for (int q = 0; q < 3; q++)
		bf_select_feed(&ps->sel[q], keys, e0, n);
	return 0;
}

static float key_to_float(uint64_t k)
{
	uint32_t u = (uint32_t)k;
	u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static int af_stats(struct bf_stream *s, const struct bf_otensor *t, void **out)
{
	struct af_pass *ps = calloc(1, sizeof(*ps));
	struct af_stats *st = malloc(sizeof(*st));
	int r = 0;
	if (!ps || !st) {
		free(ps);
		free(st);
		return -ENOMEM;
	}
	ps->t = t;
	static const double qs[3] = { 0.25, 0.5, 0.75 };
	for (int q = 0; q < 3 && !r; q++) {
		if (bf_select_init(&ps->sel[q], (uint64_t)floor(qs[q] * (double)(t->numel - 1)), t->numel))
			r = -ENOMEM;
		ps->sel[q].value_only = true; /* quantile values: the tie-break index is not needed */
	}
	while (!r && !(bf_select_done(&ps->sel[0]) && bf_select_done(&ps->sel[1]) && bf_select_done(&ps->sel[2]))) {
		r = bf_stream_run(s, t, af_block, ps);
		for (int q = 0; q < 3; q++) {
			bf_select_next_pass(&ps->sel[q]);
			if (bf_select_failed(&ps->sel[q]))
				r = -ENOMEM;
		}
	}
	if (!r) {
		float q1 = key_to_float(ps->sel[0].key), med = key_to_float(ps->sel[1].key),
		      q3 = key_to_float(ps->sel[2].key);
		st->thr = med + 1.5f * (q3 - q1);
	}
	for (int q = 0; q < 3; q++)
		bf_select_free(&ps->sel[q]);
	free(ps);
	if (r) {
		free(st);
		return r;
	}
	*out = st;
	return 0;
}

static int af_kernel(const struct bf_kargs *a)
{
	const struct af_stats *st = a->stats;
	float *imp = bf_scratch(0, a->n * sizeof(float));
	if (!imp)
		return -ENOMEM;
	af_importance(a->in[0], a->in[1], a->n, a->t->row_len, imp);
	for (size_t e = 0; e < a->n; e++) {
		float mask = imp[e] >= st->thr ? 1.0f : 0.0f;
		a->out[e] = a->in[0][e] + (a->in[1][e] - a->in[0][e]) * mask;
	}
	return 0;
}

const struct bf_method bf_m_arcee_fusion = {
	.name = "arcee_fusion", .pretty = "Arcee Fusion", .paper = "https://arcee.ai",
	.params = NULL, .n_params = 0,
	.base = BF_BASE_REQUIRED, .min_others = 1, .max_others = 1, .row_local = true, .out_f32 = true,
	.stats = af_stats, .free_stats = free_plain, .kernel = af_kernel,
};
