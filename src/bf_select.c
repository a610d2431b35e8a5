/* bf_select.c: exact rank selection (see bf_select.h).
 *
 * Two strategies, chosen by the data:
 *
 *   direct (the common case): the difference of two bf16 numbers of similar size is a small
 *   integer times an ulp, so its f32 bits have few significant mantissa bits: the low 14 bits of
 *   every key are the same (zero, or all ones for descending keys), and so is the top bit. Pass 0
 *   then counts keys exactly in a direct 2^17-entry table indexed by bits 30..14 (512 KiB, no
 *   hashing), and the key of rank R follows without another pass.
 *
 *   radix (fallback: float32 sources, or one delta anywhere in the tensor whose operands differ
 *   a lot in size, which real checkpoints nearly always have): the first key that breaks that
 *   pattern ends pass 0 (the caller may stop streaming); counting restarts with a 16-bit radix
 *   histogram of the top bits. Its count of the selected bucket is exact, so the next pass
 *   collects the (low 16 bits, index) of just that bucket's elements, in index order, into a
 *   buffer of that size, and the key and the tie-break are then found in memory: two streaming
 *   passes in all. A bucket too large for the buffer (over bf_select_collect_max elements) takes the old
 *   route instead: a pass that counts the low 16 bits in the bucket, then a tie pass.
 *
 * The tie pass (direct path, or a bucket too large to collect) finds the index of the need-th
 * element equal to the selected key, in index order (the stable tie-break), stopping as soon as
 * it has it; it is skipped when no tie needs breaking or when only the key is wanted (quantiles).
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "bf_select.h"

#define DIRECT_BITS 17
#define DIRECT_SHIFT 14
/* The radix histogram of the top bits has LANES counters per bucket, used in turn by
 * consecutive keys: keys crowd into a few buckets, and one counter per bucket would make every
 * increment wait for the previous one to the same address. */
#define LANES 4u

enum { P_MAP = 0, P_RADIX_HI = 1, P_RADIX_LO = 2, P_COLLECT = 3, P_TIE = 4, P_DONE = BF_SELECT_DONE };

/* Largest bucket collected in memory: 6 bytes per element, so at most 24 MiB per selection
 * (daemon memory outside the chunk cache is budgeted at 64 MiB, and a tensor usually has a few
 * selections at once). Typical buckets hold 0.1-10% of a tensor. */
uint64_t bf_select_collect_max = (uint64_t)1 << 22;

/* Bytes of collect buffers alive in the process: selections run concurrently (several models of
 * a tensor, several tensors on several threads), and the daemon's memory outside the chunk cache
 * is budgeted at 64 MiB. A selection that would go over takes the counting route instead. */
#define COLLECT_BUDGET ((uint64_t)32 << 20)
static _Atomic uint64_t collect_bytes;

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
	if (s->col_cap) /* reserved by start_collect */
		atomic_fetch_sub(&collect_bytes, s->col_cap * (sizeof(uint16_t) + sizeof(uint32_t)));
	free(s->col_lo);
	free(s->col_idx);
	s->col_lo = NULL;
	s->col_idx = NULL;
	s->col_cap = 0;
}

struct bf_select_map {
	uint32_t counts[1u << DIRECT_BITS]; /* 512 KiB: stays in L2 (tensors of < 2^32 elements) */
	uint32_t sig;             /* top bit and low 14 bits shared by every key so far */
	bool have_sig;
};

int bf_select_init(struct bf_select *s, uint64_t rank, uint64_t total)
{
	memset(s, 0, sizeof(*s));
	s->rank = rank;
	s->total = total;
	if (rank >= total) {
		s->thr_key = 1ull << 32; /* every element is below */
		s->pass = P_DONE;
		return 0;
	}
	if (total >= (1ull << 32)) {
		/* counts would overflow the direct table: radix from the start */
		s->hist = calloc(65536 * LANES, sizeof(uint64_t));
		if (!s->hist)
			return -1;
		s->pass = P_RADIX_HI;
		return 0;
	}
	s->map = calloc(1, sizeof(*s->map));
	if (!s->map)
		return -1;
	s->pass = P_MAP;
	return 0;
}

void bf_select_free(struct bf_select *s)
{
	free(s->hist);
	free(s->map);
	s->hist = NULL;
	s->map = NULL;
	collect_release(s);
}

#define SIG_MASK (0x80000000u | ((1u << DIRECT_SHIFT) - 1))

/* Count keys directly; false when a key does not fit the pattern (switch to radix). */
static bool map_feed(struct bf_select_map *m, const uint32_t *keys, size_t n)
{
	if (!n)
		return true;
	if (!m->have_sig) {
		m->sig = keys[0] & SIG_MASK;
		m->have_sig = true;
	}
	uint32_t sig = m->sig, bad = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t k = keys[i];
		bad |= (k & SIG_MASK) ^ sig;
		m->counts[(k >> DIRECT_SHIFT) & ((1u << DIRECT_BITS) - 1)]++;
	}
	return bad == 0;
}

void bf_select_feed(struct bf_select *s, const uint32_t *keys, uint64_t idx0, size_t n)
{
	switch (s->pass) {
	case P_MAP:
		if (!s->overflow && !map_feed(s->map, keys, n))
			s->overflow = true;
		break;
	case P_RADIX_HI: {
		size_t i = 0;
		for (; i + LANES <= n; i += LANES)
			for (uint32_t l = 0; l < LANES; l++)
				s->hist[(keys[i + l] >> 16) * LANES + l]++;
		for (; i < n; i++)
			s->hist[(keys[i] >> 16) * LANES]++;
		break;
	}
	case P_RADIX_LO:
		for (size_t i = 0; i < n; i++)
			if ((keys[i] >> 16) == s->hi)
				s->hist[keys[i] & 0xffffu]++;
		break;
	case P_COLLECT: {
		/* a match mask per 8 keys, built without branches; most masks are empty */
		const uint32_t hi = s->hi;
		for (size_t i = 0; i < n; i += 8) {
			size_t m8 = n - i < 8 ? n - i : 8;
			unsigned mask = 0;
			for (size_t l = 0; l < m8; l++)
				mask |= (unsigned)((keys[i + l] >> 16) == hi) << l;
			while (mask) {
				size_t j = i + (size_t)__builtin_ctz(mask);
				mask &= mask - 1;
				if (s->col_n < s->col_cap) {
					s->col_lo[s->col_n] = (uint16_t)keys[j];
					s->col_idx[s->col_n] = (uint32_t)(idx0 + j);
				}
				s->col_n++;
			}
		}
		break;
	}
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

/* The key was found; decide whether a tie pass is needed. */
static void key_found(struct bf_select *s, uint64_t count_of_key)
{
	s->thr_key = s->key;
	if (s->need == 0 || s->value_only) {
		/* rank < R <=> key < k*, or: only the key's value was wanted */
		s->thr_idx = 0;
		s->pass = P_DONE;
	} else {
		(void)count_of_key;
		s->pass = P_TIE;
	}
}

/* Buffers for the bucket's `count` elements (count >= 1: the bucket holds rank R). */
static bool start_collect(struct bf_select *s, uint64_t count)
{
	if (!collect_reserve(count * (sizeof(uint16_t) + sizeof(uint32_t))))
		return false; /* not fatal: the counting route needs no buffer */
	s->col_cap = count;
	s->col_n = 0;
	s->col_lo = malloc(count * sizeof(uint16_t));
	s->col_idx = malloc(count * sizeof(uint32_t));
	if (!s->col_lo || !s->col_idx) {
		collect_release(s);
		return false;
	}
	return true;
}

/* The collected bucket, in index order: the low 16 bits of the key of rank `need` within it,
 * then, among the elements with that key, the index of the one the stable order puts there. */
static void finish_collect(struct bf_select *s)
{
	if (s->col_n != s->col_cap) {
		/* the tensor changed between the passes (the caller's source check reports it) */
		s->failed = true;
		s->pass = P_DONE;
		return;
	}
	uint32_t *h = calloc(65536, sizeof(uint32_t));
	if (!h) {
		s->failed = true;
		s->pass = P_DONE;
		return;
	}
	for (uint64_t i = 0; i < s->col_n; i++)
		h[s->col_lo[i]]++;
	uint64_t acc = 0;
	uint32_t b = 0;
	for (b = 0; b < 65536; b++) {
		if (acc + h[b] > s->need)
			break;
		acc += h[b];
	}
	free(h);
	/* b < 65536: need < col_n */
	s->key = (s->hi << 16) | b;
	s->need -= acc;
	s->thr_key = s->key;
	s->thr_idx = 0;
	if (s->need && !s->value_only) {
		uint64_t left = s->need;
		for (uint64_t i = 0; i < s->col_n; i++)
			if (s->col_lo[i] == b && left-- == 0) {
				s->thr_idx = s->col_idx[i];
				break;
			}
	}
	s->pass = P_DONE;
	collect_release(s);
}

void bf_select_next_pass(struct bf_select *s)
{
	if (s->pass == P_COLLECT) {
		finish_collect(s);
		return;
	}
	if (s->pass == P_MAP) {
		if (s->overflow) {
			/* too many distinct values: count again with the radix histogram */
			free(s->map);
			s->map = NULL;
			s->hist = calloc(65536 * LANES, sizeof(uint64_t));
			s->pass = s->hist ? P_RADIX_HI : P_DONE; /* P_DONE + no key: caller sees alloc failure */
			s->failed = !s->hist;
			return;
		}
		struct bf_select_map *m = s->map;
		uint64_t acc = 0;
		for (uint32_t b = 0; b < (1u << DIRECT_BITS); b++) {
			if (acc + m->counts[b] > s->rank) {
				s->key = (m->sig & 0x80000000u) | (b << DIRECT_SHIFT) | (m->sig & ((1u << DIRECT_SHIFT) - 1));
				s->need = s->rank - acc;
				key_found(s, m->counts[b]);
				break;
			}
			acc += m->counts[b];
		}
		free(s->map);
		s->map = NULL;
		return;
	}
	if (s->pass == P_RADIX_HI) /* fold the lanes, in place: bucket b only reads entries >= b */
		for (uint32_t b = 0; b < 65536; b++) {
			uint64_t c = 0;
			for (uint32_t l = 0; l < LANES; l++)
				c += s->hist[b * LANES + l];
			s->hist[b] = c;
		}
	if (s->pass == P_RADIX_HI || s->pass == P_RADIX_LO) {
		uint64_t want = s->pass == P_RADIX_HI ? s->rank : s->need, acc = 0;
		uint32_t b = 0;
		for (b = 0; b < 65536; b++) {
			if (acc + s->hist[b] > want)
				break;
			acc += s->hist[b];
		}
		/* b < 65536 because rank < total */
		s->need = want - acc;
		if (s->pass == P_RADIX_HI) {
			s->hi = b;
			if (s->total < ((uint64_t)1 << 32) && s->hist[b] <= bf_select_collect_max && start_collect(s, s->hist[b])) {
				free(s->hist);
				s->hist = NULL;
				s->pass = P_COLLECT;
				return;
			}
			memset(s->hist, 0, 65536 * sizeof(uint64_t));
			s->pass = P_RADIX_LO;
		} else {
			s->key = (s->hi << 16) | b;
			uint64_t cnt = s->hist[b];
			free(s->hist);
			s->hist = NULL;
			key_found(s, cnt);
		}
	}
}
