/* bf_exec.h: the compute engine behind a mount and `blendfs merge`.
 *
 * Serves byte ranges of output shards. For each output tensor the range maps to chunks: runs of
 * whole rows holding about --chunk-size bytes of output (the last chunk may be shorter). A chunk
 * is computed on demand by the thread that first asks for it (single-flight through bf_cache),
 * from the sources read with pread into per-thread buffers, converted to f32, run through the
 * method's kernel block by block, rounded once to the output dtype, and kept in the LRU cache.
 * Whole-tensor statistics a method needs are computed once per tensor (the first chunk of that
 * tensor waits for them; other tensors are not blocked) and kept for the life of the mount.
 * Tensors whose bytes equal a source's (passthrough) are served by pread, never cached.
 *
 * Every source shard a chunk depends on is checked for freshness before and after it is read:
 * a change makes the read fail with EIO (logged once) instead of serving a mix of old and new.
 *
 * Determinism: bytes depend only on the plan (recipe + source bytes) and the seed: never on
 * chunk size, thread count, cache size or read order. Kernels are elementwise or row-local, and
 * statistics are reduced in a fixed order.
 *
 * Thread-safety: bf_exec_read may be called from any number of threads at once.
 */
#ifndef BF_EXEC_H
#define BF_EXEC_H

#include <stddef.h>
#include <stdint.h>
#include "bf_common.h"
#include "bf_plan.h"

struct bf_exec;

struct bf_exec_opts {
	uint64_t cache_bytes;             /* chunk cache budget in bytes */
	uint64_t chunk_bytes;             /* target output bytes per chunk (default 1 MiB) */
	unsigned threads;                 /* threads for statistics passes (0 = all cores) */
	unsigned fresh_interval_ms;       /* how often a source's identity is re-checked (0 = every chunk) */
};

struct bf_exec_stats {
	uint64_t chunks_computed, bytes_computed, bytes_copied, stats_computed, read_errors;
	uint64_t method_ns[32];           /* compute time per method (index in bf_methods) */
	uint64_t method_bytes[32];
};

int bf_exec_new(const struct bf_plan *p, const struct bf_exec_opts *o, struct bf_exec **out,
		struct bf_err *err);
void bf_exec_free(struct bf_exec *x);

/* Fill buf with bytes [off, off+len) of shard `shard`. The range must lie inside the shard.
 * Returns 0, or a negative errno (-EIO after logging why, -ENOMEM). */
int bf_exec_read(struct bf_exec *x, uint32_t shard, uint64_t off, size_t len, void *buf);

void bf_exec_get_stats(struct bf_exec *x, struct bf_exec_stats *out);
struct bf_cache *bf_exec_cache(struct bf_exec *x);
const struct bf_plan *bf_exec_plan(const struct bf_exec *x);

#endif
