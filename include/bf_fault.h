/* bf_fault.h: fault injection for tests (never active unless asked for).
 *
 * BLENDFS_FAULT_ALLOC=N in the daemon's environment makes every N-th allocation on the read path
 * (cache entries, reply and scratch buffers) fail, so tests can prove that memory exhaustion
 * during a read returns an error to that read and never crashes the daemon.
 */
#ifndef BF_FAULT_H
#define BF_FAULT_H

#include <stdbool.h>

/* true when this allocation should fail */
bool bf_fault_alloc(void);

#endif
