/* bf_select.c: radix rank selection (see bf_select.h). */
#include <stdlib.h>

#include "bf_select.h"

int bf_select_init(struct bf_select *s, uint64_t rank, uint64_t total)
{
	memset(s, 0, sizeof(*s));
	s->rank = rank;
	if (rank >= total) {
		s->thr_key = 1ull << 32; /* every element is below */
		s->pass = 3;
		return 0;
	}
	s->hist = calloc(65536, sizeof(uint64_t));
	return s->hist ? 0 : -1;
}

void bf_select_free(struct bf_select *s)
{
	free(s->hist);
	s->hist = NULL;
}

void bf_select_feed(struct bf_select *s, const uint32_t *keys, uint64_t idx0, size_t n)
{
	switch (s->pass) {
	case 0:
		for (size_t i = 0; i < n; i++)
			s->hist[keys[i] >> 16]++;
		break;
	case 1:
		for (size_t i = 0; i < n; i++)
			if ((keys[i] >> 16) == s->hi)
				s->hist[keys[i] & 0xffffu]++;
		break;
	case 2:
		/* the need-th (0-based) element with key == s->key, in index order */
		for (size_t i = 0; i < n && s->pass == 2; i++)
			if (keys[i] == s->key) {
				if (s->need == 0) {
					s->thr_key = s->key;
					s->thr_idx = idx0 + i;
					s->pass = 3;
				} else {
					s->need--;
				}
			}
		break;
	default:
		break;
	}
}

void bf_select_next_pass(struct bf_select *s)
{
	if (s->pass == 0 || s->pass == 1) {
		uint64_t want = s->pass == 0 ? s->rank : s->need, acc = 0;
		uint32_t b = 0;
		for (b = 0; b < 65536; b++) {
			if (acc + s->hist[b] > want)
				break;
			acc += s->hist[b];
		}
		/* b < 65536 because rank < total */
		if (s->pass == 0)
			s->hi = b;
		else
			s->key = (s->hi << 16) | b;
		s->need = want - acc;
		memset(s->hist, 0, 65536 * sizeof(uint64_t));
		s->pass++;
		if (s->pass == 2) {
			free(s->hist);
			s->hist = NULL;
		}
	}
}
