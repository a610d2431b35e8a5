/* bf_fuse.h: the FUSE front end (the only module that includes fuse_lowlevel.h).
 *
 * Serves a bf_vfs read-only through libfuse's low-level API: long entry/attr timeouts, page
 * cache kept across opens (never direct_io for model files, so mmap works), EROFS for every
 * write-type operation, replies of exactly the requested size except at end of file.
 */
#ifndef BF_FUSE_H
#define BF_FUSE_H

#include <stdbool.h>
#include "bf_exec.h"
#include "bf_vfs.h"

struct bf_fuse_opts {
	const char *mountpoint;
	bool foreground;
	const char *fuse_opts;     /* user's -o list, appended to blendfs's own (may be NULL) */
	unsigned max_threads;      /* FUSE worker threads */
	unsigned readahead_kb;     /* set the mount's bdi read_ahead_kb when root (0 = leave) */
	bool debug;                /* libfuse request tracing */
	const char *log_file;      /* keep logging here after daemonising (NULL: syslog only) */
};

/* Mount, daemonise unless foreground (the calling process then exits once the mount is
 * visible), serve until unmounted or signalled, unmount. Returns a process exit code. */
int bf_fuse_main(struct bf_vfs *v, struct bf_exec *x, const struct bf_fuse_opts *o);

/* Unmount a blendfs mount (fusermount3 -u; umount2 as a fallback when root). Returns 0 or -errno
 * and leaves a message in err. */
int bf_fuse_unmount(const char *mountpoint, bool lazy, struct bf_err *err);

#endif
