/* fuzz_index.c: bytes -> the sharded-model index parser (model.safetensors.index.json) through
 * bf_model_open_path, the way `blendfs inspect DIR` and every mount reach it.
 *
 * Set-up, once per process, in a private directory on /dev/shm: a model directory holding small,
 * valid shards named as in the conformance fixture ft_a (model-00001-of-00002.safetensors: the
 * embedding and layers 0-1; model-00002-of-00002.safetensors: layers 2-3, the final norm,
 * lm_head), so the fixture's real index files are valid seeds. Beside them, shards an index may
 * name to reach the error paths: extra.safetensors (a new tensor plus a second copy of
 * model.norm.weight), bad.safetensors (garbage), empty.safetensors (0 bytes), a directory, a FIFO
 * and a symlink out of the model directory, all ending in .safetensors; and a config.json.
 * Each input is written as model.safetensors.index.json and the directory opened.
 *
 * Invariants: a rejection names the directory or one of its files; an accepted model has exactly
 * the weight_map's tensors, sorted, each found by bf_model_tensor, inside its shard, and
 * readable with bf_model_pread (first and last byte).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "bf_model.h"
#include "bf_st.h"
#include "fuzz.h"

static char model_dir[PATH_MAX], index_path[PATH_MAX];

struct spec {
	const char *name;
	uint32_t ndim;
	uint64_t shape[2];
};

static void write_shard(const char *file, const struct spec *ts, size_t n)
{
	struct bf_st_out outs[64];
	uint64_t data = 0;
	FZ_CHECK(n <= 64, "too many");
	for (size_t i = 0; i < n; i++) {
		outs[i] = (struct bf_st_out){ ts[i].name, BF_DT_BF16, ts[i].ndim, ts[i].shape };
		data += 2 * ts[i].shape[0] * (ts[i].ndim > 1 ? ts[i].shape[1] : 1);
	}
	char *hdr;
	size_t hlen;
	struct bf_err err;
	bf_err_clear(&err);
	FZ_CHECK(bf_st_serialize(outs, n, &hdr, &hlen, NULL, NULL, &err) == 0, "%s", err.msg);
	char *buf = calloc(1, hlen + data);
	FZ_CHECK(buf, "out of memory");
	memcpy(buf, hdr, hlen);
	for (uint64_t i = 0; i < data; i++)
		buf[hlen + i] = (char)(i * 7 + 1);
	char path[PATH_MAX];
	fz_fmt(path, sizeof(path), "%s/%s", model_dir, file);
	fz_write(path, buf, hlen + data);
	free(hdr);
	free(buf);
}

static void add_layer(struct spec *ts, size_t *n, int l)
{
	static const char *const parts[] = { "input_layernorm.weight", "mlp.down_proj.weight",
		"mlp.gate_proj.weight", "mlp.up_proj.weight", "post_attention_layernorm.weight",
		"self_attn.k_proj.weight", "self_attn.o_proj.weight", "self_attn.q_proj.weight",
		"self_attn.v_proj.weight" };
	static char names[4][9][64];
	for (int p = 0; p < 9; p++) {
		snprintf(names[l][p], sizeof(names[l][p]), "model.layers.%d.%s", l, parts[p]);
		bool norm = strstr(parts[p], "norm") != NULL;
		ts[(*n)++] = (struct spec){ names[l][p], norm ? 1u : 2u, { 2, norm ? 0 : (uint64_t)(p == 1 ? 3 : 2) } };
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet();
	const char *top = fz_tmpdir("index");
	fz_fmt(model_dir, sizeof(model_dir), "%s/model", top);
	fz_fmt(index_path, sizeof(index_path), "%s/model.safetensors.index.json", model_dir);
	FZ_CHECK(mkdir(model_dir, 0755) == 0, "mkdir %s", model_dir);
	/* messages name the resolved directory */
	char *rp = realpath(model_dir, NULL);
	FZ_CHECK(rp, "realpath %s", model_dir);
	fz_fmt(model_dir, sizeof(model_dir), "%s", rp);
	free(rp);

	struct spec s1[32], s2[32];
	size_t n1 = 0, n2 = 0;
	s1[n1++] = (struct spec){ "model.embed_tokens.weight", 2, { 4, 2 } };
	add_layer(s1, &n1, 0);
	add_layer(s1, &n1, 1);
	add_layer(s2, &n2, 2);
	add_layer(s2, &n2, 3);
	s2[n2++] = (struct spec){ "model.norm.weight", 1, { 2, 0 } };
	s2[n2++] = (struct spec){ "lm_head.weight", 2, { 4, 2 } };
	write_shard("model-00001-of-00002.safetensors", s1, n1);
	write_shard("model-00002-of-00002.safetensors", s2, n2);
	const struct spec extra[] = { { "model.extra.weight", 1, { 3, 0 } }, { "model.norm.weight", 1, { 2, 0 } } };
	write_shard("extra.safetensors", extra, 2);

	char p[PATH_MAX];
	fz_fmt(p, sizeof(p), "%s/bad.safetensors", model_dir);
	fz_write(p, "\x10\0\0\0\0\0\0\0not json at all!", 24);
	fz_fmt(p, sizeof(p), "%s/empty.safetensors", model_dir);
	fz_write(p, "", 0);
	fz_fmt(p, sizeof(p), "%s/dir.safetensors", model_dir);
	FZ_CHECK(mkdir(p, 0755) == 0, "mkdir");
	fz_fmt(p, sizeof(p), "%s/fifo.safetensors", model_dir);
	FZ_CHECK(mkfifo(p, 0644) == 0, "mkfifo");
	write_shard("../outside.safetensors", extra, 1);
	fz_fmt(p, sizeof(p), "%s/link.safetensors", model_dir);
	FZ_CHECK(symlink("../outside.safetensors", p) == 0, "symlink");
	fz_fmt(p, sizeof(p), "%s/config.json", model_dir);
	static const char cfg[] = "{\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": 4, "
				  "\"torch_dtype\": \"bfloat16\"}\n";
	fz_write(p, cfg, sizeof(cfg) - 1);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void check_model(const struct bf_model *m, const uint8_t *data, size_t size)
{
	/* the reference: the weight_map's keys, as jansson reads the same bytes */
	json_error_t je;
	json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
	FZ_CHECK(j, "accepted an index jansson rejects");
	json_t *wm = json_object_get(j, "weight_map");
	FZ_CHECK(json_is_object(wm), "weight_map");
	size_t n = json_object_size(wm);
	FZ_CHECK(n == m->n_tensors, "%zu tensors, weight_map has %zu", m->n_tensors, n);
	const char **keys = calloc(n ? n : 1, sizeof(*keys));
	FZ_CHECK(keys, "out of memory");
	size_t k = 0;
	const char *key;
	json_t *v;
	json_object_foreach(wm, key, v)
		keys[k++] = key;
	qsort(keys, n, sizeof(*keys), cmp_str);
	for (size_t i = 0; i < n; i++) {
		const struct bf_src_tensor *t = &m->tensors[i];
		FZ_CHECK(!strcmp(t->name, keys[i]), "tensor %zu: %s != %s", i, t->name, keys[i]);
		FZ_CHECK(bf_model_tensor(m, t->name) == t, "lookup of %s", t->name);
		FZ_CHECK(t->shard < m->n_shards, "shard index");
		const struct bf_src_shard *s = &m->shards[t->shard];
		FZ_CHECK(t->offset >= s->data_start && t->offset + t->nbytes <= (uint64_t)s->st.st_size,
			 "tensor %s outside %s", t->name, s->name);
		const char *want = json_string_value(json_object_get(wm, t->name));
		FZ_CHECK(want && !strcmp(want, s->name), "tensor %s in %s, index says %s", t->name, s->name, want);
		unsigned char b;
		if (t->nbytes) {
			FZ_CHECK(bf_model_pread(m, t, 0, &b, 1) == 0, "pread %s", t->name);
			FZ_CHECK(bf_model_pread(m, t, t->nbytes - 1, &b, 1) == 0, "pread %s", t->name);
		}
	}
	free(keys);
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_write(index_path, data, size);
	struct bf_model *m = NULL;
	struct bf_err err;
	bf_err_clear(&err);
	if (bf_model_open_path(model_dir, &m, &err) < 0) {
		FZ_CHECK(m == NULL, "failed open left *out set");
		FZ_CHECK(strstr(err.msg, model_dir) != NULL, "message does not name the model: '%s'", err.msg);
		return 0;
	}
	check_model(m, data, size);
	FZ_CHECK(bf_model_config_layers(m) == 4, "config");
	bf_model_close(m);
	return 0;
}
