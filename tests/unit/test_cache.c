/* test_cache.c: the chunk cache's contract (bf_cache.h) and the policy documented in bf_cache.c.
 *
 * Cost model the tests rely on (documented in bf_cache.c): an entry of `size` bytes costs
 * HDR + round_up(max(size, 1), 64), HDR is measured once below; bytes_used also counts idle
 * standard-size blocks kept for recycling. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "bf_cache.h"
#include "bf_common.h"
#include "bf_test.h"

static size_t g_hdr; /* per-entry overhead, measured by entry_cost_accounting */

static size_t cost_of(size_t size)
{
	if (size == 0)
		size = 1;
	return g_hdr + (size + 63) / 64 * 64;
}

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: deterministic, per-thread, good enough to drive tests. */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(0x2545F4914F6CDD1D);
}

/* ---- key-derived byte patterns -------------------------------------------------------------- */

static uint64_t pat_word(uint64_t key, size_t j)
{
	uint64_t x = key * UINT64_C(0x9E3779B97F4A7C15) ^ (j + 1) * UINT64_C(0xBF58476D1CE4E5B9);
	x ^= x >> 31;
	x *= UINT64_C(0x94D049BB133111EB);
	x ^= x >> 29;
	return x;
}

static void pat_fill(void *p, size_t n, uint64_t key)
{
	unsigned char *b = p;
	size_t j = 0;
	for (; j + 8 <= n; j += 8) {
		uint64_t w = pat_word(key, j / 8);
		memcpy(b + j, &w, 8);
	}
	if (j < n) {
		uint64_t w = pat_word(key, j / 8);
		memcpy(b + j, &w, n - j);
	}
}

static bool pat_check(const void *p, size_t n, uint64_t key)
{
	const unsigned char *b = p;
	size_t j = 0;
	for (; j + 8 <= n; j += 8) {
		uint64_t w = pat_word(key, j / 8);
		if (memcmp(b + j, &w, 8))
			return false;
	}
	if (j < n) {
		uint64_t w = pat_word(key, j / 8);
		if (memcmp(b + j, &w, n - j))
			return false;
	}
	return true;
}

/* One complete get/fill-or-wait/verify/put cycle. Returns 1 if this call filled, 0 if it hit,
 * -1 on any protocol or data error. */
static int touch(struct bf_cache *c, uint64_t key, size_t size)
{
	bool fill;
	struct bf_centry *e = bf_cache_get(c, key, (uint32_t)(key % 7), size, &fill);
	if (!e)
		return -1;
	int r = 0;
	if (fill) {
		pat_fill(bf_centry_data(e), size, key);
		bf_cache_fill_done(c, e, 0);
		r = 1;
	} else if (bf_cache_wait(c, e) != 0 || !pat_check(bf_centry_data(e), size, key)) {
		r = -1;
	}
	if (bf_centry_key(e) != key || bf_centry_size(e) != size || ((uintptr_t)bf_centry_data(e) & 63))
		r = -1;
	bf_cache_put(c, e);
	return r;
}

/* Fill and return an entry still pinned. */
static struct bf_centry *pin_filled(struct bf_cache *c, uint64_t key, size_t size, bool *filled)
{
	bool fill;
	struct bf_centry *e = bf_cache_get(c, key, (uint32_t)(key % 7), size, &fill);
	if (!e)
		return NULL;
	if (fill) {
		pat_fill(bf_centry_data(e), size, key);
		bf_cache_fill_done(c, e, 0);
	} else if (bf_cache_wait(c, e) != 0) {
		bf_cache_put(c, e);
		return NULL;
	}
	if (filled)
		*filled = fill;
	return e;
}

static struct bf_cache_stats stats(struct bf_cache *c)
{
	struct bf_cache_stats s;
	bf_cache_get_stats(c, &s);
	return s;
}

/* ---- single-threaded contract ------------------------------------------------------------- */

BF_TEST(entry_cost_accounting)
{
	struct bf_cache *c = bf_cache_new(1 << 20, 4096);
	EXPECT(c != NULL);
	bool fill;
	struct bf_centry *e = bf_cache_get(c, 1, 0, 4096, &fill);
	EXPECT(e && fill);
	g_hdr = (size_t)stats(c).bytes_used - 4096;
	printf("  per-entry overhead: %zu bytes\n", g_hdr);
	EXPECT(g_hdr >= 64 && g_hdr <= 256 && g_hdr % 64 == 0);
	EXPECT(((uintptr_t)bf_centry_data(e) & 63) == 0);
	pat_fill(bf_centry_data(e), 4096, 1);
	bf_cache_fill_done(c, e, 0);
	bf_cache_put(c, e);

	static const size_t sizes[] = { 0, 1, 63, 64, 65, 1000, 4095, 4097 };
	size_t want = cost_of(4096);
	for (size_t i = 0; i < BF_ARRAY_LEN(sizes); i++) {
		EXPECT(touch(c, 100 + i, sizes[i]) == 1);
		want += cost_of(sizes[i]);
		EXPECT_EQ_U64(stats(c).bytes_used, want);
	}
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(s.entries, 1 + BF_ARRAY_LEN(sizes));
	EXPECT_EQ_U64(s.misses, 1 + BF_ARRAY_LEN(sizes));
	EXPECT_EQ_U64(s.bytes_budget, 1 << 20);
	EXPECT_EQ_U64(s.pinned, 0);
	bf_cache_free(c);
}

BF_TEST(hit_after_fill)
{
	struct bf_cache *c = bf_cache_new(1 << 20, 4096);
	EXPECT(touch(c, 7, 4096) == 1);
	EXPECT(touch(c, 7, 4096) == 0);
	EXPECT(touch(c, 7, 4096) == 0);
	EXPECT(touch(c, 8, 4096) == 1);
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(s.hits, 2);
	EXPECT_EQ_U64(s.misses, 2);
	EXPECT_EQ_U64(s.waits, 0);
	EXPECT_EQ_U64(s.entries, 2);
	EXPECT_EQ_U64(s.evictions, 0);
	/* Two pins on one entry: both see the same bytes; pinned counts entries, not pins. */
	bool f1, f2;
	struct bf_centry *a = pin_filled(c, 7, 4096, &f1), *b = pin_filled(c, 7, 4096, &f2);
	EXPECT(a && a == b && !f1 && !f2);
	EXPECT_EQ_U64(stats(c).pinned, 1);
	bf_cache_put(c, a);
	EXPECT_EQ_U64(stats(c).pinned, 1);
	bf_cache_put(c, b);
	EXPECT_EQ_U64(stats(c).pinned, 0);
	/* A size that cannot be allocated at all is reported, not aborted on. */
	bool fill = true;
	EXPECT(bf_cache_get(c, 9, 0, SIZE_MAX, &fill) == NULL);
	EXPECT(!fill);
	EXPECT(bf_cache_get(c, 9, 0, SIZE_MAX - 100, &fill) == NULL);
	bf_cache_free(c);
}

BF_TEST(lru_order)
{
	const size_t S = 4096;
	struct bf_cache *c = bf_cache_new(3 * cost_of(S), S);
	EXPECT(touch(c, 'A', S) == 1);
	EXPECT(touch(c, 'B', S) == 1);
	EXPECT(touch(c, 'C', S) == 1);
	EXPECT_EQ_U64(stats(c).bytes_used, 3 * cost_of(S));
	EXPECT(touch(c, 'A', S) == 0); /* A is now the most recent: B is the oldest */
	EXPECT(touch(c, 'D', S) == 1); /* evicts B */
	EXPECT_EQ_U64(stats(c).evictions, 1);
	EXPECT(touch(c, 'C', S) == 0); /* order now C, D, A (oldest last) */
	EXPECT(touch(c, 'D', S) == 0); /* D, C, A */
	EXPECT(touch(c, 'B', S) == 1); /* B was gone; evicts A */
	EXPECT(touch(c, 'C', S) == 0);
	EXPECT(touch(c, 'D', S) == 0);
	EXPECT(touch(c, 'A', S) == 1);
	EXPECT_EQ_U64(stats(c).evictions, 3);
	EXPECT_EQ_U64(stats(c).entries, 3);
	EXPECT(stats(c).bytes_used <= 3 * cost_of(S));

	/* A large entry evicts as many small ones as it needs, oldest first. */
	EXPECT(touch(c, 'E', 2 * S) == 1); /* order was A, D, C: evicts C and D */
	EXPECT(touch(c, 'A', S) == 0);
	EXPECT(touch(c, 'D', S) == 1);
	bf_cache_free(c);
}

/* A model of the documented policy: exact LRU over costs, plus the recycling free list. */
#define MODEL_KEYS 200
struct model {
	uint64_t order[MODEL_KEYS]; /* most recent first */
	size_t n;
	size_t used, pool_n, pool_max, pool_peak, budget, std_cost;
	uint64_t evictions;
};

static size_t model_size(uint64_t key)
{
	static const size_t sz[] = { 4096, 4096, 1000, 8192, 0 };
	return sz[key % 5];
}

static long model_find(const struct model *m, uint64_t key)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->order[i] == key)
			return (long)i;
	return -1;
}

static void model_remove_at(struct model *m, size_t i)
{
	memmove(&m->order[i], &m->order[i + 1], (m->n - i - 1) * sizeof(m->order[0]));
	m->n--;
}

static void model_push_front(struct model *m, uint64_t key)
{
	memmove(&m->order[1], &m->order[0], m->n * sizeof(m->order[0]));
	m->order[0] = key;
	m->n++;
}

static void model_release(struct model *m, size_t cost)
{
	m->used -= cost;
	if (cost == m->std_cost && m->pool_n < m->pool_max && m->used + cost <= m->budget) {
		m->pool_n++;
		m->used += cost;
		if (m->pool_n > m->pool_peak)
			m->pool_peak = m->pool_n;
	}
}

static void model_miss(struct model *m, uint64_t key)
{
	size_t cost = cost_of(model_size(key));
	if (cost == m->std_cost && m->pool_n) {
		m->pool_n--;
		m->used -= m->std_cost;
	}
	while (m->used + cost > m->budget) {
		if (m->pool_n) {
			m->pool_n--;
			m->used -= m->std_cost;
			continue;
		}
		if (!m->n)
			break;
		m->used -= cost_of(model_size(m->order[m->n - 1]));
		m->n--;
		m->evictions++;
	}
	m->used += cost;
	model_push_front(m, key);
}

struct drop_ctx {
	uint32_t tag;
	size_t calls;
};

static bool drop_tag(uint64_t key, uint32_t tag, void *ctx)
{
	struct drop_ctx *d = ctx;
	d->calls++;
	return tag == d->tag && tag == (uint32_t)(key % 7);
}

BF_TEST(random_ops_match_model)
{
	struct model m = { .budget = 40 * cost_of(4096) + 123 };
	m.std_cost = cost_of(4096);
	m.pool_max = m.budget / m.std_cost;
	struct bf_cache *c = bf_cache_new(m.budget, 4096);
	uint64_t s = 0x1234567;
	long bad = 0;
	for (int op = 0; op < 100000 && bad < 5; op++) {
		uint64_t r = rng_next(&s);
		if (r % 1000 == 0) {
			struct drop_ctx d = { (uint32_t)(r >> 32) % 7, 0 };
			size_t n0 = m.n, dropped = bf_cache_drop_if(c, drop_tag, &d);
			EXPECT_EQ_U64(d.calls, n0);
			size_t want = 0;
			for (size_t i = 0; i < m.n;) { /* MRU to LRU, as the cache walks */
				if (m.order[i] % 7 == d.tag) {
					model_release(&m, cost_of(model_size(m.order[i])));
					model_remove_at(&m, i);
					want++;
				} else {
					i++;
				}
			}
			EXPECT_EQ_U64(dropped, want);
		} else {
			uint64_t key = (r >> 8) % 4 ? (r >> 16) % 50 : (r >> 16) % MODEL_KEYS;
			size_t size = model_size(key);
			long at = model_find(&m, key);
			bool fill;
			struct bf_centry *e = bf_cache_get(c, key, (uint32_t)(key % 7), size, &fill);
			if (!e) {
				BF_T_FAIL("op %d: get returned NULL", op);
				bad++;
				continue;
			}
			if (fill != (at < 0)) {
				BF_T_FAIL("op %d: key %" PRIu64 " fill=%d, model says %s", op, key, fill,
					  at < 0 ? "absent" : "present");
				bad++;
			}
			if (fill) {
				pat_fill(bf_centry_data(e), size, key);
				bool fail = (r >> 40) % 50 == 0;
				bf_cache_fill_done(c, e, fail ? -EIO : 0);
				if (at >= 0)
					model_remove_at(&m, (size_t)at);
				model_miss(&m, key);
				if (fail) {
					model_release(&m, cost_of(size));
					model_remove_at(&m, 0);
				}
			} else {
				if (bf_cache_wait(c, e) != 0 || !pat_check(bf_centry_data(e), size, key)) {
					BF_T_FAIL("op %d: key %" PRIu64 " bad data on hit", op, key);
					bad++;
				}
				if (at >= 0) {
					model_remove_at(&m, (size_t)at);
					model_push_front(&m, key);
				}
			}
			bf_cache_put(c, e);
		}
		struct bf_cache_stats st = stats(c);
		if (st.bytes_used > m.budget || st.bytes_used != m.used || st.entries != m.n || st.pinned) {
			BF_T_FAIL("op %d: bytes_used %" PRIu64 " (model %zu, budget %zu), entries %" PRIu64
				  " (model %zu), pinned %" PRIu64, op, st.bytes_used, m.used, m.budget,
				  st.entries, m.n, st.pinned);
			bad++;
		}
	}
	struct bf_cache_stats st = stats(c);
	EXPECT_EQ_U64(st.evictions, m.evictions);
	printf("  hits %" PRIu64 " misses %" PRIu64 " evictions %" PRIu64 " fill_errors %" PRIu64
	       " entries %" PRIu64 " free blocks peak %zu\n", st.hits, st.misses, st.evictions,
	       st.fill_errors, st.entries, m.pool_peak);
	EXPECT(st.hits > 10000 && st.evictions > 1000 && st.fill_errors > 100 && m.pool_peak > 1);
	bf_cache_free(c);
}

BF_TEST(pinned_survive_pressure)
{
	const size_t S = 4096, C = cost_of(S);
	struct bf_cache *c = bf_cache_new(4 * C, S);
	struct bf_centry *pins[8];
	for (int i = 0; i < 4; i++)
		pins[i] = pin_filled(c, 1000 + i, S, NULL);
	/* The budget is full of pinned entries: new entries are still served (overshoot), and
	 * are evicted again as soon as they are unpinned. */
	for (uint64_t k = 0; k < 20; k++) {
		struct bf_centry *e = pin_filled(c, k, S, NULL);
		EXPECT(e != NULL);
		struct bf_cache_stats s = stats(c);
		EXPECT_EQ_U64(s.pinned, 5);
		EXPECT_EQ_U64(s.bytes_used, 5 * C);
		bf_cache_put(c, e);
		EXPECT_EQ_U64(stats(c).bytes_used, 4 * C);
	}
	for (int i = 0; i < 4; i++)
		EXPECT(pat_check(bf_centry_data(pins[i]), S, 1000 + i));
	/* Twice the budget pinned: bytes_used == what is pinned, never more. */
	for (int i = 4; i < 8; i++) {
		pins[i] = pin_filled(c, 1000 + i, S, NULL);
		struct bf_cache_stats s = stats(c);
		EXPECT(s.bytes_used <= (s.pinned * C > 4 * C ? s.pinned * C : 4 * C));
	}
	EXPECT_EQ_U64(stats(c).bytes_used, 8 * C);
	/* Unpinning in age order evicts the four oldest; the newest four stay. */
	for (int i = 0; i < 8; i++) {
		EXPECT(pat_check(bf_centry_data(pins[i]), S, 1000 + i));
		bf_cache_put(c, pins[i]);
	}
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(s.bytes_used, 4 * C);
	EXPECT_EQ_U64(s.entries, 4);
	EXPECT_EQ_U64(s.pinned, 0);
	for (int i = 4; i < 8; i++)
		EXPECT(touch(c, 1000 + i, S) == 0);
	bf_cache_free(c);
}

BF_TEST(oversize_is_uncached)
{
	const size_t S = 4096;
	struct bf_cache *c = bf_cache_new(16 * cost_of(S), S);
	EXPECT(touch(c, 1, S) == 1);
	size_t big = 16 * cost_of(S); /* plus the header: larger than the whole budget */
	bool fill;
	struct bf_centry *e = bf_cache_get(c, 99, 0, big, &fill);
	EXPECT(e && fill);
	EXPECT(((uintptr_t)bf_centry_data(e) & 63) == 0);
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(s.bytes_used, cost_of(S)); /* private blocks are not cached bytes */
	EXPECT_EQ_U64(s.entries, 1);
	pat_fill(bf_centry_data(e), big, 99);
	bf_cache_fill_done(c, e, 0);
	EXPECT(pat_check(bf_centry_data(e), big, 99));
	bf_cache_put(c, e);
	EXPECT(touch(c, 99, big) == 1); /* filled again: it was never cached */
	/* A failed private fill is counted and freed like any other. */
	e = bf_cache_get(c, 99, 0, big, &fill);
	EXPECT(e && fill);
	bf_cache_fill_done(c, e, -EIO);
	bf_cache_put(c, e);
	s = stats(c);
	EXPECT_EQ_U64(s.uncached, 3);
	EXPECT_EQ_U64(s.fill_errors, 1);
	EXPECT_EQ_U64(s.entries, 1);
	EXPECT_EQ_U64(s.bytes_used, cost_of(S));
	EXPECT(touch(c, 1, S) == 0); /* the small entry was not flushed for it */
	bf_cache_free(c);
}

BF_TEST(budget_zero_caches_nothing)
{
	struct bf_cache *c = bf_cache_new(0, 4096);
	for (int i = 0; i < 3; i++)
		EXPECT(touch(c, 5, 4096) == 1);
	EXPECT(touch(c, 6, 0) == 1);
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(s.uncached, 4);
	EXPECT_EQ_U64(s.hits, 0);
	EXPECT_EQ_U64(s.bytes_used, 0);
	EXPECT_EQ_U64(s.entries, 0);
	bf_cache_free(c);
}

BF_TEST(size_change_refills)
{
	struct bf_cache *c = bf_cache_new(1 << 20, 4096);
	EXPECT(touch(c, 3, 4096) == 1);
	EXPECT(touch(c, 3, 4096) == 0);
	EXPECT(touch(c, 3, 2000) == 1); /* same key, other size: stale, refilled */
	EXPECT(touch(c, 3, 2000) == 0);
	EXPECT_EQ_U64(stats(c).entries, 1);
	bf_cache_free(c);
}

static bool drop_all(uint64_t key, uint32_t tag, void *ctx)
{
	return true;
}

BF_TEST(drop_if_defers_pinned)
{
	const size_t S = 4096;
	struct bf_cache *c = bf_cache_new(64 * cost_of(S), S);
	for (uint64_t k = 1; k <= 14; k++)
		EXPECT(touch(c, k, S) == 1); /* tag = key % 7 */
	struct bf_centry *held = pin_filled(c, 3, S, NULL); /* tag 3 */
	struct drop_ctx d = { 3, 0 };
	EXPECT_EQ_U64(bf_cache_drop_if(c, drop_tag, &d), 2); /* keys 3 and 10 */
	EXPECT_EQ_U64(d.calls, 14);
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(s.entries, 12);
	EXPECT_EQ_U64(s.pinned, 1);
	EXPECT(pat_check(bf_centry_data(held), S, 3)); /* still valid for its holder */
	EXPECT(touch(c, 10, S) == 1);
	/* Key 3 again: a fresh entry, not the dead one. */
	bool fill;
	struct bf_centry *fresh = bf_cache_get(c, 3, 3, S, &fill);
	EXPECT(fresh && fill && fresh != held);
	pat_fill(bf_centry_data(fresh), S, 3);
	bf_cache_fill_done(c, fresh, 0);
	bf_cache_put(c, fresh);
	EXPECT(pat_check(bf_centry_data(held), S, 3));
	bf_cache_put(c, held); /* the dead entry goes now */
	s = stats(c);
	EXPECT_EQ_U64(s.pinned, 0);
	EXPECT_EQ_U64(s.entries, 14); /* 12 + key 10 again + the fresh key 3 */
	EXPECT(s.bytes_used <= s.bytes_budget);
	EXPECT(touch(c, 3, S) == 0);

	/* An entry still being filled can be dropped: its filler finishes, the result stays private
	 * to those already holding it, and the next get fills again. */
	struct bf_centry *f = bf_cache_get(c, 500, 0, S, &fill);
	EXPECT(f && fill);
	EXPECT_EQ_U64(bf_cache_drop_if(c, drop_all, NULL), 15); /* 14 + the one filling */
	pat_fill(bf_centry_data(f), S, 500);
	bf_cache_fill_done(c, f, 0);
	EXPECT(bf_cache_wait(c, f) == 0);
	bf_cache_put(c, f);
	EXPECT(touch(c, 500, S) == 1);
	s = stats(c);
	EXPECT_EQ_U64(s.entries, 1);
	EXPECT_EQ_U64(s.pinned, 0);
	EXPECT(s.bytes_used <= s.bytes_budget);
	EXPECT_EQ_U64(bf_cache_drop_if(c, drop_all, NULL), 1);
	EXPECT_EQ_U64(stats(c).entries, 0);
	bf_cache_free(c);
}

static bool ptr_in(void *const *set, size_t n, const void *p)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == p)
			return true;
	return false;
}

BF_TEST(buffers_are_recycled)
{
	/* Under ASan or valgrind a freed block is quarantined, so "every steady-state miss gets a
	 * block we have seen before" really means "no new allocation"; with plain glibc it is a
	 * weaker check. Either way every miss's fill must overwrite the recycled bytes completely. */
	enum { N = 8 };
	const size_t S = 16384, C = cost_of(S);
	struct bf_cache *c = bf_cache_new(N * C, S);
	void *seen[N];
	size_t nseen = 0;
	uint64_t key = 0;
	for (; key < N; key++) {
		bool fill;
		struct bf_centry *e = bf_cache_get(c, key, 0, S, &fill);
		EXPECT(e && fill);
		seen[nseen++] = e;
		pat_fill(bf_centry_data(e), S, key);
		bf_cache_fill_done(c, e, 0);
		bf_cache_put(c, e);
	}
	size_t foreign = 0;
	for (; key < 2000; key++) {
		bool fill;
		struct bf_centry *e = bf_cache_get(c, key, 0, S, &fill);
		EXPECT(e && fill);
		foreign += !ptr_in(seen, nseen, e);
		pat_fill(bf_centry_data(e), S, key);
		bf_cache_fill_done(c, e, 0);
		bf_cache_put(c, e);
		EXPECT(touch(c, key, S) == 0); /* reads back this key's bytes, none of the victim's */
	}
	EXPECT_EQ_U64(foreign, 0);
	EXPECT_EQ_U64(stats(c).bytes_used, N * C);

	/* Dropped standard blocks are kept (and counted) for reuse... */
	EXPECT_EQ_U64(bf_cache_drop_if(c, drop_all, NULL), N);
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(s.entries, 0);
	EXPECT_EQ_U64(s.bytes_used, N * C);
	for (uint64_t k = 0; k < N / 2; k++) {
		bool fill;
		struct bf_centry *e = bf_cache_get(c, 10000 + k, 0, S, &fill);
		EXPECT(e && fill && ptr_in(seen, nseen, e));
		pat_fill(bf_centry_data(e), S, 10000 + k);
		bf_cache_fill_done(c, e, 0);
		bf_cache_put(c, e);
		EXPECT(touch(c, 10000 + k, S) == 0);
	}
	EXPECT_EQ_U64(stats(c).bytes_used, N * C);
	/* ...and released before any live entry when other sizes need the room. */
	EXPECT(touch(c, 20000, 100) == 1);
	s = stats(c);
	EXPECT_EQ_U64(s.bytes_used, (N - 1) * C + cost_of(100));
	EXPECT_EQ_U64(s.entries, N / 2 + 1);
	EXPECT_EQ_U64(s.evictions, 2000 - N);
	bf_cache_free(c);
}

BF_TEST(stream_chunks_recycled_first)
{
	/* A budget of 64 blocks. Four ordinary entries stay; then a "stream" of 200 chunks, each
	 * released with put_once: the 16 newest consumed chunks are kept, and from the 17th on each
	 * miss takes the oldest one's block. The cache never holds more than 4 + 17 entries, the
	 * ordinary ones survive, and every chunk reads back its own bytes. */
	enum { N = 64, KEEP = 16 };
	const size_t S = 16384, C = cost_of(S);
	struct bf_cache *c = bf_cache_new(N * C, S);
	for (uint64_t k = 0; k < 4; k++)
		EXPECT(touch(c, k, S) == 1);
	void *blk[300] = { 0 };
	size_t wrong = 0;
	for (uint64_t k = 100; k < 300; k++) {
		bool fill;
		struct bf_centry *e = bf_cache_get(c, k, 0, S, &fill);
		EXPECT(e && fill);
		blk[k] = e;
		/* chunk k reuses the block of chunk k - KEEP - 1, once that many are consumed */
		if (k >= 100 + KEEP + 1)
			wrong += blk[k] != blk[k - KEEP - 1];
		pat_fill(bf_centry_data(e), S, k);
		bf_cache_fill_done(c, e, 0);
		EXPECT(pat_check(bf_centry_data(e), S, k));
		bf_cache_put_once(c, e);
	}
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(wrong, 0);
	EXPECT_EQ_U64(s.entries, 4 + KEEP + 1);
	EXPECT_EQ_U64(s.bytes_used, (4 + KEEP + 1) * C);
	EXPECT_EQ_U64(s.recycled_once, 200 - KEEP - 1);
	for (uint64_t k = 0; k < 4; k++)
		EXPECT(touch(c, k, S) == 0); /* still cached */
	for (uint64_t k = 300 - KEEP; k < 300; k++)
		EXPECT(touch(c, k, S) == 0); /* the newest consumed ones too (now ordinary again) */

	/* a consumed chunk of another size (a shard's short last chunk) at the head of the list
	 * leaves it instead of blocking recycling for the standard-size ones behind it */
	{
		struct bf_cache *c2 = bf_cache_new(N * C, S);
		bool fill;
		struct bf_centry *e = bf_cache_get(c2, 1, 0, 100, &fill);
		EXPECT(e && fill);
		pat_fill(bf_centry_data(e), 100, 1);
		bf_cache_fill_done(c2, e, 0);
		bf_cache_put_once(c2, e);
		for (uint64_t k = 2; k < 2 + KEEP + 5; k++) {
			e = bf_cache_get(c2, k, 0, S, &fill);
			EXPECT(e && fill);
			pat_fill(bf_centry_data(e), S, k);
			bf_cache_fill_done(c2, e, 0);
			bf_cache_put_once(c2, e);
		}
		struct bf_cache_stats s2 = stats(c2);
		EXPECT(s2.recycled_once >= 3); /* the stream recycles although the short one came first */
		EXPECT(touch(c2, 1, 100) == 0); /* the short chunk is still cached, as an ordinary entry */
		bf_cache_free(c2);
	}

	/* those reads made them ordinary, and one consumed chunk is too few to recycle: the next
	 * misses allocate */
	EXPECT(touch(c, 400, S) == 1);
	EXPECT(touch(c, 401, S) == 1);
	s = stats(c);
	EXPECT_EQ_U64(s.recycled_once, 200 - KEEP - 1);
	EXPECT_EQ_U64(s.entries, 4 + KEEP + 1 + 2);
	bf_cache_free(c);
}

/* ---- concurrency -------------------------------------------------------------------------- */

struct flight {
	struct bf_cache *c;
	pthread_barrier_t *bar;
	uint64_t key;
	size_t size;
	atomic_int fills, errors, got_error;
	int fail_with;
};

static void *flight_thread(void *arg)
{
	struct flight *f = arg;
	bool fill;
	pthread_barrier_wait(f->bar);
	struct bf_centry *e = bf_cache_get(f->c, f->key, 0, f->size, &fill);
	if (!e) {
		atomic_fetch_add(&f->errors, 1);
		return NULL;
	}
	if (fill) {
		atomic_fetch_add(&f->fills, 1);
		usleep(30000); /* a slow compute: everyone else must be waiting, not computing */
		pat_fill(bf_centry_data(e), f->size, f->key);
		bf_cache_fill_done(f->c, e, f->fail_with);
	} else {
		int st = bf_cache_wait(f->c, e);
		if (st == f->fail_with && st < 0)
			atomic_fetch_add(&f->got_error, 1);
		else if (st != 0 || !pat_check(bf_centry_data(e), f->size, f->key))
			atomic_fetch_add(&f->errors, 1);
	}
	bf_cache_put(f->c, e);
	return NULL;
}

static void run_flight(struct flight *f, int nthreads)
{
	pthread_t th[16];
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, (unsigned)nthreads);
	f->bar = &bar;
	for (int i = 0; i < nthreads; i++)
		pthread_create(&th[i], NULL, flight_thread, f);
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&bar);
}

BF_TEST(single_flight)
{
	enum { T = 8, ROUNDS = 5 };
	const size_t S = 65536;
	struct bf_cache *c = bf_cache_new(64 * cost_of(S), S);
	for (int round = 0; round < ROUNDS; round++) {
		struct flight f = { .c = c, .key = 42 + (uint64_t)round, .size = S };
		run_flight(&f, T);
		EXPECT_EQ_I64(atomic_load(&f.fills), 1);
		EXPECT_EQ_I64(atomic_load(&f.errors), 0);
	}
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(s.misses, ROUNDS);
	EXPECT_EQ_U64(s.hits + s.waits, ROUNDS * (T - 1));
	EXPECT(s.waits > 0);
	EXPECT_EQ_U64(s.pinned, 0);
	bf_cache_free(c);
}

struct waiter {
	struct bf_cache *c;
	uint64_t key;
	int status;
	bool filled;
};

static void *waiter_thread(void *arg)
{
	struct waiter *w = arg;
	bool fill;
	struct bf_centry *e = bf_cache_get(w->c, w->key, 0, 4096, &fill);
	w->filled = fill;
	w->status = e ? bf_cache_wait(w->c, e) : -ENOMEM;
	if (e && w->status == 0 && !pat_check(bf_centry_data(e), 4096, w->key))
		w->status = -EBADMSG;
	if (e)
		bf_cache_put(w->c, e);
	return NULL;
}

BF_TEST(failed_fill_reaches_waiters)
{
	enum { W = 4 };
	struct bf_cache *c = bf_cache_new(16 * cost_of(4096), 4096);
	bool fill;
	struct bf_centry *e = bf_cache_get(c, 77, 0, 4096, &fill);
	EXPECT(e && fill);
	pthread_t th[W];
	struct waiter w[W];
	for (int i = 0; i < W; i++) {
		w[i] = (struct waiter){ .c = c, .key = 77 };
		pthread_create(&th[i], NULL, waiter_thread, &w[i]);
	}
	/* Wait until all of them have joined the fill (their gets are counted as waits). */
	for (int spin = 0; spin < 5000 && stats(c).waits < W; spin++)
		usleep(1000);
	EXPECT_EQ_U64(stats(c).waits, W);
	usleep(20000);
	memset(bf_centry_data(e), 0xee, 4096); /* half-written garbage that nobody may read */
	bf_cache_fill_done(c, e, -EIO);
	for (int i = 0; i < W; i++) {
		pthread_join(th[i], NULL);
		EXPECT(!w[i].filled);
		EXPECT_EQ_I64(w[i].status, -EIO);
	}
	EXPECT_EQ_I64(bf_cache_wait(c, e), -EIO);
	struct bf_cache_stats s = stats(c);
	EXPECT_EQ_U64(s.entries, 0);
	EXPECT_EQ_U64(s.fill_errors, 1);
	EXPECT_EQ_U64(s.pinned, 1);
	bf_cache_put(c, e);
	EXPECT_EQ_U64(stats(c).pinned, 0);
	EXPECT(stats(c).bytes_used <= stats(c).bytes_budget);
	/* The error was not cached: the next get fills again, and then everybody hits. */
	EXPECT(touch(c, 77, 4096) == 1);
	EXPECT(touch(c, 77, 4096) == 0);

	/* Same through the concurrent path: one failing filler, seven waiters see the error. */
	struct flight f = { .c = c, .key = 78, .size = 4096, .fail_with = -EIO };
	run_flight(&f, 8);
	/* A thread scheduled only after the failure has been unlinked fills (and fails) anew, so
	 * the exact split depends on timing; nobody may see data or another status. */
	EXPECT(atomic_load(&f.fills) >= 1);
	EXPECT_EQ_I64(atomic_load(&f.errors), 0);
	EXPECT_EQ_I64(atomic_load(&f.fills) + atomic_load(&f.got_error), 8);
	EXPECT(touch(c, 78, 4096) == 1);
	EXPECT_EQ_U64(stats(c).pinned, 0);
	bf_cache_free(c);
}

#define STRESS_KEYS 64
#define STRESS_STD 1024

static size_t stress_size(uint64_t key)
{
	if (key == STRESS_KEYS - 1)
		return 64 * STRESS_STD; /* larger than the whole budget: private */
	if (key % 8 == 7)
		return 3 * STRESS_STD;
	if (key % 16 == 5)
		return 100;
	return STRESS_STD;
}

struct stress {
	struct bf_cache *c;
	int id, ops;
	atomic_ulong *gets, *bad, *failed;
};

static bool drop_mod(uint64_t key, uint32_t tag, void *ctx)
{
	return key % 8 == *(uint64_t *)ctx;
}

/* Get, complete (fill or wait), and return a READY entry still pinned, or NULL after a failed
 * fill. A thread never waits while it owns an unfinished fill, so no deadlock is possible. */
static struct bf_centry *stress_get(struct stress *t, uint64_t key, uint64_t *rs)
{
	size_t size = stress_size(key);
	bool fill;
	struct bf_centry *e = bf_cache_get(t->c, key, (uint32_t)(key % 8), size, &fill);
	atomic_fetch_add(t->gets, 1);
	if (!e) {
		atomic_fetch_add(t->bad, 1);
		return NULL;
	}
	if (fill) {
		if (rng_next(rs) % 64 == 0) {
			memset(bf_centry_data(e), 0x5a, size);
			bf_cache_fill_done(t->c, e, -EIO);
			atomic_fetch_add(t->failed, 1);
			bf_cache_put(t->c, e);
			return NULL;
		}
		pat_fill(bf_centry_data(e), size, key);
		bf_cache_fill_done(t->c, e, 0);
		return e;
	}
	int st = bf_cache_wait(t->c, e);
	if (st != 0) {
		if (st != -EIO)
			atomic_fetch_add(t->bad, 1);
		bf_cache_put(t->c, e);
		return NULL;
	}
	return e;
}

static void *stress_thread(void *arg)
{
	struct stress *t = arg;
	uint64_t rs = 0x9E3779B97F4A7C15ull * (uint64_t)(t->id + 1);
	for (int op = 0; op < t->ops;) {
		uint64_t r = rng_next(&rs);
		if (t->id == 0 && r % 4096 == 0) {
			uint64_t m = (r >> 20) % 8;
			bf_cache_drop_if(t->c, drop_mod, &m);
		}
		/* Mostly one key at a time; sometimes hold two pins at once. */
		uint64_t k1 = (r >> 8) % STRESS_KEYS, k2 = (r >> 24) % STRESS_KEYS;
		bool two = (r >> 40) % 4 == 0;
		struct bf_centry *a = stress_get(t, k1, &rs);
		struct bf_centry *b = two ? stress_get(t, k2, &rs) : NULL;
		op += two ? 2 : 1;
		if (a && !pat_check(bf_centry_data(a), stress_size(k1), k1))
			atomic_fetch_add(t->bad, 1);
		if (b && !pat_check(bf_centry_data(b), stress_size(k2), k2))
			atomic_fetch_add(t->bad, 1);
		if (b)
			bf_cache_put(t->c, b);
		if (a)
			bf_cache_put(t->c, a);
	}
	return NULL;
}

BF_TEST(threaded_stress)
{
	enum { T = 8, TOTAL = 200000 };
	const size_t budget = 16 * cost_of(STRESS_STD);
	struct bf_cache *c = bf_cache_new(budget, STRESS_STD);
	atomic_ulong gets = 0, bad = 0, failed = 0;
	pthread_t th[T];
	struct stress st[T];
	for (int i = 0; i < T; i++) {
		st[i] = (struct stress){ c, i, TOTAL / T, &gets, &bad, &failed };
		pthread_create(&th[i], NULL, stress_thread, &st[i]);
	}
	for (int i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	struct bf_cache_stats s = stats(c);
	printf("  gets %lu: hits %" PRIu64 " waits %" PRIu64 " misses %" PRIu64 " (uncached %" PRIu64
	       ") evictions %" PRIu64 " fill_errors %" PRIu64 "\n", (unsigned long)atomic_load(&gets),
	       s.hits, s.waits, s.misses, s.uncached, s.evictions, s.fill_errors);
	EXPECT_EQ_U64(atomic_load(&bad), 0);
	EXPECT(atomic_load(&gets) >= TOTAL);
	EXPECT_EQ_U64(s.hits + s.waits + s.misses, atomic_load(&gets));
	EXPECT_EQ_U64(s.fill_errors, atomic_load(&failed));
	EXPECT_EQ_U64(s.pinned, 0);
	EXPECT(s.bytes_used <= budget);
	EXPECT(s.uncached > 0 && s.evictions > 0 && s.hits > 0);
	bf_cache_free(c);
}

int main(void)
{
	RUN(entry_cost_accounting); /* first: measures the per-entry overhead the others use */
	RUN(hit_after_fill);
	RUN(lru_order);
	RUN(random_ops_match_model);
	RUN(pinned_survive_pressure);
	RUN(oversize_is_uncached);
	RUN(budget_zero_caches_nothing);
	RUN(size_change_refills);
	RUN(drop_if_defers_pinned);
	RUN(buffers_are_recycled);
	RUN(stream_chunks_recycled_first);
	RUN(single_flight);
	RUN(failed_fill_reaches_waiters);
	RUN(threaded_stress);
	return bf_test_report();
}
