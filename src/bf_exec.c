/* bf_exec.c: chunked, cached, on-demand computation of output shards (see bf_exec.h).
 *
 * The read path, for one READ request [off, off+len) of a shard:
 *
 *   chunks k0..k1 overlapping it  -> each from the LRU cache, or computed now by this thread
 *                                    (single flight: concurrent readers of a chunk wait for it)
 *   reply                         -> iovecs straight into the pinned cache buffers, no copy
 *   sequential pattern?           -> queue the next chunks for the prefetch thread
 *
 * Computing a chunk walks the tensors in its byte range. Copy tensors (passthrough) are pread
 * into place. Computed tensors need their statistics first (once per tensor: the first thread
 * computes them while others wanting the same tensor wait), then run in two levels of blocks:
 * RAW_ELEMS elements of every input are read with one pread each (few system calls), and
 * SUB_ELEMS elements at a time are widened to f32, run through the kernel and rounded into the
 * chunk buffer (so the working set stays in L1/L2). Sources are re-checked after they are read.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "bf_cache.h"
#include "bf_exec.h"
#include "bf_log.h"

#define RAW_ELEMS (1u << 16)
#define SUB_ELEMS 8192u
#define STREAM_ELEMS (1u << 16)
#define PF_QUEUE 64
#define STREAMS 4          /* sequential readers tracked per shard (loader threads, mmap faults) */

enum { ST_NONE, ST_COMPUTING, ST_DONE };

struct tstate {
	int state;
	void *stats;
};

struct pf_job {
	uint32_t shard;
	uint64_t k;       /* chunk index, or tensor index for a statistics job */
	bool stats;
	unsigned slot;    /* the stream that queued a chunk job */
};

struct bf_exec {
	const struct bf_plan *p;
	struct bf_exec_opts o;
	uint64_t chunk;          /* bytes per chunk */
	struct bf_cache *cache;
	struct tstate *ts;
	pthread_mutex_t lock;    /* guards ts[].state/stats */
	pthread_cond_t cond;
	/* per shard, STREAMS slots: 1 + the end offset of a stream's last request (0: free) */
	_Atomic uint64_t *last;
	_Atomic unsigned *next_slot; /* per shard: the slot a new stream takes (round robin) */
	_Atomic uint64_t chunks, bytes, copied, stats_done, errors, prefetched;
	_Atomic uint64_t m_ns[32], m_bytes[32];
	/* prefetch */
	pthread_mutex_t pf_lock;
	pthread_cond_t pf_cond;
	struct pf_job pf_q[PF_QUEUE];
	unsigned pf_head, pf_len;
	bool pf_stop;
	pthread_t *pf_threads;
	unsigned pf_n;
};

struct bf_stream {
	struct bf_exec *x;
	int nt; /* threads a pass of independent blocks may use */
};

/* Set on threads that compute ahead of readers (prefetch threads, and a reader's thread that
 * prepares the next tensor while it waits): nobody is blocked on what they compute. */
static _Thread_local bool tl_ahead;

/* Threads for the statistics of one tensor: a mount's prefetch threads (it has a core for
 * each), and one more when a reader's thread computes statistics that it is blocked on itself;
 * on two CPUs that is the only case with a core to spare, the other one serving or prefetching.
 * `blendfs merge` (no prefetch threads) already runs a tensor per core: 1. */
static int stats_threads(const struct bf_exec *x)
{
	unsigned n = x->o.prefetch_threads;
	return (int)(n && !tl_ahead ? n + 1 : n ? n : 1);
}

static int method_index(const struct bf_method *m)
{
	for (size_t i = 0; i < bf_n_methods && i < 32; i++)
		if (bf_methods[i] == m)
			return (int)i;
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Set-up
 */

int bf_exec_new(const struct bf_plan *p, const struct bf_exec_opts *o, struct bf_exec **out,
		struct bf_err *err)
{
	struct bf_exec *x = calloc(1, sizeof(*x));
	if (!x)
		return bf_errf(err, "out of memory");
	x->p = p;
	x->o = *o;
	x->chunk = o->chunk_bytes ? o->chunk_bytes : 1u << 20;
	if (x->chunk % 8) {
		free(x);
		return bf_errf(err, "chunk size %llu is not a multiple of 8 bytes", (unsigned long long)o->chunk_bytes);
	}
	/* two queued chunks per prefetch thread, at least 4: each thread has the next one to take
	 * while it finishes one, however many there are */
	if (!x->o.prefetch_chunks)
		x->o.prefetch_chunks = x->o.prefetch_threads > 2 ? 2 * x->o.prefetch_threads : 4;
	if (x->o.prefetch_chunks > PF_QUEUE / 2)
		x->o.prefetch_chunks = PF_QUEUE / 2;
	/* A random method's masks, drawn again in the kernel when their bits could not be kept,
	 * cost a third of a dare_ties read: a quarter of the cache budget holds bits instead of
	 * chunks (sequential reads use few chunks at a time; the page cache keeps what was read). */
	if (p->method && p->method->random) {
		uint64_t share = x->o.cache_bytes / 4;
		bf_method_set_mask_budget(BF_MASK_BITS_MIN + share);
		x->o.cache_bytes -= share;
		/* tests: BLENDFS_MASK_BITS=BYTES sets the budget (the masks are a pure cache) */
		const char *e = getenv("BLENDFS_MASK_BITS");
		if (e && *e) {
			char *end;
			unsigned long long v = strtoull(e, &end, 10);
			if (!*end)
				bf_method_set_mask_budget(v);
			else
				bf_warn("BLENDFS_MASK_BITS=%s is not a byte count: ignored", e);
		}
	}
	/* prefetching into a cache that cannot hold what it fetches only evicts what readers need:
	 * fetch less far ahead, or not at all */
	while (x->o.prefetch_chunks > 4 && x->o.cache_bytes < (uint64_t)(x->o.prefetch_chunks + 4) * x->chunk)
		x->o.prefetch_chunks /= 2;
	if (x->o.cache_bytes < (uint64_t)(x->o.prefetch_chunks + 4) * x->chunk)
		x->o.prefetch_threads = 0;
	x->ts = calloc(p->n_tensors ? p->n_tensors : 1, sizeof(*x->ts));
	x->last = calloc((p->n_shards ? p->n_shards : 1) * STREAMS, sizeof(*x->last));
	x->next_slot = calloc(p->n_shards ? p->n_shards : 1, sizeof(*x->next_slot));
	x->cache = bf_cache_new(x->o.cache_bytes, x->chunk);
	if (!x->ts || !x->last || !x->next_slot || !x->cache) {
		bf_exec_free(x);
		return bf_errf(err, "out of memory");
	}
	pthread_mutex_init(&x->lock, NULL);
	pthread_cond_init(&x->cond, NULL);
	pthread_mutex_init(&x->pf_lock, NULL);
	pthread_cond_init(&x->pf_cond, NULL);
	*out = x;
	return 0;
}

void bf_exec_free(struct bf_exec *x)
{
	if (!x)
		return;
	if (x->pf_threads) {
		pthread_mutex_lock(&x->pf_lock);
		x->pf_stop = true;
		pthread_cond_broadcast(&x->pf_cond);
		pthread_mutex_unlock(&x->pf_lock);
		for (unsigned i = 0; i < x->pf_n; i++)
			pthread_join(x->pf_threads[i], NULL);
		free(x->pf_threads);
	}
	if (x->ts) {
		for (size_t i = 0; i < x->p->n_tensors; i++)
			if (x->ts[i].stats && x->p->tensors[i].method->free_stats)
				x->p->tensors[i].method->free_stats(x->ts[i].stats);
		free(x->ts);
		pthread_mutex_destroy(&x->lock);
		pthread_cond_destroy(&x->cond);
		pthread_mutex_destroy(&x->pf_lock);
		pthread_cond_destroy(&x->pf_cond);
	}
	free(x->last);
	free(x->next_slot);
	if (x->cache)
		bf_cache_free(x->cache);
	free(x);
}

struct bf_cache *bf_exec_cache(struct bf_exec *x) { return x->cache; }
const struct bf_plan *bf_exec_plan(const struct bf_exec *x) { return x->p; }
uint64_t bf_exec_chunk_bytes(const struct bf_exec *x) { return x->chunk; }

void bf_exec_get_stats(struct bf_exec *x, struct bf_exec_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->chunks_computed = atomic_load(&x->chunks);
	out->bytes_computed = atomic_load(&x->bytes);
	out->bytes_copied = atomic_load(&x->copied);
	out->stats_computed = atomic_load(&x->stats_done);
	out->read_errors = atomic_load(&x->errors);
	out->prefetched = atomic_load(&x->prefetched);
	for (int i = 0; i < 32; i++) {
		out->method_ns[i] = atomic_load(&x->m_ns[i]);
		out->method_bytes[i] = atomic_load(&x->m_bytes[i]);
	}
}

/* ---------------------------------------------------------------------------------------------
 * Sources
 */

static int inputs_stale(const struct bf_exec *x, const struct bf_otensor *t)
{
	for (uint32_t i = 0; i < t->n_in; i++) {
		const struct bf_model *m = x->p->models[t->in[i].model];
		if (atomic_load(&m->shards[t->in[i].src->shard].stale))
			return -EIO;
	}
	return 0;
}

/* Re-check the identity of every input shard (after reading: see bf_exec.h). */
static int inputs_fresh(const struct bf_exec *x, const struct bf_otensor *t)
{
	for (uint32_t i = 0; i < t->n_in; i++) {
		const struct bf_model *m = x->p->models[t->in[i].model];
		int r = bf_model_check_fresh(m, t->in[i].src->shard, x->o.fresh_interval_ms);
		if (r)
			return r;
	}
	return 0;
}

/* Pointers to elements [e, e+n) of every input's raw bytes, read with one pread per input into
 * scratch slot 4. (Mapping the sources instead would save this copy, but mapped page-cache
 * pages count in the daemon's RSS and every first touch is a page fault; pread into a buffer
 * that stays in L2 measured faster.) */
static int read_raw(struct bf_exec *x, const struct bf_otensor *t, uint64_t e, size_t n, const char **raw)
{
	size_t maxsz = 0;
	for (uint32_t i = 0; i < t->n_in; i++) {
		size_t sz = bf_dtype_size(t->in[i].src->dtype);
		if (sz > maxsz)
			maxsz = sz;
	}
	size_t stride = (n * maxsz + 63) / 64 * 64;
	char *buf = bf_scratch(4, (size_t)t->n_in * stride);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < t->n_in; i++) {
		const struct bf_src_tensor *st = t->in[i].src;
		size_t sz = bf_dtype_size(st->dtype);
		int r = bf_model_pread(x->p->models[t->in[i].model], st, e * sz, buf + i * stride, n * sz);
		if (r)
			return r;
		raw[i] = buf + i * stride;
	}
	return 0;
}

/* f32 views of elements [s, s+m) of the raw block: f32 inputs are used in place, the others are
 * widened into scratch slot 5. */
static int widen(const struct bf_otensor *t, const char *const *raw, size_t s, size_t m, float **in)
{
	float *f = bf_scratch(5, (size_t)t->n_in * m * sizeof(float));
	if (!f)
		return -ENOMEM;
	for (uint32_t i = 0; i < t->n_in; i++) {
		enum bf_dtype d = t->in[i].src->dtype;
		const char *src = raw[i] + s * bf_dtype_size(d);
		if (d == BF_DT_F32 && (uintptr_t)src % 4 == 0) {
			in[i] = (float *)(uintptr_t)src; /* used in place */
		} else {
			in[i] = f + (size_t)i * m;
			if (d == BF_DT_F32)
				memcpy(in[i], src, m * sizeof(float));
			else
				bf_to_f32(d, src, in[i], m);
		}
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Statistics
 */

uint64_t bf_stream_seed(const struct bf_stream *s) { return s->x->p->seed; }

const char *bf_stream_model_ref(const struct bf_stream *s, uint32_t model)
{
	return s->x->p->models[model]->ref;
}

int bf_stream_threads(const struct bf_stream *s) { return s->nt > 1 ? s->nt : 1; }

void bf_block_sums_init(struct bf_block_sums *bs, const struct bf_stream *s, const struct bf_otensor *t, double *total,
			size_t per)
{
	bs->total = total;
	bs->per = per;
	bs->blk = bf_stream_block(t);
	bs->nb = (t->numel + bs->blk - 1) / bs->blk;
	bs->slots = bf_stream_threads(s) > 1 ? calloc((size_t)bs->nb * per, sizeof(double)) : NULL;
}

void bf_block_sums_fold(struct bf_block_sums *bs)
{
	for (uint64_t b = 0; bs->slots && b < bs->nb; b++)
		for (size_t k = 0; k < bs->per; k++)
			bs->total[k] += bs->slots[b * bs->per + k];
	free(bs->slots);
	bs->slots = NULL;
}

uint64_t bf_stream_block(const struct bf_otensor *t)
{
	uint64_t blk = STREAM_ELEMS / t->row_len * t->row_len;
	return blk ? blk : t->row_len;
}

/* One block of a statistics pass, elements [e, e + n): read, then fn_raw on the raw bytes or fn on
 * f32 views (exactly one of them set). Returns the callback's result or -errno. */
static int stream_block(struct bf_exec *x, const struct bf_otensor *t, bf_stream_fn fn, bf_stream_raw_fn fn_raw,
			void *ctx, uint64_t e, size_t n)
{
	float *in[BF_MAX_MODELS * 4 + 1];
	const char *raw[BF_MAX_MODELS * 4 + 1];
	int r = read_raw(x, t, e, n, raw);
	if (!r && fn_raw)
		r = fn_raw(ctx, (const void *const *)raw, e, n);
	else if (!r && !(r = widen(t, raw, 0, n, in)))
		r = fn(ctx, (const float *const *)in, e, n);
	return r;
}

/* The loop of bf_stream_run and bf_stream_run_raw from block b0 on: exactly one of fn, fn_raw is
 * set. */
static int stream_loop(struct bf_stream *s, const struct bf_otensor *t, bf_stream_fn fn, bf_stream_raw_fn fn_raw,
		       void *ctx, uint64_t b0)
{
	struct bf_exec *x = s->x;
	uint64_t blk = bf_stream_block(t);
	for (uint64_t e = b0 * blk; e < t->numel; e += blk) {
		int r = stream_block(x, t, fn, fn_raw, ctx, e, (size_t)(t->numel - e < blk ? t->numel - e : blk));
		if (r == BF_STREAM_STOP)
			break;
		if (r)
			return r;
	}
	return inputs_fresh(x, t);
}

int bf_stream_run(struct bf_stream *s, const struct bf_otensor *t, bf_stream_fn fn, void *ctx)
{
	return stream_loop(s, t, fn, NULL, ctx, 0);
}

int bf_stream_run_raw(struct bf_stream *s, const struct bf_otensor *t, bf_stream_raw_fn fn, void *ctx)
{
	return stream_loop(s, t, NULL, fn, ctx, 0);
}

/* The loop of bf_block_sums_run and the _split variants: exactly one of fn, fn_raw is set;
 * split, when set, sees block 0 done alone and says whether the others may run at once. */
static int stream_loop_par(struct bf_stream *s, const struct bf_otensor *t, bf_stream_fn fn, bf_stream_raw_fn fn_raw,
			   bool (*split)(void *ctx), void *ctx)
{
	struct bf_exec *x = s->x;
	uint64_t blk = bf_stream_block(t), nb = (t->numel + blk - 1) / blk, b0 = 0;
	int nt = s->nt;
	if (nt < 2 || nb < 4)
		return stream_loop(s, t, fn, fn_raw, ctx, 0);
	if (split) {
		int r = stream_block(x, t, fn, fn_raw, ctx, 0, (size_t)(t->numel < blk ? t->numel : blk));
		if (r == BF_STREAM_STOP)
			return inputs_fresh(x, t);
		if (r)
			return r;
		if (!split(ctx))
			return stream_loop(s, t, fn, fn_raw, ctx, 1);
		b0 = 1;
	}
	_Atomic int err = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
#endif
	for (uint64_t b = b0; b < nb; b++) {
		if (atomic_load(&err))
			continue;
		uint64_t e = b * blk;
		int r = stream_block(x, t, fn, fn_raw, ctx, e, (size_t)(t->numel - e < blk ? t->numel - e : blk));
		if (r) {
			int none = 0;
			atomic_compare_exchange_strong(&err, &none, r > 0 ? -EINVAL : r); /* STOP is not allowed */
		}
	}
	int r = atomic_load(&err);
	return r ? r : inputs_fresh(x, t);
}

int bf_stream_run_split(struct bf_stream *s, const struct bf_otensor *t, bf_stream_fn fn, bool (*split)(void *ctx),
			void *ctx)
{
	return stream_loop_par(s, t, fn, NULL, split, ctx);
}

int bf_stream_run_raw_split(struct bf_stream *s, const struct bf_otensor *t, bf_stream_raw_fn fn,
			    bool (*split)(void *ctx), void *ctx)
{
	return stream_loop_par(s, t, NULL, fn, split, ctx);
}

int bf_block_sums_run(struct bf_stream *s, const struct bf_otensor *t, const struct bf_block_sums *bs, bf_stream_fn fn,
		      bf_stream_raw_fn fn_raw, void *ctx)
{
	return bs->slots ? stream_loop_par(s, t, fn, fn_raw, NULL, ctx) : stream_loop(s, t, fn, fn_raw, ctx, 0);
}

bool bf_all_bf16(const struct bf_otensor *t)
{
	if (t->dtype != BF_DT_BF16)
		return false;
	for (uint32_t i = 0; i < t->n_in; i++)
		if (t->in[i].src->dtype != BF_DT_BF16)
			return false;
	return true;
}

/* Compute the statistics of tensor ti, which the caller has marked ST_COMPUTING, and publish
 * them (or the failure) to every waiter. */
static int compute_stats(struct bf_exec *x, size_t ti, const void **stats)
{
	const struct bf_otensor *t = &x->p->tensors[ti];
	struct tstate *s = &x->ts[ti];
	struct bf_stream st = { x, stats_threads(x) };
	void *out = NULL;
	uint64_t t0 = bf_now_ns();
	int r = t->method->stats(&st, t, &out);
	bf_debug("statistics of %s (%s) in %.1f ms", t->name, t->method->name, (double)(bf_now_ns() - t0) / 1e6);

	pthread_mutex_lock(&x->lock);
	if (r) {
		s->state = ST_NONE; /* a later read may retry (e.g. after ENOMEM) */
	} else {
		s->state = ST_DONE;
		s->stats = out;
		if (stats)
			*stats = out;
		atomic_fetch_add(&x->stats_done, 1);
	}
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
	return r;
}

static long next_stats_tensor(struct bf_exec *x, uint32_t shard, uint64_t off);

/* A thread about to sleep until another finishes tensor ti's statistics computes those of the
 * next tensor in the file that has none yet instead: a sequential reader needs them soon, and
 * the statistics passes of ties, dare or della dominate, so two threads preparing two tensors
 * keep both cores busy where one computing and one sleeping left a core idle. Returns whether
 * it did any work (then the caller re-checks ti). Called without x->lock. */
static bool help_with_stats(struct bf_exec *x, size_t ti)
{
	const struct bf_otensor *t = &x->p->tensors[ti];
	long nt = next_stats_tensor(x, t->shard, t->file_off + t->nbytes);
	if (nt < 0)
		return false;
	pthread_mutex_lock(&x->lock);
	bool mine = x->ts[nt].state == ST_NONE;
	if (mine)
		x->ts[nt].state = ST_COMPUTING;
	pthread_mutex_unlock(&x->lock);
	if (mine) {
		bool was = tl_ahead;
		tl_ahead = true;
		compute_stats(x, (size_t)nt, NULL); /* a failure is retried by whoever needs nt */
		tl_ahead = was;
	}
	return mine;
}

static int ensure_stats(struct bf_exec *x, size_t ti, const void **stats)
{
	const struct bf_otensor *t = &x->p->tensors[ti];
	struct tstate *s = &x->ts[ti];
	*stats = NULL;
	if (!t->method->stats)
		return 0;
	pthread_mutex_lock(&x->lock);
	while (s->state == ST_COMPUTING) {
		pthread_mutex_unlock(&x->lock);
		bool helped = help_with_stats(x, ti);
		pthread_mutex_lock(&x->lock);
		if (!helped && s->state == ST_COMPUTING)
			pthread_cond_wait(&x->cond, &x->lock);
	}
	if (s->state == ST_DONE) {
		*stats = s->stats;
		pthread_mutex_unlock(&x->lock);
		return 0;
	}
	s->state = ST_COMPUTING;
	pthread_mutex_unlock(&x->lock);
	return compute_stats(x, ti, stats);
}

int bf_exec_prepare(struct bf_exec *x, size_t ti)
{
	const void *st;
	if (ti >= x->p->n_tensors || x->p->tensors[ti].copy)
		return 0;
	return ensure_stats(x, ti, &st);
}

/* ---------------------------------------------------------------------------------------------
 * Chunks
 */

/* Output elements [e0, e1) of computed tensor ti, rounded into dst. */
static int compute_range(struct bf_exec *x, size_t ti, uint64_t e0, uint64_t e1, char *dst)
{
	const struct bf_otensor *t = &x->p->tensors[ti];
	const void *stats;
	int r = ensure_stats(x, ti, &stats);
	if (r)
		return r;
	uint64_t t0 = bf_now_ns();
	uint64_t L = t->row_len, ra = e0, rb = e1, B = RAW_ELEMS, S = SUB_ELEMS;
	if (t->method->row_local) {
		/* whole rows: a row cut by the chunk boundary is computed for both chunks */
		ra = e0 / L * L;
		rb = (e1 + L - 1) / L * L;
		if (rb > t->numel)
			rb = t->numel;
		B = B / L ? B / L * L : L;
		S = S / L ? S / L * L : L;
	}
	size_t osz = bf_dtype_size(t->dtype);
	float *in[BF_MAX_MODELS * 4 + 1];
	const char *raw[BF_MAX_MODELS * 4 + 1];
	for (uint64_t e = ra; e < rb && !r; e += B) {
		size_t n = (size_t)(rb - e < B ? rb - e : B);
		r = read_raw(x, t, e, n, raw);
		if (!r && t->method->fused && !t->method->row_local) {
			/* one pass from the raw bytes to the output (ra == e0, rb == e1 here) */
			struct bf_fargs fa = { .t = t, .stats = stats, .raw = (const void *const *)raw,
					       .out = dst + (e - e0) * osz, .e0 = e, .n = n };
			int fr = t->method->fused(&fa);
			if (fr != -ENOTSUP) {
				r = fr;
				continue;
			}
		}
		for (size_t s = 0; s < n && !r; s += S) {
			size_t m = n - s < S ? n - s : (size_t)S;
			float *out = bf_scratch(6, m * sizeof(float));
			if (!out) {
				r = -ENOMEM;
				break;
			}
			r = widen(t, raw, s, m, in);
			if (r)
				break;
			struct bf_kargs a = { .t = t, .stats = stats, .in = (const float *const *)in, .out = out,
					      .e0 = e + s, .n = m };
			r = t->method->kernel(&a);
			if (r)
				break;
			uint64_t lo = e + s > e0 ? e + s : e0, hi = e + s + m < e1 ? e + s + m : e1;
			if (lo < hi)
				bf_from_f32(t->dtype, out + (lo - (e + s)), dst + (lo - e0) * osz, (size_t)(hi - lo));
		}
	}
	if (r)
		return r;
	r = inputs_fresh(x, t);
	if (r)
		return r;
	int mi = method_index(t->method);
	atomic_fetch_add(&x->m_ns[mi], bf_now_ns() - t0);
	atomic_fetch_add(&x->m_bytes[mi], (e1 - e0) * osz);
	atomic_fetch_add(&x->bytes, (e1 - e0) * osz);
	return 0;
}

static int read_copy(struct bf_exec *x, const struct bf_otensor *t, uint64_t off, size_t len, char *buf)
{
	const struct bf_model *m = x->p->models[t->in[0].model];
	int r = bf_model_pread(m, t->in[0].src, off, buf, len);
	if (!r)
		r = inputs_fresh(x, t);
	if (!r)
		atomic_fetch_add(&x->copied, len);
	return r;
}

/* First tensor (in file order) of shard sh that ends after byte `off`. */
static uint32_t first_tensor(const struct bf_exec *x, const struct bf_oshard *sh, uint64_t off)
{
	uint32_t lo = 0, hi = sh->n_tensors;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct bf_otensor *t = &x->p->tensors[sh->tensors[mid]];
		if (t->file_off + t->nbytes <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Fail if a tensor overlapping [a, b) of the shard depends on a source known to have changed. */
static int range_stale(const struct bf_exec *x, uint32_t shard, uint64_t a, uint64_t b)
{
	const struct bf_oshard *sh = &x->p->shards[shard];
	for (uint32_t i = first_tensor(x, sh, a); i < sh->n_tensors; i++) {
		const struct bf_otensor *t = &x->p->tensors[sh->tensors[i]];
		if (t->file_off >= b)
			break;
		if (inputs_stale(x, t))
			return -EIO;
	}
	return 0;
}

/* True when [a, b) holds only header bytes and tensors copied from a source. */
static bool range_copy_only(const struct bf_exec *x, uint32_t shard, uint64_t a, uint64_t b)
{
	const struct bf_oshard *sh = &x->p->shards[shard];
	for (uint32_t i = first_tensor(x, sh, a); i < sh->n_tensors; i++) {
		const struct bf_otensor *t = &x->p->tensors[sh->tensors[i]];
		if (t->file_off >= b)
			break;
		if (!t->copy && t->nbytes)
			return false;
	}
	return true;
}

static void chunk_range(const struct bf_exec *x, uint32_t shard, uint64_t k, uint64_t *cb, uint64_t *ce)
{
	uint64_t size = x->p->shards[shard].size;
	*cb = k * x->chunk;
	*ce = *cb + x->chunk < size ? *cb + x->chunk : size;
}

/* Bytes [cb, ce) of a shard into buf: the header part, copy tensors, computed tensors. */
static long compute_bytes(struct bf_exec *x, uint32_t shard, uint64_t cb, uint64_t ce, char *out)
{
	const struct bf_oshard *sh = &x->p->shards[shard];
	if (cb < sh->header_len)
		memcpy(out, sh->header + cb, (size_t)((ce < sh->header_len ? ce : sh->header_len) - cb));
	for (uint32_t i = first_tensor(x, sh, cb); i < sh->n_tensors; i++) {
		size_t ti = sh->tensors[i];
		const struct bf_otensor *t = &x->p->tensors[ti];
		uint64_t tb = t->file_off, te = tb + t->nbytes;
		if (tb >= ce)
			break;
		if (te <= cb)
			continue; /* empty tensors */
		uint64_t a = cb > tb ? cb : tb, b = ce < te ? ce : te;
		int r = inputs_stale(x, t);
		if (!r) {
			if (t->copy) {
				r = read_copy(x, t, a - tb, (size_t)(b - a), out + (a - cb));
			} else {
				uint64_t osz = bf_dtype_size(t->dtype);
				r = compute_range(x, ti, (a - tb) / osz, (b - tb) / osz, out + (a - cb));
			}
		}
		if (r) {
			atomic_fetch_add(&x->errors, 1);
			bf_log_ratelimited(BF_LOG_ERROR, t->id, 5000, "computing %s bytes [%llu, %llu) (tensor %s) failed: %s",
					   sh->name, (unsigned long long)a, (unsigned long long)b, t->name, strerror(-r));
			return r;
		}
	}
	return (long)(ce - cb);
}

long bf_exec_compute_chunk(struct bf_exec *x, uint32_t shard, uint64_t k, void *buf)
{
	uint64_t cb, ce;
	chunk_range(x, shard, k, &cb, &ce);
	if (cb >= ce)
		return -EINVAL;
	long n = compute_bytes(x, shard, cb, ce, buf);
	if (n > 0)
		atomic_fetch_add(&x->chunks, 1);
	return n;
}

static uint64_t chunk_key(const struct bf_exec *x, uint32_t shard, uint64_t k)
{
	uint64_t v[2] = { shard, k };
	return XXH3_64bits_withSeed(v, sizeof(v), x->p->recipe_hash);
}

static void help_prefetch(struct bf_exec *x);

/* A pinned, ready cache entry for chunk k, or NULL with *err set. */
static struct bf_centry *get_chunk(struct bf_exec *x, uint32_t shard, uint64_t k, int *err)
{
	uint64_t cb, ce;
	chunk_range(x, shard, k, &cb, &ce);
	bool fill;
	struct bf_centry *e = bf_cache_get(x->cache, chunk_key(x, shard, k), shard, (size_t)(ce - cb), &fill);
	if (!e) {
		*err = -ENOMEM;
		return NULL;
	}
	int r;
	if (fill) {
		long n = bf_exec_compute_chunk(x, shard, k, bf_centry_data(e));
		r = n < 0 ? (int)n : 0;
		bf_cache_fill_done(x->cache, e, r);
	} else {
		help_prefetch(x);
		r = bf_cache_wait(x->cache, e);
	}
	if (r) {
		bf_cache_put(x->cache, e);
		*err = r;
		return NULL;
	}
	return e;
}

/* ---------------------------------------------------------------------------------------------
 * Prefetch: sequential readers of a shard get the next chunks computed ahead on another core
 */

static bool range_copy_only(const struct bf_exec *x, uint32_t shard, uint64_t a, uint64_t b);

static void run_pf_job(struct bf_exec *x, struct pf_job j)
{
	if (j.stats) {
		const void *st;
		ensure_stats(x, (size_t)j.k, &st);
		return;
	}
	if (j.k * x->chunk + 1 < atomic_load(&x->last[(size_t)j.shard * STREAMS + j.slot]))
		return; /* stale: its stream has asked for this chunk already (jobs wait in the queue
		         * while the prefetch thread computes a tensor's statistics) */
	uint64_t cb, ce;
	chunk_range(x, j.shard, j.k, &cb, &ce);
	if (bf_cache_contains(x->cache, chunk_key(x, j.shard, j.k)))
		return; /* already there (a job queued again by a later request, or stale): a get
		         * would also make a chunk the stream has consumed look freshly used */
	bool fill;
	struct bf_centry *e = bf_cache_get(x->cache, chunk_key(x, j.shard, j.k), j.shard, (size_t)(ce - cb), &fill);
	if (e) {
		if (fill) {
			long n = bf_exec_compute_chunk(x, j.shard, j.k, bf_centry_data(e));
			bf_cache_fill_done(x->cache, e, n < 0 ? (int)n : 0);
			atomic_fetch_add(&x->prefetched, 1);
		}
		bf_cache_put(x->cache, e); /* stays cached; never wait for another thread's fill */
	}
}

static bool pf_pop(struct bf_exec *x, struct pf_job *j)
{
	if (!x->pf_len)
		return false;
	*j = x->pf_q[x->pf_head];
	x->pf_head = (x->pf_head + 1) % PF_QUEUE;
	x->pf_len--;
	return true;
}

static void *pf_main(void *arg)
{
	struct bf_exec *x = arg;
	tl_ahead = true;
	pthread_mutex_lock(&x->pf_lock);
	for (;;) {
		while (!x->pf_len && !x->pf_stop)
			pthread_cond_wait(&x->pf_cond, &x->pf_lock);
		if (x->pf_stop)
			break;
		struct pf_job j;
		pf_pop(x, &j);
		pthread_mutex_unlock(&x->pf_lock);
		run_pf_job(x, j);
		pthread_mutex_lock(&x->pf_lock);
	}
	pthread_mutex_unlock(&x->pf_lock);
	return NULL;
}

/* A reader about to wait for a chunk another thread is computing takes one queued job first, so
 * that both cores compute instead of one computing while the other sleeps. */
static void help_prefetch(struct bf_exec *x)
{
	struct pf_job j;
	if (!x->pf_n)
		return;
	pthread_mutex_lock(&x->pf_lock);
	bool got = pf_pop(x, &j);
	pthread_mutex_unlock(&x->pf_lock);
	if (got) {
		bool was = tl_ahead;
		tl_ahead = true;
		run_pf_job(x, j);
		tl_ahead = was;
	}
}

int bf_exec_start_prefetch(struct bf_exec *x)
{
	if (!x->o.prefetch_threads || x->pf_threads)
		return 0;
	x->pf_threads = calloc(x->o.prefetch_threads, sizeof(pthread_t));
	if (!x->pf_threads)
		return -ENOMEM;
	for (unsigned i = 0; i < x->o.prefetch_threads; i++) {
		if (pthread_create(&x->pf_threads[i], NULL, pf_main, x))
			break;
		x->pf_n++;
	}
	return 0;
}

static void pf_push(struct bf_exec *x, struct pf_job j)
{
	if (x->pf_len < PF_QUEUE) {
		x->pf_q[(x->pf_head + x->pf_len) % PF_QUEUE] = j;
		x->pf_len++;
	}
}

/* The first computed tensor with statistics that starts after byte `off` of the shard and has
 * none yet, or -1. */
static long next_stats_tensor(struct bf_exec *x, uint32_t shard, uint64_t off)
{
	const struct bf_oshard *sh = &x->p->shards[shard];
	uint32_t first = first_tensor(x, sh, off);
	for (uint32_t i = first; i < sh->n_tensors && i < first + 64; i++) {
		size_t ti = sh->tensors[i];
		const struct bf_otensor *t = &x->p->tensors[ti];
		if (t->copy || !t->method->stats || t->file_off < off)
			continue;
		pthread_mutex_lock(&x->lock);
		int state = x->ts[ti].state;
		pthread_mutex_unlock(&x->lock);
		if (state == ST_NONE)
			return (long)ti;
	}
	return -1;
}

/* A request that continues one of the shard's sequential streams (up to STREAMS at once: loader
 * threads, or mmap faults of several regions) queues that stream's next chunks, and the
 * statistics of the next tensor that needs them, for the prefetch thread (on two cores the
 * reader's thread computes the current tensor while the other prepares the next). Continuing
 * means starting exactly where the stream's last request ended, or one request of the same
 * size later (requests of one stream can overtake each other on two threads); random reads
 * almost never do, and must not set off whole-chunk computes. A request that continues none
 * starts a stream in the next slot, round robin. Returns whether it continued one, and the
 * chunk range [k0, k1] it covers. Slots are updated without a lock: a lost race costs a
 * prefetch, never bytes. */
static bool note_access(struct bf_exec *x, uint32_t shard, uint64_t off, uint64_t len)
{
	_Atomic uint64_t *last = &x->last[(size_t)shard * STREAMS];
	uint64_t end = off + len, k1 = (end - 1) / x->chunk;
	unsigned slot = STREAMS;
	for (unsigned i = 0; i < STREAMS; i++) {
		uint64_t prev = atomic_load(&last[i]);
		if (prev && (off == prev - 1 || off == prev - 1 + len)) {
			slot = i;
			break;
		}
	}
	if (slot == STREAMS) {
		slot = atomic_fetch_add(&x->next_slot[shard], 1) % STREAMS;
		atomic_store(&last[slot], end + 1);
		return false; /* not a continuation of a stream */
	}
	if (end + 1 > atomic_load(&last[slot]))
		atomic_store(&last[slot], end + 1);
	if (!x->pf_n)
		return true;
	uint64_t nchunks = (x->p->shards[shard].size + x->chunk - 1) / x->chunk;
	long st = next_stats_tensor(x, shard, (k1 + 1) * x->chunk);
	pthread_mutex_lock(&x->pf_lock);
	if (st >= 0)
		pf_push(x, (struct pf_job){ shard, (uint64_t)st, true, 0 });
	for (uint64_t k = k1 + 1; k <= k1 + x->o.prefetch_chunks && k < nchunks; k++)
		pf_push(x, (struct pf_job){ shard, k, false, slot });
	pthread_cond_signal(&x->pf_cond);
	pthread_mutex_unlock(&x->pf_lock);
	return true;
}

/* Compute exactly [off, off+len) into pins->buf, uncached. */
static int pin_exact(struct bf_exec *x, uint32_t shard, uint64_t off, size_t len, struct bf_exec_pins *pins)
{
	if (pins->buf_cap < len) {
		char *b = realloc(pins->buf, len);
		if (!b)
			return -ENOMEM;
		pins->buf = b;
		pins->buf_cap = len;
	}
	long n = compute_bytes(x, shard, off, off + len, pins->buf);
	if (n < 0)
		return (int)n;
	pins->iov[0].iov_base = pins->buf;
	pins->iov[0].iov_len = len;
	pins->e[0] = NULL;
	pins->n = 1;
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Reads
 */

static int pins_grow(struct bf_exec_pins *p, size_t n)
{
	if (n <= p->cap)
		return 0;
	size_t cap = n < 16 ? 16 : n;
	struct bf_centry **e = realloc(p->e, cap * sizeof(*e));
	if (!e)
		return -ENOMEM;
	p->e = e;
	struct iovec *v = realloc(p->iov, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	p->iov = v;
	p->cap = cap;
	return 0;
}

int bf_exec_pin(struct bf_exec *x, uint32_t shard, uint64_t off, size_t len, struct bf_exec_pins *pins)
{
	BF_ASSERT(off + len <= x->p->shards[shard].size);
	pins->n = 0;
	if (!len)
		return 0;
	uint64_t k0 = off / x->chunk, k1 = (off + len - 1) / x->chunk;
	int r = range_stale(x, shard, off, off + len);
	if (r)
		return r;
	if ((r = pins_grow(pins, (size_t)(k1 - k0 + 1))))
		return r;
	pins->once_n = 0;
	bool seq = note_access(x, shard, off, len);
	if (!seq && range_copy_only(x, shard, off, off + len))
		return pin_exact(x, shard, off, len, pins); /* copies: pread straight into the reply */
	if (!seq && k0 == k1 && len <= x->chunk / 8) {
		/* A small random read (mmap with MADV_RANDOM, O_DIRECT, a random pread): computing
		 * the whole chunk would cost up to chunk/len times the work, so unless the chunk is
		 * already cached, compute just the requested bytes. */
		uint64_t cb, ce;
		chunk_range(x, shard, k0, &cb, &ce);
		struct bf_centry *e = bf_cache_lookup(x->cache, chunk_key(x, shard, k0), (size_t)(ce - cb));
		if (!e)
			return pin_exact(x, shard, off, len, pins);
		pins->e[0] = e;
		pins->iov[0].iov_base = (char *)bf_centry_data(e) + (off - cb);
		pins->iov[0].iov_len = len;
		pins->n = 1;
		return 0;
	}
	for (uint64_t k = k0; k <= k1; k++) {
		struct bf_centry *e = get_chunk(x, shard, k, &r);
		if (!e && r == -EIO) {
			/* Part of the chunk depends on a source that changed. The request itself may not:
			 * compute exactly the requested bytes, uncached, so reads of unaffected tensors
			 * keep working however chunks and tensors interleave. */
			bf_exec_unpin(x, pins);
			return pin_exact(x, shard, off, len, pins);
		}
		if (!e) {
			bf_exec_unpin(x, pins);
			return r;
		}
		uint64_t cb = k * x->chunk, ce = cb + bf_centry_size(e);
		uint64_t a = off > cb ? off : cb, b = off + len < ce ? off + len : ce;
		if (seq && b == ce)
			pins->once_n = pins->n + 1; /* the stream has read this chunk to its end */
		pins->e[pins->n] = e;
		pins->iov[pins->n].iov_base = (char *)bf_centry_data(e) + (a - cb);
		pins->iov[pins->n].iov_len = (size_t)(b - a);
		pins->n++;
	}
	return 0;
}

void bf_exec_unpin(struct bf_exec *x, struct bf_exec_pins *pins)
{
	for (size_t i = 0; i < pins->n; i++)
		if (pins->e[i]) {
			if (i < pins->once_n)
				bf_cache_put_once(x->cache, pins->e[i]);
			else
				bf_cache_put(x->cache, pins->e[i]);
		}
	pins->n = 0;
	pins->once_n = 0;
}

void bf_exec_pins_free(struct bf_exec_pins *pins)
{
	free(pins->e);
	free(pins->iov);
	free(pins->buf);
	memset(pins, 0, sizeof(*pins));
}

int bf_exec_read(struct bf_exec *x, uint32_t shard, uint64_t off, size_t len, void *buf)
{
	struct bf_exec_pins p = { 0 };
	int r = bf_exec_pin(x, shard, off, len, &p);
	if (!r) {
		char *o = buf;
		for (size_t i = 0; i < p.n; i++) {
			memcpy(o, p.iov[i].iov_base, p.iov[i].iov_len);
			o += p.iov[i].iov_len;
		}
		bf_exec_unpin(x, &p);
	}
	bf_exec_pins_free(&p);
	return r;
}
