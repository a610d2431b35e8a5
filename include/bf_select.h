/* bf_select.h: exact rank selection over a whole tensor in a few streaming passes.
 *
 * Magnitude cuts (TIES top-k, breadcrumbs' rank window, SCE's variance top-k, arcee_fusion's
 * quantiles) need "the element at rank R" of a tensor that may not fit in memory twice. Every
 * value is mapped to a 32-bit key whose unsigned order is the wanted order (|x| ascending:
 * the f32 bits of |x|; descending: their complement), and ties are broken by the flat index,
 * i.e. a STABLE sort. A radix select then finds the (key, index) pair of rank R:
 *   pass 1: the first block's top-16-bit histogram guesses a window of buckets around rank R;
 *           the rest of the pass only counts the keys below the window and collects the
 *           window's (key, index) pairs (a vectorised scan, bf_kern->window_scan)
 *   if the guess held: the buffer gives the exact key, and the index of rank R among the
 *           elements equal to it (one pass in all);
 *   else: histogram of the top 16 key bits over the whole tensor -> the bucket holding rank R,
 *           then a pass that collects that bucket -> the same, from memory (three passes)
 * (a bucket too large to collect is counted by its low 16 bits instead, and a further pass
 * finds the index among equal keys). The result never depends on the guess, only the pass count.
 * "rank(x, i) < R"  <=>  (key(x), i) < (key*, i*)  lexicographically, so a chunk can test any
 * element on its own afterwards. R >= n selects everything, R == 0 nothing.
 *
 * Usage: bf_select_init for each target, then run passes while any target is not done: feed
 * every element in flat-index order with bf_select_feed (one call per block), then
 * bf_select_next_pass. Several targets can be fed in the same streaming pass. bf_select_failed
 * reports an allocation failure. Set value_only after init when only the key is needed.
 */
#ifndef BF_SELECT_H
#define BF_SELECT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#define BF_SELECT_WIN 4  /* pass state: the window pass (bf_select_windowing) */
#define BF_SELECT_DONE 5

struct bf_select {
	uint64_t rank;        /* wanted rank R (0-based) */
	uint64_t total;       /* element count of the tensor */
	int pass;             /* internal state; BF_SELECT_DONE = done */
	bool failed;          /* allocation failure, or the data changed between passes */
	bool value_only;      /* only the key is wanted (no tie pass) */
	bool fed;             /* the first block has been seen */
	bool spec;            /* pass 1 scans the guessed window [wlo, whi] of buckets */
	uint32_t wlo, whi;
	uint64_t below;       /* window pass: keys below bucket wlo */
	uint32_t hi;          /* the selected top 16 bits */
	uint32_t key;         /* the selected key */
	uint64_t need;        /* rank still to go within the bucket / among elements equal to the key */
	uint64_t *hist;       /* 65536 buckets (x4 lanes during pass 1) */
	uint32_t *ck, *ci;    /* collected keys and their flat indices, in index order (one allocation) */
	uint64_t col_n, col_cap, col_bytes;
	uint64_t thr_key;     /* result: (thr_key, thr_idx); thr_key = 2^32 means "everything" */
	uint64_t thr_idx;
	/* the window pass fed from several threads (bf_select_feed_par) */
	uint64_t par_blk;        /* elements per block: block b starts at element b * par_blk */
	uint64_t par_nb;         /* blocks */
	uint32_t *par_off;       /* per block: where its run of collected entries starts in ck/ci */
	uint32_t *par_cnt;       /* per block: the run's length (what it matched) */
	_Atomic uint64_t par_n;  /* entries matched so far (reservations in ck/ci) */
	_Atomic uint64_t par_below;
};

static inline uint32_t bf_key_abs_asc(float x) { uint32_t u; memcpy(&u, &x, 4); return u & 0x7fffffffu; }
static inline uint32_t bf_key_abs_desc(float x) { return ~bf_key_abs_asc(x); }
/* for values already >= 0 or any sign: total order of floats (negative below positive) */
static inline uint32_t bf_key_float_asc(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Largest top-bits bucket collected in memory (elements); tests lower it to reach the
 * counting route. Not thread-safe to change while selections run. */
extern uint64_t bf_select_collect_max;

/* total: the element count of the whole tensor. Returns -1 on allocation failure. */
int bf_select_init(struct bf_select *s, uint64_t rank, uint64_t total);
void bf_select_free(struct bf_select *s);
/* Feed keys[0..n) for flat indices idx0.. (consecutive calls must cover the tensor in order). */
void bf_select_feed(struct bf_select *s, const uint32_t *keys, uint64_t idx0, size_t n);
void bf_select_next_pass(struct bf_select *s);
static inline bool bf_select_done(const struct bf_select *s) { return s->pass == BF_SELECT_DONE; }
static inline bool bf_select_failed(const struct bf_select *s) { return s->failed; }
/* Nothing more to learn in this pass: streaming may stop. */
static inline bool bf_select_idle(const struct bf_select *s) { return s->pass == BF_SELECT_DONE; }
/* After done: is (key, idx) ranked before R? */
static inline bool bf_select_below(const struct bf_select *s, uint32_t key, uint64_t idx)
{
	return key < s->thr_key || (key == s->thr_key && idx < s->thr_idx);
}

/* ---- The window pass from several threads ---------------------------------------------------
 * The window is guessed from the first block, so that block is fed with bf_select_feed, in
 * order. If the selection is then windowing, the rest of the pass may be fed from several
 * threads at once, in any block order: bf_select_par_begin once (blocks of blk elements, the
 * last one shorter), then bf_select_feed_par for every block but the first, then
 * bf_select_next_pass as always. Each block's matches are scanned into the caller's scratch and
 * copied to a place reserved atomically in the collect buffer; bf_select_next_pass puts the runs
 * back in block order before finishing, so the result is the sequential pass's, bit for bit.
 * bf_select_par_begin returns -1 on allocation failure (feed sequentially then). */
static inline bool bf_select_windowing(const struct bf_select *s) { return s->pass == BF_SELECT_WIN; }
int bf_select_par_begin(struct bf_select *s, uint64_t blk);
/* Undo bf_select_par_begin before any bf_select_feed_par (the pass goes on in order); no-op
 * without it. */
void bf_select_par_cancel(struct bf_select *s);
/* keys[0..n) of the block starting at flat index idx0 (a multiple of blk, not 0). tk, ti: the
 * calling thread's scratch, n + BF_SCAN_SLACK entries each. Thread-safe against other
 * bf_select_feed_par calls on the same selection (for other blocks). */
void bf_select_feed_par(struct bf_select *s, const uint32_t *keys, uint64_t idx0, size_t n, uint32_t *tk, uint32_t *ti);

/* Process-wide counts, for .blendfs/status: window passes that settled a selection, windows that
 * missed (more passes followed), and window passes fed from several threads. */
struct bf_select_stats {
	uint64_t windows_hit, windows_missed, windows_par;
};
void bf_select_get_stats(struct bf_select_stats *out);

/* ---- Row-local rank thresholds (DELLA) -------------------------------------------------------
 * DELLA keeps element i of a row of L with probability ptab[r_i], where r_i is its 0-based rank
 * in the stable ascending order of |d| (equal magnitudes in index order) and ptab is
 * nondecreasing: mask[i] = u[i] < ptab[r_i] ? 1.0f : 0.0f, except that an element with d = +-0
 * gets 0: dropping or keeping a zero task-vector entry gives the same bytes everywhere a mask
 * is used (d * mask, |d| * mask, the sign election), so its draw is never compared (zeros still
 * count in the ranks of the others). Most decisions need no exact rank:
 * the row's keys are counted into buckets ordered like the keys (64 per octave of |d|, the
 * zeros in a bucket of their own, everything more than 8 octaves below the largest in one
 * bottom bucket), which bounds every rank to its bucket's range [lo, hi]; u < ptab[lo] keeps,
 * u >= ptab[hi] drops, and only the rare u between the two (0.3-2% of the elements of real
 * task vectors) needs its exact rank, counted over the row (bf_kern->stable_rank). Same masks
 * as sorting the row, several times as fast (docs/performance.md, rounds 5 and 7). */
#define BF_DELLA_BUCKETS 512u
/* Scratch bytes bf_select_della_row needs for rows of L elements. */
static inline size_t bf_select_della_scratch(size_t L)
{
	return (3 * L + 3 * (BF_DELLA_BUCKETS + 18)) * sizeof(uint32_t);
}
/* mask[0..L) of one row (d: the row's task-vector values, u: its uniforms). scratch: at least
 * bf_select_della_scratch(L) bytes, 4-aligned, owned by the caller. L >= 1, L < 2^32 - 16. */
void bf_select_della_row(const float *d, size_t L, const float *u, const float *ptab, float *mask, void *scratch);

#endif
