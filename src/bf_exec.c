/* bf_exec.c: chunked, cached, on-demand computation of output shards (see bf_exec.h).
 *
 * The read path, for one byte range of a shard:
 *
 *   header bytes            -> copied from the plan
 *   tensor bytes, per tensor overlapping the range:
 *     copy tensor           -> pread from the source (no cache: the page cache has it)
 *     computed tensor       -> the chunks overlapping the range, each from the LRU cache or
 *                              computed now (single-flight), then the overlapping bytes copied
 *
 * Computing a chunk: statistics first (once per tensor, computed by the first thread that needs
 * them while others wait on the same tensor only), then blocks of about BLOCK_ELEMS elements
 * (whole rows for row-local methods): pread each input's bytes, widen to f32, run the kernel,
 * round to the output dtype straight into the cache buffer. Inputs are checked for changes
 * after they are read, so a chunk is never built from a file that changed under it.
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

#define BLOCK_ELEMS 16384u
#define STREAM_ELEMS (1u << 16)

enum { ST_NONE, ST_COMPUTING, ST_DONE };

struct tstate {
	int state;
	void *stats;
	uint64_t chunk_elems;    /* elements per chunk (whole rows for row-local methods) */
	uint64_t block_elems;    /* elements per kernel block */
};

struct bf_exec {
	const struct bf_plan *p;
	struct bf_exec_opts o;
	struct bf_cache *cache;
	struct tstate *ts;
	pthread_mutex_t lock;    /* guards ts[].state/stats */
	pthread_cond_t cond;
	_Atomic uint64_t chunks, bytes, copied, stats_done, errors;
	_Atomic uint64_t m_ns[32], m_bytes[32];
};

struct bf_stream {
	struct bf_exec *x;
};

static uint64_t now_ns(void) { return bf_now_ns(); }

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
	if (!x->o.chunk_bytes)
		x->o.chunk_bytes = 1u << 20;
	x->ts = calloc(p->n_tensors ? p->n_tensors : 1, sizeof(*x->ts));
	x->cache = bf_cache_new(o->cache_bytes, x->o.chunk_bytes);
	if (!x->ts || !x->cache) {
		bf_exec_free(x);
		return bf_errf(err, "out of memory");
	}
	pthread_mutex_init(&x->lock, NULL);
	pthread_cond_init(&x->cond, NULL);
	for (size_t i = 0; i < p->n_tensors; i++) {
		const struct bf_otensor *t = &p->tensors[i];
		struct tstate *s = &x->ts[i];
		uint64_t osz = bf_dtype_size(t->dtype);
		uint64_t ce = x->o.chunk_bytes / (osz ? osz : 1);
		if (ce == 0)
			ce = 1;
		uint64_t be = BLOCK_ELEMS;
		if (t->method->row_local) {
			/* whole rows in chunks and blocks */
			ce = ce / t->row_len * t->row_len;
			if (!ce)
				ce = t->row_len;
			be = be / t->row_len * t->row_len;
			if (!be)
				be = t->row_len;
		}
		s->chunk_elems = ce;
		s->block_elems = be;
	}
	*out = x;
	return 0;
}

void bf_exec_free(struct bf_exec *x)
{
	if (!x)
		return;
	if (x->ts) {
		for (size_t i = 0; i < x->p->n_tensors; i++)
			if (x->ts[i].stats && x->p->tensors[i].method->free_stats)
				x->p->tensors[i].method->free_stats(x->ts[i].stats);
		free(x->ts);
		pthread_mutex_destroy(&x->lock);
		pthread_cond_destroy(&x->cond);
	}
	if (x->cache)
		bf_cache_free(x->cache);
	free(x);
}

struct bf_cache *bf_exec_cache(struct bf_exec *x) { return x->cache; }
const struct bf_plan *bf_exec_plan(const struct bf_exec *x) { return x->p; }

void bf_exec_get_stats(struct bf_exec *x, struct bf_exec_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->chunks_computed = atomic_load(&x->chunks);
	out->bytes_computed = atomic_load(&x->bytes);
	out->bytes_copied = atomic_load(&x->copied);
	out->stats_computed = atomic_load(&x->stats_done);
	out->read_errors = atomic_load(&x->errors);
	for (int i = 0; i < 32; i++) {
		out->method_ns[i] = atomic_load(&x->m_ns[i]);
		out->method_bytes[i] = atomic_load(&x->m_bytes[i]);
	}
}

/* ---------------------------------------------------------------------------------------------
 * Sources
 */

/* Fail fast if any input shard of t is known to have changed. */
static int inputs_stale(const struct bf_exec *x, const struct bf_otensor *t)
{
	for (uint32_t i = 0; i < t->n_in; i++) {
		const struct bf_model *m = x->p->models[t->in[i].model];
		if (atomic_load(&m->shards[t->in[i].src->shard].stale))
			return -EIO;
	}
	return 0;
}

/* Re-check the identity of every input shard (after reading: see the file comment). */
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

/* Load elements [e, e+n) of every input as f32 into in[i] (slot 4: raw bytes; 5: f32). */
static int load_inputs(struct bf_exec *x, const struct bf_otensor *t, uint64_t e, size_t n, float **in)
{
	size_t maxsz = 0;
	for (uint32_t i = 0; i < t->n_in; i++) {
		size_t sz = bf_dtype_size(t->in[i].src->dtype);
		if (sz > maxsz)
			maxsz = sz;
	}
	float *f = bf_scratch(5, (size_t)t->n_in * n * sizeof(float));
	void *raw = bf_scratch(4, n * maxsz);
	if (!f || !raw)
		return -ENOMEM;
	for (uint32_t i = 0; i < t->n_in; i++) {
		const struct bf_src_tensor *st = t->in[i].src;
		const struct bf_model *m = x->p->models[t->in[i].model];
		size_t sz = bf_dtype_size(st->dtype);
		in[i] = f + (size_t)i * n;
		/* f32 sources are read straight into place */
		void *dst = st->dtype == BF_DT_F32 ? (void *)in[i] : raw;
		int r = bf_model_pread(m, st, e * sz, dst, n * sz);
		if (r)
			return r;
		if (st->dtype != BF_DT_F32)
			bf_to_f32(st->dtype, raw, in[i], n);
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

int bf_stream_run(struct bf_stream *s, const struct bf_otensor *t, bf_stream_fn fn, void *ctx)
{
	struct bf_exec *x = s->x;
	uint64_t blk = STREAM_ELEMS / t->row_len * t->row_len;
	if (!blk)
		blk = t->row_len;
	float *in[BF_MAX_MODELS * 4 + 1];
	for (uint64_t e = 0; e < t->numel; e += blk) {
		size_t n = (size_t)(t->numel - e < blk ? t->numel - e : blk);
		int r = load_inputs(x, t, e, n, in);
		if (!r)
			r = fn(ctx, (const float *const *)in, e, n);
		if (r)
			return r;
	}
	return inputs_fresh(x, t);
}

static int ensure_stats(struct bf_exec *x, size_t ti, const void **stats)
{
	const struct bf_otensor *t = &x->p->tensors[ti];
	struct tstate *s = &x->ts[ti];
	*stats = NULL;
	if (!t->method->stats)
		return 0;
	pthread_mutex_lock(&x->lock);
	while (s->state == ST_COMPUTING)
		pthread_cond_wait(&x->cond, &x->lock);
	if (s->state == ST_DONE) {
		*stats = s->stats;
		pthread_mutex_unlock(&x->lock);
		return 0;
	}
	s->state = ST_COMPUTING;
	pthread_mutex_unlock(&x->lock);

	struct bf_stream st = { x };
	void *out = NULL;
	uint64_t t0 = now_ns();
	int r = t->method->stats(&st, t, &out);
	bf_debug("statistics of %s (%s) in %.1f ms", t->name, t->method->name, (double)(now_ns() - t0) / 1e6);

	pthread_mutex_lock(&x->lock);
	if (r) {
		s->state = ST_NONE; /* a later read may retry (e.g. after ENOMEM) */
	} else {
		s->state = ST_DONE;
		s->stats = out;
		*stats = out;
		atomic_fetch_add(&x->stats_done, 1);
	}
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
	return r;
}

/* ---------------------------------------------------------------------------------------------
 * Chunks
 */

static int compute_chunk(struct bf_exec *x, size_t ti, uint64_t k, void *dst)
{
	const struct bf_otensor *t = &x->p->tensors[ti];
	const struct tstate *s = &x->ts[ti];
	const void *stats;
	int r = ensure_stats(x, ti, &stats);
	if (r)
		return r;
	uint64_t t0 = now_ns();
	uint64_t eb = k * s->chunk_elems, ee = eb + s->chunk_elems;
	if (ee > t->numel)
		ee = t->numel;
	size_t osz = bf_dtype_size(t->dtype);
	float *in[BF_MAX_MODELS * 4 + 1];
	for (uint64_t e = eb; e < ee; e += s->block_elems) {
		size_t n = (size_t)(ee - e < s->block_elems ? ee - e : s->block_elems);
		r = load_inputs(x, t, e, n, in);
		if (r)
			return r;
		float *out = bf_scratch(6, n * sizeof(float));
		if (!out)
			return -ENOMEM;
		struct bf_kargs a = { .t = t, .stats = stats, .in = (const float *const *)in, .out = out,
				      .e0 = e, .n = n };
		r = t->method->kernel(&a);
		if (r)
			return r;
		bf_from_f32(t->dtype, out, (char *)dst + (e - eb) * osz, n);
	}
	r = inputs_fresh(x, t);
	if (r)
		return r;
	int mi = method_index(t->method);
	atomic_fetch_add(&x->m_ns[mi], now_ns() - t0);
	atomic_fetch_add(&x->m_bytes[mi], (ee - eb) * osz);
	atomic_fetch_add(&x->chunks, 1);
	atomic_fetch_add(&x->bytes, (ee - eb) * osz);
	return 0;
}

static uint64_t chunk_key(const struct bf_exec *x, size_t ti, uint64_t k)
{
	uint64_t v[2] = { ti, k };
	return XXH3_64bits_withSeed(v, sizeof(v), x->p->recipe_hash);
}

/* Copy bytes [off, off+len) of computed tensor ti into buf. */
static int read_computed(struct bf_exec *x, size_t ti, uint64_t off, size_t len, char *buf)
{
	const struct bf_otensor *t = &x->p->tensors[ti];
	const struct tstate *s = &x->ts[ti];
	uint64_t osz = bf_dtype_size(t->dtype);
	uint64_t cbytes = s->chunk_elems * osz;
	uint64_t end = off + len;
	for (uint64_t k = off / cbytes; k * cbytes < end; k++) {
		uint64_t cb = k * cbytes, ce = cb + cbytes;
		if (ce > t->nbytes)
			ce = t->nbytes;
		bool fill;
		struct bf_centry *e = bf_cache_get(x->cache, chunk_key(x, ti, k), (uint32_t)ti, (size_t)(ce - cb), &fill);
		if (!e)
			return -ENOMEM;
		int r;
		if (fill) {
			r = compute_chunk(x, ti, k, bf_centry_data(e));
			bf_cache_fill_done(x->cache, e, r);
		} else {
			r = bf_cache_wait(x->cache, e);
		}
		if (!r) {
			uint64_t a = off > cb ? off : cb, b = end < ce ? end : ce;
			memcpy(buf + (a - off), (char *)bf_centry_data(e) + (a - cb), (size_t)(b - a));
		}
		bf_cache_put(x->cache, e);
		if (r)
			return r;
	}
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

int bf_exec_read(struct bf_exec *x, uint32_t shard, uint64_t off, size_t len, void *buf)
{
	const struct bf_oshard *sh = &x->p->shards[shard];
	char *out = buf;
	BF_ASSERT(off + len <= sh->size);
	if (off < sh->header_len) {
		size_t n = (size_t)(sh->header_len - off < len ? sh->header_len - off : len);
		memcpy(out, sh->header + off, n);
		out += n;
		off += n;
		len -= n;
	}
	if (!len)
		return 0;
	/* first tensor (in file order) ending after off */
	uint32_t lo = 0, hi = sh->n_tensors;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct bf_otensor *t = &x->p->tensors[sh->tensors[mid]];
		if (t->file_off + t->nbytes <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	uint64_t end = off + len;
	for (uint32_t i = lo; i < sh->n_tensors && off < end; i++) {
		size_t ti = sh->tensors[i];
		const struct bf_otensor *t = &x->p->tensors[ti];
		uint64_t tb = t->file_off, te = tb + t->nbytes;
		if (te <= off || tb >= end)
			continue;
		uint64_t a = off > tb ? off : tb, b = end < te ? end : te;
		int r = inputs_stale(x, t);
		if (!r)
			r = t->copy ? read_copy(x, t, a - tb, (size_t)(b - a), out + (a - off))
				    : read_computed(x, ti, a - tb, (size_t)(b - a), out + (a - off));
		if (r) {
			atomic_fetch_add(&x->errors, 1);
			bf_log_ratelimited(BF_LOG_ERROR, t->id, 5000, "read of %s bytes [%llu, %llu) of tensor %s failed: %s",
					   sh->name, (unsigned long long)a, (unsigned long long)b, t->name,
					   strerror(-r));
			return r;
		}
	}
	return 0;
}
