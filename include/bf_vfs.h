/* bf_vfs.h: the virtual directory a mount shows, independent of FUSE.
 *
 * A fixed tree built once from a plan: the root holds config.json, the tokenizer files,
 * mergekit_config.yml, README.md, the shards and (when sharded) model.safetensors.index.json.
 * A hidden ".blendfs" directory holds "status", a text report generated when it is opened
 * (cache and compute counters); it is not part of the model and `blendfs merge` does not write it.
 * Inode numbers are stable: 1 is the root, then the files in plan order. Sizes and mtimes never
 * change (the recipe's mtime), so the kernel page cache can keep everything.
 */
#ifndef BF_VFS_H
#define BF_VFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "bf_exec.h"
#include "bf_plan.h"

#define BF_VFS_ROOT 1

enum bf_vkind { BF_V_DIR, BF_V_MEM, BF_V_SHARD, BF_V_STATUS };

struct bf_vnode {
	uint64_t ino;
	uint64_t parent;
	const char *name;
	enum bf_vkind kind;
	uint64_t size;                    /* BF_V_STATUS: 0 (generated per open) */
	const char *data;                 /* BF_V_MEM */
	uint32_t shard;                   /* BF_V_SHARD */
	bool hidden;                      /* not part of the model (skipped by merge) */
};

struct bf_vfs {
	struct bf_vnode *nodes;           /* nodes[ino - 1] */
	size_t n;
	struct timespec mtime;
	const struct bf_plan *plan;
};

int bf_vfs_build(const struct bf_plan *p, const struct timespec *mtime, struct bf_vfs **out);
void bf_vfs_free(struct bf_vfs *v);

const struct bf_vnode *bf_vfs_get(const struct bf_vfs *v, uint64_t ino);
const struct bf_vnode *bf_vfs_lookup(const struct bf_vfs *v, uint64_t parent, const char *name);
/* Children of dir in order; *cursor starts at 0. Returns NULL at the end. */
const struct bf_vnode *bf_vfs_next_child(const struct bf_vfs *v, uint64_t dir, size_t *cursor);

/* Read up to len bytes at off (short only at end of file). Returns bytes read or -errno. */
ssize_t bf_vfs_read(const struct bf_vfs *v, struct bf_exec *x, const struct bf_vnode *n,
		    uint64_t off, size_t len, void *buf);

/* The status report (malloc'd text). */
char *bf_vfs_status_text(const struct bf_vfs *v, struct bf_exec *x, size_t *len);

#endif
