/* fuzz_plan.c: the planner (bf_plan_build) over a valid recipe and small synthetic source models,
 * where the input chooses the shapes, dtypes, layer layouts and parameters, not the bytes.
 *
 * The input is read as a sequence of choices (fz_in; a short input is a complete choice, all
 * zeros from where it ends):
 *   - four source models m0..m3 written to a private directory on /dev/shm: layer count (0-4),
 *     layer prefix (model.layers. / transformer.h. / model.decoder.layers.), hidden sizes, a math
 *     dtype, optional tied lm_head, a second layer prefix, a 0-d tensor, up to three mutations
 *     (a tensor's dtype: float, integer, bool, F8 or the sub-byte F4; its shape; its removal;
 *     a sparse layer number),
 *     one file or two shards with an index, the config.json layer key (or none), a tokenizer file;
 *   - a recipe: any method of the table, models: or slices: (1-3 slices of 1-3 sources with
 *     layer_range [a, b], 0 <= a <= b <= 9), base_model (listed, not listed, per slice, missing), model references spelt
 *     several ways (absolute, trailing '/', '/.', relative to the recipe), parameters at every
 *     level (names of the method and of other methods; numbers, booleans, strings, gradients,
 *     filter conditionals), dtype, out_dtype, tokenizer_source, random_seed;
 *   - plan options: shard size, --seed.
 * The recipe text is generated, so it must parse (an FZ_CHECK); then bf_plan_build, then
 * bf_plan_free. Corpus files are therefore opaque bytes: to see what one means, run the replay
 * binary with FUZZ_PLAN_VERBOSE=1, which prints the recipe and the planner's answer.
 *
 * Invariants for a plan that builds: every shard header validates (bf_st_parse) for the shard's
 * size and lists exactly the plan's tensors of that shard at their file offsets; total_size adds
 * up; every input has the output's shape; config.json and the index are valid JSON and the index
 * maps every tensor to its shard; bf_plan_find finds every tensor; bf_plan_print runs.
 * A plan that fails must say why.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "bf_method.h"
#include "bf_plan.h"
#include "bf_recipe.h"
#include "bf_st.h"
#include "fuzz.h"

#define NMODELS 4
#define MAX_T 40

static char top[PATH_MAX], mdir[NMODELS][PATH_MAX], recipe_path[PATH_MAX];
static FILE *devnull;
static bool verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet();
	char *rp = realpath(fz_tmpdir("plan"), NULL);
	FZ_CHECK(rp, "realpath");
	fz_fmt(top, sizeof(top), "%s", rp);
	free(rp);
	for (int i = 0; i < NMODELS; i++) {
		fz_fmt(mdir[i], sizeof(mdir[i]), "%s/m%d", top, i);
		FZ_CHECK(mkdir(mdir[i], 0755) == 0, "mkdir %s", mdir[i]);
	}
	fz_fmt(recipe_path, sizeof(recipe_path), "%s/recipe.yaml", top);
	devnull = fopen("/dev/null", "w");
	FZ_CHECK(devnull, "/dev/null");
	verbose = getenv("FUZZ_PLAN_VERBOSE") != NULL;
	return 0;
}

/* ---- a growable string ---------------------------------------------------------------------- */

struct str {
	char *p;
	size_t len, cap;
};

__attribute__((format(printf, 2, 3)))
static void sp(struct str *s, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(s->p ? s->p + s->len : NULL, s->p ? s->cap - s->len : 0, fmt, ap);
		va_end(ap);
		FZ_CHECK(n >= 0, "vsnprintf");
		if (s->p && s->len + (size_t)n < s->cap) {
			s->len += (size_t)n;
			return;
		}
		s->cap = (s->cap ? s->cap * 2 : 1024) + (size_t)n;
		s->p = realloc(s->p, s->cap);
		FZ_CHECK(s->p, "out of memory");
	}
}

/* ---- source models ------------------------------------------------------------------------- */

struct tdesc {
	char name[96];
	enum bf_dtype dt;
	uint32_t ndim;
	uint64_t shape[BF_MAX_NDIM];
	bool gone;
};

static const enum bf_dtype any_dtypes[] = {
	BF_DT_BF16, BF_DT_F16, BF_DT_F32, BF_DT_I32, BF_DT_U8, BF_DT_BOOL, BF_DT_F8_E4M3, BF_DT_I64,
	BF_DT_F64, BF_DT_F4, BF_DT_I8, BF_DT_U64,
};

static void add(struct tdesc *t, size_t *n, enum bf_dtype dt, uint32_t ndim, uint64_t d0, uint64_t d1,
		const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void add(struct tdesc *t, size_t *n, enum bf_dtype dt, uint32_t ndim, uint64_t d0, uint64_t d1,
		const char *fmt, ...)
{
	FZ_CHECK(*n < MAX_T, "too many tensors");
	struct tdesc *d = &t[(*n)++];
	memset(d, 0, sizeof(*d));
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->name, sizeof(d->name), fmt, ap);
	va_end(ap);
	d->dt = dt;
	d->ndim = ndim;
	d->shape[0] = d0;
	d->shape[1] = d1;
}

/* Write tensors t[idx[0..n)] as one safetensors file. A tensor the writer refuses (a sub-byte
 * dtype with an odd element count) becomes U8 first. */
static void write_st(const char *dir, const char *file, struct tdesc *t, const size_t *idx, size_t n)
{
	struct bf_st_out outs[MAX_T] = { { 0 } };
	char *hdr = NULL;
	size_t hlen = 0;
	struct bf_err err;
	for (;;) {
		for (size_t i = 0; i < n; i++)
			outs[i] = (struct bf_st_out){ t[idx[i]].name, t[idx[i]].dt, t[idx[i]].ndim, t[idx[i]].shape };
		bf_err_clear(&err);
		if (bf_st_serialize(outs, n, &hdr, &hlen, NULL, NULL, &err) == 0)
			break;
		bool fixed = false;
		for (size_t i = 0; i < n; i++)
			if (t[idx[i]].dt == BF_DT_F4) {
				t[idx[i]].dt = BF_DT_U8;
				fixed = true;
			}
		FZ_CHECK(fixed, "writer: %s", err.msg);
	}
	uint64_t data = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t numel = 1;
		for (uint32_t k = 0; k < t[idx[i]].ndim; k++)
			numel *= t[idx[i]].shape[k];
		data += numel * bf_dtypes[t[idx[i]].dt].bits / 8;
	}
	char *buf = calloc(1, hlen + data);
	FZ_CHECK(buf, "out of memory");
	memcpy(buf, hdr, hlen);
	for (uint64_t i = 0; i < data; i++)
		buf[hlen + i] = (char)(0x3c + (i & 3)); /* small finite values in every float dtype */
	char path[PATH_MAX];
	fz_fmt(path, sizeof(path), "%s/%s", dir, file);
	fz_write(path, buf, hlen + data);
	free(buf);
	free(hdr);
}

struct minfo {
	int layers;       /* layers written under the main prefix */
	const char *prefix;
};

static void gen_model(struct fz_in *in, int mi, struct minfo *info, struct str *log)
{
	static const char *const prefixes[] = { "model.layers.", "model.layers.", "transformer.h.",
						"model.decoder.layers." };
	static const char *const embeds[] = { "model.embed_tokens.weight", "model.embed_tokens.weight",
					      "transformer.wte.weight", "model.decoder.embed_tokens.weight" };
	static const char *const norms[] = { "model.norm.weight", "model.norm.weight", "transformer.ln_f.weight",
					     "model.decoder.final_layer_norm.weight" };
	static const enum bf_dtype math[] = { BF_DT_BF16, BF_DT_F16, BF_DT_F32 };
	const char *dir = mdir[mi];
	fz_clear_dir(dir);

	uint8_t flags = fz_u8(in);
	int layers = (int)fz_below(in, 5);
	uint32_t pk = fz_below(in, 4);
	uint64_t H = 1 + fz_below(in, 3), I = 1 + fz_below(in, 3), V = 1 + fz_below(in, 4);
	enum bf_dtype dt = math[fz_below(in, 3)];
	const char *pf = prefixes[pk];
	info->layers = layers;
	info->prefix = pf;

	struct tdesc t[MAX_T];
	size_t n = 0;
	add(t, &n, dt, 2, V, H, "%s", embeds[pk]);
	for (int l = 0; l < layers; l++) {
		add(t, &n, dt, 1, H, 0, "%s%d.input_layernorm.weight", pf, l);
		add(t, &n, dt, 2, I, H, "%s%d.mlp.up_proj.weight", pf, l);
		add(t, &n, dt, 2, H, H, "%s%d.self_attn.q_proj.weight", pf, l);
	}
	add(t, &n, dt, 1, H, 0, "%s", norms[pk]);
	if (!(flags & 1))
		add(t, &n, dt, 2, V, H, "lm_head.weight");
	if (flags & 2)
		add(t, &n, dt, 1, H, 0, "model.vision.blocks.0.proj.weight");
	if (flags & 4)
		add(t, &n, dt, 0, 0, 0, "model.scale");

	uint32_t muts = fz_below(in, 4);
	for (uint32_t k = 0; k < muts; k++) {
		struct tdesc *d = &t[fz_below(in, (uint32_t)n)];
		switch (fz_below(in, 4)) {
		case 0:
			d->dt = any_dtypes[fz_below(in, BF_ARRAY_LEN(any_dtypes))];
			break;
		case 1:
			d->ndim = fz_below(in, 4);
			for (uint32_t j = 0; j < d->ndim; j++)
				d->shape[j] = fz_below(in, 5);
			break;
		case 2:
			d->gone = true;
			break;
		default: /* a sparse layer number far beyond the others */
			fz_fmt(d->name, sizeof(d->name), "%s%u.mlp.up_proj.weight", pf, 4 + fz_below(in, 8));
			break;
		}
	}
	/* names must stay unique for the writer */
	for (size_t a = 0; a < n; a++)
		for (size_t b = a + 1; b < n; b++)
			if (!t[a].gone && !t[b].gone && !strcmp(t[a].name, t[b].name))
				t[b].gone = true;
	size_t idx[MAX_T], m = 0;
	for (size_t i = 0; i < n; i++)
		if (!t[i].gone)
			idx[m++] = i;

	if ((flags & 8) && m >= 2) {
		size_t half = m / 2;
		write_st(dir, "model-00001-of-00002.safetensors", t, idx, half);
		write_st(dir, "model-00002-of-00002.safetensors", t, idx + half, m - half);
		struct str ix = { 0 };
		sp(&ix, "{\"metadata\": {}, \"weight_map\": {");
		for (size_t i = 0; i < m; i++)
			sp(&ix, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", t[idx[i]].name,
			   i < half ? 1 : 2);
		sp(&ix, "}}\n");
		char path[PATH_MAX];
		fz_fmt(path, sizeof(path), "%s/model.safetensors.index.json", dir);
		fz_write(path, ix.p, ix.len);
		free(ix.p);
	} else {
		write_st(dir, "model.safetensors", t, idx, m);
	}

	int cfg_layers = (flags & 16) ? (int)fz_below(in, 7) : layers;
	struct str cfg = { 0 };
	switch (fz_below(in, 5)) {
	case 0:
		sp(&cfg, "{\n  \"num_hidden_layers\": %d,\n  \"torch_dtype\": \"bfloat16\"\n}\n", cfg_layers);
		break;
	case 1:
		sp(&cfg, "{\"n_layer\": %d}", cfg_layers);
		break;
	case 2:
		sp(&cfg, "{\"model_type\": \"x\", \"text_config\": {\"num_hidden_layers\": %d}}", cfg_layers);
		break;
	case 3:
		sp(&cfg, "{}");
		break;
	default:
		break; /* no config.json */
	}
	if (cfg.p) {
		char path[PATH_MAX];
		fz_fmt(path, sizeof(path), "%s/config.json", dir);
		fz_write(path, cfg.p, cfg.len);
		free(cfg.p);
	}
	if (flags & 32) {
		char path[PATH_MAX];
		fz_fmt(path, sizeof(path), "%s/tokenizer_config.json", dir);
		fz_write(path, "{}", 2);
	}
	if (verbose)
		sp(log, "# m%d: flags 0x%02x, %d layers under %s, H %llu I %llu V %llu, %s, %zu tensors%s\n", mi,
		   flags, layers, pf, (unsigned long long)H, (unsigned long long)I, (unsigned long long)V,
		   bf_dtypes[dt].st_name, m, (flags & 8) && m >= 2 ? " in 2 shards" : "");
}

/* ---- the recipe ----------------------------------------------------------------------------- */

static void model_ref(struct fz_in *in, struct str *y, uint32_t mi)
{
	if (mi >= NMODELS) {
		sp(y, "\"%s/missing\"", top);
		return;
	}
	switch (fz_below(in, 4)) {
	case 0:
		sp(y, "\"%s\"", mdir[mi]);
		break;
	case 1:
		sp(y, "\"%s/\"", mdir[mi]);
		break;
	case 2:
		sp(y, "\"%s/.\"", mdir[mi]);
		break;
	default:
		sp(y, "m%u", mi); /* relative to the recipe's directory */
		break;
	}
}

static const char *const all_params[] = {
	"weight", "t", "density", "epsilon", "gamma", "lambda", "normalize", "rescale", "int8_mask",
	"consensus_method", "filter_wise", "max_iter", "tol", "r", "alpha", "select_topk", "scale",
	"nuslerp_flatten", "nuslerp_row_wise", "similarity_threshold", "eps", "densty",
};

static void number(struct fz_in *in, struct str *y)
{
	static const double nums[] = { 0, 1, 0.5, -1, 0.01, 2, 1e-9, 0.9, 3, 100, -0.5, 1e300, 0.3, 1.5, 4, 1e-300 };
	sp(y, "%.17g", nums[fz_below(in, BF_ARRAY_LEN(nums))]);
}

static void leaf(struct fz_in *in, struct str *y, const struct bf_param_def *d, bool allow_grad)
{
	switch (fz_below(in, allow_grad ? 6 : 5)) {
	case 0:
	case 1:
		number(in, y);
		break;
	case 2:
		sp(y, "%s", fz_bool(in) ? "true" : "false");
		break;
	case 3:
		if (d && d->type == BF_PT_ENUM) {
			size_t nc = 0;
			while (d->choices[nc])
				nc++;
			sp(y, "\"%s\"", d->choices[fz_below(in, (uint32_t)nc)]);
		} else {
			static const char *const strs[] = { "sum", "count", "bogus", "" };
			sp(y, "\"%s\"", strs[fz_below(in, 4)]);
		}
		break;
	case 4:
		sp(y, "%s", fz_bool(in) ? "1" : "0");
		break;
	default: {
		uint32_t k = 1 + fz_below(in, 4);
		sp(y, "[");
		for (uint32_t i = 0; i < k; i++) {
			if (i)
				sp(y, ", ");
			number(in, y);
		}
		sp(y, "]");
		break;
	}
	}
}

static void params(struct fz_in *in, struct str *y, const struct bf_method *m)
{
	uint32_t k = fz_below(in, 4);
	const char *used[4];
	size_t nused = 0;
	if (!k)
		return;
	sp(y, "{");
	for (uint32_t i = 0; i < k; i++) {
		const struct bf_param_def *d = NULL;
		const char *name;
		if (m->n_params && fz_below(in, 8)) {
			d = &m->params[fz_below(in, m->n_params)];
			name = d->name;
		} else {
			name = all_params[fz_below(in, BF_ARRAY_LEN(all_params))];
		}
		bool dup = false;
		for (size_t j = 0; j < nused; j++)
			dup |= !strcmp(used[j], name);
		if (dup)
			continue;
		used[nused++] = name;
		sp(y, "%s%s: ", nused > 1 ? ", " : "", name);
		if (fz_below(in, 4)) {
			leaf(in, y, d, true);
			continue;
		}
		/* a conditional list */
		static const char *const filters[] = { "mlp", "self_attn", "*", "lm_head", "norm", "embed" };
		uint32_t ne = 1 + fz_below(in, 3);
		sp(y, "[");
		for (uint32_t e = 0; e < ne; e++) {
			sp(y, "%s{", e ? ", " : "");
			if (fz_below(in, 4))
				sp(y, "filter: \"%s\", ", filters[fz_below(in, BF_ARRAY_LEN(filters))]);
			sp(y, "value: ");
			leaf(in, y, d, true);
			sp(y, "}");
		}
		sp(y, "]");
	}
	sp(y, "}");
}

/* "<indent>parameters: {...}" on a line of its own, or nothing when params() chose none. */
static void params_key(struct fz_in *in, struct str *y, const struct bf_method *m, const char *indent)
{
	size_t mark = y->len;
	sp(y, "%sparameters: ", indent);
	size_t before = y->len;
	params(in, y, m);
	if (y->len == before)
		y->len = mark;
	else
		sp(y, "\n");
}

static void layer_range(struct fz_in *in, struct str *y)
{
	uint32_t a = fz_below(in, 6), b = a + fz_below(in, 5);
	sp(y, "[%u, %u]", a, b);
}

static void gen_recipe(struct fz_in *in, struct str *y)
{
	static const char *const dtypes[] = { NULL, "bfloat16", "float16", "float32" };
	const struct bf_method *m = bf_methods[fz_below(in, (uint32_t)bf_n_methods)];
	bool slices = fz_bool(in);
	uint32_t base = fz_below(in, NMODELS + 2); /* NMODELS: none; NMODELS + 1: a missing directory */

	sp(y, "merge_method: %s\n", m->name);
	if (base != NMODELS) {
		sp(y, "base_model: ");
		model_ref(in, y, base == NMODELS + 1 ? NMODELS : base);
		sp(y, "\n");
	}
	if (!slices) {
		uint32_t n = 1 + fz_below(in, NMODELS);
		sp(y, "models:\n");
		for (uint32_t i = 0; i < n; i++) {
			sp(y, "  - model: ");
			model_ref(in, y, fz_below(in, NMODELS));
			sp(y, "\n");
			if (fz_below(in, 4)) {
				params_key(in, y, m, "    ");
			}
		}
	} else {
		uint32_t ns = 1 + fz_below(in, 3);
		sp(y, "slices:\n");
		for (uint32_t s = 0; s < ns; s++) {
			uint32_t n = 1 + fz_below(in, 3);
			sp(y, "  - sources:\n");
			for (uint32_t i = 0; i < n; i++) {
				sp(y, "      - model: ");
				model_ref(in, y, fz_below(in, NMODELS));
				sp(y, "\n        layer_range: ");
				layer_range(in, y);
				sp(y, "\n");
				params_key(in, y, m, "        ");
			}
			if (!fz_below(in, 4)) {
				sp(y, "    base_model: ");
				model_ref(in, y, fz_below(in, NMODELS));
				sp(y, "\n");
			}
			params_key(in, y, m, "    ");
		}
	}
	params_key(in, y, m, "");
	const char *d = dtypes[fz_below(in, 4)], *od = dtypes[fz_below(in, 4)];
	if (d)
		sp(y, "dtype: %s\n", d);
	if (od)
		sp(y, "out_dtype: %s\n", od);
	switch (fz_below(in, 4)) {
	case 1:
		sp(y, "tokenizer_source: base\n");
		break;
	case 2:
		sp(y, "tokenizer_source: ");
		model_ref(in, y, fz_below(in, NMODELS));
		sp(y, "\n");
		break;
	default:
		break;
	}
	if (fz_below(in, 4) == 0)
		sp(y, "random_seed: %u\n", fz_u32(in));
}

/* ---- checks on a built plan ----------------------------------------------------------------- */

static void check_plan(const struct bf_plan *p)
{
	uint64_t total = 0;
	FZ_CHECK(p->n_tensors > 0 && p->n_shards > 0, "empty plan");
	for (size_t i = 0; i < p->n_tensors; i++) {
		const struct bf_otensor *o = &p->tensors[i];
		FZ_CHECK(bf_plan_find(p, o->name) == (long)i, "find %s", o->name);
		FZ_CHECK(o->n_in >= 1 && o->shard < p->n_shards, "tensor %s", o->name);
		FZ_CHECK(o->nbytes * 8 == o->numel * bf_dtypes[o->dtype].bits, "tensor %s size", o->name);
		for (uint32_t k = 0; k < o->n_in; k++) {
			const struct bf_src_tensor *s = o->in[k].src;
			FZ_CHECK(o->in[k].model < p->n_models, "tensor %s input %u", o->name, k);
			FZ_CHECK(s && s->ndim == o->ndim && !memcmp(s->shape, o->shape, o->ndim * sizeof(uint64_t)),
				 "tensor %s input %u shape", o->name, k);
			FZ_CHECK(bf_model_tensor(p->models[o->in[k].model], s->name) == s, "tensor %s input %u", o->name, k);
		}
		if (o->copy)
			FZ_CHECK(o->nbytes == o->in[0].src->nbytes, "copied tensor %s size", o->name);
		total += o->nbytes;
	}
	FZ_CHECK(total == p->total_size, "total_size");

	size_t seen = 0;
	for (size_t s = 0; s < p->n_shards; s++) {
		const struct bf_oshard *sh = &p->shards[s];
		struct bf_st_header h;
		struct bf_err err;
		bf_err_clear(&err);
		FZ_CHECK(sh->header_len >= 8 && sh->size >= sh->header_len, "shard %s sizes", sh->name);
		FZ_CHECK(bf_st_parse(sh->header + 8, sh->header_len - 8, sh->size, sh->name, &h, &err) == 0,
			 "the plan's own header does not validate: %s", err.msg);
		FZ_CHECK(h.n_tensors == sh->n_tensors, "shard %s: %zu tensors, plan says %u", sh->name, h.n_tensors,
			 sh->n_tensors);
		for (size_t k = 0; k < h.n_tensors; k++) {
			/* file order: the header's k-th tensor is sh->tensors[k] */
			const struct bf_st_tensor *t = &h.tensors[k];
			FZ_CHECK(sh->tensors[k] < p->n_tensors, "shard %s index", sh->name);
			const struct bf_otensor *o = &p->tensors[sh->tensors[k]];
			FZ_CHECK(!strcmp(t->name, o->name) && t->dtype == o->dtype && t->ndim == o->ndim &&
					 !memcmp(t->shape, o->shape, o->ndim * sizeof(uint64_t)) &&
					 h.data_start + t->begin == o->file_off && o->shard == s,
				 "shard %s: header entry %s differs from the plan's %s", sh->name, t->name, o->name);
		}
		seen += h.n_tensors;
		bf_st_header_free(&h);
	}
	FZ_CHECK(seen == p->n_tensors, "shards hold %zu of %zu tensors", seen, p->n_tensors);

	bool has_config = false, has_index = false;
	for (size_t i = 0; i < p->n_files; i++) {
		const struct bf_ofile *f = &p->files[i];
		FZ_CHECK(f->name && f->name[0] && (f->data || !f->len), "file %zu", i);
		if (!strcmp(f->name, "config.json") || !strcmp(f->name, "model.safetensors.index.json")) {
			json_error_t je;
			json_t *j = json_loadb(f->data, f->len, 0, &je);
			FZ_CHECK(json_is_object(j), "%s is not a JSON object: %s", f->name, je.text);
			if (f->name[0] == 'm') {
				has_index = true;
				json_t *wm = json_object_get(j, "weight_map");
				FZ_CHECK(json_object_size(wm) == p->n_tensors, "index size");
				for (size_t k = 0; k < p->n_tensors; k++) {
					const char *sn = json_string_value(json_object_get(wm, p->tensors[k].name));
					FZ_CHECK(sn && !strcmp(sn, p->shards[p->tensors[k].shard].name), "index: %s",
						 p->tensors[k].name);
				}
			} else {
				has_config = true;
			}
			json_decref(j);
		}
	}
	FZ_CHECK(has_config && has_index == (p->n_shards > 1), "config %d index %d", has_config, has_index);
	bf_plan_print(p, devnull);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t shard_sizes[] = { 0, 5000000000ull, 1, 64, 1000 };
	struct fz_in in = { data, size };
	struct str y = { 0 }, log = { 0 };
	struct minfo mi[NMODELS];
	for (int i = 0; i < NMODELS; i++)
		gen_model(&in, i, &mi[i], &log);
	gen_recipe(&in, &y);
	struct bf_plan_opts opts = { .shard_size = shard_sizes[fz_below(&in, BF_ARRAY_LEN(shard_sizes))] };
	if (fz_bool(&in)) {
		opts.has_seed = true;
		opts.seed = fz_u32(&in);
	}

	struct bf_recipe *r;
	struct bf_err err;
	bf_err_clear(&err);
	FZ_CHECK(bf_recipe_parse(y.p, y.len, recipe_path, &r, &err) == 0, "generated recipe rejected: %s\n%s",
		 err.msg, y.p);
	struct bf_plan *p = NULL;
	if (verbose) {
		printf("%s%s---\nshard size %llu%s: ", log.p ? log.p : "", y.p, (unsigned long long)opts.shard_size,
		       opts.has_seed ? ", --seed" : "");
		fflush(stdout);
	}
	bf_err_clear(&err);
	int rc = bf_plan_build(r, &opts, &p, &err);
	if (verbose)
		printf("%s\n\n", rc ? err.msg : "plan built");
	if (rc) {
		FZ_CHECK(p == NULL && err.msg[0], "failure without a message");
	} else {
		check_plan(p);
		bf_plan_free(p);
	}
	free(y.p);
	free(log.p);
	return 0;
}
