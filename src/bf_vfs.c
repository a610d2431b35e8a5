/* bf_vfs.c: the fixed directory tree of a mount (see bf_vfs.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_cache.h"
#include "bf_select.h"
#include "bf_vfs.h"

static struct bf_vnode *add(struct bf_vfs *v, uint64_t parent, const char *name, enum bf_vkind kind)
{
	v->nodes = bf_xrealloc(v->nodes, (v->n + 1) * sizeof(*v->nodes));
	struct bf_vnode *n = &v->nodes[v->n];
	memset(n, 0, sizeof(*n));
	n->ino = ++v->n;
	n->parent = parent;
	n->name = name;
	n->kind = kind;
	return n;
}

int bf_vfs_build(const struct bf_plan *p, const struct timespec *mtime, struct bf_vfs **out)
{
	struct bf_vfs *v = bf_xcalloc(1, sizeof(*v));
	v->plan = p;
	v->mtime = *mtime;
	add(v, BF_VFS_ROOT, "", BF_V_DIR);
	for (size_t i = 0; i < p->n_files; i++) {
		struct bf_vnode *n = add(v, BF_VFS_ROOT, p->files[i].name, BF_V_MEM);
		n->size = p->files[i].len;
		n->data = p->files[i].data;
	}
	for (size_t i = 0; i < p->n_shards; i++) {
		struct bf_vnode *n = add(v, BF_VFS_ROOT, p->shards[i].name, BF_V_SHARD);
		n->size = p->shards[i].size;
		n->shard = (uint32_t)i;
	}
	struct bf_vnode *d = add(v, BF_VFS_ROOT, ".blendfs", BF_V_DIR);
	d->hidden = true;
	uint64_t dino = d->ino;
	struct bf_vnode *s = add(v, dino, "status", BF_V_STATUS);
	s->hidden = true;
	*out = v;
	return 0;
}

void bf_vfs_free(struct bf_vfs *v)
{
	if (!v)
		return;
	free(v->nodes);
	free(v);
}

const struct bf_vnode *bf_vfs_get(const struct bf_vfs *v, uint64_t ino)
{
	if (ino < 1 || ino > v->n)
		return NULL;
	return &v->nodes[ino - 1];
}

const struct bf_vnode *bf_vfs_lookup(const struct bf_vfs *v, uint64_t parent, const char *name)
{
	for (size_t i = 1; i < v->n; i++)
		if (v->nodes[i].parent == parent && !strcmp(v->nodes[i].name, name))
			return &v->nodes[i];
	return NULL;
}

const struct bf_vnode *bf_vfs_next_child(const struct bf_vfs *v, uint64_t dir, size_t *cursor)
{
	for (size_t i = *cursor + 1; i < v->n; i++)
		if (v->nodes[i].parent == dir) {
			*cursor = i;
			return &v->nodes[i];
		}
	*cursor = v->n;
	return NULL;
}

ssize_t bf_vfs_read(const struct bf_vfs *v, struct bf_exec *x, const struct bf_vnode *n, uint64_t off,
		    size_t len, void *buf)
{
	(void)v;
	if (n->kind == BF_V_DIR)
		return -EISDIR;
	if (off >= n->size)
		return 0;
	if (len > n->size - off)
		len = (size_t)(n->size - off);
	if (n->kind == BF_V_MEM) {
		memcpy(buf, n->data + off, len);
		return (ssize_t)len;
	}
	if (n->kind == BF_V_SHARD) {
		int r = bf_exec_read(x, n->shard, off, len, buf);
		return r ? r : (ssize_t)len;
	}
	return -EINVAL; /* status files are generated per open by the FUSE layer */
}

char *bf_vfs_status_text(const struct bf_vfs *v, struct bf_exec *x, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	if (!f)
		return NULL;
	const struct bf_plan *p = v->plan;
	struct bf_cache_stats cs;
	struct bf_exec_stats es;
	bf_cache_get_stats(bf_exec_cache(x), &cs);
	bf_exec_get_stats(x, &es);
	fprintf(f, "recipe: %s\nmethod: %s\ntensors: %zu\nshards: %zu\noutput_bytes: %" PRIu64 "\n",
		p->recipe->path, p->method->name, p->n_tensors, p->n_shards, p->total_size);
	fprintf(f, "cache_budget_bytes: %" PRIu64 "\ncache_used_bytes: %" PRIu64 "\ncache_entries: %" PRIu64
		   "\ncache_hits: %" PRIu64 "\ncache_misses: %" PRIu64 "\ncache_waits: %" PRIu64
		   "\ncache_evictions: %" PRIu64 "\n",
		cs.bytes_budget, cs.bytes_used, cs.entries, cs.hits, cs.misses, cs.waits, cs.evictions);
	fprintf(f, "chunks_computed: %" PRIu64 "\nbytes_computed: %" PRIu64 "\nbytes_copied: %" PRIu64
		   "\nstatistics_computed: %" PRIu64 "\nread_errors: %" PRIu64 "\nchunks_prefetched: %" PRIu64 "\n",
		es.chunks_computed, es.bytes_computed, es.bytes_copied, es.stats_computed, es.read_errors, es.prefetched);
	struct bf_select_stats ss;
	bf_select_get_stats(&ss);
	fprintf(f, "select_windows_hit: %" PRIu64 "\nselect_windows_missed: %" PRIu64 "\nselect_windows_par: %" PRIu64 "\n",
		ss.windows_hit, ss.windows_missed, ss.windows_par);
	if (p->method->random) {
		struct bf_mask_stats ms;
		bf_method_mask_stats(&ms);
		fprintf(f, "mask_bits_budget_bytes: %" PRIu64 "\nmask_bits_used_bytes: %" PRIu64
			   "\nmask_bits_kept: %" PRIu64 "\nmask_bits_partial: %" PRIu64 "\nmask_bits_refused: %" PRIu64 "\n",
			ms.budget, ms.used, ms.kept, ms.partial, ms.refused);
	}
	for (size_t i = 0; i < bf_n_methods && i < 32; i++)
		if (es.method_ns[i] || es.method_bytes[i])
			fprintf(f, "method_time_ms.%s: %.3f\nmethod_bytes.%s: %" PRIu64 "\n", bf_methods[i]->name,
				(double)es.method_ns[i] / 1e6, bf_methods[i]->name, es.method_bytes[i]);
	fclose(f);
	*len = n;
	return buf;
}
