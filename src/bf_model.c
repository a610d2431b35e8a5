/* bf_model.c: a source model directory: resolution, index, shard fds, pread, freshness.
 *
 * Not here: merge planning (which tensors are read, in which dtype), caching, FUSE.
 *
 * Resolution, in order (never the network):
 *   1. "REF" as a local directory: absolute, else cwd-relative, else recipe-dir-relative. The
 *      whole string, '@' included, so a directory that happens to contain '@' still works.
 *   2. "org/name[@REV]" in the Hub cache: for each root of $HF_HUB_CACHE, $HF_HOME/hub,
 *      $HOME/.cache/huggingface/hub, the repo dir models--org--name; the snapshot is
 *      snapshots/REV if that is a directory (REV is a commit), else snapshots/<refs/REV>
 *      (REV a branch or tag; default "main").
 *
 * Confinement. Files are opened by plain names only (the index's shard names are checked to be
 * basenames). A Hub snapshot holds symlinks into ../../blobs, so the root every opened file must
 * resolve inside (realpath) is the repo dir models--X when the model dir is
 * .../models--X/snapshots/<rev>, and the model dir itself otherwise. After open, the resolved
 * path is stat'ed again and must be the inode that was opened, so a symlink swapped between the
 * check and the open cannot slip through.
 *
 * Index checks (model.safetensors.index.json): a JSON object (duplicate keys refused) of at most
 * 64 MiB; weight_map an object of tensor -> shard name, 1..1,000,000 entries, at most 100,000
 * distinct shards; every shard opened once and validated by bf_st_read_header; every mapped
 * tensor present in its shard; no tensor name in two shards; tensors a shard has but the map
 * does not name are ignored with a warning (that is what transformers does).
 *
 * Freshness. Each shard keeps its fstat at open. bf_model_check_fresh() compares dev, ino, size,
 * mtime and ctime; the first difference (or a short pread) marks the shard stale for good and
 * logs one line. A rename over the path or an unlink does not touch the bytes of the inode we
 * hold; it does bump that inode's ctime (the link count drops), so ctime is only compared while
 * the link count is unchanged.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "bf_common.h"
#include "bf_log.h"
#include "bf_model.h"
#include "bf_st.h"

#define SINGLE_NAME "model.safetensors"
#define INDEX_NAME "model.safetensors.index.json"
#define CONFIG_NAME "config.json"
#define MAX_INDEX_BYTES ((size_t)64 << 20)
#define MAX_CONFIG_BYTES ((size_t)16 << 20)
#define MAX_SHARDS 100000u
#define MAX_INDEX_TENSORS 1000000u
#define READ_LOG_INTERVAL_MS 10000u

/* ---- paths ---------------------------------------------------------------------------------- */

static char *path_join(const char *a, const char *b)
{
	size_t al = strlen(a);
	if (al && a[al - 1] == '/')
		return bf_xasprintf("%s%s", a, b);
	return bf_xasprintf("%s/%s", a, b);
}

static bool is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool exists(const char *p)
{
	struct stat st;
	return lstat(p, &st) == 0;
}

static bool path_inside(const char *p, const char *root)
{
	size_t rl = strlen(root);
	if (rl == 1 && root[0] == '/')
		return p[0] == '/';
	return !strncmp(p, root, rl) && (p[rl] == '/' || p[rl] == 0);
}

/* The root opened files must stay inside, for a model dir `dir` given as a realpath. */
static char *confine_root(const char *dir)
{
	/* .../models--X/snapshots/REV -> .../models--X */
	const char *last = strrchr(dir, '/');
	if (!last || last == dir || !last[1])
		return bf_xstrdup(dir);
	const char *p = last - 1;
	while (p > dir && *p != '/')
		p--;
	if (*p != '/' || (size_t)(last - p) != strlen("/snapshots") || strncmp(p, "/snapshots", 10))
		return bf_xstrdup(dir);
	const char *q = p - 1;
	while (q > dir && *q != '/')
		q--;
	if (*q != '/' || strncmp(q + 1, "models--", 8))
		return bf_xstrdup(dir);
	return bf_xstrndup(dir, (size_t)(p - dir));
}

/* A plain file name: not empty, not ".", no '/', no "..". */
static bool plain_name(const char *s)
{
	return s[0] && strcmp(s, ".") && !strchr(s, '/') && !strstr(s, "..");
}

static bool ends_with(const char *s, const char *suf)
{
	size_t sl = strlen(s), fl = strlen(suf);
	return sl >= fl && !strcmp(s + sl - fl, suf);
}

/* Open `dir/name` read-only, confined to `root` (NULL: no confinement). Returns 1 with *fd_out,
 * *st and *path_out (malloc'd), 0 if the file does not exist (dangling links included), -1 with
 * err. */
static int open_confined(const char *dir, const char *root, const char *name, int *fd_out,
			 struct stat *st, char **path_out, struct bf_err *err)
{
	char *path = path_join(dir, name);
	/* O_NONBLOCK: a FIFO in place of a file must not hang the mount; cleared below. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		if (e == ENOENT) {
			free(path);
			return 0;
		}
		bf_errf(err, "%s: cannot open: %s", path, strerror(e));
		free(path);
		return -1;
	}
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		bf_errf(err, "%s: not a regular file", path);
		goto fail;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	if (root) {
		char *rp = realpath(path, NULL);
		struct stat rst;
		if (!rp) {
			bf_errf(err, "%s: cannot resolve: %s", path, strerror(errno));
			goto fail;
		}
		if (!path_inside(rp, root)) {
			bf_errf(err, "%s: resolves to %s, outside %s; refusing to follow the link", path, rp, root);
			free(rp);
			goto fail;
		}
		bool same = stat(rp, &rst) == 0 && rst.st_dev == st->st_dev && rst.st_ino == st->st_ino;
		free(rp);
		if (!same) {
			bf_errf(err, "%s: changed while being opened", path);
			goto fail;
		}
	}
	*fd_out = fd;
	*path_out = path;
	return 1;
fail:
	close(fd);
	free(path);
	return -1;
}

/* Read a whole small confined file. 1 with a NUL-terminated buffer, 0 if absent, -1 with err. */
static int read_confined(const char *dir, const char *root, const char *name, size_t max,
			 char **data, size_t *len, struct bf_err *err)
{
	int fd;
	struct stat st;
	char *path;
	int r = open_confined(dir, root, name, &fd, &st, &path, err);
	if (r <= 0)
		return r;
	r = bf_read_fd(fd, st.st_size, path, max, data, len, err);
	close(fd);
	free(path);
	return r ? -1 : 1;
}

/* ---- model construction --------------------------------------------------------------------- */

static int cmp_src_tensor(const void *a, const void *b)
{
	return strcmp(((const struct bf_src_tensor *)a)->name, ((const struct bf_src_tensor *)b)->name);
}

static void fill_tensor(struct bf_src_tensor *d, struct bf_st_tensor *s, uint32_t shard, uint64_t data_start)
{
	d->name = s->name;
	s->name = NULL;
	d->dtype = s->dtype;
	d->ndim = s->ndim;
	memcpy(d->shape, s->shape, sizeof(d->shape));
	d->numel = s->numel;
	d->shard = shard;
	d->offset = data_start + s->begin; /* <= 1e8 + 8 + 2^48: no overflow */
	d->nbytes = s->end - s->begin;
}

/* Open shard `name` into m->shards[idx] and read its header. */
static int open_shard(struct bf_model *m, const char *root, uint32_t idx, const char *name,
		      const char *listed_in, struct bf_st_header *h, struct bf_err *err)
{
	struct bf_src_shard *s = &m->shards[idx];
	int r = open_confined(m->dir, root, name, &s->fd, &s->st, &s->path, err);
	if (r == 0) {
		char *p = path_join(m->dir, name);
		if (listed_in)
			bf_errf(err, "%s: shard %s listed in %s does not exist", p, name, listed_in);
		else
			bf_errf(err, "%s: does not exist", p);
		free(p);
	}
	if (r <= 0)
		return -1;
	s->name = bf_xstrdup(name);
	if (bf_st_read_header(s->fd, s->path, h, NULL, err) < 0)
		return -1;
	/* the identity the header was validated against */
	if (fstat(s->fd, &s->st) < 0)
		return bf_errf(err, "%s: cannot stat: %s", s->path, strerror(errno));
	s->data_start = h->data_start;
	return 0;
}

static struct bf_model *model_new(const char *ref, char *dir)
{
	struct bf_model *m = bf_xcalloc(1, sizeof(*m));
	m->ref = bf_xstrdup(ref);
	m->dir = dir;
	return m;
}

static void alloc_shards(struct bf_model *m, size_t n)
{
	m->shards = bf_xcalloc(n, sizeof(*m->shards));
	m->n_shards = n;
	for (size_t i = 0; i < n; i++) {
		m->shards[i].fd = -1;
		atomic_init(&m->shards[i].stale, 0);
		atomic_init(&m->shards[i].last_check_ns, 0);
	}
}

static int finish_tensors(struct bf_model *m, struct bf_err *err)
{
	qsort(m->tensors, m->n_tensors, sizeof(*m->tensors), cmp_src_tensor);
	m->total_bytes = 0;
	for (size_t i = 0; i < m->n_tensors; i++)
		if (!bf_add_u64(m->total_bytes, m->tensors[i].nbytes, &m->total_bytes))
			return bf_errf(err, "%s: total tensor size overflows", m->dir);
	return 0;
}

static int load_single(struct bf_model *m, const char *root, const char *name, struct bf_err *err)
{
	struct bf_st_header h;
	memset(&h, 0, sizeof(h));
	alloc_shards(m, 1);
	if (open_shard(m, root, 0, name, NULL, &h, err) < 0) {
		bf_st_header_free(&h);
		return -1;
	}
	m->tensors = bf_xcalloc(h.n_tensors ? h.n_tensors : 1, sizeof(*m->tensors));
	m->n_tensors = h.n_tensors;
	for (size_t i = 0; i < h.n_tensors; i++)
		fill_tensor(&m->tensors[i], &h.tensors[i], 0, h.data_start);
	bf_st_header_free(&h);
	return finish_tensors(m, err);
}

/* One weight_map entry; strings point into the parsed index. */
struct wm_ent {
	const char *tensor;
	const char *shard;
	uint32_t shard_idx;
	size_t hdr_pos;        /* index into that shard's header tensors */
};

/* A tensor seen in a shard header, for the "in two shards" check. */
struct seen {
	const char *name;
	uint32_t shard;
	size_t pos;
};

static int cmp_ent_shard(const void *a, const void *b)
{
	return strcmp((*(const struct wm_ent *const *)a)->shard, (*(const struct wm_ent *const *)b)->shard);
}

static int cmp_seen(const void *a, const void *b)
{
	const struct seen *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	if (c)
		return c;
	return x->shard < y->shard ? -1 : x->shard > y->shard;
}

static int cmp_seen_key(const void *key, const void *elem)
{
	return strcmp((const char *)key, ((const struct seen *)elem)->name);
}

static int load_index(struct bf_model *m, const char *root, const char *index_text, size_t index_len,
		      const char *index_path, struct bf_err *err)
{
	json_error_t je;
	json_t *j = json_loadb(index_text, index_len, JSON_REJECT_DUPLICATES, &je);
	struct wm_ent *ents = NULL, **by_shard = NULL;
	struct bf_st_header *hdrs = NULL;
	struct seen *seen = NULL;
	size_t n_seen = 0;
	bool **mapped = NULL;
	int rc = -1;

	if (!j)
		return bf_errf(err, "%s:%d:%d: not valid JSON: %s", index_path, je.line, je.column, je.text);
	if (!json_is_object(j)) {
		bf_errf(err, "%s: not a JSON object", index_path);
		goto out;
	}
	const json_t *meta = json_object_get(j, "metadata");
	if (meta && !json_is_object(meta) && !json_is_null(meta)) {
		bf_errf(err, "%s: \"metadata\" is not an object", index_path);
		goto out;
	}
	json_t *wm = json_object_get(j, "weight_map");
	if (!wm) {
		bf_errf(err, "%s: has no \"weight_map\"", index_path);
		goto out;
	}
	if (!json_is_object(wm)) {
		bf_errf(err, "%s: \"weight_map\" is not an object", index_path);
		goto out;
	}
	size_t n = json_object_size(wm);
	if (n == 0) {
		bf_errf(err, "%s: \"weight_map\" is empty", index_path);
		goto out;
	}
	if (n > MAX_INDEX_TENSORS) {
		bf_errf(err, "%s: \"weight_map\" lists %zu tensors, more than the %u allowed", index_path, n,
			MAX_INDEX_TENSORS);
		goto out;
	}
	ents = bf_xcalloc(n, sizeof(*ents));
	size_t k = 0;
	for (void *it = json_object_iter(wm); it; it = json_object_iter_next(wm, it)) {
		const char *tn = json_object_iter_key(it);
		json_t *v = json_object_iter_value(it);
		BF_ASSERT(k < n);
		if (!json_is_string(v)) {
			bf_errf(err, "%s: weight_map entry for '%.200s' is not a string", index_path, tn);
			goto out;
		}
		const char *sn = json_string_value(v);
		if (strlen(sn) != json_string_length(v) || !plain_name(sn) || !ends_with(sn, ".safetensors") ||
		    !strcmp(sn, ".safetensors")) {
			bf_errf(err, "%s: tensor '%.200s' maps to shard '%.200s', which is not a plain file name "
				"ending in .safetensors", index_path, tn, sn);
			goto out;
		}
		ents[k].tensor = tn;
		ents[k].shard = sn;
		k++;
	}

	/* distinct shards, in name order */
	by_shard = bf_xcalloc(n, sizeof(*by_shard));
	for (size_t i = 0; i < n; i++)
		by_shard[i] = &ents[i];
	qsort(by_shard, n, sizeof(*by_shard), cmp_ent_shard);
	size_t ns = 0;
	for (size_t i = 0; i < n; i++) {
		if (i && strcmp(by_shard[i]->shard, by_shard[i - 1]->shard))
			ns++;
		by_shard[i]->shard_idx = (uint32_t)(ns < MAX_SHARDS ? ns : MAX_SHARDS);
	}
	ns++;
	if (ns > MAX_SHARDS) {
		bf_errf(err, "%s: %zu distinct shards, more than the %u allowed", index_path, ns, MAX_SHARDS);
		goto out;
	}

	alloc_shards(m, ns);
	hdrs = bf_xcalloc(ns, sizeof(*hdrs));
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t si = by_shard[i]->shard_idx;
		if (m->shards[si].name)
			continue;
		if (open_shard(m, root, si, by_shard[i]->shard, index_path, &hdrs[si], err) < 0)
			goto out;
		total += hdrs[si].n_tensors; /* each <= 1e6, ns <= 1e5: fits */
	}

	/* every tensor every shard holds, sorted by name: finds duplicates and serves lookups */
	seen = bf_xcalloc(total ? total : 1, sizeof(*seen));
	mapped = bf_xcalloc(ns, sizeof(*mapped));
	for (uint32_t si = 0; si < ns; si++) {
		mapped[si] = bf_xcalloc(hdrs[si].n_tensors ? hdrs[si].n_tensors : 1, sizeof(bool));
		for (size_t t = 0; t < hdrs[si].n_tensors; t++)
			seen[n_seen++] = (struct seen){ hdrs[si].tensors[t].name, si, t };
	}
	qsort(seen, n_seen, sizeof(*seen), cmp_seen);
	for (size_t i = 1; i < n_seen; i++)
		if (!strcmp(seen[i].name, seen[i - 1].name)) {
			bf_errf(err, "%s: tensor '%.200s' is in two shards, %s and %s", index_path, seen[i].name,
				m->shards[seen[i - 1].shard].name, m->shards[seen[i].shard].name);
			goto out;
		}

	for (size_t i = 0; i < n; i++) {
		struct wm_ent *e = &ents[i];
		const struct seen *f = bsearch(e->tensor, seen, n_seen, sizeof(*seen), cmp_seen_key);
		if (!f || f->shard != e->shard_idx) {
			bf_errf(err, "%s: index maps '%.200s' to shard %s but %s has no tensor '%.200s'", index_path,
				e->tensor, e->shard, e->shard, e->tensor);
			goto out;
		}
		e->hdr_pos = f->pos;
		mapped[f->shard][f->pos] = true;
	}

	for (uint32_t si = 0; si < ns; si++) {
		size_t extra = 0;
		const char *first = NULL;
		for (size_t t = 0; t < hdrs[si].n_tensors; t++)
			if (!mapped[si][t]) {
				if (!first)
					first = hdrs[si].tensors[t].name;
				extra++;
			}
		if (extra)
			bf_warn("%s: %zu tensor%s not in the weight_map of %s, ignored (first: '%s')",
				m->shards[si].path, extra, extra == 1 ? " is" : "s are", index_path, first);
	}

	m->tensors = bf_xcalloc(n, sizeof(*m->tensors));
	for (size_t i = 0; i < n; i++) {
		struct wm_ent *e = &ents[i];
		fill_tensor(&m->tensors[i], &hdrs[e->shard_idx].tensors[e->hdr_pos], e->shard_idx,
			    hdrs[e->shard_idx].data_start);
		m->n_tensors++;
	}
	rc = finish_tensors(m, err);
out:
	if (mapped)
		for (size_t si = 0; si < m->n_shards; si++)
			free(mapped[si]);
	free(mapped);
	free(seen);
	if (hdrs)
		for (size_t si = 0; si < m->n_shards; si++)
			bf_st_header_free(&hdrs[si]);
	free(hdrs);
	free(by_shard);
	free(ents);
	json_decref(j);
	return rc;
}

static int load_config(struct bf_model *m, const char *root, struct bf_err *err)
{
	char *data;
	size_t len;
	int r = read_confined(m->dir, root, CONFIG_NAME, MAX_CONFIG_BYTES, &data, &len, err);
	if (r <= 0)
		return r;
	json_error_t je;
	/* duplicates allowed, last wins: what Python's json (and so transformers) does */
	json_t *j = json_loadb(data, len, 0, &je);
	free(data);
	char *p = path_join(m->dir, CONFIG_NAME);
	if (!j) {
		bf_errf(err, "%s:%d:%d: invalid JSON: %s", p, je.line, je.column, je.text);
		free(p);
		return -1;
	}
	if (!json_is_object(j)) {
		bf_errf(err, "%s: not a JSON object", p);
		json_decref(j);
		free(p);
		return -1;
	}
	free(p);
	m->config = j;
	return 1;
}

/* Open the model held in directory `dir`. */
static int open_dir(const char *dir, const char *ref, struct bf_model **out, struct bf_err *err)
{
	char *rp = realpath(dir, NULL);
	if (!rp)
		return bf_errf(err, "%s: cannot resolve: %s", dir, strerror(errno));
	struct bf_model *m = model_new(ref, rp);
	char *root = confine_root(m->dir);
	char *text = NULL;
	size_t tlen = 0;
	int r;

	/* model.safetensors wins over an index, as in transformers */
	char *single = path_join(m->dir, SINGLE_NAME);
	bool have_single = exists(single);
	free(single);
	if (have_single) {
		r = load_single(m, root, SINGLE_NAME, err);
	} else {
		char *ip = path_join(m->dir, INDEX_NAME);
		r = read_confined(m->dir, root, INDEX_NAME, MAX_INDEX_BYTES, &text, &tlen, err);
		if (r > 0)
			r = load_index(m, root, text, tlen, ip, err);
		else if (r == 0) {
			char *b1 = path_join(m->dir, "pytorch_model.bin");
			char *b2 = path_join(m->dir, "pytorch_model.bin.index.json");
			if (exists(b1) || exists(b2))
				bf_errf(err, "%s: has only pytorch_model.bin weights; blendfs reads safetensors only "
					"(.bin is not supported): convert the model to safetensors first", m->dir);
			else
				bf_errf(err, "%s: no model weights: expected %s or %s", m->dir, SINGLE_NAME, INDEX_NAME);
			free(b1);
			free(b2);
			r = -1;
		}
		free(ip);
		free(text);
	}
	if (r >= 0)
		r = load_config(m, root, err);
	free(root);
	if (r < 0) {
		bf_model_close(m);
		return -1;
	}
	*out = m;
	return 0;
}

/* ---- resolution ----------------------------------------------------------------------------- */

/* huggingface_hub's repo id rule: [A-Za-z0-9_.-], word characters at both ends, no "--" or "..". */
static bool hf_part_ok(const char *s, size_t n)
{
	if (n == 0 || n > 96)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '_' || c == '-' || c == '.'))
			return false;
		if (i && (c == '-' || c == '.') && s[i - 1] == c)
			return false;
	}
	unsigned char a = (unsigned char)s[0], z = (unsigned char)s[n - 1];
	return (isalnum(a) || a == '_') && (isalnum(z) || z == '_');
}

static bool hf_id_ok(const char *id)
{
	const char *sl = strchr(id, '/');
	if (!sl || strchr(sl + 1, '/'))
		return false;
	return hf_part_ok(id, (size_t)(sl - id)) && hf_part_ok(sl + 1, strlen(sl + 1));
}

/* A branch, tag or commit: [A-Za-z0-9_.-/], no "..", no leading/trailing or double '/'. */
static bool hf_rev_ok(const char *r)
{
	size_t n = strlen(r);
	if (n == 0 || n > 255 || r[0] == '/' || r[n - 1] == '/' || strstr(r, "..") || strstr(r, "//"))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)r[i];
		if (!(isalnum(c) || c == '_' || c == '-' || c == '.' || c == '/'))
			return false;
	}
	return true;
}

/* The snapshot dir for `rev` inside repo dir `repo`, or NULL. */
static char *find_snapshot(const char *repo, const char *rev)
{
	if (!is_dir(repo))
		return NULL;
	char *snaps = path_join(repo, "snapshots");
	char *p = path_join(snaps, rev);
	if (is_dir(p)) {
		free(snaps);
		return p;
	}
	free(p);
	p = NULL;
	char *refs = path_join(repo, "refs");
	char *rf = path_join(refs, rev);
	char *data = NULL;
	size_t len = 0;
	struct bf_err ignore = { { 0 } };
	if (bf_read_file(rf, 4096, &data, &len, &ignore) == 0) {
		size_t a = 0, b = len;
		while (a < b && isspace((unsigned char)data[a]))
			a++;
		while (b > a && isspace((unsigned char)data[b - 1]))
			b--;
		bool ok = b > a && b - a <= 128;
		for (size_t i = a; ok && i < b; i++)
			ok = isxdigit((unsigned char)data[i]) != 0;
		if (ok) {
			data[b] = 0;
			p = path_join(snaps, data + a);
			if (!is_dir(p)) {
				free(p);
				p = NULL;
			}
		}
		free(data);
	}
	free(rf);
	free(refs);
	free(snaps);
	return p;
}

struct strlist {
	char **v;
	size_t n;
};

static void sl_add(struct strlist *l, char *s)
{
	l->v = bf_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = s;
}

static void sl_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

static char *abs_path(const char *p)
{
	if (p[0] == '/')
		return bf_xstrdup(p);
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return bf_xstrdup(p);
	return path_join(cwd, p);
}

int bf_model_open(const char *ref, const char *recipe_dir, struct bf_model **out, struct bf_err *err)
{
	*out = NULL;
	if (!ref || !ref[0])
		return bf_errf(err, "empty model reference");
	if (strlen(ref) >= PATH_MAX)
		return bf_errf(err, "model reference is longer than %d bytes", PATH_MAX);

	struct strlist local = { 0 }, hub = { 0 };
	char *id = NULL, *cand = NULL;
	const char *rev = NULL;
	int rc = -1;

	/* 1. a local directory, the whole string */
	if (ref[0] == '/') {
		if (is_dir(ref)) {
			rc = open_dir(ref, ref, out, err);
			goto done;
		}
		sl_add(&local, bf_xstrdup(ref));
	} else {
		cand = abs_path(ref);
		if (is_dir(cand)) {
			rc = open_dir(cand, ref, out, err);
			goto done;
		}
		sl_add(&local, cand);
		cand = NULL;
		if (recipe_dir && recipe_dir[0]) {
			char *rd = abs_path(recipe_dir);
			cand = path_join(rd, ref);
			free(rd);
			if (is_dir(cand)) {
				rc = open_dir(cand, ref, out, err);
				goto done;
			}
			sl_add(&local, cand);
			cand = NULL;
		}
	}

	/* 2. the Hub cache */
	const char *at = strchr(ref, '@');
	id = at ? bf_xstrndup(ref, (size_t)(at - ref)) : bf_xstrdup(ref);
	rev = at ? at + 1 : NULL;
	bool hf = hf_id_ok(id) && (!rev || hf_rev_ok(rev));
	if (hf) {
		const char *e;
		char *roots[3] = { NULL, NULL, NULL };
		if ((e = getenv("HF_HUB_CACHE")) && e[0])
			roots[0] = bf_xstrdup(e);
		if ((e = getenv("HF_HOME")) && e[0])
			roots[1] = path_join(e, "hub");
		if ((e = getenv("HOME")) && e[0])
			roots[2] = path_join(e, ".cache/huggingface/hub");
		const char *sl = strchr(id, '/');
		char *dirname = bf_xasprintf("models--%.*s--%s", (int)(sl - id), id, sl + 1);
		char *snap = NULL;
		for (int i = 0; i < 3 && !snap; i++) {
			if (!roots[i])
				continue;
			char *repo = path_join(roots[i], dirname);
			snap = find_snapshot(repo, rev ? rev : "main");
			if (!snap && is_dir(repo)) {
				/* the repo is cached, the revision is not: say so */
				char *note = bf_xasprintf("%s (no snapshot for revision '%s')", repo, rev ? rev : "main");
				free(repo);
				repo = note;
			}
			sl_add(&hub, repo);
		}
		for (int i = 0; i < 3; i++)
			free(roots[i]);
		free(dirname);
		if (snap) {
			rc = open_dir(snap, ref, out, err);
			free(snap);
			goto done;
		}
	}

	/* not found: say where we looked */
	{
		char msg[BF_ERR_MAX];
		size_t o = 0;
		o += (size_t)snprintf(msg + o, sizeof(msg) - o, "model '%s' not found: looked in ", ref);
		for (size_t i = 0; i < hub.n + local.n && o < sizeof(msg); i++)
			o += (size_t)snprintf(msg + o, sizeof(msg) - o, "%s%s", i ? ", " : "",
					      i < hub.n ? hub.v[i] : local.v[i - hub.n]);
		if (o < sizeof(msg)) {
			if (hf)
				snprintf(msg + o, sizeof(msg) - o, " (blendfs never downloads; fetch it with "
					 "`huggingface-cli download %s%s%s` first)", id,
					 rev ? " --revision " : "", rev ? rev : "");
			else
				snprintf(msg + o, sizeof(msg) - o, " (not a directory, and not a Hugging Face id "
					 "'org/name[@revision]', so the Hub cache was not searched)");
		}
		bf_errf(err, "%s", msg);
	}
done:
	free(cand);
	free(id);
	sl_free(&local);
	sl_free(&hub);
	return rc;
}

int bf_model_open_path(const char *path, struct bf_model **out, struct bf_err *err)
{
	struct stat st;
	*out = NULL;
	if (stat(path, &st) < 0)
		return bf_errf(err, "%s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return open_dir(path, path, out, err);
	if (!S_ISREG(st.st_mode) || !ends_with(path, ".safetensors"))
		return bf_errf(err, "%s: not a model directory or a .safetensors file", path);

	char *rp = realpath(path, NULL);
	if (!rp)
		return bf_errf(err, "%s: cannot resolve: %s", path, strerror(errno));
	char *slash = strrchr(rp, '/');
	BF_ASSERT(slash);
	char *name = bf_xstrdup(slash + 1);
	char *dir = slash == rp ? bf_xstrdup("/") : bf_xstrndup(rp, (size_t)(slash - rp));
	free(rp);
	struct bf_model *m = model_new(path, dir);
	/* the user named this very file: no confinement beyond the realpath */
	int r = load_single(m, NULL, name, err);
	free(name);
	if (r < 0) {
		bf_model_close(m);
		return -1;
	}
	*out = m;
	return 0;
}

void bf_model_close(struct bf_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_shards; i++) {
		if (m->shards[i].fd >= 0)
			close(m->shards[i].fd);
		free(m->shards[i].name);
		free(m->shards[i].path);
	}
	free(m->shards);
	for (size_t i = 0; i < m->n_tensors; i++)
		free(m->tensors[i].name);
	free(m->tensors);
	if (m->config)
		json_decref(m->config);
	free(m->ref);
	free(m->dir);
	free(m);
}

/* ---- queries -------------------------------------------------------------------------------- */

static int cmp_tensor_key(const void *key, const void *elem)
{
	return strcmp((const char *)key, ((const struct bf_src_tensor *)elem)->name);
}

const struct bf_src_tensor *bf_model_tensor(const struct bf_model *m, const char *name)
{
	if (!m || !name || !m->n_tensors)
		return NULL;
	return bsearch(name, m->tensors, m->n_tensors, sizeof(*m->tensors), cmp_tensor_key);
}

static uint64_t log_key(const struct bf_src_shard *s, uint64_t kind)
{
	return XXH3_64bits(s->path, strlen(s->path)) ^ kind;
}

/* Mark a shard stale; the first caller logs why (and returns true). */
static bool mark_stale(struct bf_src_shard *s, const char *why)
{
	if (atomic_exchange(&s->stale, 1) != 0)
		return false;
	bf_error("source changed while mounted: %s (%s); reads that depend on it now fail with EIO; "
		 "remount to pick up the new file", s->path, why);
	return true;
}

int bf_model_pread(const struct bf_model *m, const struct bf_src_tensor *t, uint64_t off,
		   void *buf, size_t len)
{
	BF_ASSERT(t->shard < m->n_shards);
	BF_ASSERT(off <= t->nbytes && len <= t->nbytes - off);
	struct bf_src_shard *s = &m->shards[t->shard];
	if (atomic_load(&s->stale)) {
		bf_log_ratelimited(BF_LOG_ERROR, log_key(s, 1), READ_LOG_INTERVAL_MS,
				   "%s: not read: the file changed while mounted (tensor '%s'); remount to "
				   "use the new file", s->path, t->name);
		return -EIO;
	}
	uint64_t pos = t->offset + off;
	size_t got = 0;
	while (got < len) {
		ssize_t r = pread(s->fd, (char *)buf + got, len - got, (off_t)(pos + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			bf_log_ratelimited(BF_LOG_ERROR, log_key(s, 2), READ_LOG_INTERVAL_MS,
					   "%s: read error at offset %" PRIu64 " (tensor '%s'): %s", s->path,
					   pos + got, t->name, strerror(e));
			return -EIO;
		}
		if (r == 0) {
			char why[96];
			snprintf(why, sizeof(why), "short read at offset %" PRIu64 ": the file shrank", pos + got);
			if (!mark_stale(s, why))
				bf_log_ratelimited(BF_LOG_ERROR, log_key(s, 3), READ_LOG_INTERVAL_MS,
						   "%s: short read at offset %" PRIu64 " (tensor '%s')", s->path,
						   pos + got, t->name);
			return -EIO;
		}
		got += (size_t)r;
	}
	return 0;
}

int bf_model_check_fresh(const struct bf_model *m, uint32_t shard, unsigned interval_ms)
{
	BF_ASSERT(shard < m->n_shards);
	struct bf_src_shard *s = &m->shards[shard];
	if (atomic_load(&s->stale))
		return -EIO;
	uint64_t now = bf_now_ns();
	if (interval_ms) {
		uint64_t last = atomic_load(&s->last_check_ns);
		if (last && now - last < (uint64_t)interval_ms * 1000000ull)
			return 0;
	}
	atomic_store(&s->last_check_ns, now ? now : 1);
	struct stat st;
	if (fstat(s->fd, &st) < 0) {
		char why[96];
		snprintf(why, sizeof(why), "cannot stat: %s", strerror(errno));
		mark_stale(s, why);
		return -EIO;
	}
	const struct stat *o = &s->st;
	/* A rename over the path, an unlink or a new hard link changes the inode's link count, and
	 * the kernel bumps ctime for it: that says nothing about the bytes, so ctime only counts
	 * while the link count is what it was at open. Writes still show in size and mtime. */
	bool ctime_differs = st.st_ctim.tv_sec != o->st_ctim.tv_sec || st.st_ctim.tv_nsec != o->st_ctim.tv_nsec;
	if (st.st_dev != o->st_dev || st.st_ino != o->st_ino || st.st_size != o->st_size ||
	    st.st_mtim.tv_sec != o->st_mtim.tv_sec || st.st_mtim.tv_nsec != o->st_mtim.tv_nsec ||
	    (ctime_differs && st.st_nlink == o->st_nlink)) {
		char why[128];
		snprintf(why, sizeof(why), "size %lld -> %lld%s", (long long)o->st_size, (long long)st.st_size,
			 st.st_size == o->st_size ? ", modified in place" : "");
		mark_stale(s, why);
		return -EIO;
	}
	return 0;
}

int bf_model_read_file(const struct bf_model *m, const char *name, size_t max, char **data,
		       size_t *len, struct bf_err *err)
{
	*data = NULL;
	if (len)
		*len = 0;
	if (!name || !plain_name(name))
		return bf_errf(err, "%s: '%s' is not a plain file name", m->dir, name ? name : "(null)");
	char *root = confine_root(m->dir);
	int r = read_confined(m->dir, root, name, max, data, len, err);
	free(root);
	return r;
}

static int layers_in(const json_t *o)
{
	static const char *const keys[] = { "num_hidden_layers", "n_layer", "num_layers", "n_layers" };
	if (!json_is_object(o))
		return -1;
	for (size_t i = 0; i < BF_ARRAY_LEN(keys); i++) {
		const json_t *v = json_object_get(o, keys[i]);
		if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= INT_MAX)
			return (int)json_integer_value(v);
	}
	return -1;
}

int bf_model_config_layers(const struct bf_model *m)
{
	if (!m || !m->config)
		return -1;
	int n = layers_in(m->config);
	if (n < 0)
		n = layers_in(json_object_get(m->config, "text_config"));
	return n;
}
