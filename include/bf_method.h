/* bf_method.h: the merge-method table.
 *
 * One entry per mergekit method: its name, its parameters (with type, default, range, and whether
 * each is per-model), its base-model rule, how many other models it takes, whether its kernel
 * needs whole rows, and three functions:
 *   check   plan-time validation of one output tensor (shapes, parameter combinations)
 *   stats   whole-tensor statistics pass, run once per output tensor before any chunk
 *           (norms, dot products, top-k thresholds, L1 rescale sums...); NULL if none
 *   kernel  computes out[0..n) from the f32 inputs for elements [e0, e0+n) (whole rows when
 *           row_local), given the stats. Pure, reentrant, no I/O, no allocation except through
 *           bf_scratch() (slots 0-3 belong to kernels and stats). Must give identical results
 *           whatever e0/n split is used. Returns 0 or -ENOMEM.
 *
 * The planner validates every recipe parameter against this table (names with "did you mean",
 * types, ranges) so nothing unknown or out of range reaches a kernel.
 */
#ifndef BF_METHOD_H
#define BF_METHOD_H

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "bf_common.h"
#include "bf_dtype.h"

#define BF_MAX_PARAMS 10

struct bf_otensor;
struct bf_stream;

enum bf_ptype { BF_PT_NUM, BF_PT_BOOL, BF_PT_INT, BF_PT_ENUM };
enum bf_base_rule {
	BF_BASE_INPUT,    /* base_model, if given, is just another input (linear, karcher, passthrough) */
	BF_BASE_OPTIONAL, /* used as the base when given (nuslerp, multislerp) */
	BF_BASE_REQUIRED, /* must be given */
};

struct bf_param_def {
	const char *name;
	enum bf_ptype type;
	bool per_model;          /* evaluated per input model, against that model's tensor name */
	bool required;           /* no default; per-model required params are not required for the base */
	double def;              /* default (NAN = "unset", e.g. passthrough's scale) */
	double min, max;         /* inclusive range unless the *_open flags say otherwise */
	bool min_open, max_open;
	const char *const *choices; /* BF_PT_ENUM: NULL-terminated; the value is the index */
	const char *help;        /* one line for `blendfs check` and the man page */
};

struct bf_kargs {
	const struct bf_otensor *t;
	const void *stats;           /* from method->stats, or NULL */
	const float *const *in;      /* in[i][0..n): input i (base first when t->has_base) */
	float *out;                  /* out[0..n) */
	uint64_t e0;                 /* flat index of element 0 of this block */
	size_t n;                    /* element count; a multiple of t->row_len when row_local */
};

/* Arguments of a fused kernel: raw input bytes in, output dtype bytes out, in one pass. */
struct bf_fargs {
	const struct bf_otensor *t;
	const void *stats;
	const void *const *raw;      /* raw[i]: element e0 of input i, in that input's dtype */
	void *out;                   /* element e0 of the output, in the tensor's output dtype */
	uint64_t e0;
	size_t n;
};

struct bf_method {
	const char *name;
	const char *pretty;          /* for the model card */
	const char *paper;           /* reference URL for the model card, may be NULL */
	const struct bf_param_def *params;
	uint32_t n_params;
	enum bf_base_rule base;
	uint32_t min_others, max_others; /* inputs besides the base (for BF_BASE_INPUT: all inputs) */
	bool row_local;
	bool random;                 /* draws masks from the seed (DARE, DELLA): its statistics keep them
	                              * as bits within the mask budget (bf_method_set_mask_budget) */
	bool out_f32;                /* output is float32 unless out_dtype is set (mergekit's type promotion) */
	const void *data;            /* method-family configuration (e.g. the GTA variant) */
	int (*check)(const struct bf_otensor *t, struct bf_err *err);
	int (*stats)(struct bf_stream *s, const struct bf_otensor *t, void **out);
	void (*free_stats)(void *stats);
	int (*kernel)(const struct bf_kargs *a);
	/* Optional one-pass version of kernel for common dtype combinations (all BF16): exactly the
	 * same bytes as kernel + rounding (test_kern checks the primitives it is built from).
	 * Returns -ENOTSUP when it does not apply, and the generic path runs instead. */
	int (*fused)(const struct bf_fargs *a);
};

const struct bf_method *bf_method_find(const char *name);
/* All methods, for help texts and suggestions. */
extern const struct bf_method *const bf_methods[];
extern const size_t bf_n_methods;
/* Index of a parameter in m->params, or -1. */
int bf_method_param(const struct bf_method *m, const char *name);

/* Thread-local grow-only scratch space (freed when the thread exits). Slots 0..3 belong to
 * kernels and statistics callbacks, 4..7 to the exec layer that feeds them. Contents do not
 * survive a call into another user of the same slot. Returns NULL on allocation failure. */
void *bf_scratch(unsigned slot, size_t bytes);

/* Random methods (DARE, DELLA) keep each tensor's masks as bits from the statistics pass to the
 * kernel while a process-wide byte budget allows (a pure cache: without it the kernel draws
 * them again). The budget starts at BF_MASK_BITS_MIN; the exec layer raises it with a share of
 * the chunk cache's budget, so that both together stay within --cache-size + 64 MiB. */
#define BF_MASK_BITS_MIN ((uint64_t)16 << 20)
void bf_method_set_mask_budget(uint64_t bytes);
struct bf_mask_stats {
	uint64_t budget, used;    /* bytes */
	uint64_t kept, partial, refused; /* tensors whose masks were kept whole, over a prefix of the
				  * tensor, or not at all (drawn again when read) */
};
void bf_method_mask_stats(struct bf_mask_stats *out);

/* Streaming access for stats passes: calls fn for consecutive blocks covering the whole tensor,
 * in order, with all inputs converted to f32. Blocks hold whole rows (at least one row). fn
 * returns 0 to go on, BF_STREAM_STOP to end the pass early, or a negative errno.
 * Returns 0, fn's negative errno, or -errno from reading the sources. */
#define BF_STREAM_STOP 1
typedef int (*bf_stream_fn)(void *ctx, const float *const *in, uint64_t e0, size_t n);
int bf_stream_run(struct bf_stream *s, const struct bf_otensor *t, bf_stream_fn fn, void *ctx);
/* The same blocks with the inputs' raw bytes (little-endian, in each input's source dtype,
 * t->in[i].src->dtype) instead of f32 views, for statistics kernels that read bf16 directly and
 * so skip the widening pass. */
typedef int (*bf_stream_raw_fn)(void *ctx, const void *const *raw, uint64_t e0, size_t n);
int bf_stream_run_raw(struct bf_stream *s, const struct bf_otensor *t, bf_stream_raw_fn fn, void *ctx);
/* Elements per block of these passes: block b holds elements [b * B, min((b + 1) * B, numel))
 * with B = bf_stream_block(t). A pass whose blocks are independent (bf_block_sums_run below, and
 * a _split pass once split says so) may run fn for several blocks at once, on other threads, in
 * any order, when the exec layer has threads to spare (a mount with several prefetch threads:
 * the statistics of one tensor otherwise hold back every reader of it); fn must not return
 * BF_STREAM_STOP there. A pass that keeps one result per block and combines them in block order
 * afterwards then has the sequential pass's bytes. */
uint64_t bf_stream_block(const struct bf_otensor *t);
/* For a pass whose first block decides whether the others are independent (a selection's window
 * pass, guessed from that block): block 0 runs first, alone; then split(ctx), on the calling
 * thread, says whether the other blocks may run at once (true: fn must not return
 * BF_STREAM_STOP for them) or in order as in bf_stream_run_raw (false). Without threads to
 * spare the whole pass runs in order and split is not called. */
int bf_stream_run_raw_split(struct bf_stream *s, const struct bf_otensor *t, bf_stream_raw_fn fn,
			    bool (*split)(void *ctx), void *ctx);
/* The same with f32 views of the inputs. */
int bf_stream_run_split(struct bf_stream *s, const struct bf_otensor *t, bf_stream_fn fn, bool (*split)(void *ctx),
			void *ctx);
/* Threads the passes of independent blocks of s may use: 1 means they run in order, on the
 * caller's thread. */
int bf_stream_threads(const struct bf_stream *s);
/* Sums over a pass of independent blocks that keep the sequential pass's bytes: block b adds its
 * `per` sums into a slot of its own (bf_block_sums_at), and bf_block_sums_fold adds the slots
 * into the totals in block order, the additions a sequential pass makes when each block adds
 * straight into the totals. That sequential pass is what runs when the stream has one thread, or
 * no memory for the slots: slots is NULL, and bf_block_sums_at gives the totals. Run the pass
 * with bf_block_sums_run, which picks the one that fits. The caller owns the struct and the
 * totals; fold frees the slots (call it on every path). */
struct bf_block_sums {
	double *total;  /* per sums, added to (not cleared) */
	double *slots;  /* nb * per, or NULL */
	size_t per;
	uint64_t blk, nb;
};
void bf_block_sums_init(struct bf_block_sums *bs, const struct bf_stream *s, const struct bf_otensor *t, double *total,
			size_t per);
static inline double *bf_block_sums_at(const struct bf_block_sums *bs, uint64_t e0)
{
	return bs->slots ? bs->slots + (size_t)(e0 / bs->blk) * bs->per : bs->total;
}
/* The pass over every block of t, for fn (f32 views, as bf_stream_run) or fn_raw (raw bytes, as
 * bf_stream_run_raw; exactly one of them set): its blocks at once when bs has slots (see
 * bf_stream_block), else in order. fn must not return BF_STREAM_STOP. */
int bf_block_sums_run(struct bf_stream *s, const struct bf_otensor *t, const struct bf_block_sums *bs, bf_stream_fn fn,
		      bf_stream_raw_fn fn_raw, void *ctx);
void bf_block_sums_fold(struct bf_block_sums *bs);
/* All inputs and the output are bf16 (the fused kernels' case). */
bool bf_all_bf16(const struct bf_otensor *t);
/* The seed random methods key their generator with (recipe random_seed or --seed, default 0). */
uint64_t bf_stream_seed(const struct bf_stream *s);
/* The recipe reference of plan model `model` (the RNG's model id). */
const char *bf_stream_model_ref(const struct bf_stream *s, uint32_t model);

#endif
