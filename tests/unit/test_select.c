/* test_select.c: radix rank selection against a plain stable sort. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bf_kern.h"
#include "bf_select.h"
#include "bf_test.h"

static const uint32_t *g_keys;

static int cmp_stable(const void *a, const void *b)
{
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
	if (g_keys[i] != g_keys[j])
		return g_keys[i] < g_keys[j] ? -1 : 1;
	return i < j ? -1 : i > j;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t xs(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Feeding modes of check(): in order; the window pass's blocks after the first fed with
 * bf_select_feed_par from one thread in reverse order; the same from four threads taking blocks
 * in a scrambled order. The result must not depend on the mode. */
enum { FEED_SEQ, FEED_PAR_REVERSE, FEED_PAR_THREADS, FEED_MODES };

struct par_feed {
	struct bf_select *s;
	const uint32_t *keys;
	uint32_t n;
	size_t blk, nb;
	_Atomic size_t next;
};

static void feed_block(struct par_feed *f, size_t b, uint32_t *tk)
{
	size_t o = b * f->blk, len = f->n - o < f->blk ? f->n - o : f->blk;
	bf_select_feed_par(f->s, f->keys + o, o, len, tk, tk + f->blk + BF_SCAN_SLACK);
}

static void *feed_thread(void *arg)
{
	struct par_feed *f = arg;
	uint32_t *tk = malloc(2 * (f->blk + BF_SCAN_SLACK) * sizeof(uint32_t));
	for (size_t i; tk && (i = atomic_fetch_add(&f->next, 1)) < f->nb - 1;)
		feed_block(f, 1 + (i * 7919) % (f->nb - 1), tk); /* 7919 is prime: a permutation unless nb - 1 divides by it */
	free(tk);
	return NULL;
}

/* One streaming pass over the keys in blocks of blk. Returns whether it ran in parallel. */
static bool feed_pass(struct bf_select *s, const uint32_t *keys, uint32_t n, size_t blk, int mode)
{
	size_t nb = (n + blk - 1) / blk;
	bf_select_feed(s, keys, 0, n < blk ? n : blk);
	bool par = mode != FEED_SEQ && nb > 1 && bf_select_windowing(s) && !bf_select_par_begin(s, blk);
	if (!par) {
		for (size_t o = blk; o < n; o += blk)
			bf_select_feed(s, keys + o, o, n - o < blk ? n - o : blk);
		return false;
	}
	struct par_feed f = { .s = s, .keys = keys, .n = n, .blk = blk, .nb = nb };
	atomic_init(&f.next, 0);
	if (mode == FEED_PAR_REVERSE) {
		uint32_t *tk = malloc(2 * (blk + BF_SCAN_SLACK) * sizeof(uint32_t));
		for (size_t b = nb - 1; b >= 1; b--)
			feed_block(&f, b, tk);
		free(tk);
	} else if ((nb - 1) % 7919 == 0) {
		feed_thread(&f);
	} else {
		pthread_t th[4];
		for (int i = 0; i < 4; i++)
			pthread_create(&th[i], NULL, feed_thread, &f);
		for (int i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
	}
	return true;
}

/* select rank R over keys fed in blocks of `blk` in every feeding mode, then check the predicate
 * against the sort, and that every mode gave the same threshold in the same number of passes */
static int g_passes; /* streaming passes the last check() made */
static int g_par;    /* passes of the last check() fed in parallel (all modes) */

static int select_mode(const uint32_t *keys, uint32_t n, uint64_t R, size_t blk, int mode, struct bf_select *s)
{
	if (bf_select_init(s, R, n))
		return 0;
	g_passes = 0;
	while (!bf_select_done(s)) {
		g_par += feed_pass(s, keys, n, blk, mode);
		bf_select_next_pass(s);
		g_passes++;
	}
	return !bf_select_failed(s);
}

static int check(const uint32_t *keys, uint32_t n, uint64_t R, size_t blk)
{
	struct bf_select s, ref;
	int ok = 1, par = 0, passes;
	for (int mode = FEED_MODES - 1; mode > FEED_SEQ; mode--) {
		g_par = 0;
		if (!select_mode(keys, n, R, blk, mode, &s))
			return 0;
		par += g_par;
		passes = g_passes;
		if (!select_mode(keys, n, R, blk, FEED_SEQ, &ref))
			return 0;
		ok &= passes == g_passes && s.thr_key == ref.thr_key && s.thr_idx == ref.thr_idx;
		bf_select_free(&s);
		bf_select_free(&ref);
	}
	g_par = par;
	if (!select_mode(keys, n, R, blk, FEED_SEQ, &ref))
		return 0;
	uint32_t *perm = malloc(n * sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++)
		perm[i] = i;
	g_keys = keys;
	qsort(perm, n, sizeof(uint32_t), cmp_stable);
	for (uint32_t r = 0; r < n; r++) {
		uint32_t i = perm[r];
		if (bf_select_below(&ref, keys[i], i) != (r < R))
			ok = 0;
	}
	free(perm);
	bf_select_free(&ref);
	return ok;
}

BF_TEST(random_keys_every_rank_shape)
{
	uint32_t n = 5000;
	uint32_t *k = malloc(n * sizeof(uint32_t));
	uint64_t dflt = bf_select_collect_max;
	int par = 0;
	for (int trial = 0; trial < 180; trial++) {
		/* the radix path collects the selected bucket in memory, unless it is larger than
		 * bf_select_collect_max: then it counts low bits and runs a tie pass */
		bf_select_collect_max = trial < 60 ? dflt : trial < 120 ? 0 : 40;
		/* wide keys, heavy ties (few distinct values), ties within one top bucket, then keys
		 * shaped like bf16 task-vector magnitudes, ascending and descending; first blocks of
		 * 1..777 keys make the window guessed in pass 1 hit or miss */
		for (uint32_t i = 0; i < n; i++)
			switch (trial % 5) {
			case 0: k[i] = (uint32_t)xs(); break;
			case 1: k[i] = (uint32_t)(xs() % 7); break;
			case 2: k[i] = 0x12340000u | (uint32_t)(xs() % 5); break;
			case 3: k[i] = (uint32_t)(0x38000000u + (xs() % 300) * 0x4000u); break;
			default: k[i] = ~(uint32_t)(0x38000000u + (xs() % 40) * 0x4000u); break;
			}
		uint64_t R = xs() % (n + 1);
		size_t blk = 1 + xs() % 777;
		/* the window pass runs bf_kern->window_scan: the reference, AVX2, and the best
		 * variant (AVX-512 where the CPU has it) */
		for (int v = 0; v < 3; v++) {
			bf_kern_select(v);
			EXPECT(check(k, n, R, blk));
			par += g_par;
		}
	}
	EXPECT(par > 100); /* window passes fed in parallel: a guess that held, in several blocks */
	EXPECT(check(k, n, 0, 100));   /* nothing below */
	EXPECT(check(k, n, n, 100));   /* everything below */
	EXPECT(check(k, n, n - 1, 64));
	bf_select_collect_max = dflt;
	free(k);
}

BF_TEST(pass_counts)
{
	/* magnitudes shaped like task-vector entries (|gaussian| x 0.01, as f32 bits), a quarter
	 * of them one repeated value, fed in blocks of 512: the first block is a fair sample, so
	 * the window guessed from it holds the selected bucket and one pass settles key and index
	 * (a miss costs a histogram pass and a collect pass) */
	uint32_t n = 4000;
	uint32_t *k = malloc(n * sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++) {
		double u1 = ((double)(xs() >> 11) + 1.0) / 9007199254740993.0, u2 = (double)(xs() >> 11) / 9007199254740992.0;
		float g = (float)(0.01 * sqrt(-2.0 * log(u1)) * fabs(cos(6.283185307179586 * u2)));
		k[i] = i % 4 == 1 ? bf_key_abs_asc(0.0042f) : bf_key_abs_asc(g);
	}
	uint64_t dflt = bf_select_collect_max;
	int one = 0, runs = 0;
	for (uint64_t R = 0; R <= n; R += 97, runs++) {
		EXPECT(check(k, n, R, 512));
		EXPECT(g_passes <= 3);
		one += g_passes == 1;
		/* a window pass over 8 blocks: fed in parallel in both parallel modes */
		EXPECT(g_passes != 1 || g_par == 2);
	}
	EXPECT(one >= runs * 9 / 10);
	/* a bucket over the collect limit takes the counting route: hi, lo, then a tie pass */
	bf_select_collect_max = 999;
	int worst = 0;
	for (uint64_t R = 0; R <= n; R += 97) {
		EXPECT(check(k, n, R, 512));
		worst = g_passes > worst ? g_passes : worst;
	}
	EXPECT(worst == 3);
	bf_select_collect_max = dflt;

	/* keys ascending with the index: the first block sees only the smallest, so the guess
	 * misses for high ranks; a histogram pass and a collect pass follow, still exact */
	for (uint32_t i = 0; i < n; i++)
		k[i] = 0x30000000u + i * 0x10000u + (uint32_t)(xs() % 3);
	int three = 0;
	for (uint64_t R = 0; R <= n; R += 97) {
		EXPECT(check(k, n, R, 256));
		EXPECT(g_passes <= 3);
		three += g_passes == 3;
		EXPECT(R > 0 || g_passes == 1); /* rank 0 is the first block's smallest key: a hit */
	}
	EXPECT(three > 0);
	free(k);
}

BF_TEST(parallel_feed_threads)
{
	/* bf16-like magnitudes with many ties over 120 blocks, fed by 4 threads (and in reverse):
	 * small enough for the thread-sanitizer pass of scripts/test.sh, which runs only this */
	uint32_t n = 60000;
	uint32_t *k = malloc(n * sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++)
		k[i] = 0x38000000u + (uint32_t)(xs() % 300) * 0x4000u;
	int par = 0;
	for (uint64_t R = 0; R < n; R += n / 7) {
		EXPECT(check(k, n, R, 500));
		par += g_par;
	}
	EXPECT(par >= 10); /* most of the 7 selections settled in a window pass fed in parallel */
	free(k);
}

BF_TEST(collect_budget_shared)
{
	/* eight selections fed side by side, each wanting a 1.6M-element bucket in memory (10-14 MB
	 * each): the process-wide collect budget (32 MiB) lets the first ones collect during pass 1
	 * or 2, the rest count low bits and run a tie pass; every one must still select exactly */
	uint32_t n = 2000000;
	uint32_t *k = malloc(n * sizeof(uint32_t)), *perm = malloc(n * sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++) {
		k[i] = i % 5 ? 0x40001234u : (uint32_t)xs() | 1u;
		perm[i] = i;
	}
	g_keys = k;
	qsort(perm, n, sizeof(uint32_t), cmp_stable);
	enum { NS = 8 };
	struct bf_select s[NS];
	int passes[NS] = { 0 };
	for (int j = 0; j < NS; j++)
		EXPECT(bf_select_init(&s[j], 400000 + 120000 * (uint64_t)j + 7, n) == 0);
	for (int round = 0; round < 6; round++) {
		for (int j = 0; j < NS; j++)
			if (!bf_select_done(&s[j])) {
				passes[j]++; /* streaming passes that fed it */
				for (uint32_t o = 0; o < n; o += 65536)
					bf_select_feed(&s[j], k + o, o, n - o < 65536 ? n - o : 65536);
			}
		for (int j = 0; j < NS; j++)
			if (!bf_select_done(&s[j]))
				bf_select_next_pass(&s[j]);
	}
	int fast = 0, counted = 0;
	for (int j = 0; j < NS; j++) {
		EXPECT(bf_select_done(&s[j]) && !bf_select_failed(&s[j]));
		EXPECT(passes[j] >= 1 && passes[j] <= 3);
		fast += passes[j] == 1;
		counted += passes[j] == 3;
		uint64_t R = 400000 + 120000 * (uint64_t)j + 7, bad = 0;
		for (uint32_t r = 0; r < n; r++)
			bad += bf_select_below(&s[j], k[perm[r]], perm[r]) != (r < R);
		EXPECT(bad == 0);
		bf_select_free(&s[j]);
	}
	EXPECT(fast >= 1 && counted >= 1);
	free(k);
	free(perm);
}

BF_TEST(magnitude_keys_order)
{
	/* |x| ascending and descending key maps, with -0.0 == 0.0 and ties by index */
	float v[] = { 0.5f, -0.5f, 0.0f, -0.0f, 2.0f, -3.0f, 1e-30f };
	EXPECT(bf_key_abs_asc(0.5f) == bf_key_abs_asc(-0.5f));
	EXPECT(bf_key_abs_asc(0.0f) == bf_key_abs_asc(-0.0f));
	EXPECT(bf_key_abs_asc(1e-30f) < bf_key_abs_asc(0.5f));
	EXPECT(bf_key_abs_desc(-3.0f) < bf_key_abs_desc(2.0f));
	EXPECT(bf_key_float_asc(-3.0f) < bf_key_float_asc(-0.5f));
	EXPECT(bf_key_float_asc(-0.5f) < bf_key_float_asc(0.0f));
	EXPECT(bf_key_float_asc(0.0f) < bf_key_float_asc(1e-30f));
	/* top 3 by |x| descending, stable: -3, 2, then 0.5 (index 0) before -0.5 (index 1) */
	uint32_t keys[7];
	for (int i = 0; i < 7; i++)
		keys[i] = bf_key_abs_desc(v[i]);
	struct bf_select s;
	bf_select_init(&s, 3, 7);
	while (!bf_select_done(&s)) {
		bf_select_feed(&s, keys, 0, 7);
		bf_select_next_pass(&s);
	}
	int kept[7];
	for (int i = 0; i < 7; i++)
		kept[i] = bf_select_below(&s, keys[i], (uint64_t)i);
	EXPECT(kept[5] && kept[4] && kept[0]);
	EXPECT(!kept[1] && !kept[2] && !kept[3] && !kept[6]);
	bf_select_free(&s);
}

/* DELLA row masks against a stable sort of the row: every kind of row (bf16-like differences,
 * heavy ties, a third zeros, 60 octaves with subnormals and -0, NaN and Inf, constant rows),
 * row lengths 1 .. 20000, and uniforms placed right at each element's own threshold so the
 * exact-rank path runs, not only the bucket bounds. */
static float rnd_unit(void) { return (float)(xs() >> 40) * 0x1p-24f; }

static float row_value(int kind, size_t i)
{
	float g = (rnd_unit() + rnd_unit() + rnd_unit() - 1.5f) * 0.01f;
	switch (kind) {
	case 0: return g;
	case 1: { /* difference of two bf16 numbers, like a fine-tune's task vector */
		float a = 0.02f * (rnd_unit() - 0.5f), b = a + g;
		uint32_t ua, ub;
		memcpy(&ua, &a, 4);
		memcpy(&ub, &b, 4);
		ua &= 0xffff0000u;
		ub &= 0xffff0000u;
		memcpy(&a, &ua, 4);
		memcpy(&b, &ub, 4);
		return b - a;
	}
	case 2: { static const float v[] = { 0.0f, 0.25f, -0.25f, 1e-3f, -1e-3f, 7.0f }; return v[xs() % 6]; }
	case 3: return xs() % 3 == 0 ? (xs() & 1 ? -0.0f : 0.0f) : g;
	case 4: return ldexpf(rnd_unit() + 0.5f, -(int)(xs() % 150)) * (xs() & 1 ? -1.0f : 1.0f);
	case 5: { int c = (int)(xs() % 16); return c == 0 ? NAN : c == 1 ? -INFINITY : c == 2 ? INFINITY : g; }
	case 6: return 0.0f;
	default: return (float)(i % 3 == 0) * 3.0f;
	}
}

static uint32_t *g_rk;
static int cmp_rank(const void *a, const void *b)
{
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
	if (g_rk[i] != g_rk[j])
		return g_rk[i] < g_rk[j] ? -1 : 1;
	return i < j ? -1 : 1;
}

BF_TEST(della_rows_match_sort)
{
	static const size_t lens[] = { 1, 2, 3, 5, 64, 1280, 4608, 20000 };
	size_t maxL = 20000;
	float *d = malloc(maxL * sizeof(float)), *u = malloc(maxL * sizeof(float));
	float *ptab = malloc(maxL * sizeof(float)), *m = malloc(maxL * sizeof(float));
	uint32_t *keys = malloc(maxL * sizeof(uint32_t)), *perm = malloc(maxL * sizeof(uint32_t));
	uint32_t *rank = malloc(maxL * sizeof(uint32_t));
	void *sc = malloc(bf_select_della_scratch(maxL));
	EXPECT(d && u && ptab && m && keys && perm && rank && sc);
	if (!(d && u && ptab && m && keys && perm && rank && sc))
		return;
	size_t bad = 0, rows = 0;
	for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++)
		for (int kind = 0; kind < 8; kind++)
			for (int rep = 0; rep < 3; rep++) {
				size_t L = lens[li];
				for (size_t i = 0; i < L; i++) {
					d[i] = row_value(kind, i);
					keys[i] = bf_key_abs_asc(d[i]);
					perm[i] = (uint32_t)i;
				}
				g_rk = keys;
				qsort(perm, L, sizeof(uint32_t), cmp_rank);
				for (size_t r = 0; r < L; r++)
					rank[perm[r]] = (uint32_t)r;
				/* della's table, or (rep 2) a random staircase with long flat runs */
				float lo = 0.1f + 0.3f * rnd_unit(), span = 0.5f * rnd_unit(), acc = lo;
				for (size_t r = 0; r < L; r++) {
					if (rep < 2)
						ptab[r] = lo + span * (L > 1 ? (float)r / (float)(L - 1) : 0.0f);
					else
						ptab[r] = acc += xs() % 8 == 0 ? 1e-4f * rnd_unit() : 0.0f;
				}
				for (size_t i = 0; i < L; i++) {
					float t = ptab[rank[i]];
					uint64_t c = xs() % 4;
					u[i] = c == 0 ? rnd_unit() : c == 1 ? t : c == 2 ? nextafterf(t, 0.0f) : nextafterf(t, 1.0f);
				}
				/* exact ranks come from bf_kern->stable_rank: the reference, AVX2, and
				 * the best variant */
				for (int v = 0; v < 3; v++) {
					bf_kern_select(v);
					bf_select_della_row(d, L, u, ptab, m, sc);
					for (size_t i = 0; i < L; i++) /* zeros: never kept (bf_select.h) */
						bad += m[i] != (d[i] != 0.0f && u[i] < ptab[rank[i]] ? 1.0f : 0.0f);
				}
				rows++;
			}
	EXPECT(rows == 8 * 8 * 3);
	EXPECT(bad == 0);
	free(d), free(u), free(ptab), free(m), free(keys), free(perm), free(rank), free(sc);
}

int main(void)
{
	RUN(random_keys_every_rank_shape);
	RUN(pass_counts);
	RUN(parallel_feed_threads);
	RUN(collect_budget_shared);
	RUN(magnitude_keys_order);
	RUN(della_rows_match_sort);
	return bf_test_report();
}
