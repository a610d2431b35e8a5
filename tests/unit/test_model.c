/* test_model.c: source model directories: fixtures, resolution (local and a fake Hub cache),
 * index rules, confinement, pread, freshness.
 *
 * Runs from tests/ (meson's workdir). Everything it writes lives under one mkdtemp directory that
 * is removed at the end. HF_HUB_CACHE, HF_HOME and HOME are pointed into it, so the user's real
 * cache is never consulted.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "bf_common.h"
#include "bf_log.h"
#include "bf_model.h"
#include "bf_test.h"

static char tmproot[PATH_MAX];
static char fixtures[PATH_MAX];
static char cwd[PATH_MAX];

/* A path built from a format, in one of 16 rotating static buffers (single-threaded test). */
static const char *P(const char *fmt, ...) BF_PRINTF(1, 2);
static const char *P(const char *fmt, ...)
{
	static char bufs[16][PATH_MAX];
	static int i;
	char *b = bufs[i++ & 15];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b, PATH_MAX, fmt, ap);
	va_end(ap);
	return b;
}

/* Copy a path out of the rotating buffers into a caller-owned one. */
static char *cp(char *dst, const char *src)
{
	snprintf(dst, PATH_MAX, "%s", src);
	return dst;
}

static const char *T(const char *rel) { return P("%s/%s", tmproot, rel); }
static const char *F(const char *rel) { return P("%s/%s", fixtures, rel); }

static void mkdirs(const char *path)
{
	char b[PATH_MAX];
	snprintf(b, sizeof(b), "%s", path);
	for (char *p = b + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			mkdir(b, 0755);
			*p = '/';
		}
	mkdir(b, 0755);
}

static char *slurp(const char *path, size_t *len)
{
	char *d = NULL;
	struct bf_err e = { { 0 } };
	if (bf_read_file(path, 1u << 30, &d, len, &e) != 0) {
		printf("  cannot read %s: %s\n", path, e.msg);
		return NULL;
	}
	return d;
}

static void write_bytes(const char *path, const void *d, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, d, n) != (ssize_t)n)
		printf("  cannot write %s: %s\n", path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

static void write_str(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

static void copy_file(const char *src, const char *dst)
{
	size_t n;
	char *d = slurp(src, &n);
	if (d)
		write_bytes(dst, d, n);
	free(d);
}

/* Copy every regular file of fixture `fx` into tmp dir `name` (created). Returns the tmp path. */
static const char *clone_fixture(const char *fx, const char *name)
{
	char dst[PATH_MAX], src[PATH_MAX];
	cp(dst, P("%s/%s", tmproot, name)); /* before the loop below reuses the P() buffers */
	cp(src, P("%s/%s", fixtures, fx));
	mkdirs(dst);
	DIR *d = opendir(src);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		copy_file(P("%s/%s", src, de->d_name), P("%s/%s", dst, de->d_name));
	}
	if (d)
		closedir(d);
	return P("%s", dst);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(p);
}

static void rm_rf(const char *p) { nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* Where a tensor's bytes are, read straight from the file with jansson (independent of bf_st). */
static bool locate(const char *file, const char *name, uint64_t *off, uint64_t *len)
{
	size_t n;
	char *d = slurp(file, &n);
	bool ok = false;
	if (!d || n < 8)
		goto out;
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = (hl << 8) | (unsigned char)d[i];
	json_t *j = json_loadb(d + 8, hl, 0, NULL);
	json_t *t = json_object_get(j, name);
	json_t *o = json_object_get(t, "data_offsets");
	if (o) {
		*off = 8 + hl + (uint64_t)json_integer_value(json_array_get(o, 0));
		*len = (uint64_t)json_integer_value(json_array_get(o, 1)) -
		       (uint64_t)json_integer_value(json_array_get(o, 0));
		ok = true;
	}
	json_decref(j);
out:
	free(d);
	return ok;
}

static bool file_bytes(const char *file, uint64_t off, void *buf, size_t len)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	bool ok = pread(fd, buf, len, (off_t)off) == (ssize_t)len;
	close(fd);
	return ok;
}

static struct bf_model *open_ok(const char *ref, const char *recipe_dir)
{
	struct bf_err e = { { 0 } };
	struct bf_model *m = NULL;
	if (bf_model_open(ref, recipe_dir, &m, &e) != 0) {
		BF_T_FAIL("bf_model_open(%s): %s", ref, e.msg);
		return NULL;
	}
	EXPECT(!bf_err_isset(&e));
	return m;
}

/* Expect bf_model_open to fail with a message containing every given substring. */
static void open_fails(const char *ref, const char *recipe_dir, const char *sub1, const char *sub2)
{
	struct bf_err e = { { 0 } };
	struct bf_model *m = (struct bf_model *)1;
	int rc = bf_model_open(ref, recipe_dir, &m, &e);
	if (rc != -1 || m != NULL || !strstr(e.msg, sub1) || (sub2 && !strstr(e.msg, sub2)))
		BF_T_FAIL("open(%s): rc %d, \"%s\"; expected \"%s\"%s%s", ref, rc, e.msg, sub1,
			  sub2 ? " and " : "", sub2 ? sub2 : "");
}

/* Check every tensor of m reads back the bytes the file holds at its header offsets. */
static void check_all_preads(const struct bf_model *m)
{
	int bad = 0;
	for (size_t i = 0; i < m->n_tensors; i++) {
		const struct bf_src_tensor *t = &m->tensors[i];
		const char *file = m->shards[t->shard].path;
		uint64_t off, len;
		if (!locate(file, t->name, &off, &len) || off != t->offset || len != t->nbytes) {
			bad++;
			continue;
		}
		unsigned char *a = malloc(len + 1), *b = malloc(len + 1);
		if (bf_model_pread(m, t, 0, a, len) != 0 || !file_bytes(file, off, b, len) || memcmp(a, b, len))
			bad++;
		/* a sub-range, unaligned */
		if (len > 10 && (bf_model_pread(m, t, 3, a, len - 7) != 0 || memcmp(a, b + 3, len - 7)))
			bad++;
		/* zero bytes at the very end */
		if (bf_model_pread(m, t, len, a, 0) != 0)
			bad++;
		free(a);
		free(b);
	}
	EXPECT_EQ_U64(bad, 0);
}

static const char *const layer_parts[] = {
	"input_layernorm.weight", "mlp.down_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
	"post_attention_layernorm.weight", "self_attn.k_proj.weight", "self_attn.o_proj.weight",
	"self_attn.q_proj.weight", "self_attn.v_proj.weight",
};

/* The Llama tensor list of the fixtures, for `layers` layers. */
static void check_llama_tensors(const struct bf_model *m, int layers, enum bf_dtype dt)
{
	EXPECT_EQ_U64(m->n_tensors, 3 + 9 * (size_t)layers);
	const char *top[] = { "lm_head.weight", "model.embed_tokens.weight", "model.norm.weight" };
	for (int i = 0; i < 3; i++)
		if (!bf_model_tensor(m, top[i]))
			BF_T_FAIL("missing %s", top[i]);
	for (int l = 0; l < layers; l++)
		for (size_t k = 0; k < BF_ARRAY_LEN(layer_parts); k++) {
			const char *n = P("model.layers.%d.%s", l, layer_parts[k]);
			const struct bf_src_tensor *t = bf_model_tensor(m, n);
			if (!t)
				BF_T_FAIL("missing %s", n);
			else if (t->dtype != dt)
				BF_T_FAIL("%s: dtype %d", n, (int)t->dtype);
		}
	/* sorted by name, each lookup finds itself */
	for (size_t i = 0; i < m->n_tensors; i++) {
		if (i && strcmp(m->tensors[i - 1].name, m->tensors[i].name) >= 0)
			BF_T_FAIL("not sorted at %zu", i);
		if (bf_model_tensor(m, m->tensors[i].name) != &m->tensors[i])
			BF_T_FAIL("lookup of %s", m->tensors[i].name);
	}
	EXPECT(bf_model_tensor(m, "model.layers.99.mlp.up_proj.weight") == NULL);
	EXPECT(bf_model_tensor(m, "") == NULL);
	const struct bf_src_tensor *e = bf_model_tensor(m, "model.embed_tokens.weight");
	EXPECT(e && e->ndim == 2 && e->shape[0] == 256 && e->shape[1] == 32 && e->numel == 8192);
	EXPECT(e && e->dtype == dt && e->nbytes == 8192u * bf_dtype_size(dt));
	const struct bf_src_tensor *q = bf_model_tensor(m, "model.layers.0.self_attn.k_proj.weight");
	EXPECT(q && q->ndim == 2 && q->shape[0] == 16 && q->shape[1] == 32);
	uint64_t sum = 0;
	for (size_t i = 0; i < m->n_tensors; i++)
		sum += m->tensors[i].nbytes;
	EXPECT_EQ_U64(m->total_bytes, sum);
}

BF_TEST(fixtures_open)
{
	static const struct { const char *name; size_t shards; enum bf_dtype dt; int layers; } fx[] = {
		{ "base", 1, BF_DT_BF16, 4 },
		{ "ft_a", 2, BF_DT_BF16, 4 },
		{ "ft_b", 1, BF_DT_BF16, 4 },
		{ "ft_c", 1, BF_DT_BF16, 4 },
		{ "ft_b_f32", 2, BF_DT_F32, 4 },
		{ "ft_a_f16", 1, BF_DT_F16, 4 },
		{ "other_arch", 1, BF_DT_BF16, 6 },
	};
	for (size_t i = 0; i < BF_ARRAY_LEN(fx); i++) {
		struct bf_model *m = open_ok(P("conformance/fixtures/%s", fx[i].name), NULL);
		if (!m)
			continue;
		EXPECT_EQ_U64(m->n_shards, fx[i].shards);
		EXPECT_EQ_I64(bf_model_config_layers(m), fx[i].layers);
		EXPECT(m->config && json_is_object(m->config));
		EXPECT_STR_EQ(m->ref, P("conformance/fixtures/%s", fx[i].name));
		EXPECT_STR_EQ(m->dir, F(fx[i].name));
		check_llama_tensors(m, fx[i].layers, fx[i].dt);
		check_all_preads(m);
		for (size_t s = 0; s < m->n_shards; s++) {
			EXPECT(m->shards[s].fd >= 0);
			EXPECT(m->shards[s].data_start > 8 && m->shards[s].data_start % 8 == 0);
			EXPECT_EQ_I64(bf_model_check_fresh(m, (uint32_t)s, 0), 0);
		}
		bf_model_close(m);
	}
	bf_model_close(NULL);
}

BF_TEST(fixture_details)
{
	struct bf_model *m = open_ok("conformance/fixtures/base", NULL);
	if (!m)
		return;
	EXPECT_STR_EQ(m->shards[0].name, "model.safetensors");
	EXPECT_STR_EQ(m->shards[0].path, P("%s/model.safetensors", F("base")));
	EXPECT_EQ_U64(m->shards[0].data_start, 3968);
	EXPECT_EQ_U64(m->total_bytes, 111040 - 3968);
	/* base's first tensor in file order is lm_head at data offset 0 */
	const struct bf_src_tensor *t = bf_model_tensor(m, "lm_head.weight");
	EXPECT(t && t->offset == 3968 && t->nbytes == 16384 && t->shard == 0);
	/* a known value: the first two bytes of model.norm.weight are a bf16 near 1.0 */
	t = bf_model_tensor(m, "model.norm.weight");
	uint16_t h = 0;
	EXPECT(t && bf_model_pread(m, t, 0, &h, 2) == 0);
	float f = bf_bf16_to_f32(h);
	EXPECT(f > 0.5f && f < 1.5f);
	bf_model_close(m);

	/* the sharded one: tensors land in the shard its index names */
	m = open_ok("conformance/fixtures/ft_a", NULL);
	if (!m)
		return;
	EXPECT_STR_EQ(m->shards[0].name, "model-00001-of-00002.safetensors");
	EXPECT_STR_EQ(m->shards[1].name, "model-00002-of-00002.safetensors");
	t = bf_model_tensor(m, "lm_head.weight");
	EXPECT(t && t->shard == 1);
	t = bf_model_tensor(m, "model.embed_tokens.weight");
	EXPECT(t && t->shard == 0 && t->offset == m->shards[0].data_start);
	EXPECT_EQ_U64(m->total_bytes, 107072); /* metadata.total_size of its index */
	bf_model_close(m);
}

BF_TEST(local_resolution)
{
	struct bf_model *m;
	/* cwd-relative */
	if ((m = open_ok("conformance/fixtures/ft_a_f16", NULL)))
		bf_model_close(m);
	/* recipe-dir-relative, both with a relative and an absolute recipe dir */
	if ((m = open_ok("fixtures/ft_a_f16", "conformance"))) {
		EXPECT_STR_EQ(m->dir, F("ft_a_f16"));
		EXPECT_STR_EQ(m->ref, "fixtures/ft_a_f16");
		bf_model_close(m);
	}
	if ((m = open_ok("fixtures/base", P("%s/conformance", cwd))))
		bf_model_close(m);
	/* cwd wins over the recipe dir */
	if ((m = open_ok("conformance/fixtures/base", F("ft_a")))) {
		EXPECT_STR_EQ(m->dir, F("base"));
		bf_model_close(m);
	}
	/* absolute */
	if ((m = open_ok(F("ft_b"), "/nonexistent"))) {
		EXPECT_STR_EQ(m->dir, F("ft_b"));
		bf_model_close(m);
	}
	/* a trailing slash and a "./" are paths like any other */
	if ((m = open_ok("./conformance/fixtures/base/", NULL)))
		bf_model_close(m);
	/* a directory whose name contains '@' is a local path first */
	clone_fixture("base", "with@at");
	if ((m = open_ok(T("with@at"), NULL)))
		bf_model_close(m);
	/* not found, and not an HF id (three components) */
	open_fails("conformance/nope/x", NULL, "model 'conformance/nope/x' not found: looked in ",
		   "not a Hugging Face id");
	open_fails("/nonexistent/dir", NULL, "model '/nonexistent/dir' not found: looked in /nonexistent/dir", NULL);
	/* a file is not a model directory */
	open_fails(F("base/config.json"), NULL, "not found", NULL);
	open_fails("", NULL, "empty model reference", NULL);
}

/* A fake Hub cache:
 *   hub/models--org--name/blobs/{b_base_st, b_base_cfg, b_tok, b_f16_st, b_f16_cfg}
 *   hub/models--org--name/refs/main = "<h1>\n", refs/dev = "<h2>", refs/bad = "../../x"
 *   hub/models--org--name/snapshots/<h1>/{model.safetensors, config.json, tokenizer.json} -> ../../blobs/...
 *   hub/models--org--name/snapshots/<h2>/{model.safetensors, config.json} -> ../../blobs/...
 */
#define H1 "0123456789abcdef0123456789abcdef01234567"
#define H2 "fedcba9876543210fedcba9876543210fedcba98"

static void make_repo(const char *hub, const char *id)
{
	char repo[PATH_MAX];
	cp(repo, P("%s/models--%s", hub, id));
	mkdirs(P("%s/blobs", repo));
	mkdirs(P("%s/refs", repo));
	mkdirs(P("%s/snapshots/" H1, repo));
	mkdirs(P("%s/snapshots/" H2, repo));
	copy_file(F("base/model.safetensors"), P("%s/blobs/b_base_st", repo));
	copy_file(F("base/config.json"), P("%s/blobs/b_base_cfg", repo));
	copy_file(F("base/tokenizer.json"), P("%s/blobs/b_tok", repo));
	copy_file(F("ft_a_f16/model.safetensors"), P("%s/blobs/b_f16_st", repo));
	copy_file(F("other_arch/config.json"), P("%s/blobs/b_f16_cfg", repo));
	write_str(P("%s/refs/main", repo), H1 "\n");
	write_str(P("%s/refs/dev", repo), "  " H2 "  ");
	write_str(P("%s/refs/bad", repo), "../../../x");
	EXPECT(symlink("../../blobs/b_base_st", P("%s/snapshots/" H1 "/model.safetensors", repo)) == 0);
	EXPECT(symlink("../../blobs/b_base_cfg", P("%s/snapshots/" H1 "/config.json", repo)) == 0);
	EXPECT(symlink("../../blobs/b_tok", P("%s/snapshots/" H1 "/tokenizer.json", repo)) == 0);
	EXPECT(symlink("../../blobs/b_f16_st", P("%s/snapshots/" H2 "/model.safetensors", repo)) == 0);
	EXPECT(symlink("../../blobs/b_f16_cfg", P("%s/snapshots/" H2 "/config.json", repo)) == 0);
}

static void hf_env(const char *hub_cache, const char *hf_home, const char *home)
{
	if (hub_cache)
		setenv("HF_HUB_CACHE", hub_cache, 1);
	else
		unsetenv("HF_HUB_CACHE");
	if (hf_home)
		setenv("HF_HOME", hf_home, 1);
	else
		unsetenv("HF_HOME");
	if (home)
		setenv("HOME", home, 1);
	else
		unsetenv("HOME");
}

BF_TEST(hub_cache)
{
	char hub[PATH_MAX], repo[PATH_MAX];
	cp(hub, T("hub"));
	make_repo(hub, "org--name");
	mkdirs(T("home"));
	hf_env(hub, T("hfhome"), T("home"));
	cp(repo, P("%s/models--org--name", hub));

	struct bf_model *m;
	/* default revision: refs/main */
	if ((m = open_ok("org/name", NULL))) {
		EXPECT_STR_EQ(m->dir, P("%s/snapshots/" H1, repo));
		EXPECT_STR_EQ(m->ref, "org/name");
		EXPECT_EQ_U64(m->n_tensors, 39);
		EXPECT_EQ_I64(bf_model_config_layers(m), 4);
		check_llama_tensors(m, 4, BF_DT_BF16);
		check_all_preads(m);
		/* files through the snapshot's symlinks into ../../blobs */
		char *d = NULL;
		size_t n = 0;
		struct bf_err e = { { 0 } };
		EXPECT_EQ_I64(bf_model_read_file(m, "tokenizer.json", 1 << 20, &d, &n, &e), 1);
		EXPECT_EQ_U64(n, 5267);
		free(d);
		EXPECT_EQ_I64(bf_model_read_file(m, "tokenizer_config.json", 1 << 20, &d, &n, &e), 0);
		EXPECT(d == NULL);
		bf_model_close(m);
	}
	/* a branch name through refs/ (whitespace around the hash trimmed) */
	if ((m = open_ok("org/name@dev", NULL))) {
		EXPECT_STR_EQ(m->dir, P("%s/snapshots/" H2, repo));
		EXPECT_EQ_I64(bf_model_tensor(m, "lm_head.weight")->dtype, BF_DT_F16);
		EXPECT_EQ_I64(bf_model_config_layers(m), 6);
		bf_model_close(m);
	}
	/* a commit hash names the snapshot directly */
	if ((m = open_ok("org/name@" H2, NULL))) {
		EXPECT_STR_EQ(m->dir, P("%s/snapshots/" H2, repo));
		bf_model_close(m);
	}
	if ((m = open_ok("org/name@main", NULL))) {
		EXPECT_STR_EQ(m->dir, P("%s/snapshots/" H1, repo));
		bf_model_close(m);
	}
	/* a snapshot directory given as a local path keeps the repo as its confinement root */
	if ((m = open_ok(P("%s/snapshots/" H1, repo), NULL))) {
		EXPECT_EQ_U64(m->n_tensors, 39);
		bf_model_close(m);
	}
	/* unknown revision, and a ref whose content is not a hash */
	open_fails("org/name@nope", NULL, "(no snapshot for revision 'nope')",
		   "`huggingface-cli download org/name --revision nope`");
	open_fails("org/name@bad", NULL, "no snapshot for revision 'bad'", NULL);
	/* revisions that could walk out of the repo are not looked up at all */
	open_fails("org/name@../../x", NULL, "not found", "not a Hugging Face id");
	open_fails("org/name@a@b", NULL, "not found", NULL);

	/* HF_HOME/hub, then ~/.cache/huggingface/hub */
	make_repo(T("hfhome/hub"), "org2--m");
	make_repo(T("home/.cache/huggingface/hub"), "org3--m");
	if ((m = open_ok("org2/m", NULL))) {
		EXPECT_STR_EQ(m->dir, P("%s/hfhome/hub/models--org2--m/snapshots/" H1, tmproot));
		bf_model_close(m);
	}
	if ((m = open_ok("org3/m", NULL))) {
		EXPECT_STR_EQ(m->dir, P("%s/home/.cache/huggingface/hub/models--org3--m/snapshots/" H1, tmproot));
		bf_model_close(m);
	}
	/* HF_HUB_CACHE first: org/name exists only there; with it unset, not found */
	hf_env(NULL, T("hfhome"), T("home"));
	open_fails("org/name", NULL, "not found", NULL);
	hf_env(hub, T("hfhome"), T("home"));

	/* the not-found message lists every place, in order, and how to fetch */
	struct bf_err e = { { 0 } };
	m = NULL;
	EXPECT(bf_model_open("org/missing", "conformance", &m, &e) == -1);
	const char *want = P("model 'org/missing' not found: looked in %s/models--org--missing, "
			     "%s/hfhome/hub/models--org--missing, %s/home/.cache/huggingface/hub/models--org--missing, "
			     "%s/org/missing, %s/conformance/org/missing (blendfs never downloads; fetch it with "
			     "`huggingface-cli download org/missing` first)", hub, tmproot, tmproot, cwd, cwd);
	EXPECT_STR_EQ(e.msg, want);
	/* without HF_HOME and HOME only the hub cache and the cwd are listed */
	hf_env(hub, NULL, NULL);
	bf_err_clear(&e);
	EXPECT(bf_model_open("org/missing", NULL, &m, &e) == -1);
	EXPECT_STR_EQ(e.msg, P("model 'org/missing' not found: looked in %s/models--org--missing, %s/org/missing "
			       "(blendfs never downloads; fetch it with `huggingface-cli download org/missing` first)",
			       hub, cwd));
	hf_env(hub, T("hfhome"), T("home"));
	/* ids huggingface_hub would refuse are not looked up */
	open_fails("org/na--me", NULL, "not a Hugging Face id", NULL);
	open_fails("org/.name", NULL, "not a Hugging Face id", NULL);
	open_fails("org/", NULL, "not a Hugging Face id", NULL);
}

BF_TEST(hub_confinement)
{
	char hub[PATH_MAX], snap[PATH_MAX], loc[PATH_MAX];
	cp(hub, T("hub_esc"));
	make_repo(hub, "evil--m");
	hf_env(hub, NULL, T("home"));
	/* a weights link that leaves the repo: refused, even though the target is a valid file */
	copy_file(F("base/model.safetensors"), T("outside.safetensors"));
	cp(snap, P("%s/models--evil--m/snapshots/" H1, hub));
	unlink(P("%s/model.safetensors", snap));
	EXPECT(symlink("../../../../outside.safetensors", P("%s/model.safetensors", snap)) == 0);
	open_fails("evil/m", NULL, "outside", "refusing to follow");
	/* an absolute link out: the same */
	unlink(P("%s/model.safetensors", snap));
	EXPECT(symlink(T("outside.safetensors"), P("%s/model.safetensors", snap)) == 0);
	open_fails("evil/m", NULL, "outside", NULL);
	/* through the snapshot given as a local path: still the repo is the root */
	open_fails(snap, NULL, "outside", NULL);
	/* a config.json that leaves the repo */
	unlink(P("%s/model.safetensors", snap));
	EXPECT(symlink("../../blobs/b_base_st", P("%s/model.safetensors", snap)) == 0);
	copy_file(F("base/config.json"), T("outside_config.json"));
	unlink(P("%s/config.json", snap));
	EXPECT(symlink("../../../../outside_config.json", P("%s/config.json", snap)) == 0);
	open_fails("evil/m", NULL, "config.json: resolves to", "outside");
	/* a tokenizer link out of the repo: the model opens, read_file refuses */
	unlink(P("%s/config.json", snap));
	unlink(P("%s/tokenizer.json", snap)); /* make_repo made one already: replace it */
	EXPECT(symlink("../../../../outside_config.json", P("%s/tokenizer.json", snap)) == 0);
	struct bf_model *m = open_ok("evil/m", NULL);
	if (m) {
		char *d = NULL;
		size_t n;
		struct bf_err e = { { 0 } };
		EXPECT(m->config == NULL);
		EXPECT_EQ_I64(bf_model_config_layers(m), -1);
		EXPECT_EQ_I64(bf_model_read_file(m, "tokenizer.json", 1 << 20, &d, &n, &e), -1);
		EXPECT_STR_CONTAINS(e.msg, "outside");
		EXPECT(d == NULL);
		bf_model_close(m);
	}
	/* a dangling link reads as absent */
	EXPECT(symlink("../../blobs/nothing", P("%s/generation_config.json", snap)) == 0);
	if ((m = open_ok("evil/m", NULL))) {
		char *d = NULL;
		struct bf_err e = { { 0 } };
		EXPECT_EQ_I64(bf_model_read_file(m, "generation_config.json", 1 << 20, &d, NULL, &e), 0);
		bf_model_close(m);
	}
	/* a local (non-Hub) model dir is its own root */
	cp(loc, clone_fixture("base", "local_esc"));
	unlink(P("%s/tokenizer.json", loc));
	EXPECT(symlink("../outside_config.json", P("%s/tokenizer.json", loc)) == 0);
	if ((m = open_ok(loc, NULL))) {
		char *d = NULL;
		struct bf_err e = { { 0 } };
		EXPECT_EQ_I64(bf_model_read_file(m, "tokenizer.json", 1 << 20, &d, NULL, &e), -1);
		EXPECT_STR_CONTAINS(e.msg, "outside");
		bf_model_close(m);
	}
	/* a link that stays inside a local dir is fine */
	unlink(P("%s/tokenizer.json", loc));
	copy_file(F("base/tokenizer.json"), P("%s/tok_real.json", loc));
	EXPECT(symlink("tok_real.json", P("%s/tokenizer.json", loc)) == 0);
	if ((m = open_ok(loc, NULL))) {
		char *d = NULL;
		size_t n = 0;
		struct bf_err e = { { 0 } };
		EXPECT_EQ_I64(bf_model_read_file(m, "tokenizer.json", 1 << 20, &d, &n, &e), 1);
		EXPECT_EQ_U64(n, 5267);
		free(d);
		bf_model_close(m);
	}
	hf_env(T("hub"), T("hfhome"), T("home"));
}

/* Rewrite a cloned ft_a index through jansson. `edit` gets the weight_map. */
static void write_index(const char *dir, void (*edit)(json_t *wm))
{
	json_t *j = json_load_file(F("ft_a/model.safetensors.index.json"), 0, NULL);
	edit(json_object_get(j, "weight_map"));
	char *s = json_dumps(j, JSON_INDENT(2));
	write_str(P("%s/model.safetensors.index.json", dir), s);
	free(s);
	json_decref(j);
}

static void ed_dotdot(json_t *wm) { json_object_set_new(wm, "lm_head.weight", json_string("../x.safetensors")); }
static void ed_subdir(json_t *wm) { json_object_set_new(wm, "lm_head.weight", json_string("a/b.safetensors")); }
static void ed_bin(json_t *wm) { json_object_set_new(wm, "lm_head.weight", json_string("model-00002-of-00002.bin")); }
static void ed_empty(json_t *wm) { json_object_set_new(wm, "lm_head.weight", json_string("")); }
static void ed_num(json_t *wm) { json_object_set_new(wm, "lm_head.weight", json_integer(2)); }
static void ed_missing_t(json_t *wm)
{
	json_object_set_new(wm, "model.extra.weight", json_string("model-00001-of-00002.safetensors"));
}
static void ed_wrong_shard(json_t *wm)
{
	json_object_set_new(wm, "lm_head.weight", json_string("model-00001-of-00002.safetensors"));
}
static void ed_missing_shard(json_t *wm)
{
	json_object_set_new(wm, "lm_head.weight", json_string("model-00003-of-00003.safetensors"));
}
static void ed_drop(json_t *wm) { json_object_del(wm, "model.norm.weight"); }
static void ed_two(json_t *wm)
{
	json_object_set_new(wm, "lm_head.weight", json_string("model-00002-of-00002.safetensors"));
}

struct bad_index {
	const char *dir;
	void (*edit)(json_t *wm);
	const char *expect;
};

BF_TEST(bad_dirs)
{
	struct bf_model *m;
	char d[PATH_MAX];

	/* no weights at all */
	cp(d, T("bad_empty"));
	mkdirs(d);
	copy_file(F("base/config.json"), P("%s/config.json", d));
	open_fails(d, NULL, P("%s: no model weights: expected model.safetensors or model.safetensors.index.json", d), NULL);
	/* only pytorch_model.bin (and its index) */
	write_str(P("%s/pytorch_model.bin", d), "PK");
	open_fails(d, NULL, ".bin is not supported", "convert the model to safetensors");
	unlink(P("%s/pytorch_model.bin", d));
	write_str(P("%s/pytorch_model.bin.index.json", d), "{}");
	open_fails(d, NULL, ".bin is not supported", NULL);
	/* model.safetensors that is a directory */
	mkdirs(P("%s/model.safetensors", d));
	open_fails(d, NULL, "model.safetensors: not a regular file", NULL);
	/* model.safetensors that is a dangling link */
	rmdir(P("%s/model.safetensors", d));
	EXPECT(symlink("nowhere.safetensors", P("%s/model.safetensors", d)) == 0);
	open_fails(d, NULL, "model.safetensors: does not exist", NULL);

	static const struct bad_index bi[] = {
		{ "idx_dotdot", ed_dotdot, "tensor 'lm_head.weight' maps to shard '../x.safetensors', which is not a plain file name" },
		{ "idx_subdir", ed_subdir, "maps to shard 'a/b.safetensors', which is not a plain file name" },
		{ "idx_bin", ed_bin, "not a plain file name ending in .safetensors" },
		{ "idx_emptyname", ed_empty, "maps to shard ''" },
		{ "idx_num", ed_num, "weight_map entry for 'lm_head.weight' is not a string" },
		{ "idx_missing_tensor", ed_missing_t, "index maps 'model.extra.weight' to shard model-00001-of-00002.safetensors "
		  "but model-00001-of-00002.safetensors has no tensor 'model.extra.weight'" },
		{ "idx_wrong_shard", ed_wrong_shard, "index maps 'lm_head.weight' to shard model-00001-of-00002.safetensors but" },
		{ "idx_missing_shard", ed_missing_shard, "shard model-00003-of-00003.safetensors listed in" },
	};
	for (size_t i = 0; i < BF_ARRAY_LEN(bi); i++) {
		cp(d, clone_fixture("ft_a", bi[i].dir));
		write_index(d, bi[i].edit);
		open_fails(d, NULL, bi[i].expect, NULL);
	}

	/* a tensor in two shards: shard 2 replaced by a copy of shard 1 plus lm_head mapped there.
	 * Build it from base's single file split differently: both shards hold embed_tokens. */
	cp(d, clone_fixture("ft_a", "idx_dup"));
	copy_file(F("ft_a/model-00001-of-00002.safetensors"), P("%s/model-00002-of-00002.safetensors", d));
	write_index(d, ed_two);
	open_fails(d, NULL, "is in two shards, model-00001-of-00002.safetensors and model-00002-of-00002.safetensors", NULL);

	/* a tensor a shard holds but the map does not name: ignored (with a warning) */
	cp(d, clone_fixture("ft_a", "idx_drop"));
	write_index(d, ed_drop);
	if ((m = open_ok(d, NULL))) {
		EXPECT_EQ_U64(m->n_tensors, 38);
		EXPECT(bf_model_tensor(m, "model.norm.weight") == NULL);
		check_all_preads(m);
		bf_model_close(m);
	}

	/* index not JSON / not an object / no weight_map / weight_map wrong / empty / duplicates */
	static const struct { const char *text; const char *expect; } it[] = {
		{ "{\"weight_map\": {", "model.safetensors.index.json:1:16: not valid JSON" },
		{ "[1, 2]", "not a JSON object" },
		{ "{\"metadata\": {\"total_size\": 1}}", "has no \"weight_map\"" },
		{ "{\"weight_map\": [\"model-00001-of-00002.safetensors\"]}", "\"weight_map\" is not an object" },
		{ "{\"weight_map\": {}}", "\"weight_map\" is empty" },
		{ "{\"metadata\": 5, \"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\"}}", "\"metadata\" is not an object" },
		{ "{\"weight_map\": {\"a\": \"x.safetensors\", \"a\": \"y.safetensors\"}}", "duplicate" },
		{ "{\"weight_map\": {\"a\\u0000b\": \"x.safetensors\"}}", "not valid JSON" },
		{ "{\"weight_map\": {\"a\": \"x\\u0000.safetensors\"}}", "not valid JSON" },
	};
	for (size_t i = 0; i < BF_ARRAY_LEN(it); i++) {
		cp(d, clone_fixture("ft_a", P("idx_text_%zu", i)));
		write_str(P("%s/model.safetensors.index.json", d), it[i].text);
		open_fails(d, NULL, it[i].expect, NULL);
	}
	/* an index larger than 64 MiB is refused before it is read (sparse file) */
	cp(d, clone_fixture("ft_a", "idx_huge"));
	EXPECT(truncate(P("%s/model.safetensors.index.json", d), (64 << 20) + 1) == 0);
	open_fails(d, NULL, "model.safetensors.index.json: file is 67108865 bytes, more than the 67108864 allowed", NULL);

	/* a truncated shard, a shard with a trailing byte */
	cp(d, clone_fixture("ft_a", "shard_trunc"));
	EXPECT(truncate(P("%s/model-00002-of-00002.safetensors", d), 55600 - 1) == 0);
	open_fails(d, NULL, "model-00002-of-00002.safetensors: truncated", NULL);
	cp(d, clone_fixture("base", "single_trail"));
	{
		int fd = open(P("%s/model.safetensors", d), O_WRONLY | O_APPEND | O_CLOEXEC);
		EXPECT(fd >= 0 && write(fd, "x", 1) == 1);
		close(fd);
	}
	open_fails(d, NULL, "model.safetensors: 1 trailing bytes after the last tensor", NULL);
	/* a shard whose header is garbage */
	cp(d, clone_fixture("ft_a", "shard_garbage"));
	write_bytes(P("%s/model-00001-of-00002.safetensors", d), "\x10\0\0\0\0\0\0\0not json at all!", 24);
	open_fails(d, NULL, "model-00001-of-00002.safetensors: header is not a JSON object", NULL);

	/* config.json: invalid JSON names the file and line:column; not an object; too big */
	cp(d, clone_fixture("base", "cfg_bad"));
	write_str(P("%s/config.json", d), "{\n  \"a\": 1,\n  \"b\": ,\n}");
	open_fails(d, NULL, P("%s/config.json:3:8: invalid JSON: ", d), NULL);
	write_str(P("%s/config.json", d), "[4]");
	open_fails(d, NULL, "config.json: not a JSON object", NULL);
	EXPECT(truncate(P("%s/config.json", d), (16 << 20) + 1) == 0);
	open_fails(d, NULL, "config.json: file is 16777217 bytes, more than", NULL);
	/* no config.json at all is fine */
	unlink(P("%s/config.json", d));
	if ((m = open_ok(d, NULL))) {
		EXPECT(m->config == NULL);
		EXPECT_EQ_I64(bf_model_config_layers(m), -1);
		bf_model_close(m);
	}
	/* duplicate keys in config.json are accepted, the last wins (Python's json) */
	write_str(P("%s/config.json", d), "{\"num_hidden_layers\": 2, \"num_hidden_layers\": 3}");
	if ((m = open_ok(d, NULL))) {
		EXPECT_EQ_I64(bf_model_config_layers(m), 3);
		bf_model_close(m);
	}
}

BF_TEST(config_layers)
{
	static const struct { const char *json; int want; } c[] = {
		{ "{\"num_hidden_layers\": 4}", 4 },
		{ "{\"n_layer\": 12}", 12 },
		{ "{\"num_layers\": 7, \"n_layers\": 9}", 7 },
		{ "{\"n_layers\": 9}", 9 },
		{ "{\"num_hidden_layers\": 0, \"n_layer\": 5}", 5 },
		{ "{\"num_hidden_layers\": -3}", -1 },
		{ "{\"num_hidden_layers\": 4.0}", -1 },
		{ "{\"num_hidden_layers\": \"4\"}", -1 },
		{ "{\"num_hidden_layers\": 99999999999}", -1 },
		{ "{\"text_config\": {\"num_hidden_layers\": 40}}", 40 },
		{ "{\"n_layer\": 3, \"text_config\": {\"num_hidden_layers\": 40}}", 3 },
		{ "{\"text_config\": 5}", -1 },
		{ "{}", -1 },
	};
	char d[PATH_MAX];
	cp(d, clone_fixture("base", "cfg_layers"));
	for (size_t i = 0; i < BF_ARRAY_LEN(c); i++) {
		write_str(P("%s/config.json", d), c[i].json);
		struct bf_model *m = open_ok(d, NULL);
		if (!m)
			continue;
		if (bf_model_config_layers(m) != c[i].want)
			BF_T_FAIL("%s: %d, want %d", c[i].json, bf_model_config_layers(m), c[i].want);
		bf_model_close(m);
	}
	EXPECT_EQ_I64(bf_model_config_layers(NULL), -1);
}

BF_TEST(open_path)
{
	struct bf_err e = { { 0 } };
	struct bf_model *m = NULL;
	/* a single file: one shard, no config */
	EXPECT(bf_model_open_path("conformance/fixtures/base/model.safetensors", &m, &e) == 0);
	if (m) {
		EXPECT_EQ_U64(m->n_shards, 1);
		EXPECT_EQ_U64(m->n_tensors, 39);
		EXPECT(m->config == NULL);
		EXPECT_EQ_I64(bf_model_config_layers(m), -1);
		EXPECT_STR_EQ(m->dir, F("base"));
		EXPECT_STR_EQ(m->shards[0].name, "model.safetensors");
		check_all_preads(m);
		bf_model_close(m);
	}
	/* one shard of a sharded model on its own */
	m = NULL;
	EXPECT(bf_model_open_path(F("ft_b_f32/model-00002-of-00002.safetensors"), &m, &e) == 0);
	if (m) {
		EXPECT_EQ_U64(m->n_shards, 1);
		EXPECT(m->n_tensors > 0 && m->n_tensors < 39);
		EXPECT_EQ_I64(m->tensors[0].dtype, BF_DT_F32);
		check_all_preads(m);
		bf_model_close(m);
	}
	/* a directory: as bf_model_open, with the config */
	m = NULL;
	EXPECT(bf_model_open_path("conformance/fixtures/ft_a", &m, &e) == 0);
	if (m) {
		EXPECT_EQ_U64(m->n_shards, 2);
		EXPECT_EQ_I64(bf_model_config_layers(m), 4);
		bf_model_close(m);
	}
	EXPECT(!bf_err_isset(&e));
	/* refusals */
	m = (struct bf_model *)1;
	EXPECT(bf_model_open_path("conformance/fixtures/base/config.json", &m, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "not a model directory or a .safetensors file");
	EXPECT(m == NULL);
	bf_err_clear(&e);
	EXPECT(bf_model_open_path("conformance/nonexistent.safetensors", &m, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "No such file");
	bf_err_clear(&e);
	char d[PATH_MAX];
	cp(d, clone_fixture("base", "open_path_trunc"));
	EXPECT(truncate(P("%s/model.safetensors", d), 5000) == 0);
	EXPECT(bf_model_open_path(P("%s/model.safetensors", d), &m, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "truncated");
}

BF_TEST(read_file)
{
	struct bf_model *m = open_ok("conformance/fixtures/base", NULL);
	if (!m)
		return;
	struct bf_err e = { { 0 } };
	char *d = NULL;
	size_t n = 0;
	EXPECT_EQ_I64(bf_model_read_file(m, "tokenizer.json", 1 << 20, &d, &n, &e), 1);
	EXPECT_EQ_U64(n, 5267);
	EXPECT(d && d[0] == '{' && d[n] == 0);
	free(d);
	d = NULL;
	EXPECT_EQ_I64(bf_model_read_file(m, "special_tokens_map.json", 48, &d, &n, &e), 1);
	EXPECT_EQ_U64(n, 48);
	free(d);
	d = NULL;
	EXPECT_EQ_I64(bf_model_read_file(m, "no_such_file.json", 1 << 20, &d, &n, &e), 0);
	EXPECT(d == NULL && n == 0);
	EXPECT(!bf_err_isset(&e));
	static const char *const badnames[] = { "../base/config.json", "a/b", "/etc/passwd", "..", ".", "", "x..y" };
	for (size_t i = 0; i < BF_ARRAY_LEN(badnames); i++) {
		bf_err_clear(&e);
		if (bf_model_read_file(m, badnames[i], 1 << 20, &d, &n, &e) != -1 || !strstr(e.msg, "not a plain file name"))
			BF_T_FAIL("'%s' accepted (\"%s\")", badnames[i], e.msg);
	}
	bf_err_clear(&e);
	EXPECT_EQ_I64(bf_model_read_file(m, "special_tokens_map.json", 47, &d, &n, &e), -1);
	EXPECT_STR_CONTAINS(e.msg, "special_tokens_map.json: file is 48 bytes, more than the 47 allowed");
	bf_model_close(m);
	/* a directory in place of a file */
	char dir[PATH_MAX];
	cp(dir, clone_fixture("base", "rf_dir"));
	mkdirs(P("%s/tokenizer.model", dir));
	if ((m = open_ok(dir, NULL))) {
		bf_err_clear(&e);
		EXPECT_EQ_I64(bf_model_read_file(m, "tokenizer.model", 1 << 20, &d, &n, &e), -1);
		EXPECT_STR_CONTAINS(e.msg, "not a regular file");
		bf_model_close(m);
	}
}

static void set_mtime(const char *path, time_t sec)
{
	struct timespec ts[2] = { { sec, 0 }, { sec, 0 } };
	EXPECT(utimensat(AT_FDCWD, path, ts, 0) == 0);
}

BF_TEST(freshness)
{
	char d[PATH_MAX], file[PATH_MAX];
	cp(d, clone_fixture("base", "fresh_append"));
	cp(file, P("%s/model.safetensors", d));
	struct bf_model *m = open_ok(d, NULL);
	if (!m)
		return;
	const struct bf_src_tensor *t = bf_model_tensor(m, "model.embed_tokens.weight");
	unsigned char buf[64], orig[64];
	EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 0), 0);
	EXPECT_EQ_I64(bf_model_pread(m, t, 0, orig, sizeof(orig)), 0);
	/* append a byte: stale, and stays stale */
	int fd = open(file, O_WRONLY | O_APPEND | O_CLOEXEC);
	EXPECT(fd >= 0 && write(fd, "x", 1) == 1);
	close(fd);
	EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 0), -EIO);
	EXPECT(atomic_load(&m->shards[0].stale) == 1);
	EXPECT_EQ_I64(bf_model_pread(m, t, 0, buf, sizeof(buf)), -EIO);
	EXPECT(truncate(file, 111040) == 0); /* back to the old size: still stale */
	EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 0), -EIO);
	EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 1000), -EIO);
	EXPECT_EQ_I64(bf_model_pread(m, t, 0, buf, sizeof(buf)), -EIO);
	bf_model_close(m);

	/* rewrite in place, same size, with a different mtime */
	cp(d, clone_fixture("base", "fresh_inplace"));
	cp(file, P("%s/model.safetensors", d));
	set_mtime(file, 1000000000);
	m = open_ok(d, NULL);
	if (!m)
		return;
	t = bf_model_tensor(m, "model.embed_tokens.weight");
	EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 0), 0);
	fd = open(file, O_WRONLY | O_CLOEXEC);
	EXPECT(fd >= 0 && pwrite(fd, "\xff\xff\xff\xff", 4, (off_t)t->offset) == 4);
	close(fd);
	set_mtime(file, 1000000010);
	/* rate-limited: a check within the interval of the last one does not fstat */
	EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 3600000), 0);
	EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 0), -EIO);
	EXPECT_EQ_I64(bf_model_pread(m, t, 0, buf, 4), -EIO);
	bf_model_close(m);

	/* only the times touched, bytes equal: still a change we cannot rule out */
	cp(d, clone_fixture("base", "fresh_touch"));
	cp(file, P("%s/model.safetensors", d));
	set_mtime(file, 1000000000);
	if ((m = open_ok(d, NULL))) {
		set_mtime(file, 1000000001);
		EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 0), -EIO);
		bf_model_close(m);
	}

	/* a new file renamed over the path: we hold the old inode, nothing is stale */
	cp(d, clone_fixture("base", "fresh_rename"));
	cp(file, P("%s/model.safetensors", d));
	if ((m = open_ok(d, NULL))) {
		t = bf_model_tensor(m, "model.embed_tokens.weight");
		EXPECT_EQ_I64(bf_model_pread(m, t, 0, orig, sizeof(orig)), 0);
		copy_file(F("ft_c/model.safetensors"), P("%s/new.tmp", d));
		EXPECT(rename(P("%s/new.tmp", d), file) == 0);
		EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 0), 0);
		EXPECT_EQ_I64(bf_model_pread(m, t, 0, buf, sizeof(buf)), 0);
		EXPECT(memcmp(buf, orig, sizeof(buf)) == 0);
		/* and the path now holds different bytes */
		unsigned char now[64];
		EXPECT(file_bytes(file, t->offset, now, sizeof(now)) && memcmp(now, orig, sizeof(now)) != 0);
		/* unlinking the path: the same */
		EXPECT(unlink(file) == 0);
		EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 0), 0);
		EXPECT_EQ_I64(bf_model_pread(m, t, 0, buf, sizeof(buf)), 0);
		EXPECT(memcmp(buf, orig, sizeof(buf)) == 0);
		bf_model_close(m);
	}

	/* truncation noticed by pread itself (no check_fresh in between): EIO, then stale */
	cp(d, clone_fixture("ft_a", "fresh_trunc"));
	if ((m = open_ok(d, NULL))) {
		t = bf_model_tensor(m, "lm_head.weight");
		EXPECT(t && t->shard == 1);
		EXPECT(truncate(m->shards[1].path, 100) == 0);
		EXPECT_EQ_I64(bf_model_pread(m, t, 0, buf, sizeof(buf)), -EIO);
		EXPECT(atomic_load(&m->shards[1].stale) == 1);
		EXPECT_EQ_I64(bf_model_check_fresh(m, 1, 0), -EIO);
		/* the other shard is untouched */
		EXPECT_EQ_I64(bf_model_check_fresh(m, 0, 0), 0);
		const struct bf_src_tensor *t0 = bf_model_tensor(m, "model.embed_tokens.weight");
		EXPECT_EQ_I64(bf_model_pread(m, t0, 0, buf, sizeof(buf)), 0);
		bf_model_close(m);
	}
}

int main(void)
{
	if (!getcwd(cwd, sizeof(cwd)) || !realpath("conformance/fixtures", fixtures)) {
		printf("run from tests/ (conformance/fixtures not found)\n");
		return 1;
	}
	snprintf(tmproot, sizeof(tmproot), "%s/bf_test_model_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmproot)) {
		printf("mkdtemp: %s\n", strerror(errno));
		return 1;
	}
	/* mkdtemp may sit under a symlinked /tmp: compare realpaths */
	char rp[PATH_MAX];
	if (realpath(tmproot, rp))
		snprintf(tmproot, sizeof(tmproot), "%s", rp);
	hf_env(T("hub"), T("hfhome"), T("home"));
	bf_log_set_level(BF_LOG_ERROR); /* the "ignored tensor" warning is expected */

	RUN(fixtures_open);
	RUN(fixture_details);
	RUN(local_resolution);
	RUN(hub_cache);
	RUN(hub_confinement);
	RUN(bad_dirs);
	RUN(config_layers);
	RUN(open_path);
	RUN(read_file);
	RUN(freshness);

	rm_rf(tmproot);
	return bf_test_report();
}
