/* bf_method.c: the method table (one row per mergekit method) and kernel scratch space. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bf_method.h"

extern const struct bf_method bf_m_linear, bf_m_passthrough, bf_m_slerp, bf_m_nuslerp, bf_m_multislerp,
	bf_m_karcher, bf_m_nearswap, bf_m_task_arithmetic, bf_m_ties, bf_m_dare_linear, bf_m_dare_ties,
	bf_m_della, bf_m_della_linear, bf_m_breadcrumbs, bf_m_breadcrumbs_ties, bf_m_sce, bf_m_ram,
	bf_m_ramplus_tl, bf_m_model_stock, bf_m_arcee_fusion;

const struct bf_method *const bf_methods[] = {
	&bf_m_linear, &bf_m_slerp, &bf_m_nuslerp, &bf_m_multislerp, &bf_m_karcher,
	&bf_m_task_arithmetic, &bf_m_ties, &bf_m_dare_linear, &bf_m_dare_ties, &bf_m_della,
	&bf_m_della_linear, &bf_m_breadcrumbs, &bf_m_breadcrumbs_ties, &bf_m_sce, &bf_m_ram,
	&bf_m_ramplus_tl, &bf_m_model_stock, &bf_m_nearswap, &bf_m_arcee_fusion, &bf_m_passthrough,
};
const size_t bf_n_methods = BF_ARRAY_LEN(bf_methods);

const struct bf_method *bf_method_find(const char *name)
{
	for (size_t i = 0; i < bf_n_methods; i++)
		if (!strcmp(bf_methods[i]->name, name))
			return bf_methods[i];
	return NULL;
}

int bf_method_param(const struct bf_method *m, const char *name)
{
	for (uint32_t i = 0; i < m->n_params; i++)
		if (!strcmp(m->params[i].name, name))
			return (int)i;
	return -1;
}

#define SCRATCH_SLOTS 8

/* Per-thread buffers live in a pthread key with a destructor: FUSE worker threads come and go
 * (idle ones exit), and their scratch must go with them. */
struct scratch {
	void *buf[SCRATCH_SLOTS];
	size_t len[SCRATCH_SLOTS];
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_destroy(void *p)
{
	struct scratch *s = p;
	for (int i = 0; i < SCRATCH_SLOTS; i++)
		free(s->buf[i]);
	free(s);
}

static void scratch_init(void)
{
	BF_ASSERT(pthread_key_create(&scratch_key, scratch_destroy) == 0);
}

void *bf_scratch(unsigned slot, size_t bytes)
{
	BF_ASSERT(slot < SCRATCH_SLOTS);
	pthread_once(&scratch_once, scratch_init);
	struct scratch *s = pthread_getspecific(scratch_key);
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s || pthread_setspecific(scratch_key, s)) {
			free(s);
			return NULL;
		}
	}
	if (bytes > s->len[slot]) {
		size_t want = bytes < 4096 ? 4096 : bytes;
		void *p = NULL;
		if (posix_memalign(&p, 64, want))
			return NULL;
		free(s->buf[slot]);
		s->buf[slot] = p;
		s->len[slot] = want;
	}
	return s->buf[slot];
}
