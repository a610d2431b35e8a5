/* bf_fault.c: see bf_fault.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "bf_fault.h"

static unsigned long every;
static _Atomic unsigned long count;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
	const char *e = getenv("BLENDFS_FAULT_ALLOC");
	every = e ? strtoul(e, NULL, 10) : 0;
}

bool bf_fault_alloc(void)
{
	pthread_once(&once, init);
	return every && (atomic_fetch_add(&count, 1) + 1) % every == 0;
}
