/* bf_cache.c: the byte-budgeted LRU of computed chunks (contract in bf_cache.h).
 *
 * How the cache spends its budget
 * -------------------------------
 * blendfs computes tensor bytes lazily, in chunks of about 1 MiB, and several FUSE worker threads
 * ask for overlapping pieces of the same chunks at once. The kernel page cache already keeps
 * what was read; this cache only has to make sure that a chunk is computed once while it is
 * being read in pieces, and that a burst of concurrent readers does not compute it ten times.
 * It therefore holds few, large entries (a few thousand at most), and for that shape an exact
 * LRU -- a hash table for lookup plus a doubly linked recency list -- is both cheaper and easier
 * to reason about than the sampled, approximate LRU that redis uses for millions of small keys.
 *
 * Every entry is ONE allocation, 64-byte aligned: a header of BF_CENTRY_HDR bytes (the struct
 * below, padded to a cache line) followed by the data, whose capacity is the requested size
 * rounded up to 64 bytes. The cost of an entry is the size of that allocation,
 *
 *     cost(size) = BF_CENTRY_HDR + round_up(max(size, 1), 64)
 *
 * and bytes_used is the sum of the costs of every block the cache holds: entries in the table,
 * entries already removed from the table but still pinned by a reader, and free blocks kept for
 * recycling. So bytes_used is what the cache really has allocated, not an estimate, and the rule
 * is simply bytes_used <= budget.
 *
 * The only exception is pinning. An entry that a reader is copying from (refcount > 0) or that
 * a filler is still writing can never be evicted; eviction walks from the LRU tail and skips
 * those. If every entry is pinned and a new one is needed, the new one is allocated anyway: a
 * read is never refused because other reads are in progress. The overshoot is bounded by what
 * is pinned at that moment, i.e. by the number of concurrent readers times the chunk size, and
 * it is paid back as soon as the pins drop: the last put of an entry evicts from the tail until
 * the budget holds again. With nothing pinned, bytes_used <= budget after every call.
 *
 * An entry whose cost alone exceeds the whole budget (and, with budget 0, every entry) is not
 * cached at all: get hands out a private block with fill == true, nobody else can find it, and
 * put frees it. Such private blocks are not part of bytes_used (they are counted in `uncached`);
 * caching them would mean flushing everything else for an entry that cannot even fit.
 *
 * Single-flight. A miss inserts the entry in state FILLING, pinned by the caller, who computes
 * the data outside the lock. A concurrent get of the same key finds the FILLING entry, pins it
 * and sleeps in bf_cache_wait() on the cache's condition variable until bf_cache_fill_done()
 * broadcasts. A failed fill (status < 0) is handed to every waiter and the entry is removed from
 * the table at once, so the next get retries rather than caching the error; the block itself is
 * released when the last pin goes. The state change happens under the mutex after the filler has
 * written the data, so a waiter that sees READY also sees the bytes.
 *
 * Recycling. Nearly every entry has the standard chunk size, so when the cache must evict to make
 * room for a standard-size miss, the victim's block is handed straight to the new entry: no
 * free(), no malloc(), no fresh pages to fault in. Blocks of standard size that are released for
 * other reasons (a failed fill, drop_if, the last put of a dropped entry) go to a free list of at
 * most budget / cost(std_size) blocks, still counted in bytes_used, and the next standard-size
 * miss takes one from there. When room is needed, the free list is drained before any live entry
 * is evicted: an idle buffer is worth nothing, a cached chunk might be read again.
 *
 * Memory exhaustion never aborts. If the allocation fails, everything unpinned (entries and free
 * blocks) is released and the allocation is tried once more; if that also fails, get returns
 * NULL and only that request fails (the caller replies ENOMEM or EIO).
 *
 * Counters (struct bf_cache_stats). Every get counts exactly one of: hits (found a READY entry),
 * waits (joined a fill in flight), misses (returned fill == true; private blocks included, and
 * also counted in uncached). evictions counts entries pushed out for room, including the
 * last-resort flush on allocation failure, but not drop_if removals. fill_errors counts
 * fill_done with status < 0. entries is what the table holds; pinned is the number of entries
 * (in the table or already dropped) with at least one pin, private blocks excluded; bytes_used
 * is the sum described above.
 *
 * Locking. One mutex guards the table, the LRU list, the free list, every entry's refcount and
 * state, and the counters. Fills and copies run outside it. Blocks that an operation releases
 * are collected on a local list and freed after the mutex is dropped. Allocation of a new block
 * happens under the mutex (after warm-up it is rare: recycling covers the steady state), which
 * keeps single-flight trivially correct: the FILLING entry is in the table before anyone else
 * can look. Immutable fields (key, size, data pointer, the private flag) are read without it.
 */
#include <pthread.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

#include "bf_cache.h"
#include "bf_fault.h"
#include "bf_common.h"

enum { CE_FILLING, CE_READY };

struct bf_centry {
	uint64_t key;               /* immutable */
	size_t size;                /* immutable: bytes the caller asked for */
	struct bf_centry *hnext;    /* hash chain; free list / to-free list once released */
	struct bf_centry *prev;     /* LRU links (only while linked) */
	struct bf_centry *next;
	uint32_t tag;
	uint32_t refs;              /* pins: one per outstanding get */
	uint32_t waiters;           /* threads sleeping in bf_cache_wait on this entry */
	int status;                 /* fill result: 0 or -errno (valid once READY) */
	uint8_t state;              /* CE_FILLING / CE_READY */
	bool linked;                /* in the table and the LRU list; false = dead or private */
	bool priv;                  /* immutable: private uncached block, never linked */
	bool once;                  /* consumed by a sequential stream (put_once), not read since */
	struct bf_centry *oprev;    /* the once list, oldest first (only while once) */
	struct bf_centry *onext;
};

#define BF_CACHE_ALIGN 64
#define BF_CENTRY_HDR (((sizeof(struct bf_centry) + BF_CACHE_ALIGN - 1) / BF_CACHE_ALIGN) * BF_CACHE_ALIGN)
#define BF_CACHE_MIN_BUCKETS 64

struct slab {
	struct slab *next;
	char *base;
	size_t used;
};

struct slabs {
	pthread_mutex_t lock;
	struct slab *list;
	struct bf_centry *free;     /* released standard blocks, linked through hnext */
	size_t block;               /* standard block cost (0 = no slabs) */
};

struct bf_cache {
	pthread_mutex_t lock;
	pthread_cond_t filled;      /* broadcast by fill_done when the entry has waiters */

	size_t budget;
	size_t std_size;
	size_t std_cost;            /* cost(std_size), or 0 if std blocks are never cached */
	size_t used;                /* bytes of every block held (see the essay above) */

	struct bf_centry **buckets; /* chained hash table of linked entries */
	size_t nbuckets;            /* power of two */
	unsigned bucket_bits;

	struct bf_centry lru;       /* sentinel: lru.next = most recent, lru.prev = least recent */

	struct bf_centry *pool;     /* free blocks of cost std_cost, linked through hnext */
	struct slabs slabs;         /* where standard blocks come from */
	size_t pool_n, pool_max;

	uint64_t hits, misses, waits, evictions, fill_errors, uncached, recycled_once;
	uint64_t entries, pinned;

	/* Entries consumed by sequential streams, oldest first. The newest ONCE_KEEP stay (a
	 * reader's late duplicate request or a stale prefetch job finds them); older ones give
	 * their block to the next standard-size miss before the cache grows. */
	struct bf_centry *once_head, *once_tail;
	size_t once_n;
};

#define ONCE_KEEP 16

/* ---- sizes ---------------------------------------------------------------------------------- */

/* Cost of an entry holding `size` bytes, or 0 if that does not fit in a size_t. */
static size_t entry_cost(size_t size)
{
	if (size == 0)
		size = 1;
	if (size > SIZE_MAX - BF_CENTRY_HDR - BF_CACHE_ALIGN)
		return 0;
	return BF_CENTRY_HDR + (size + BF_CACHE_ALIGN - 1) / BF_CACHE_ALIGN * BF_CACHE_ALIGN;
}

/* Blocks of the standard size come from slabs: 2 MiB-aligned regions of SLAB_BYTES mapped with
 * MADV_HUGEPAGE, carved in order and never returned to the system before the cache is freed (a
 * released standard block waits on the slab free list). The first touch of cache memory then
 * faults in one 2 MiB page instead of 512 small ones, which measured as a large share of a cold
 * read's CPU time. Other sizes use posix_memalign. */
#define SLAB_BYTES ((size_t)32 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)

static bool in_slab(const struct slabs *sl, const void *p)
{
	for (const struct slab *s = sl->list; s; s = s->next)
		if ((const char *)p >= s->base && (const char *)p < s->base + SLAB_BYTES)
			return true;
	return false;
}

static void *slab_alloc(struct slabs *sl)
{
	pthread_mutex_lock(&sl->lock);
	void *p = NULL;
	if (sl->free) {
		p = sl->free;
		sl->free = sl->free->hnext;
	} else {
		struct slab *s = sl->list;
		if (!s || s->used + sl->block > SLAB_BYTES) {
			s = calloc(1, sizeof(*s));
			void *m = s ? mmap(NULL, SLAB_BYTES + HUGE_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
				    : MAP_FAILED;
			if (m == MAP_FAILED) {
				free(s);
				pthread_mutex_unlock(&sl->lock);
				return NULL;
			}
			/* keep the 2 MiB-aligned SLAB_BYTES, give back the rest */
			char *a = (char *)(((uintptr_t)m + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
			if (a > (char *)m)
				munmap(m, (size_t)(a - (char *)m));
			if ((char *)m + SLAB_BYTES + HUGE_ALIGN > a + SLAB_BYTES)
				munmap(a + SLAB_BYTES, (size_t)((char *)m + SLAB_BYTES + HUGE_ALIGN - (a + SLAB_BYTES)));
			madvise(a, SLAB_BYTES, MADV_HUGEPAGE);
			s->base = a;
			s->next = sl->list;
			sl->list = s;
		}
		p = s->base + s->used;
		s->used += sl->block;
	}
	pthread_mutex_unlock(&sl->lock);
	return p;
}

static struct bf_centry *block_alloc(struct slabs *sl, size_t cost)
{
	void *p = NULL;
	if (bf_fault_alloc())
		return NULL;
	if (sl->block && cost == sl->block)
		return slab_alloc(sl);
	if (posix_memalign(&p, BF_CACHE_ALIGN, cost) != 0)
		return NULL;
	return p;
}

static void block_free(struct slabs *sl, struct bf_centry *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&sl->lock);
	bool mine = sl->block && in_slab(sl, e);
	if (mine) {
		e->hnext = sl->free;
		sl->free = e;
	}
	pthread_mutex_unlock(&sl->lock);
	if (!mine)
		free(e);
}

/* Free a list of released blocks (linked through hnext). Called without the lock. */
static void free_list(struct slabs *sl, struct bf_centry *e)
{
	while (e) {
		struct bf_centry *n = e->hnext;
		block_free(sl, e);
		e = n;
	}
}

/* ---- hash table and LRU list (all under c->lock) ---------------------------------------------- */

static size_t bucket_of(const struct bf_cache *c, uint64_t key)
{
	/* Keys are already hashes, but tests and callers may use small integers; a Fibonacci
	 * multiply spreads those too, and costs nothing. */
	return (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - c->bucket_bits));
}

static struct bf_centry *table_find(const struct bf_cache *c, uint64_t key)
{
	for (struct bf_centry *e = c->buckets[bucket_of(c, key)]; e; e = e->hnext)
		if (e->key == key)
			return e;
	return NULL;
}

static void table_grow(struct bf_cache *c)
{
	unsigned bits = c->bucket_bits + 1;
	if (bits >= 8 * sizeof(size_t) - 4)
		return;
	size_t n = (size_t)1 << bits;
	struct bf_centry **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return; /* longer chains, still correct */
	struct bf_centry **old = c->buckets;
	size_t oldn = c->nbuckets;
	c->buckets = nb;
	c->nbuckets = n;
	c->bucket_bits = bits;
	for (size_t i = 0; i < oldn; i++) {
		struct bf_centry *e = old[i];
		while (e) {
			struct bf_centry *next = e->hnext;
			size_t b = bucket_of(c, e->key);
			e->hnext = nb[b];
			nb[b] = e;
			e = next;
		}
	}
	free(old);
}

static void lru_push_front(struct bf_cache *c, struct bf_centry *e)
{
	e->prev = &c->lru;
	e->next = c->lru.next;
	c->lru.next->prev = e;
	c->lru.next = e;
}

static void lru_remove(struct bf_centry *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->prev = e->next = NULL;
}

static void once_remove(struct bf_cache *c, struct bf_centry *e)
{
	if (!e->once)
		return;
	if (e->oprev)
		e->oprev->onext = e->onext;
	else
		c->once_head = e->onext;
	if (e->onext)
		e->onext->oprev = e->oprev;
	else
		c->once_tail = e->oprev;
	e->oprev = e->onext = NULL;
	e->once = false;
	c->once_n--;
}

static void once_append(struct bf_cache *c, struct bf_centry *e)
{
	e->once = true;
	e->onext = NULL;
	e->oprev = c->once_tail;
	if (c->once_tail)
		c->once_tail->onext = e;
	else
		c->once_head = e;
	c->once_tail = e;
	c->once_n++;
}

/* A found entry gets one more reference and becomes the most recently used. c->lock held. */
static void pin_and_touch(struct bf_cache *c, struct bf_centry *e)
{
	if (e->refs++ == 0)
		c->pinned++;
	once_remove(c, e); /* read again: worth keeping after all */
	lru_remove(e);
	lru_push_front(c, e);
}

static void link_entry(struct bf_cache *c, struct bf_centry *e)
{
	size_t b = bucket_of(c, e->key);
	e->hnext = c->buckets[b];
	c->buckets[b] = e;
	lru_push_front(c, e);
	e->linked = true;
	c->entries++;
	if (c->entries > c->nbuckets)
		table_grow(c);
}

static void unlink_entry(struct bf_cache *c, struct bf_centry *e)
{
	struct bf_centry **pp = &c->buckets[bucket_of(c, e->key)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	e->hnext = NULL;
	lru_remove(e);
	once_remove(c, e);
	e->linked = false;
	c->entries--;
}

/* ---- releasing blocks (under c->lock) ----------------------------------------------------- */

/* An unpinned, unlinked entry leaves bytes_used. A standard-size block goes to the free list if
 * that keeps the budget; anything else is queued on *tofree for free() after unlock. */
static void release_block(struct bf_cache *c, struct bf_centry *e, struct bf_centry **tofree)
{
	size_t cost = entry_cost(e->size);
	c->used -= cost;
	if (cost == c->std_cost && c->pool_n < c->pool_max && c->used + cost <= c->budget) {
		e->hnext = c->pool;
		c->pool = e;
		c->pool_n++;
		c->used += cost;
		return;
	}
	e->hnext = *tofree;
	*tofree = e;
}

static struct bf_centry *pool_pop(struct bf_cache *c)
{
	struct bf_centry *b = c->pool;
	if (b) {
		c->pool = b->hnext;
		c->pool_n--;
		c->used -= c->std_cost;
	}
	return b;
}

/* The least recently used entry that nobody holds. Linked entries with refs == 0 are always
 * READY: a FILLING entry is pinned by its filler, and a failed one is unlinked at once. */
static struct bf_centry *lru_victim(struct bf_cache *c)
{
	for (struct bf_centry *e = c->lru.prev; e != &c->lru; e = e->prev)
		if (e->refs == 0)
			return e;
	return NULL;
}

/* Release memory until bytes_used + need <= budget, or until nothing unpinned is left (then the
 * caller overshoots by what is pinned). Idle free blocks go first, then entries from the LRU tail.
 * If `reuse` is non-NULL and still empty, the first evicted standard-size block is handed over
 * there (already subtracted from bytes_used) instead of being freed: recycling without a detour. */
static void make_room(struct bf_cache *c, size_t need, struct bf_centry **reuse, struct bf_centry **tofree)
{
	while (c->used > c->budget || need > c->budget - c->used) {
		struct bf_centry *v = pool_pop(c);
		if (v) {
			v->hnext = *tofree;
			*tofree = v;
			continue;
		}
		v = lru_victim(c);
		if (!v)
			return;
		unlink_entry(c, v);
		c->evictions++;
		/* Not release_block(): we are short of room, so parking the block on the free list
		 * would only make the next iteration free it. */
		c->used -= entry_cost(v->size);
		if (reuse && !*reuse && entry_cost(v->size) == c->std_cost) {
			*reuse = v;
		} else {
			v->hnext = *tofree;
			*tofree = v;
		}
	}
}

/* Drop everything unpinned: the last resort before reporting ENOMEM. */
static void release_all_unpinned(struct bf_cache *c, struct bf_centry **tofree)
{
	struct bf_centry *v;
	while ((v = pool_pop(c)) != NULL) {
		v->hnext = *tofree;
		*tofree = v;
	}
	while ((v = lru_victim(c)) != NULL) {
		unlink_entry(c, v);
		c->evictions++;
		c->used -= entry_cost(v->size);
		v->hnext = *tofree;
		*tofree = v;
	}
}

static void entry_init(struct bf_centry *e, uint64_t key, uint32_t tag, size_t size, bool priv)
{
	memset(e, 0, sizeof(*e));
	e->key = key;
	e->tag = tag;
	e->size = size;
	e->refs = 1;
	e->state = CE_FILLING;
	e->priv = priv;
}

/* ---- public API --------------------------------------------------------------------------- */

struct bf_cache *bf_cache_new(size_t budget, size_t std_size)
{
	struct bf_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->budget = budget;
	c->std_size = std_size;
	size_t sc = entry_cost(std_size);
	c->std_cost = sc && sc <= budget ? sc : 0;
	c->pool_max = c->std_cost ? budget / c->std_cost : 0;

	/* Size the table for the entries a budget of standard chunks holds; it grows if small
	 * entries outnumber that. */
	size_t want = c->std_cost ? budget / c->std_cost : 0;
	if (want > ((size_t)1 << 16))
		want = (size_t)1 << 16;
	c->bucket_bits = 6;
	while (((size_t)1 << c->bucket_bits) < want)
		c->bucket_bits++;
	c->nbuckets = (size_t)1 << c->bucket_bits;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	c->lru.next = c->lru.prev = &c->lru;
	if (!c->buckets)
		goto err;
	if (pthread_mutex_init(&c->lock, NULL) != 0)
		goto err;
	pthread_mutex_init(&c->slabs.lock, NULL);
	c->slabs.block = c->std_cost;
	if (pthread_cond_init(&c->filled, NULL) != 0) {
		pthread_mutex_destroy(&c->lock);
		goto err;
	}
	return c;
err:
	free(c->buckets);
	free(c);
	return NULL;
}

void bf_cache_free(struct bf_cache *c)
{
	if (!c)
		return;
	BF_ASSERT(c->pinned == 0);
	struct bf_centry *e = c->lru.next;
	while (e != &c->lru) {
		struct bf_centry *n = e->next;
		block_free(&c->slabs, e);
		e = n;
	}
	free_list(&c->slabs, c->pool);
	for (struct slab *s = c->slabs.list, *n; s; s = n) {
		n = s->next;
		munmap(s->base, SLAB_BYTES);
		free(s);
	}
	pthread_mutex_destroy(&c->slabs.lock);
	free(c->buckets);
	pthread_cond_destroy(&c->filled);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

struct bf_centry *bf_cache_lookup(struct bf_cache *c, uint64_t key, size_t size)
{
	pthread_mutex_lock(&c->lock);
	struct bf_centry *e = table_find(c, key);
	if (e && (e->size != size || e->state != CE_READY || e->status))
		e = NULL;
	if (e) {
		pin_and_touch(c, e);
		c->hits++;
	}
	pthread_mutex_unlock(&c->lock);
	return e;
}

bool bf_cache_contains(struct bf_cache *c, uint64_t key)
{
	pthread_mutex_lock(&c->lock);
	bool found = table_find(c, key) != NULL;
	pthread_mutex_unlock(&c->lock);
	return found;
}

struct bf_centry *bf_cache_get(struct bf_cache *c, uint64_t key, uint32_t tag, size_t size, bool *fill)
{
	struct bf_centry *tofree = NULL, *e = NULL;
	size_t cost = entry_cost(size);
	*fill = false;
	if (cost == 0)
		return NULL; /* size so large no allocation could hold it */

	if (cost > c->budget) {
		/* Uncacheable: a private block nobody else can find, allocated outside the lock
		 * (c->budget never changes). */
		e = block_alloc(&c->slabs, cost);
		if (!e) {
			pthread_mutex_lock(&c->lock);
			release_all_unpinned(c, &tofree);
			pthread_mutex_unlock(&c->lock);
			free_list(&c->slabs, tofree);
			e = block_alloc(&c->slabs, cost);
			if (!e)
				return NULL;
		}
		entry_init(e, key, tag, size, true);
		pthread_mutex_lock(&c->lock);
		c->misses++;
		c->uncached++;
		pthread_mutex_unlock(&c->lock);
		*fill = true;
		return e;
	}

	pthread_mutex_lock(&c->lock);
	e = table_find(c, key);
	if (e && e->size != size) {
		/* Same key, different size: the caller's view of the chunk changed (a stale source).
		 * Retire the old entry like drop_if would and fill a fresh one. */
		unlink_entry(c, e);
		if (e->refs == 0)
			release_block(c, e, &tofree);
		e = NULL;
	}
	if (e) {
		pin_and_touch(c, e);
		if (e->state == CE_READY)
			c->hits++;
		else
			c->waits++;
		pthread_mutex_unlock(&c->lock);
		free_list(&c->slabs, tofree);
		return e;
	}

	/* Miss: find a block. Standard size: an idle free block, else the block of the entry that
	 * eviction pushes out, else malloc. */
	struct bf_centry *blk = NULL;
	bool std = cost == c->std_cost;
	if (std)
		blk = pool_pop(c);
	while (std && !blk && c->once_n > ONCE_KEEP) {
		/* The oldest chunk a sequential stream has consumed: take its block rather than
		 * grow, even below the budget. A stream then cycles through a few warm blocks
		 * instead of faulting in fresh memory for every chunk it reads once. One that
		 * cannot give its block (a short last chunk, or pinned again) leaves the list as an
		 * ordinary entry, so that it does not block the ones behind it. */
		struct bf_centry *v = c->once_head;
		if (v->refs == 0 && entry_cost(v->size) == cost) {
			unlink_entry(c, v);
			c->evictions++;
			c->recycled_once++;
			c->used -= cost;
			blk = v;
		} else {
			once_remove(c, v);
		}
	}
	make_room(c, cost, std && !blk ? &blk : NULL, &tofree);
	if (!blk) {
		blk = block_alloc(&c->slabs, cost);
		if (!blk) {
			release_all_unpinned(c, &tofree);
			free_list(&c->slabs, tofree); /* under the lock: rare, and the retry needs the memory back */
			tofree = NULL;
			blk = block_alloc(&c->slabs, cost);
		}
	}
	if (blk) {
		entry_init(blk, key, tag, size, false);
		c->used += cost;
		c->misses++;
		c->pinned++;
		link_entry(c, blk);
		*fill = true;
	}
	pthread_mutex_unlock(&c->lock);
	free_list(&c->slabs, tofree);
	return blk;
}

int bf_cache_wait(struct bf_cache *c, struct bf_centry *e)
{
	pthread_mutex_lock(&c->lock);
	BF_ASSERT(e->refs > 0);
	if (e->state == CE_FILLING) {
		e->waiters++;
		while (e->state == CE_FILLING)
			pthread_cond_wait(&c->filled, &c->lock);
		e->waiters--;
	}
	int status = e->status;
	pthread_mutex_unlock(&c->lock);
	return status;
}

void bf_cache_fill_done(struct bf_cache *c, struct bf_centry *e, int status)
{
	if (status > 0)
		status = 0;
	pthread_mutex_lock(&c->lock);
	BF_ASSERT(e->state == CE_FILLING && e->refs > 0);
	e->state = CE_READY;
	e->status = status;
	if (status < 0) {
		c->fill_errors++;
		if (e->linked)
			unlink_entry(c, e); /* the next get retries; the block goes on the last put */
	}
	if (e->waiters)
		pthread_cond_broadcast(&c->filled);
	pthread_mutex_unlock(&c->lock);
}

void bf_cache_put(struct bf_cache *c, struct bf_centry *e)
{
	struct bf_centry *tofree = NULL;
	if (!e)
		return;
	if (e->priv) {
		/* Private blocks are owned by one caller and never counted in bytes_used. */
		block_free(&c->slabs, e);
		return;
	}
	pthread_mutex_lock(&c->lock);
	BF_ASSERT(e->refs > 0);
	if (--e->refs == 0) {
		/* A filler must call fill_done before put, or its waiters would sleep forever. */
		BF_ASSERT(e->state == CE_READY);
		c->pinned--;
		if (!e->linked)
			release_block(c, e, &tofree);
		else if (c->used > c->budget)
			make_room(c, 0, NULL, &tofree); /* pay back an overshoot made while pinned */
	}
	pthread_mutex_unlock(&c->lock);
	free_list(&c->slabs, tofree);
}

void bf_cache_put_once(struct bf_cache *c, struct bf_centry *e)
{
	if (!e)
		return;
	if (!e->priv) {
		pthread_mutex_lock(&c->lock);
		if (e->linked && e->state == CE_READY && e->status == 0 && !e->once)
			once_append(c, e);
		pthread_mutex_unlock(&c->lock);
	}
	bf_cache_put(c, e);
}

void *bf_centry_data(struct bf_centry *e)
{
	return (char *)e + BF_CENTRY_HDR;
}

size_t bf_centry_size(const struct bf_centry *e)
{
	return e->size;
}

uint64_t bf_centry_key(const struct bf_centry *e)
{
	return e->key;
}

void bf_cache_get_stats(struct bf_cache *c, struct bf_cache_stats *out)
{
	pthread_mutex_lock(&c->lock);
	out->hits = c->hits;
	out->misses = c->misses;
	out->waits = c->waits;
	out->evictions = c->evictions;
	out->recycled_once = c->recycled_once;
	out->fill_errors = c->fill_errors;
	out->uncached = c->uncached;
	out->bytes_used = c->used;
	out->bytes_budget = c->budget;
	out->entries = c->entries;
	out->pinned = c->pinned;
	pthread_mutex_unlock(&c->lock);
}

size_t bf_cache_drop_if(struct bf_cache *c, bool (*pred)(uint64_t key, uint32_t tag, void *ctx), void *ctx)
{
	struct bf_centry *tofree = NULL;
	size_t n = 0;
	pthread_mutex_lock(&c->lock);
	/* pred runs under the lock: it must be quick and must not call back into the cache. */
	struct bf_centry *e = c->lru.next;
	while (e != &c->lru) {
		struct bf_centry *next = e->next;
		if (pred(e->key, e->tag, ctx)) {
			unlink_entry(c, e);
			/* A pinned entry (a reader copying, or a fill in flight whose waiters will still get
			 * its result) stays valid for its holders and is released on the last put. */
			if (e->refs == 0)
				release_block(c, e, &tofree);
			n++;
		}
		e = next;
	}
	pthread_mutex_unlock(&c->lock);
	free_list(&c->slabs, tofree);
	return n;
}
