/* bf_exec.h: the compute engine behind a mount and `blendfs merge`.
 *
 * Serves byte ranges of output shards. A shard is cut into chunks of --chunk-size bytes (1 MiB
 * by default) at fixed FILE offsets, so a chunk matches a kernel READ request (1 MiB, aligned,
 * once the mount's read-ahead is 1 MiB); a chunk holds the bytes of whichever tensors (or
 * header) fall in its range. Chunk boundaries never split an element: tensor offsets are
 * multiples of their element size and chunk sizes are multiples of 8.
 *
 * A chunk is computed on demand by the thread that first asks for it (single-flight through
 * bf_cache) and kept in the LRU cache: for each tensor in its range, the inputs' bytes are read
 * with large preads into per-thread buffers, widened to f32 in cache-sized sub-blocks, run
 * through the method's kernel and rounded once to the output dtype straight into the cache
 * buffer. Row-local methods compute whole rows (a row split by a chunk boundary is computed for
 * both chunks). Tensors whose bytes equal a source's (passthrough) are pread, not computed.
 * Whole-tensor statistics are computed once per tensor and kept for the life of the mount.
 *
 * Replies need no copy: bf_exec_pin returns iovecs pointing into pinned cache entries, which
 * the FUSE layer hands to the kernel before unpinning. Sequential reads of a shard are detected
 * and the next chunks are computed ahead by a prefetch thread.
 *
 * Every source shard a chunk depends on is checked for changes after it is read: a change makes
 * the read fail with EIO (logged once) instead of serving a mix of old and new bytes.
 *
 * Determinism: bytes depend only on the plan (recipe + source bytes) and the seed: never on
 * chunk size, thread count, cache size, prefetch or read order.
 *
 * Thread-safety: every function may be called from any number of threads at once, except
 * bf_exec_new/bf_exec_free.
 */
#ifndef BF_EXEC_H
#define BF_EXEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include "bf_common.h"
#include "bf_plan.h"

struct bf_exec;

struct bf_exec_opts {
	uint64_t cache_bytes;             /* chunk cache budget in bytes */
	uint64_t chunk_bytes;             /* bytes per chunk, a multiple of 8 (default 1 MiB) */
	unsigned prefetch_threads;        /* threads computing ahead of sequential readers (0 = none) */
	unsigned prefetch_chunks;         /* how far ahead (default 2 per prefetch thread, at least 4, at most 32) */
	unsigned fresh_interval_ms;       /* how often a source's identity is re-checked (0 = every chunk) */
};

struct bf_exec_stats {
	uint64_t chunks_computed, bytes_computed, bytes_copied, stats_computed, read_errors;
	uint64_t prefetched;
	uint64_t method_ns[32];           /* compute time per method (index in bf_methods) */
	uint64_t method_bytes[32];
};

int bf_exec_new(const struct bf_plan *p, const struct bf_exec_opts *o, struct bf_exec **out,
		struct bf_err *err);
void bf_exec_free(struct bf_exec *x);

/* Fill buf with bytes [off, off+len) of shard `shard` (inside the shard). Returns 0, or a
 * negative errno (-EIO after logging why, -ENOMEM). */
int bf_exec_read(struct bf_exec *x, uint32_t shard, uint64_t off, size_t len, void *buf);

/* Zero-copy variant: pins the chunks covering [off, off+len) and describes the bytes as iovecs
 * into them. On success the caller owns `pins` until bf_exec_unpin. */
struct bf_exec_pins {
	struct bf_centry **e;      /* NULL entries: bytes in buf (uncached fallback) */
	struct iovec *iov;
	size_t n, cap;
	char *buf;
	size_t buf_cap;
	size_t once_n;             /* entries e[0..once_n) were consumed to their end by a
	                            * sequential stream: unpin releases them with put_once */
};
int bf_exec_pin(struct bf_exec *x, uint32_t shard, uint64_t off, size_t len, struct bf_exec_pins *pins);
void bf_exec_unpin(struct bf_exec *x, struct bf_exec_pins *pins);
void bf_exec_pins_free(struct bf_exec_pins *pins);

/* Compute chunk k of a shard straight into buf (no cache): for `blendfs merge`. Returns the
 * chunk's byte count, or a negative errno. */
long bf_exec_compute_chunk(struct bf_exec *x, uint32_t shard, uint64_t k, void *buf);
uint64_t bf_exec_chunk_bytes(const struct bf_exec *x);

/* Compute (once) the whole-tensor statistics of output tensor ti, if its method has any.
 * `blendfs merge` runs these for all tensors on all threads before computing chunks. */
int bf_exec_prepare(struct bf_exec *x, size_t ti);

/* Start the prefetch threads (after daemonising: threads do not survive fork). */
int bf_exec_start_prefetch(struct bf_exec *x);

void bf_exec_get_stats(struct bf_exec *x, struct bf_exec_stats *out);
struct bf_cache *bf_exec_cache(struct bf_exec *x);
const struct bf_plan *bf_exec_plan(const struct bf_exec *x);

#endif
