/* bf_cache.h: a byte-budgeted LRU of computed chunks, with single-flight fills.
 *
 * What it is: an exact LRU (hash table + doubly linked list) over a few thousand ~1 MiB entries,
 * keyed by a 64-bit key the caller derives (XXH3 of tensor id and chunk index). One mutex guards
 * the table; fills run outside it.
 * What it is not: the main cache. The kernel page cache holds what readers already read; this
 * one absorbs partial-chunk overlaps, out-of-order and concurrent requests.
 *
 * Protocol (every get is paired with exactly one put):
 *   e = bf_cache_get(c, key, tag, size, &fill);
 *     NULL            -> out of memory (caller replies ENOMEM/EIO)
 *     fill == true    -> caller owns the fill: write bf_centry_data(e)[0..size) and call
 *                        bf_cache_fill_done(c, e, 0) or (c, e, -errno). Other getters of the same
 *                        key block in bf_cache_wait until then (single-flight).
 *     fill == false   -> call bf_cache_wait(c, e): returns 0 once the data is ready, or the fill's
 *                        negative errno (a failed entry is unlinked; the next get retries).
 *   ... copy from bf_centry_data(e) ...
 *   bf_cache_put(c, e);   unpins; the entry may now be evicted.
 *
 * Budget: bytes of all entries (data + bookkeeping) stay <= budget, except that pinned entries
 * are never evicted: when everything is pinned, a new entry is allocated anyway (the overshoot is
 * bounded by the number of concurrent readers x chunk size). An entry larger than the whole
 * budget is handed out as a private, uncached buffer (fill == true, freed on put).
 * Buffers of evicted entries of the standard size are recycled, so steady state does no
 * malloc/page-fault work, and chunks a sequential stream has consumed (bf_cache_put_once) are
 * recycled first, before the cache grows. Data buffers are 64-byte aligned.
 *
 * Invalidation: bf_cache_drop_if(c, pred, ctx) removes unpinned entries matching pred (used when
 * a source goes stale); pinned ones are marked dead and freed on their last put.
 */
#ifndef BF_CACHE_H
#define BF_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bf_cache;
struct bf_centry;

struct bf_cache_stats {
	uint64_t hits, misses, waits, evictions, fill_errors, uncached;
	uint64_t recycled_once;  /* evictions that took a consumed stream chunk's block (put_once) */
	uint64_t bytes_used, bytes_budget, entries, pinned;
};

/* std_size: the usual chunk buffer size (recycled); budget in bytes (0 = cache nothing). */
struct bf_cache *bf_cache_new(size_t budget, size_t std_size);
void bf_cache_free(struct bf_cache *c); /* no entry may be pinned */

/* tag: a caller value stored with the entry (blendfs: the output tensor index), for drop_if. */
struct bf_centry *bf_cache_get(struct bf_cache *c, uint64_t key, uint32_t tag, size_t size, bool *fill);
int bf_cache_wait(struct bf_cache *c, struct bf_centry *e);
/* A pinned READY entry for key (and size), or NULL: never creates an entry, never waits.
 * A hit is paired with bf_cache_put like any get. */
struct bf_centry *bf_cache_lookup(struct bf_cache *c, uint64_t key, size_t size);
/* Whether key has an entry (ready or being filled), without pinning it, touching its LRU
 * position or counting a hit: for a prefetcher deciding whether there is work to do. */
bool bf_cache_contains(struct bf_cache *c, uint64_t key);
void bf_cache_fill_done(struct bf_cache *c, struct bf_centry *e, int status);
void bf_cache_put(struct bf_cache *c, struct bf_centry *e);
/* Like put, for a caller that has consumed the entry as part of a sequential stream (the kernel's
 * page cache now holds those bytes): the entry joins a FIFO of consumed chunks. Beyond the 16
 * newest, the oldest gives its block to the next standard-size miss instead of the cache
 * allocating a new one, even while the budget has room (use-once, as the kernel's inactive list
 * treats streamed pages). A get before that makes it an ordinary entry again. */
void bf_cache_put_once(struct bf_cache *c, struct bf_centry *e);
void *bf_centry_data(struct bf_centry *e);
size_t bf_centry_size(const struct bf_centry *e);
uint64_t bf_centry_key(const struct bf_centry *e);

void bf_cache_get_stats(struct bf_cache *c, struct bf_cache_stats *out);
/* Returns the number of entries removed or marked dead. */
size_t bf_cache_drop_if(struct bf_cache *c, bool (*pred)(uint64_t key, uint32_t tag, void *ctx), void *ctx);

#endif
