/* bf_select.c: exact rank selection (see bf_select.h).
 *
 * Pass 1 counts the top 16 key bits of the first block fed (LANES counters per bucket) and
 * guesses from that histogram a window of buckets around its quantile R / total, four standard
 * errors plus half a percent wide (the first rows of a tensor are not a random sample of it).
 * The rest of the pass, the first block included, is a window scan: a vectorised count of the
 * keys below the window and a left-packed collect of the window's (key, index) pairs. The
 * per-key histogram increment it replaces was a scatter that no SIMD unit does well, and cost
 * most of a TIES read's selection time. When rank R falls inside the window (below <= R <
 * below + collected) and the buffer did not overflow, key and tie-break come from the buffer:
 * one pass over the tensor in all.
 *
 * Otherwise (a wrong guess, a window too crowded for the buffer budget) a full top-16-bit
 * histogram pass names the bucket holding rank R, and a further pass collects just that bucket,
 * whose size is now known, and finishes the same way. A bucket larger than
 * bf_select_collect_max, or than the budget allows, takes the counting route: a pass that
 * counts the low 16 bits within the bucket, then a tie pass that stops once it has the index.
 *
 * Finishing from a buffer: counting one 8-bit digit of the keys at a time (the bucket within
 * the window, then the low 16 bits in two bytes) keeps only the entries equal to the key of
 * rank `need`; the buffer is in index order, so the need'-th of them (counting from 0) is the
 * stable tie-break. Tensors of 2^32 elements or more keep flat
 * indices in 64 bits only on the counting route, so they never collect.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "bf_kern.h"
#include "bf_select.h"

/* LANES counters per top-bits bucket, used in turn by consecutive keys: keys crowd into a few
 * buckets, and one counter per bucket would make every increment wait for the previous one to
 * the same address. */
#define LANES 4u
/* widest window, in buckets: past it the guess is too vague to be worth collecting for */
#define WINDOW_MAX 256u

enum { P_HI = 0, P_RADIX_LO = 1, P_COLLECT = 2, P_TIE = 3, P_WIN = BF_SELECT_WIN, P_DONE = BF_SELECT_DONE };

uint64_t bf_select_collect_max = (uint64_t)1 << 22;

/* Bytes of collect buffers alive in the process: selections run concurrently (several models of
 * a tensor, several tensors on several threads), and the daemon's memory outside the chunk cache
 * is budgeted at 64 MiB. A selection that would go over does without (the next route). */
#define COLLECT_BUDGET ((uint64_t)32 << 20)
static _Atomic uint64_t collect_bytes;
static _Atomic uint64_t n_windows_hit, n_windows_missed, n_windows_par;

void bf_select_get_stats(struct bf_select_stats *out)
{
	out->windows_hit = atomic_load(&n_windows_hit);
	out->windows_missed = atomic_load(&n_windows_missed);
	out->windows_par = atomic_load(&n_windows_par);
}

static bool collect_reserve(uint64_t bytes)
{
	uint64_t cur = atomic_load(&collect_bytes);
	do {
		if (cur + bytes > COLLECT_BUDGET)
			return false;
	} while (!atomic_compare_exchange_weak(&collect_bytes, &cur, cur + bytes));
	return true;
}

static void collect_release(struct bf_select *s)
{
	if (s->col_bytes)
		atomic_fetch_sub(&collect_bytes, s->col_bytes);
	free(s->ck);
	s->ck = s->ci = NULL;
	s->col_bytes = 0;
	s->col_cap = 0;
}

/* Buffers for `count` keys and indices (+ the scan's slack). False, with nothing held, when the
 * budget or malloc says no: not fatal, the next route needs less. */
static bool collect_alloc(struct bf_select *s, uint64_t count)
{
	uint64_t bytes = (count + BF_SCAN_SLACK) * 2 * sizeof(uint32_t);
	if (!count || !collect_reserve(bytes))
		return false;
	s->col_bytes = bytes;
	s->col_cap = count;
	s->col_n = 0;
	s->ck = malloc(bytes);
	if (!s->ck) {
		collect_release(s);
		return false;
	}
	s->ci = s->ck + count + BF_SCAN_SLACK;
	return true;
}

static void par_free(struct bf_select *s)
{
	free(s->par_off);
	free(s->par_cnt);
	s->par_off = s->par_cnt = NULL;
}

int bf_select_init(struct bf_select *s, uint64_t rank, uint64_t total)
{
	memset(s, 0, sizeof(*s));
	atomic_init(&s->par_n, 0);
	atomic_init(&s->par_below, 0);
	s->rank = rank;
	s->total = total;
	if (rank >= total) {
		s->thr_key = 1ull << 32; /* every element is below */
		s->pass = P_DONE;
		return 0;
	}
	s->pass = P_HI;
	s->spec = total < ((uint64_t)1 << 32); /* decided for good on the first feed */
	if (!s->spec) {
		s->hist = calloc(65536 * LANES, sizeof(uint64_t));
		if (!s->hist)
			return -1;
	}
	return 0;
}

void bf_select_free(struct bf_select *s)
{
	free(s->hist);
	s->hist = NULL;
	collect_release(s);
	par_free(s);
}

/* The first block (n keys): guess the window of buckets around rank R / total from its
 * histogram, and reserve the buffer, or give up speculating. The margin is four standard errors
 * of a sample quantile plus half a percent, because the first rows of a tensor are not a random
 * sample of it. The histogram covers only the buckets between the block's smallest and largest
 * (a few thousand), so that a selection does not clear and scan all 65536 (x LANES). */
static void spec_start(struct bf_select *s, const uint32_t *keys, size_t n)
{
	s->spec = false;
	if (!n)
		return;
	uint32_t bmin = 65535, bmax = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t b = keys[i] >> 16;
		bmin = b < bmin ? b : bmin;
		bmax = b > bmax ? b : bmax;
	}
	uint32_t range = bmax - bmin + 1;
	uint32_t *h = calloc((size_t)range * LANES, sizeof(uint32_t));
	if (!h)
		return;
	size_t i = 0;
	for (; i + LANES <= n; i += LANES)
		for (uint32_t l = 0; l < LANES; l++)
			h[((keys[i + l] >> 16) - bmin) * LANES + l]++;
	for (; i < n; i++)
		h[((keys[i] >> 16) - bmin) * LANES]++;
	double q = (double)s->rank / (double)s->total;
	double d = 4.0 * __builtin_sqrt(q * (1.0 - q) / (double)n) + 0.005;
	double lo_r = (q - d) * (double)n, hi_r = (q + d) * (double)n, c_r = q * (double)n;
	uint32_t lo = 0, hi = 65535, cb = 0;
	bool got_lo = false, got_c = false;
	uint64_t acc = 0;
	for (uint32_t b = bmin; b <= bmax; b++) {
		uint64_t c = 0;
		for (uint32_t l = 0; l < LANES; l++)
			c += h[(b - bmin) * LANES + l];
		if (!c)
			continue;
		acc += c;
		if (!got_lo && (double)acc > lo_r) {
			lo = b;
			got_lo = true;
		}
		if (!got_c && (double)acc > c_r) {
			cb = b;
			got_c = true;
		}
		if ((double)acc > hi_r) {
			hi = b;
			break;
		}
	}
	if (!got_c)
		cb = hi;
	if (lo > cb)
		lo = cb;
	if (cb - lo >= WINDOW_MAX / 2)
		lo = cb - (WINDOW_MAX / 2 - 1);
	if (hi - cb >= WINDOW_MAX / 2)
		hi = cb + (WINDOW_MAX / 2);
	/* room for the window's share of the sample, scaled up, with slack */
	uint64_t in = 0;
	for (uint32_t b = lo > bmin ? lo : bmin; b <= hi && b <= bmax; b++)
		for (uint32_t l = 0; l < LANES; l++)
			in += h[(b - bmin) * LANES + l];
	free(h);
	double want = (double)in / (double)n * (double)s->total * 1.25 + 4096.0;
	uint64_t cap = want < (double)s->total ? (uint64_t)want : s->total;
	if (cap > bf_select_collect_max)
		return; /* a crowded window: the second pass collects just the one bucket */
	if (!collect_alloc(s, cap))
		return;
	s->wlo = lo;
	s->whi = hi;
	s->spec = true;
}

/* Count the keys below the window, collect the window's (see bf_kern->window_scan). */
static void win_scan(struct bf_select *s, const uint32_t *keys, uint64_t idx0, size_t n)
{
	s->below += bf_kern->window_scan(keys, n, s->wlo << 16, ((s->whi - s->wlo) << 16) | 0xffffu, (uint32_t)idx0,
					 s->ck, s->ci, &s->col_n, s->col_cap);
}

static void fail(struct bf_select *s);

void bf_select_feed(struct bf_select *s, const uint32_t *keys, uint64_t idx0, size_t n)
{
	switch (s->pass) {
	case P_HI: {
		if (!s->fed && s->spec) {
			/* the first block is the sample */
			s->fed = true;
			spec_start(s, keys, n);
			if (s->spec) {
				s->pass = P_WIN;
				win_scan(s, keys, idx0, n);
				break;
			}
		}
		s->fed = true;
		if (!s->hist && !(s->hist = calloc(65536 * LANES, sizeof(uint64_t)))) {
			fail(s);
			break;
		}
		size_t i = 0;
		for (; i + LANES <= n; i += LANES)
			for (uint32_t l = 0; l < LANES; l++)
				s->hist[(keys[i + l] >> 16) * LANES + l]++;
		for (; i < n; i++)
			s->hist[(keys[i] >> 16) * LANES]++;
		break;
	}
	case P_WIN:
		win_scan(s, keys, idx0, n);
		break;
	case P_RADIX_LO:
		for (size_t i = 0; i < n; i++)
			if ((keys[i] >> 16) == s->hi)
				s->hist[keys[i] & 0xffffu]++;
		break;
	case P_COLLECT:
		bf_kern->window_scan(keys, n, s->hi << 16, 0xffffu, (uint32_t)idx0, s->ck, s->ci, &s->col_n, s->col_cap);
		break;
	case P_TIE:
		/* the need-th (0-based) element with key == s->key, in index order */
		for (size_t i = 0; i < n && s->pass == P_TIE; i++)
			if (keys[i] == s->key) {
				if (s->need == 0) {
					s->thr_key = s->key;
					s->thr_idx = idx0 + i;
					s->pass = P_DONE;
				} else {
					s->need--;
				}
			}
		break;
	default:
		break;
	}
}

/* Done (or failed): nothing but the result is needed any more. */
static void settle(struct bf_select *s)
{
	s->pass = P_DONE;
	free(s->hist);
	s->hist = NULL;
	collect_release(s);
	par_free(s);
}

static void fail(struct bf_select *s)
{
	s->failed = true;
	settle(s);
}

/* The key was found by counting; decide whether a tie pass is needed. */
static void key_found(struct bf_select *s)
{
	s->thr_key = s->key;
	if (s->need == 0 || s->value_only) {
		/* rank < R <=> key < k*, or: only the key's value was wanted */
		s->thr_idx = 0;
		settle(s);
	} else {
		s->pass = P_TIE;
	}
}

/* Entry b of h[lo..hi] holds rank `want` (0-based): b, and the rank left within it in *need. */
static uint32_t hist_pick(const uint64_t *h, uint32_t lo, uint32_t hi, uint64_t want, uint64_t *need)
{
	uint64_t acc = 0;
	uint32_t b = lo;
	for (; b < hi; b++) {
		if (acc + h[b] > want)
			break;
		acc += h[b];
	}
	*need = want - acc;
	return b; /* the rank is below the total, so the scan stops by hi at the latest */
}

/* The buffer's first n entries, in index order, hold rank s->need among them. Keep only those
 * whose digit ((key >> shift) - sub) & 255 is the one holding that rank, in order, at the front
 * (s->need becomes the rank among them); returns their count. Four counters per digit, used in
 * turn, because the entries crowd into a few digits; the compaction is bf_kern's digit_compact
 * (in place, vectorised: it was half of this function's time as a scalar loop). */
static uint64_t narrow(struct bf_select *s, uint64_t n, unsigned shift, uint32_t sub)
{
	uint64_t cnt[256 * LANES] = { 0 }, c[256];
	for (uint64_t i = 0; i < n; i++)
		cnt[(((s->ck[i] >> shift) - sub) & 255u) * LANES + (i & (LANES - 1))]++;
	for (uint32_t d = 0; d < 256; d++)
		c[d] = cnt[d * LANES] + cnt[d * LANES + 1] + cnt[d * LANES + 2] + cnt[d * LANES + 3];
	uint32_t d = hist_pick(c, 0, 255, s->need, &s->need);
	return bf_kern->digit_compact(s->ck, s->ci, n, shift, sub, d);
}

/* The buffer's first n entries share the top 16 key bits and hold rank s->need: two more
 * digits leave the entries equal to the selected key, in index order, and the tie-break is
 * the need-th of them. */
static void finish_collect(struct bf_select *s, uint64_t n)
{
	n = narrow(s, n, 8, 0);
	n = narrow(s, n, 0, 0);
	s->key = s->ck[0];
	s->thr_key = s->key;
	s->thr_idx = s->need && !s->value_only ? s->ci[s->need] : 0;
	settle(s);
}

static void after_hi(struct bf_select *s)
{
	/* fold the lanes, in place: bucket b only reads entries >= b */
	for (uint32_t b = 0; b < 65536; b++) {
		uint64_t c = 0;
		for (uint32_t l = 0; l < LANES; l++)
			c += s->hist[b * LANES + l];
		s->hist[b] = c;
	}
	s->hi = hist_pick(s->hist, 0, 65535, s->rank, &s->need);
	uint64_t count = s->hist[s->hi];
	if (s->total < ((uint64_t)1 << 32) && count <= bf_select_collect_max && collect_alloc(s, count)) {
		free(s->hist);
		s->hist = NULL;
		s->pass = P_COLLECT;
		return;
	}
	memset(s->hist, 0, 65536 * sizeof(uint64_t));
	s->pass = P_RADIX_LO;
}

int bf_select_par_begin(struct bf_select *s, uint64_t blk)
{
	if (s->pass != P_WIN || !blk || s->par_off)
		return -1;
	uint64_t nb = (s->total + blk - 1) / blk;
	s->par_off = calloc(nb, sizeof(uint32_t));
	s->par_cnt = calloc(nb, sizeof(uint32_t));
	if (!s->par_off || !s->par_cnt) {
		par_free(s);
		return -1;
	}
	s->par_blk = blk;
	s->par_nb = nb;
	/* block 0 (the sample) was fed in order: its run is at the front already */
	s->par_cnt[0] = (uint32_t)s->col_n;
	atomic_store(&s->par_n, s->col_n);
	atomic_store(&s->par_below, 0);
	atomic_fetch_add(&n_windows_par, 1);
	return 0;
}

void bf_select_par_cancel(struct bf_select *s)
{
	if (s->par_off)
		atomic_fetch_sub(&n_windows_par, 1);
	par_free(s);
}

void bf_select_feed_par(struct bf_select *s, const uint32_t *keys, uint64_t idx0, size_t n, uint32_t *tk, uint32_t *ti)
{
	uint64_t c = 0, b = idx0 / s->par_blk;
	uint64_t below = bf_kern->window_scan(keys, n, s->wlo << 16, ((s->whi - s->wlo) << 16) | 0xffffu,
					      (uint32_t)idx0, tk, ti, &c, n);
	atomic_fetch_add_explicit(&s->par_below, below, memory_order_relaxed);
	/* matches count every element at most once: the total stays below 2^32 (spec mode) */
	uint64_t at = atomic_fetch_add_explicit(&s->par_n, c, memory_order_relaxed);
	if (b == 0 || b >= s->par_nb)
		return; /* not a block of this pass: after_win sees the runs not add up */
	s->par_off[b] = (uint32_t)at;
	s->par_cnt[b] = (uint32_t)c;
	if (at + c <= s->col_cap) {
		memcpy(s->ck + at, tk, c * sizeof(uint32_t));
		memcpy(s->ci + at, ti, c * sizeof(uint32_t));
	}
}

/* After a window pass fed from several threads: the counts, and the runs back in block order
 * (the finish relies on index order for the tie-break). False when the runs do not add up to
 * what was matched (a block fed twice) or there is no memory to reorder them. */
static bool par_gather(struct bf_select *s)
{
	s->below += atomic_load(&s->par_below);
	s->col_n = atomic_load(&s->par_n);
	uint64_t n = s->col_n, c0 = s->par_cnt[0], at = c0;
	for (uint64_t b = 1; b < s->par_nb; b++)
		at += s->par_cnt[b];
	bool ok = at == n;
	if (ok && n <= s->col_cap && n > c0) {
		uint32_t *t = malloc(2 * (n - c0) * sizeof(uint32_t));
		if (t) {
			/* t holds the runs of blocks 1.. in order: keys, then indices */
			uint32_t *tk = t, *ti = t + (n - c0);
			at = 0;
			for (uint64_t b = 1; b < s->par_nb; b++) {
				memcpy(tk + at, s->ck + s->par_off[b], s->par_cnt[b] * sizeof(uint32_t));
				memcpy(ti + at, s->ci + s->par_off[b], s->par_cnt[b] * sizeof(uint32_t));
				at += s->par_cnt[b];
			}
			memcpy(s->ck + c0, tk, (n - c0) * sizeof(uint32_t));
			memcpy(s->ci + c0, ti, (n - c0) * sizeof(uint32_t));
			free(t);
		} else {
			ok = false;
		}
	}
	par_free(s);
	return ok;
}

/* End of the window pass: finish from the buffer when rank R fell inside the window, else
 * count the top bits over the whole tensor after all. */
static void after_win(struct bf_select *s)
{
	bool usable = !s->par_off || par_gather(s);
	uint64_t n = s->col_n;
	if (usable && n <= s->col_cap && s->rank >= s->below && s->rank - s->below < n) {
		/* the bucket of rank R within the window (spec_start keeps whi - wlo < 256) */
		s->need = s->rank - s->below;
		atomic_fetch_add(&n_windows_hit, 1);
		finish_collect(s, narrow(s, n, 16, s->wlo));
		return;
	}
	atomic_fetch_add(&n_windows_missed, 1);
	collect_release(s);
	s->spec = false;
	s->pass = P_HI; /* its feed allocates the full histogram, as after a declined guess */
}

void bf_select_next_pass(struct bf_select *s)
{
	switch (s->pass) {
	case P_WIN:
		after_win(s);
		break;
	case P_HI:
		after_hi(s);
		break;
	case P_COLLECT:
		if (s->col_n != s->col_cap) {
			fail(s); /* the tensor changed between the passes (the caller's source check says so) */
			break;
		}
		finish_collect(s, s->col_n);
		break;
	case P_RADIX_LO: {
		uint32_t lo = hist_pick(s->hist, 0, 65535, s->need, &s->need);
		s->key = (s->hi << 16) | lo;
		free(s->hist);
		s->hist = NULL;
		key_found(s);
		break;
	}
	default:
		break;
	}
}

/* ---------------------------------------------------------------------------------------------
 * DELLA row masks (bf_select.h). Bucket of key k: 0 for k == 0, else
 * 1 + max(k >> BF_DELLA_SHIFT - base, 0)
 * with base such that the largest key's bucket is nb - 1 <= BF_DELLA_BUCKETS - 1: monotone in
 * k, so every element of a lower bucket ranks below every element of a higher one.
 */
void bf_select_della_row(const float *d, size_t L, const float *u, const float *ptab, float *mask, void *scratch)
{
	const uint32_t NBX = BF_DELLA_BUCKETS + BF_DELLA_JUNK + 2;
	uint32_t *keys = scratch, *amb = keys + L, *s = amb + L;
	float *plo = (float *)(s + NBX), *phi = plo + NBX;
	uint16_t *bk = (uint16_t *)(phi + NBX), *hs = bk + L;
	uint32_t zc, kmax = bf_kern->della_keys(d, L, keys, &zc);
	uint32_t top = kmax >> BF_DELLA_SHIFT;
	uint32_t base = top >= BF_DELLA_BUCKETS - 2 ? top - (BF_DELLA_BUCKETS - 2) : 0;
	uint32_t nb = top - base + 2, J = nb + 1; /* buckets 0 .. nb-1; junk counters J .. J+15 */
	/* counter slot: bucket b >= 1 counts at b + 1, zeros at a junk slot (their count is zc) */
	bf_kern->della_buckets(keys, L, base, J, bk, hs);
	memset(s, 0, (nb + 1 + BF_DELLA_JUNK) * sizeof(uint32_t));
	for (size_t i = 0; i < L; i++)
		s[hs[i]]++;
	/* s[b] = first rank of bucket b, s[b + 1] - 1 its last; a member of bucket b is kept for
	 * sure when u < plo[b] (the probability of its lowest possible rank), dropped for sure when
	 * u >= phi[b] (that of its highest) */
	s[0] = 0;
	s[1] = zc;
	for (uint32_t b = 1; b < nb; b++) {
		uint32_t first = s[b], end = s[b + 1] += first; /* an empty bucket's are unused */
		plo[b] = ptab[first < L ? first : L - 1];
		phi[b] = ptab[end ? end - 1 : 0];
	}
	plo[0] = phi[0] = 0.0f; /* zeros: mask 0, never undecided (u >= 0) */
	/* the decisions the bucket settles; the others (amb) wait */
	size_t na = bf_kern->della_decide(bk, u, plo, phi, L, mask, amb);
	/* exact ranks of the few undecided by counting the row (vector counts: 0.2% of a task
	 * vector's elements, about 3 per row, beat listing every bucket's members for them) */
	for (size_t a = 0; a < na; a++) {
		uint32_t i = amb[a];
		mask[i] = (float)(u[i] < ptab[bf_kern->stable_rank(keys, L, keys[i], i)]);
	}
}
