/* m_gta.c: the generalized task arithmetic family (mergekit-spec.md 2.6, 2.7):
 * task_arithmetic, ties, dare_linear, dare_ties, della, della_linear, breadcrumbs,
 * breadcrumbs_ties.
 *
 * For every element, with base B and task vectors d_i = x_i - B (f32):
 *   d_i' = d_i * m_i * s_i           m_i: the sparsification mask, s_i: the L1 rescale factor
 *   D_i  = d_i' * w_i
 *   consensus (sum | count): majority sign s of (sum_i D_i | sum_i sign D_i), >= 0 -> +1;
 *       keep_i = sign(D_i) == s (zeros are never kept); Delta = sum_i D_i keep_i,
 *       den = sum_i w_i keep_i (1 where 0)
 *   no consensus: Delta = sum_i D_i, den = sum_i w_i (1 where |den| < 1e-8)
 *   normalize: Delta /= den;  lambda != 1: Delta *= lambda;  R = B + Delta
 * Masks, decided once per tensor by the statistics pass:
 *   magnitude (ties):          top k = floor(density n) of |d_i|, stable (lower index first)
 *   magnitude_outliers:        ascending ranks [n_bot, n - n_top) (n_top == 0 keeps nothing:
 *                              mergekit's negative-slice quirk, kept for compatibility)
 *   random (dare):             keep with probability density (counter-based RNG, see bf_rng.h)
 *   della_magprune:            keep with probability (density - eps) + 2 eps rank/(len-1) by
 *                              ascending |d_i| rank within its row (bf_select_della_row)
 * Rank selections run as exact radix selects (bf_select.h); the L1 rescale sums are one more
 * pass with the masks applied. After that every chunk is computed independently.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_kern.h"
#include "bf_log.h"
#include "bf_method.h"
#include "bf_plan.h"
#include "bf_rng.h"
#include "bf_select.h"

enum sparsify { SP_NONE, SP_MAGNITUDE, SP_RANDOM, SP_OUTLIERS, SP_DELLA };

struct gta_cfg {
	bool consensus;
	enum sparsify sp;
};

static const char *const consensus_choices[] = { "sum", "count", NULL };

#define P_WEIGHT { .name = "weight", .type = BF_PT_NUM, .per_model = true, .required = true, \
	.min = -HUGE_VAL, .max = HUGE_VAL, .help = "weight of this model's task vector" }
#define P_DENSITY { .name = "density", .type = BF_PT_NUM, .per_model = true, .def = 1.0, \
	.min = 0, .max = 1, .min_open = true, .help = "fraction of the task vector kept" }
#define P_GAMMA { .name = "gamma", .type = BF_PT_NUM, .per_model = true, .def = 0.01, \
	.min = 0, .max = 1, .help = "fraction of the largest magnitudes removed as outliers" }
#define P_EPSILON { .name = "epsilon", .type = BF_PT_NUM, .per_model = true, .def = 0.15, \
	.min = 0, .max = 1, .max_open = true, .help = "spread of the keep probabilities around density" }
#define P_NORMALIZE(d) { .name = "normalize", .type = BF_PT_BOOL, .def = d, .min = 0, .max = 1, \
	.help = "divide by the sum of the (kept) weights" }
#define P_RESCALE(d) { .name = "rescale", .type = BF_PT_BOOL, .def = d, .min = 0, .max = 1, \
	.help = "rescale each pruned task vector to its original L1 norm" }
#define P_LAMBDA { .name = "lambda", .type = BF_PT_NUM, .def = 1.0, .min = -HUGE_VAL, .max = HUGE_VAL, \
	.help = "scale of the merged task vector" }
#define P_INT8 { .name = "int8_mask", .type = BF_PT_BOOL, .def = 0, .min = 0, .max = 1, \
	.help = "accepted for compatibility (no effect on the result)" }
#define P_CONSENSUS { .name = "consensus_method", .type = BF_PT_ENUM, .def = 0, .min = 0, .max = 1, \
	.choices = consensus_choices, .help = "sign election: sum (mergekit's) or count (blendfs extension)" }

static const struct bf_param_def ta_params[] = { P_WEIGHT, P_DENSITY, P_NORMALIZE(0), P_RESCALE(0), P_LAMBDA, P_INT8 };
static const struct bf_param_def ties_params[] = { P_WEIGHT, P_DENSITY, P_NORMALIZE(1), P_RESCALE(0), P_LAMBDA, P_INT8, P_CONSENSUS };
static const struct bf_param_def dare_linear_params[] = { P_WEIGHT, P_DENSITY, P_NORMALIZE(0), P_RESCALE(1), P_LAMBDA, P_INT8 };
static const struct bf_param_def dare_ties_params[] = { P_WEIGHT, P_DENSITY, P_NORMALIZE(0), P_RESCALE(1), P_LAMBDA, P_INT8, P_CONSENSUS };
static const struct bf_param_def della_params[] = { P_WEIGHT, P_DENSITY, P_EPSILON, P_NORMALIZE(1), P_RESCALE(1), P_LAMBDA, P_INT8, P_CONSENSUS };
static const struct bf_param_def della_linear_params[] = { P_WEIGHT, P_DENSITY, P_EPSILON, P_NORMALIZE(0), P_RESCALE(1), P_LAMBDA, P_INT8 };
static const struct bf_param_def bc_params[] = { P_WEIGHT, P_DENSITY, P_GAMMA, P_NORMALIZE(0), P_RESCALE(0), P_LAMBDA, P_INT8 };
static const struct bf_param_def bc_ties_params[] = { P_WEIGHT, P_DENSITY, P_GAMMA, P_NORMALIZE(0), P_RESCALE(0), P_LAMBDA, P_INT8, P_CONSENSUS };

/* Parameter positions differ per variant; resolve them by name once per tensor. */
struct gta_idx {
	int weight, density, gamma, epsilon, normalize, rescale, lambda, consensus;
};

static struct gta_idx gta_index(const struct bf_method *m)
{
	return (struct gta_idx){ bf_method_param(m, "weight"), bf_method_param(m, "density"),
				 bf_method_param(m, "gamma"), bf_method_param(m, "epsilon"),
				 bf_method_param(m, "normalize"), bf_method_param(m, "rescale"),
				 bf_method_param(m, "lambda"), bf_method_param(m, "consensus_method") };
}

struct gta_model {
	bool sparse;             /* a mask applies (density < 1) */
	bool none;               /* keep nothing (breadcrumbs' n_top == 0) */
	struct bf_select lo, hi; /* magnitude: hi = top-k cut (descending keys); outliers: [lo, hi) */
	float density, eps;
	struct bf_rng rng;
	float scale;             /* L1 rescale factor (1 if none) */
	float w;
};

/* The random masks of DARE and DELLA, drawn once more in the kernel after the rescale pass drew
 * them for the L1 sums, cost as much as that whole pass (Philox, or DELLA's row ranks). The
 * rescale pass therefore keeps them as bits when a process-wide budget allows, and the kernel
 * reads them while they last. They are a pure cache: the kernel draws the same mask itself when
 * the bits are gone, so freeing them early only costs time. A tensor too large for what is left
 * of the budget keeps them over a prefix of itself. They are freed once the kernel has consumed
 * as many elements as they cover (a sequential read consumes each once), or with the
 * statistics. The budget is BF_MASK_BITS_MIN, plus what the exec layer gives them out of the
 * chunk cache's (bf_method_set_mask_budget). */
static _Atomic uint64_t mask_bits_bytes, mask_bits_budget = BF_MASK_BITS_MIN;
static _Atomic uint64_t mask_bits_kept, mask_bits_partial, mask_bits_refused;

void bf_method_set_mask_budget(uint64_t bytes)
{
	atomic_store(&mask_bits_budget, bytes);
}

void bf_method_mask_stats(struct bf_mask_stats *out)
{
	out->budget = atomic_load(&mask_bits_budget);
	out->used = atomic_load(&mask_bits_bytes);
	out->kept = atomic_load(&mask_bits_kept);
	out->partial = atomic_load(&mask_bits_partial);
	out->refused = atomic_load(&mask_bits_refused);
}

struct gta_bits {
	pthread_mutex_t lock;
	uint64_t *words;         /* model i's bit e at words[i * per + e / 64], bit e % 64 */
	uint64_t per, bytes;     /* words per model; bytes reserved from the budget */
	uint64_t cap;            /* elements [0, cap) have bits (per * 64, or the whole tensor) */
	uint64_t consumed;       /* elements the kernel has computed with them */
	unsigned users;          /* kernels reading them now */
};

struct gta_stats {
	const struct gta_cfg *cfg;
	struct gta_idx ix;
	uint32_t n;              /* task vectors */
	bool normalize, count, rescale;
	float lambda;
	uint64_t row_len, numel;
	struct gta_bits *bits;   /* mask bits (NULL: none kept); mutable cache behind const stats */
	struct gta_model m[];
};

static void bits_free(struct gta_bits *b)
{
	if (!b)
		return;
	free(b->words);
	atomic_fetch_sub(&mask_bits_bytes, b->bytes);
	b->words = NULL;
	b->bytes = 0;
}

/* Room for every model's mask bits over the first elements of the tensor, as many as the budget
 * has room for (all of them, or a prefix: a sequential reader then draws the masks again only
 * for the rest), or NULL (no room at all, or out of memory). */
static struct gta_bits *bits_new(uint32_t n, uint64_t numel)
{
	uint64_t per, bytes, cur = atomic_load(&mask_bits_bytes);
	do {
		uint64_t budget = atomic_load(&mask_bits_budget);
		uint64_t room = budget > cur ? (budget - cur) / (n * sizeof(uint64_t)) : 0;
		per = (numel + 63) / 64;
		if (per > room)
			per = room;
		if (!per)
			return NULL;
		bytes = per * n * sizeof(uint64_t);
	} while (!atomic_compare_exchange_weak(&mask_bits_bytes, &cur, cur + bytes));
	struct gta_bits *b = calloc(1, sizeof(*b));
	uint64_t *w = b ? calloc(per * n, sizeof(uint64_t)) : NULL;
	if (!w) {
		free(b);
		atomic_fetch_sub(&mask_bits_bytes, bytes);
		return NULL;
	}
	pthread_mutex_init(&b->lock, NULL);
	b->words = w;
	b->per = per;
	b->bytes = bytes;
	b->cap = per * 64 < numel ? per * 64 : numel;
	return b;
}

/* The words to read for a kernel call over [e0, e0 + n), or NULL (draw the masks); pair a
 * non-NULL result with bits_release. A call that runs past the bits draws its whole block, and
 * counts the part it could have read as consumed, so that a sequential read frees them. */
static const uint64_t *bits_acquire(struct gta_bits *b, uint64_t e0, size_t n)
{
	if (!b || e0 >= b->cap)
		return NULL;
	pthread_mutex_lock(&b->lock);
	const uint64_t *w = b->words;
	if (w && e0 + n <= b->cap) {
		b->users++;
	} else if (w) {
		b->consumed += b->cap - e0;
		if (b->consumed >= b->cap && !b->users)
			bits_free(b);
		w = NULL;
	}
	pthread_mutex_unlock(&b->lock);
	return w;
}

static void bits_release(struct gta_bits *b, size_t n)
{
	pthread_mutex_lock(&b->lock);
	b->users--;
	b->consumed += n;
	if (b->consumed >= b->cap && !b->users)
		bits_free(b);
	pthread_mutex_unlock(&b->lock);
}

/* ---------------------------------------------------------------------------------------------
 * Masks
 */

/* The keep probability of rank r in a row of L: (density - eps) + 2 eps * r / (L - 1), the same
 * for every row, so computed once per block of rows. */
static void della_table(size_t L, float density, float eps, float *ptab)
{
	float lo = density - eps, span = 2.0f * eps;
	for (size_t r = 0; r < L; r++) {
		float rn = L > 1 ? (float)r / (float)(L - 1) : 0.0f;
		ptab[r] = lo + span * rn;
	}
}

/* Mask (0/1) of task vector i over elements [e0, e0+n) given its values d[0..n).
 * For DELLA n is a whole number of rows. Returns 0 or -ENOMEM. */
static int gta_mask(const struct gta_stats *st, uint32_t i, const float *d, uint64_t e0, size_t n, float *mask)
{
	const struct gta_model *m = &st->m[i];
	if (m->none) {
		memset(mask, 0, n * sizeof(float));
		return 0;
	}
	if (!m->sparse) {
		for (size_t e = 0; e < n; e++)
			mask[e] = 1.0f;
		return 0;
	}
	switch (st->cfg->sp) {
	case SP_MAGNITUDE: {
		/* keep the top k: (key, index) below the selected pair */
		if (m->hi.thr_key >> 32) {
			for (size_t e = 0; e < n; e++)
				mask[e] = 1.0f;
			break;
		}
		bf_kern->topk_mask(mask, d, (uint32_t)m->hi.thr_key, m->hi.thr_idx, e0, n);
		break;
	}
	case SP_OUTLIERS:
		for (size_t e = 0; e < n; e++) {
			uint32_t k = bf_key_abs_asc(d[e]);
			mask[e] = !bf_select_below(&m->lo, k, e0 + e) && bf_select_below(&m->hi, k, e0 + e) ? 1.0f : 0.0f;
		}
		break;
	case SP_RANDOM:
		bf_kern->philox_mask(m->rng.key, m->rng.name_lo, m->rng.name_hi, e0, n, m->density, mask);
		break;
	case SP_DELLA: {
		uint64_t L = st->row_len;
		float *u = bf_scratch(2, n * sizeof(float));
		float *ptab = bf_scratch(3, L * sizeof(float) + bf_select_della_scratch(L));
		if (!u || !ptab)
			return -ENOMEM;
		della_table(L, m->density, m->eps, ptab);
		bf_rng_uniform_block(&m->rng, e0, n, u);
		for (size_t r = 0; r < n; r += L)
			bf_select_della_row(d + r, L, u + r, ptab, mask + r, ptab + L);
		break;
	}
	case SP_NONE:
		break;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Statistics
 */

/* mask_pack for blocks that run at the same time: the words a block only partly covers (its
 * first and last) are shared with its neighbours, so their bits are ORed in atomically; the
 * words in between are the block's alone. */
static void bits_pack_shared(uint64_t *w, uint64_t e0, const float *mask, size_t n)
{
	size_t head = (size_t)((64 - (e0 & 63)) & 63);
	if (head > n)
		head = n;
	size_t mid = (n - head) / 64 * 64;
	for (int part = 0; part < 2; part++) {
		size_t a = part ? head + mid : 0, b = part ? n : head;
		if (a == b)
			continue;
		uint64_t x = 0;
		for (size_t j = a; j < b; j++)
			x |= (uint64_t)(mask[j] != 0.0f) << ((e0 + j) & 63);
		__atomic_fetch_or(&w[(e0 + a) >> 6], x, __ATOMIC_RELAXED);
	}
	if (mid)
		bf_kern->mask_pack(w, e0 + head, mask + head, mid);
}

struct gta_pass {
	struct gta_stats *st;
	int kind;                /* 0: selection passes, 1: L1 sums */
	/* the L1 pass: model i's sums of |d| at l1[i], of |d * mask| at l1[n + i], per block while
	 * blocks run on several threads (bf_block_sums) */
	double l1[2 * BF_MAX_MODELS * 4];
	struct bf_block_sums sums;
	uint64_t blk;            /* selection pass: elements per block */
	bool par;                /* selection pass: blocks after the first fed from several threads */
};

/* A model whose selections still want keys in this pass. */
static bool selecting(const struct gta_model *m)
{
	return m->sparse && !m->none && !(bf_select_idle(&m->lo) && bf_select_idle(&m->hi));
}

/* Key order: |d| descending for magnitude (top-k), ascending for outlier windows. */
static uint32_t key_flip(const struct gta_stats *st)
{
	return st->cfg->sp == SP_MAGNITUDE ? ~0u : 0u;
}

/* One block's keys to a model's selections: in order, or (ps->par, past the first block) into
 * a place of their own in each selection's buffer, from any thread. */
static int select_feed(const struct gta_pass *ps, struct gta_model *m, const uint32_t *keys, uint64_t e0, size_t n)
{
	if (!ps->par || e0 == 0) {
		bf_select_feed(&m->lo, keys, e0, n);
		bf_select_feed(&m->hi, keys, e0, n);
		return 0;
	}
	uint32_t *tk = bf_scratch(2, 2 * (n + BF_SCAN_SLACK) * sizeof(uint32_t));
	if (!tk)
		return -ENOMEM;
	struct bf_select *sel[2] = { &m->lo, &m->hi };
	for (int j = 0; j < 2; j++)
		if (bf_select_windowing(sel[j]))
			bf_select_feed_par(sel[j], keys, e0, n, tk, tk + n + BF_SCAN_SLACK);
	return 0;
}

/* After the first block of a selection pass: when every selection still open is in its window
 * pass (the usual case: the first block's guess was taken), the other blocks only count and
 * collect, and may be fed from several threads (bf_stream_run_raw_split). */
static bool gta_split(void *ctx)
{
	struct gta_pass *ps = ctx;
	struct gta_stats *st = ps->st;
	for (uint32_t i = 0; i < st->n; i++) {
		struct gta_model *m = &st->m[i];
		if (!selecting(m))
			continue;
		if ((!bf_select_idle(&m->lo) && !bf_select_windowing(&m->lo)) ||
		    (!bf_select_idle(&m->hi) && !bf_select_windowing(&m->hi)))
			return false;
	}
	bool ok = true;
	for (uint32_t i = 0; i < st->n && ok; i++) {
		struct bf_select *sel[2] = { &st->m[i].lo, &st->m[i].hi };
		for (int j = 0; j < 2 && ok; j++)
			ok = !bf_select_windowing(sel[j]) || !bf_select_par_begin(sel[j], ps->blk);
	}
	if (!ok) /* no memory: the pass goes on in order */
		for (uint32_t i = 0; i < st->n; i++) {
			bf_select_par_cancel(&st->m[i].lo);
			bf_select_par_cancel(&st->m[i].hi);
		}
	ps->par = ok;
	return ok;
}

/* One model's share of an L1 pass block: its mask from the differences d, kept as bits when
 * they fit, and the partial sums of the block (blocks do not depend on chunk size or threads). */
static int gta_sums_model(struct gta_pass *ps, uint32_t i, const float *d, uint64_t e0, size_t n, float *mask)
{
	struct gta_stats *st = ps->st;
	int r = gta_mask(st, i, d, e0, n, mask);
	if (r)
		return r;
	/* blocks may run at once (bf_block_sums_run): shared words atomically, sums per block */
	if (st->bits && e0 < st->bits->cap)
		bits_pack_shared(st->bits->words + (uint64_t)i * st->bits->per, e0, mask,
				 (size_t)(st->bits->cap - e0 < n ? st->bits->cap - e0 : n));
	double *sums = bf_block_sums_at(&ps->sums, e0);
	bf_kern->l1_pair(d, mask, n, &sums[i], &sums[st->n + i]);
	return 0;
}

static int gta_block(void *ctx, const float *const *in, uint64_t e0, size_t n)
{
	struct gta_pass *ps = ctx;
	struct gta_stats *st = ps->st;
	float *d = bf_scratch(0, n * sizeof(float));
	uint32_t *keys = bf_scratch(1, n * sizeof(uint32_t));
	if (!d || !keys)
		return -ENOMEM;
	bool busy = false;
	for (uint32_t i = 0; i < st->n; i++) {
		struct gta_model *m = &st->m[i];
		if (ps->kind == 0) {
			if (!selecting(m))
				continue;
			busy = true;
			bf_kern->abs_keys(keys, in[i + 1], in[0], key_flip(st), n);
			int r = select_feed(ps, m, keys, e0, n);
			if (r)
				return r;
		} else {
			busy = true;
			bf_kern->sub(d, in[i + 1], in[0], n);
			int r = gta_sums_model(ps, i, d, e0, n, (float *)keys);
			if (r)
				return r;
		}
	}
	/* every selection of this pass is settled (tie passes end early) */
	return busy || ps->par ? 0 : BF_STREAM_STOP;
}

/* The L1 pass (kind 1) over bf16 inputs: the differences straight from the raw bytes. */
static int gta_sums_bf16(void *ctx, const void *const *raw, uint64_t e0, size_t n)
{
	struct gta_pass *ps = ctx;
	float *d = bf_scratch(0, n * sizeof(float));
	float *mask = bf_scratch(1, n * sizeof(float));
	if (!d || !mask)
		return -ENOMEM;
	for (uint32_t i = 0; i < ps->st->n; i++) {
		bf_kern->sub_bf16(d, raw[i + 1], raw[0], n);
		int r = gta_sums_model(ps, i, d, e0, n, mask);
		if (r)
			return r;
	}
	return 0;
}

/* A selection pass (kind 0) over bf16 inputs: keys straight from the raw bytes. */
static int gta_select_bf16(void *ctx, const void *const *raw, uint64_t e0, size_t n)
{
	struct gta_pass *ps = ctx;
	struct gta_stats *st = ps->st;
	uint32_t *keys = bf_scratch(1, n * sizeof(uint32_t));
	if (!keys)
		return -ENOMEM;
	bool busy = false;
	for (uint32_t i = 0; i < st->n; i++) {
		struct gta_model *m = &st->m[i];
		if (!selecting(m))
			continue;
		busy = true;
		bf_kern->abs_keys_bf16(keys, raw[i + 1], raw[0], key_flip(st), n);
		int r = select_feed(ps, m, keys, e0, n);
		if (r)
			return r;
	}
	return busy || ps->par ? 0 : BF_STREAM_STOP;
}

static void gta_free(void *p)
{
	struct gta_stats *st = p;
	if (!st)
		return;
	for (uint32_t i = 0; i < st->n; i++) {
		bf_select_free(&st->m[i].lo);
		bf_select_free(&st->m[i].hi);
	}
	if (st->bits) {
		bits_free(st->bits);
		pthread_mutex_destroy(&st->bits->lock);
		free(st->bits);
	}
	free(st);
}

static int gta_stats(struct bf_stream *s, const struct bf_otensor *t, void **out)
{
	const struct bf_method *me = t->method;
	uint32_t n = t->n_in - 1;
	struct gta_stats *st = calloc(1, sizeof(*st) + n * sizeof(struct gta_model));
	if (!st)
		return -ENOMEM;
	st->cfg = me->data;
	st->ix = gta_index(me);
	st->n = n;
	st->row_len = t->row_len;
	st->numel = t->numel;
	st->normalize = t->g[st->ix.normalize] != 0;
	st->rescale = t->g[st->ix.rescale] != 0;
	st->lambda = (float)t->g[st->ix.lambda];
	st->count = st->ix.consensus >= 0 && t->g[st->ix.consensus] == 1;
	uint64_t N = t->numel;
	bool need_select = false, need_sums = false;
	int r = 0;
	for (uint32_t i = 0; i < n && !r; i++) {
		struct gta_model *m = &st->m[i];
		const struct bf_input *in = &t->in[i + 1];
		double density = in->p[st->ix.density];
		m->w = (float)in->p[st->ix.weight];
		m->density = (float)density;
		m->eps = st->ix.epsilon >= 0 ? (float)in->p[st->ix.epsilon] : 0.0f;
		m->scale = 1.0f;
		m->sparse = st->cfg->sp != SP_NONE && density < 1.0;
		/* both selections start "done, everything below" unless set up below */
		bf_select_init(&m->lo, 0, 0);
		bf_select_init(&m->hi, 0, 0);
		if (!m->sparse)
			continue;
		char id[32];
		snprintf(id, sizeof(id), "input:%u", i + 1);
		bf_rng_init(&m->rng, bf_stream_seed(s), id, t->name);
		if (st->cfg->sp == SP_MAGNITUDE) {
			uint64_t k = (uint64_t)floor(density * (double)N);
			r = bf_select_init(&m->hi, k, N);
			need_select = true;
		} else if (st->cfg->sp == SP_OUTLIERS) {
			double gamma = in->p[st->ix.gamma];
			int64_t target = (int64_t)floor(density * (double)N);
			int64_t n_top = (int64_t)floor(gamma * (double)N);
			int64_t n_bot = (int64_t)N - target - n_top;
			if (n_bot < 0) {
				n_top += n_bot;
				n_bot = 0;
			}
			if (n_top <= 0) {
				m->none = true; /* mergekit's [n_bot:-0] slice is empty */
				continue;
			}
			r = bf_select_init(&m->lo, (uint64_t)n_bot, N);
			if (!r)
				r = bf_select_init(&m->hi, N - (uint64_t)n_top, N);
			need_select = true;
		}
		if (st->rescale)
			need_sums = true;
	}
	if (r) {
		gta_free(st);
		return -ENOMEM;
	}
	struct gta_pass ps = { .st = st, .kind = 0, .blk = bf_stream_block(t) };
	while (need_select && !r) {
		bool all_done = true;
		for (uint32_t i = 0; i < n; i++)
			all_done &= bf_select_done(&st->m[i].lo) && bf_select_done(&st->m[i].hi);
		if (all_done)
			break;
		ps.par = false;
		r = bf_all_bf16(t) ? bf_stream_run_raw_split(s, t, gta_select_bf16, gta_split, &ps) :
				     bf_stream_run_split(s, t, gta_block, gta_split, &ps);
		for (uint32_t i = 0; i < n; i++) {
			bf_select_next_pass(&st->m[i].lo);
			bf_select_next_pass(&st->m[i].hi);
			if (bf_select_failed(&st->m[i].lo) || bf_select_failed(&st->m[i].hi))
				r = -ENOMEM;
		}
	}
	if (!r && need_sums) {
		if (st->cfg->sp == SP_RANDOM || st->cfg->sp == SP_DELLA) {
			st->bits = bits_new(n, N); /* NULL is fine: the kernel draws the masks */
			atomic_fetch_add(!st->bits ? &mask_bits_refused :
					 st->bits->cap < N ? &mask_bits_partial : &mask_bits_kept, 1);
		}
		ps.kind = 1;
		/* blocks are independent here: several threads may share a large tensor */
		bf_block_sums_init(&ps.sums, s, t, ps.l1, 2 * (size_t)n);
		bool raw = bf_all_bf16(t);
		r = bf_block_sums_run(s, t, &ps.sums, raw ? NULL : gta_block, raw ? gta_sums_bf16 : NULL, &ps);
		bf_block_sums_fold(&ps.sums);
		for (uint32_t i = 0; i < n && !r; i++) {
			struct gta_model *m = &st->m[i];
			float a = (float)ps.l1[i], b = (float)ps.l1[n + i];
			if (m->sparse && !m->none && a >= 1e-7f && b >= 1e-7f)
				m->scale = a / b;
			bf_debug("%s: model %u: L1 %g kept %g rescale %g", t->name, i, a, b, (double)m->scale);
		}
	}
	if (r) {
		gta_free(st);
		return r;
	}
	*out = st;
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Kernel
 */

/* How model i's task vector is masked in the kernel, as struct bf_gta_in says it (x left NULL):
 * by nothing (a dense model, scale 1), by the bits the statistics pass kept, or by the top-k
 * test inside gta_prep (tk_on; everything kept when the threshold is past the end). False for
 * the masks that gta_mask draws from the differences (DARE without kept bits, breadcrumbs'
 * outlier bands). prep_model and the one-pass consensus both decide by it. */
static bool model_in(const struct gta_stats *st, uint32_t i, const uint64_t *bits, struct bf_gta_in *in)
{
	const struct gta_model *m = &st->m[i];
	*in = (struct bf_gta_in){ .scale = m->scale, .w = m->w };
	if (!m->sparse && !m->none) {
		in->scale = 1.0f;
	} else if (bits) {
		in->bits = bits + (uint64_t)i * st->bits->per;
	} else if (st->cfg->sp == SP_MAGNITUDE && !m->none) {
		in->tk_on = (m->hi.thr_key >> 32) == 0;
		in->tk = (uint32_t)m->hi.thr_key;
		in->ti = m->hi.thr_idx;
	} else {
		return false;
	}
	return true;
}

/* D_i = the weighted (masked, rescaled) task vector of model i over [e0, e0 + cnt), from x and B
 * in f32, or in bf16 when bf16 (the fused path). The mask comes from the bits the statistics
 * pass kept, from the top-k test inside gta_prep, or else from gta_mask on the f32 differences:
 * then bf16 inputs are widened first: x into wide[0..cnt), B into wide[cnt..2cnt) once per
 * sub-block (*b_wide). Returns 0, or gta_mask's error (only when bits is NULL). */
static int prep_model(const struct gta_stats *st, uint32_t i, const uint64_t *bits, const void *x, const void *B,
		      int bf16, uint64_t e0, size_t cnt, float *Di, float *mask, float *wide, bool *b_wide)
{
	struct bf_gta_in in;
	const float *mk = NULL;
	if (model_in(st, i, bits, &in)) {
		if (in.bits) {
			bf_kern->mask_unpack(in.bits, e0, mask, cnt);
			mk = mask;
		}
	} else {
		if (bf16) {
			bf_kern->bf16_to_f32(x, wide, cnt);
			if (!*b_wide)
				bf_kern->bf16_to_f32(B, wide + cnt, cnt);
			*b_wide = true;
			x = wide;
			B = wide + cnt;
			bf16 = 0;
		}
		bf_kern->sub(Di, x, B, cnt); /* the other masks look at the differences */
		int r = gta_mask(st, i, Di, e0, cnt, mask);
		if (r)
			return r;
		mk = mask;
	}
	if (bf16)
		bf_kern->gta_prep_bf16(Di, x, B, mk, in.tk_on, in.tk, in.ti, e0, in.scale, in.w, cnt);
	else
		bf_kern->gta_prep(Di, x, B, mk, in.tk_on, in.tk, in.ti, e0, in.scale, in.w, cnt);
	return 0;
}

static int gta_kernel(const struct bf_kargs *a)
{
	const struct gta_stats *st = a->stats;
	uint32_t n = st->n;
	size_t cnt = a->n;
	const float *B = a->in[0];
	/* D_i for the whole block, model by model (masks need whole rows for DELLA) */
	float *D = bf_scratch(0, (size_t)n * cnt * sizeof(float));
	float *mask = bf_scratch(1, cnt * sizeof(float));
	if (!D || !mask)
		return -ENOMEM;
	const uint64_t *bits = bits_acquire(st->bits, a->e0, cnt);
	for (uint32_t i = 0; i < n; i++) {
		int r = prep_model(st, i, bits, a->in[i + 1], B, 0, a->e0, cnt, D + (size_t)i * cnt, mask, NULL, NULL);
		if (r)
			return r; /* bits is NULL on this path: nothing to release */
	}
	if (bits)
		bits_release(st->bits, cnt);
	float *out = a->out;
	if (st->cfg->consensus) {
		float *den = bf_scratch(2, cnt * sizeof(float));
		float w[BF_MAX_MODELS * 4];
		if (!den)
			return -ENOMEM;
		for (uint32_t i = 0; i < n; i++)
			w[i] = st->m[i].w;
		bf_kern->consensus(out, den, D, cnt, w, (int)n, st->count, cnt);
		bf_kern->gta_finish(out, den, B, st->normalize, st->lambda, st->lambda != 1.0f, cnt);
		return 0;
	} else {
		/* no consensus: the divisor is one number, and everything vectorises */
		float den = 0.0f;
		memcpy(out, D, cnt * sizeof(float));
		for (uint32_t i = 1; i < n; i++)
			bf_kern->add(out, D + (size_t)i * cnt, cnt);
		for (uint32_t i = 0; i < n; i++)
			den += st->m[i].w;
		if (fabsf(den) < 1e-8f)
			den = 1.0f;
		if (st->normalize)
			bf_kern->div(out, den, cnt);
	}
	if (st->lambda != 1.0f)
		bf_kern->scale(out, out, st->lambda, cnt);
	bf_kern->add(out, B, cnt); /* B + delta == delta + B */
	return 0;
}

/* Sub-block of the fused consensus path: its arrays (k task vectors, mask, sums) stay in L2. */
#define FUSED_SUB 8192u

/* The consensus methods over bf16 inputs and output, from the raw bytes: gta_kernel's steps on
 * sub-blocks, with the widening folded into gta_prep_bf16 and the final rounding into
 * gta_finish_bf16 (the same f32 operations, so the same bytes). */
static int gta_fused_consensus(const struct bf_fargs *a)
{
	const struct gta_stats *st = a->stats;
	uint32_t n = st->n;
	float *D = bf_scratch(0, (size_t)n * FUSED_SUB * sizeof(float));
	float *mask = bf_scratch(1, FUSED_SUB * sizeof(float));
	float *f = bf_scratch(3, 4 * (size_t)FUSED_SUB * sizeof(float));
	if (!D || !mask || !f)
		return -ENOMEM;
	float *out = f, *den = f + FUSED_SUB, *wide = f + 2 * FUSED_SUB;
	float w[BF_MAX_MODELS * 4];
	for (uint32_t i = 0; i < n; i++)
		w[i] = st->m[i].w;
	const uint16_t *const *raw = (const uint16_t *const *)a->raw;
	for (size_t s0 = 0; s0 < a->n; s0 += FUSED_SUB) {
		size_t cnt = a->n - s0 < FUSED_SUB ? a->n - s0 : FUSED_SUB;
		uint64_t e0 = a->e0 + s0;
		const uint16_t *B = raw[0] + s0;
		const uint64_t *bits = bits_acquire(st->bits, e0, cnt);
		struct bf_gta_in in[BF_GTA_FUSED_MAX];
		bool fuse = n <= BF_GTA_FUSED_MAX;
		for (uint32_t i = 0; i < n && fuse; i++) {
			fuse = model_in(st, i, bits, &in[i]);
			in[i].x = raw[i + 1] + s0;
		}
		if (fuse) {
			/* every model's mask is its bits or its top-k test: one pass, no f32 arrays */
			bf_kern->gta_fused_bf16((uint16_t *)a->out + s0, B, in, (int)n, st->count, st->normalize,
						st->lambda, st->lambda != 1.0f, e0, cnt);
			if (bits)
				bits_release(st->bits, cnt);
			continue;
		}
		bool b_wide = false;
		for (uint32_t i = 0; i < n; i++) {
			int r = prep_model(st, i, bits, raw[i + 1] + s0, B, 1, e0, cnt, D + (size_t)i * cnt, mask, wide,
					   &b_wide);
			if (r)
				return r; /* bits is NULL on this path: nothing to release */
		}
		if (bits)
			bits_release(st->bits, cnt);
		bf_kern->consensus(out, den, D, cnt, w, (int)n, st->count, cnt);
		bf_kern->gta_finish_bf16((uint16_t *)a->out + s0, out, den, B, st->normalize, st->lambda,
					 st->lambda != 1.0f, cnt);
	}
	return 0;
}

/* All BF16: the consensus methods through gta_fused_consensus; the common case without a mask
 * or a sign election (task arithmetic, and every variant at density 1 without consensus) in
 * one pass. */
static int gta_fused(const struct bf_fargs *a)
{
	const struct gta_stats *st = a->stats;
	const struct bf_otensor *t = a->t;
	if (!bf_all_bf16(t) || st->n > 64)
		return -ENOTSUP;
	if (st->cfg->consensus)
		return gta_fused_consensus(a);
	float w[64], den = 0.0f;
	for (uint32_t i = 0; i < st->n; i++) {
		if (st->m[i].sparse || st->m[i].none)
			return -ENOTSUP;
		w[i] = st->m[i].w;
		den += w[i];
	}
	if (fabsf(den) < 1e-8f)
		den = 1.0f;
	bf_kern->ta_bf16(a->out, a->raw[0], (const uint16_t *const *)a->raw + 1, w, (int)st->n, den, st->normalize,
			 st->lambda, st->lambda != 1.0f, a->n);
	return 0;
}

/* Plan-time checks that mergekit would fail on later (or that make no sense). */
static int gta_check(const struct bf_otensor *t, struct bf_err *err)
{
	const struct bf_method *me = t->method;
	const struct gta_cfg *cfg = me->data;
	struct gta_idx ix = gta_index(me);
	if (t->n_in - 1 > BF_MAX_MODELS * 4)
		return bf_errf(err, "%s takes at most %d models", me->name, BF_MAX_MODELS * 4);
	if (cfg->sp == SP_DELLA && t->row_len >= ((uint64_t)1 << 31))
		return bf_errf(err, "%s ranks each row in memory: rows of at most 2^31 elements (this tensor's "
				    "have %" PRIu64 ")", me->name, t->row_len);
	for (uint32_t i = 1; i < t->n_in; i++) {
		double density = t->in[i].p[ix.density];
		if (cfg->sp == SP_MAGNITUDE && density < 1.0 && floor(density * (double)t->numel) < 1)
			return bf_errf(err, "density %g keeps no element of this %" PRIu64 "-element tensor (mergekit "
					    "refuses to zero a whole tensor); raise density",
				       density, t->numel);
		if (cfg->sp == SP_DELLA && density < 1.0) {
			double eps = t->in[i].p[ix.epsilon];
			if (!(density - eps > 0) || !(density + eps < 1))
				return bf_errf(err, "della needs 0 < density - epsilon and density + epsilon < 1 "
						    "(density %g, epsilon %g)", density, eps);
		}
	}
	return 0;
}

#define GTA(id, nm, pretty_, paper_, params_, cons, spars)                                         \
	static const struct gta_cfg id##_cfg = { cons, spars };                                   \
	const struct bf_method bf_m_##id = {                                                        \
		.name = nm, .pretty = pretty_, .paper = paper_,                                     \
		.params = params_, .n_params = BF_ARRAY_LEN(params_),                               \
		.base = BF_BASE_REQUIRED, .min_others = 1, .max_others = 4 * BF_MAX_MODELS,         \
		.row_local = (spars) == SP_DELLA, .random = (spars) == SP_RANDOM || (spars) == SP_DELLA, \
		.data = &id##_cfg, .check = gta_check, .stats = gta_stats, .free_stats = gta_free,  \
		.kernel = gta_kernel, .fused = gta_fused,                                           \
	}

GTA(task_arithmetic, "task_arithmetic", "Task Arithmetic", "https://arxiv.org/abs/2212.04089", ta_params, false, SP_NONE);
GTA(ties, "ties", "TIES", "https://arxiv.org/abs/2306.01708", ties_params, true, SP_MAGNITUDE);
GTA(dare_linear, "dare_linear", "Linear DARE", "https://arxiv.org/abs/2311.03099", dare_linear_params, false, SP_RANDOM);
GTA(dare_ties, "dare_ties", "DARE TIES", "https://arxiv.org/abs/2311.03099", dare_ties_params, true, SP_RANDOM);
GTA(della, "della", "DELLA", "https://arxiv.org/abs/2406.11617", della_params, true, SP_DELLA);
GTA(della_linear, "della_linear", "Linear DELLA", "https://arxiv.org/abs/2406.11617", della_linear_params, false, SP_DELLA);
GTA(breadcrumbs, "breadcrumbs", "Model Breadcrumbs", "https://arxiv.org/abs/2312.06795", bc_params, false, SP_OUTLIERS);
GTA(breadcrumbs_ties, "breadcrumbs_ties", "Model Breadcrumbs with TIES", "https://arxiv.org/abs/2312.06795", bc_ties_params, true, SP_OUTLIERS);
