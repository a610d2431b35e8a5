/* bf_select.h: exact rank selection over a whole tensor in a few streaming passes.
 *
 * Magnitude cuts (TIES top-k, breadcrumbs' rank window, SCE's variance top-k, arcee_fusion's
 * quantiles) need "the element at rank R" of a tensor that may not fit in memory twice. Every
 * value is mapped to a 32-bit key whose unsigned order is the wanted order (|x| ascending:
 * the f32 bits of |x|; descending: their complement), and ties are broken by the flat index,
 * i.e. a STABLE sort. A radix select then finds the (key, index) pair of rank R:
 *   pass 1: histogram of the top 16 key bits      -> the bucket holding rank R
 *   pass 2: histogram of the low 16 bits there    -> the exact key
 *   pass 3: count equal keys in index order       -> the index of rank R among them
 * "rank(x, i) < R"  <=>  (key(x), i) < (key*, i*)  lexicographically, so a chunk can test any
 * element on its own afterwards. R >= n selects everything, R == 0 nothing.
 *
 * Usage: bf_select_init for each target, then run passes: for each pass, feed every element in
 * flat-index order with bf_select_feed (one call per block), then bf_select_next_pass. A target
 * is done when bf_select_done. Several targets can be fed in the same streaming pass.
 */
#ifndef BF_SELECT_H
#define BF_SELECT_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

struct bf_select {
	uint64_t rank;        /* wanted rank R (0-based) */
	uint64_t n;           /* elements seen in the current pass */
	int pass;             /* 0, 1, 2; 3 = done */
	uint32_t hi;          /* selected top 16 bits after pass 0 */
	uint32_t key;         /* selected key after pass 1 */
	uint64_t need;        /* rank still to go inside the current bucket */
	uint64_t *hist;       /* 65536 counters (passes 0 and 1) */
	uint64_t thr_key;     /* result: (thr_key, thr_idx); thr_key = 2^32 means "everything" */
	uint64_t thr_idx;
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

/* total: the element count of the whole tensor. Returns -1 on allocation failure. */
int bf_select_init(struct bf_select *s, uint64_t rank, uint64_t total);
void bf_select_free(struct bf_select *s);
/* Feed keys[0..n) for flat indices idx0.. (consecutive calls must cover the tensor in order). */
void bf_select_feed(struct bf_select *s, const uint32_t *keys, uint64_t idx0, size_t n);
void bf_select_next_pass(struct bf_select *s);
static inline bool bf_select_done(const struct bf_select *s) { return s->pass >= 3; }
/* After done: is (key, idx) ranked before R? */
static inline bool bf_select_below(const struct bf_select *s, uint32_t key, uint64_t idx)
{
	return key < s->thr_key || (key == s->thr_key && idx < s->thr_idx);
}

#endif
