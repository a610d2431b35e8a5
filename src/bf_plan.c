/* bf_plan.c: recipe + source headers -> output model (see bf_plan.h).
 *
 * The steps, in order, each failing with one clear message:
 *   1. method lookup, and every parameter written anywhere in the recipe checked against the
 *      method's table (name, value kind); misplaced global parameters become warnings;
 *   2. every referenced model opened once (headers validated by bf_model);
 *   3. the recipe normalised to slices of sources, as mergekit's planner does (a `models:` list
 *      is one slice over all layers, with base_model appended when not listed);
 *   4. output tensors enumerated (pre-weights, renumbered layers, post-weights), inputs bound,
 *      shapes and dtypes checked, every parameter evaluated for that tensor and range-checked;
 *   5. save order (mergekit's label order), shard packing, shard headers, small files.
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "bf_log.h"
#include "bf_plan.h"
#include "bf_st.h"

#define MAX_SMALL_FILE (256u << 20)

/* ---------------------------------------------------------------------------------------------
 * Layer names
 */

/* Split "model.layers.12.mlp.up_proj.weight" into prefix "model.layers." (length), 12, and
 * suffix ".mlp.up_proj.weight" at the first ".<digits>." component. */
static bool split_layer(const char *name, size_t *plen, long *idx, const char **suffix)
{
	for (const char *p = name; (p = strchr(p, '.')); p++) {
		const char *d = p + 1;
		if (*d < '0' || *d > '9')
			continue;
		const char *e = d;
		while (*e >= '0' && *e <= '9')
			e++;
		if (*e != '.' || e - d > 9)
			continue;
		if (*d == '0' && e - d > 1)
			continue; /* "007" is not a layer number */
		*plen = (size_t)(d - name);
		*idx = strtol(d, NULL, 10);
		*suffix = e;
		return true;
	}
	return false;
}

/* Post-weights come from the last slice (mergekit's arch tables list the final norm and the
 * output head there); every other non-layer tensor is a pre-weight from the first slice. */
static bool is_post_weight(const char *name)
{
	static const char *const heads[] = { "lm_head.", "output.", "score.", "embed_out." };
	static const char *const norms[] = { "norm", "ln_f", "final_layernorm", "final_layer_norm",
					     "norm_f", "final_norm" };
	for (size_t i = 0; i < BF_ARRAY_LEN(heads); i++)
		if (!strncmp(name, heads[i], strlen(heads[i])))
			return true;
	/* second-to-last component */
	const char *last = strrchr(name, '.');
	if (!last)
		return false;
	const char *prev = last;
	while (prev > name && prev[-1] != '.')
		prev--;
	size_t l = (size_t)(last - prev);
	for (size_t i = 0; i < BF_ARRAY_LEN(norms); i++)
		if (l == strlen(norms[i]) && !strncmp(prev, norms[i], l))
			return true;
	return false;
}

/* Tied-embedding fallbacks (mergekit's tied_names): a model without an output head contributes
 * its input embedding in its place. */
static const char *tied_name(const char *name)
{
	static const char *const ties[][2] = {
		{ "lm_head.weight", "model.embed_tokens.weight" },
		{ "lm_head.weight", "transformer.wte.weight" },
		{ "lm_head.weight", "model.decoder.embed_tokens.weight" },
		{ "lm_head.weight", "transformer.word_embeddings.weight" },
		{ "embed_out.weight", "gpt_neox.embed_in.weight" },
	};
	for (size_t i = 0; i < BF_ARRAY_LEN(ties); i++)
		if (!strcmp(name, ties[i][0]))
			return ties[i][1];
	return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Planner context
 */

struct minfo {
	bool scanned;        /* scan_layers ran: a model listed in several slices is scanned once */
	char *prefix;        /* main layer prefix, NULL if the model has no numbered layers */
	long n_layers;       /* layers under the main prefix */
	size_t n_prefixes;   /* distinct layer prefixes */
	char *other_prefix;  /* one of the others, for messages */
};

struct nsrc {
	uint32_t model;
	int64_t start, end;
	const struct bf_params *params; /* source-level parameters (may be NULL) */
	const char *ref;
	struct bf_pos pos;
};

struct nslice {
	struct nsrc *src;
	size_t n;
	int32_t base;                   /* model index of the base for this slice, or -1 */
	const char *base_ref;
	const struct bf_params *params; /* slice-level parameters (may be NULL) */
	size_t index;                   /* position in the recipe (0-based) */
};

struct ctx {
	struct bf_plan *p;
	const struct bf_recipe *r;
	const struct bf_method *m;
	struct minfo *mi;
	struct nslice *slices;
	size_t n_slices;
	size_t cap_tensors;
	struct bf_err *err;
};

static void add_warning(struct bf_plan *p, char *msg)
{
	p->warnings = bf_xrealloc(p->warnings, (p->n_warnings + 1) * sizeof(char *));
	p->warnings[p->n_warnings++] = msg;
}

static const char *rpath(const struct ctx *c) { return c->r->path; }

/* ---------------------------------------------------------------------------------------------
 * Parameter validation (kinds) and evaluation
 */

static const char *ptype_name(enum bf_ptype t)
{
	switch (t) {
	case BF_PT_NUM: return "a number";
	case BF_PT_BOOL: return "true or false";
	case BF_PT_INT: return "an integer";
	case BF_PT_ENUM: return "one of the listed names";
	}
	return "?";
}

static int check_leaf(struct ctx *c, const struct bf_param_def *d, const struct bf_setting *s)
{
	bool ok;
	switch (s->kind) {
	case BF_SET_NUM:
	case BF_SET_BOOL:
		ok = d->type != BF_PT_ENUM;
		break;
	case BF_SET_GRADIENT:
		ok = d->type == BF_PT_NUM;
		break;
	case BF_SET_STR:
		ok = d->type == BF_PT_ENUM;
		break;
	default:
		ok = false;
	}
	if (ok)
		return 0;
	if (d->type == BF_PT_ENUM) {
		char list[256] = "";
		for (const char *const *ch = d->choices; *ch; ch++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				 ch == d->choices ? "" : ", ", *ch);
		return bf_errf(c->err, "%s:%d:%d: parameter '%s' must be one of: %s", rpath(c), s->pos.line,
			       s->pos.col, d->name, list);
	}
	return bf_errf(c->err, "%s:%d:%d: parameter '%s' must be %s%s", rpath(c), s->pos.line, s->pos.col,
		       d->name, ptype_name(d->type),
		       s->kind == BF_SET_GRADIENT ? " (gradients are only allowed for numeric parameters)" : "");
}

static int check_setting(struct ctx *c, const struct bf_param_def *d, const struct bf_setting *s)
{
	if (s->kind != BF_SET_CONDS)
		return check_leaf(c, d, s);
	for (size_t i = 0; i < s->n_conds; i++)
		if (check_leaf(c, d, &s->conds[i].value))
			return -1;
	return 0;
}

static int check_params(struct ctx *c, const struct bf_params *ps, bool model_level, const char *model)
{
	if (!ps)
		return 0;
	const struct bf_method *m = c->m;
	for (size_t i = 0; i < ps->n; i++) {
		const struct bf_param *pa = &ps->v[i];
		int idx = bf_method_param(m, pa->name);
		if (idx < 0) {
			const char *names[BF_MAX_PARAMS];
			char list[256] = "";
			for (uint32_t k = 0; k < m->n_params; k++) {
				names[k] = m->params[k].name;
				snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", k ? ", " : "",
					 names[k]);
			}
			const char *sug = bf_suggest(pa->name, names, m->n_params);
			char hint[128] = "";
			if (sug)
				snprintf(hint, sizeof(hint), "did you mean '%s'? ", sug);
			return bf_errf(c->err, "%s:%d:%d: parameter '%s' is not used by merge_method %s (%s%s%s)",
				       rpath(c), pa->pos.line, pa->pos.col, pa->name, m->name, hint,
				       m->n_params ? "it takes: " : "it takes no parameters",
				       list);
		}
		const struct bf_param_def *d = &m->params[idx];
		if (check_setting(c, d, &pa->set))
			return -1;
		if (model_level && !d->per_model)
			add_warning(c->p, bf_xasprintf(
				"%s:%d:%d: parameter '%s' under model '%s' is ignored: it is a global parameter of %s "
				"(mergekit ignores it there too); set it in the top-level or slice parameters",
				rpath(c), pa->pos.line, pa->pos.col, pa->name, model, m->name));
	}
	return 0;
}

struct pval {
	double v;
	bool found;
	struct bf_pos pos;
};

/* Evaluate parameter d at the first level that sets it (levels in precedence order). */
static int eval_param(struct ctx *c, const struct bf_param_def *d, const struct bf_params *const *levels,
		      size_t nlev, const char *tensor, double t, struct pval *out)
{
	out->found = false;
	for (size_t l = 0; l < nlev; l++) {
		const struct bf_param *pa = levels[l] ? bf_params_find(levels[l], d->name) : NULL;
		if (!pa)
			continue;
		double num;
		const char *str = NULL;
		if (!bf_setting_eval(&pa->set, tensor, t, &num, &str))
			continue;
		out->pos = pa->pos;
		if (d->type == BF_PT_ENUM) {
			long k = -1;
			for (long i = 0; str && d->choices[i]; i++)
				if (!strcmp(d->choices[i], str))
					k = i;
			if (k < 0)
				return bf_errf(c->err, "%s:%d:%d: parameter '%s': '%s' is not a valid choice",
					       rpath(c), pa->pos.line, pa->pos.col, d->name, str ? str : "?");
			num = (double)k;
		}
		if (!isfinite(num))
			return bf_errf(c->err, "%s:%d:%d: parameter '%s' is not a finite number", rpath(c),
				       pa->pos.line, pa->pos.col, d->name);
		if (d->type == BF_PT_BOOL && num != 0.0 && num != 1.0)
			return bf_errf(c->err, "%s:%d:%d: parameter '%s' must be true or false (got %g)",
				       rpath(c), pa->pos.line, pa->pos.col, d->name, num);
		if (d->type == BF_PT_INT && num != floor(num))
			return bf_errf(c->err, "%s:%d:%d: parameter '%s' must be an integer (got %g)",
				       rpath(c), pa->pos.line, pa->pos.col, d->name, num);
		bool lo = d->min_open ? num > d->min : num >= d->min;
		bool hi = d->max_open ? num < d->max : num <= d->max;
		if (!lo || !hi)
			return bf_errf(c->err,
				       "%s:%d:%d: parameter '%s' = %g for tensor '%s' is out of range: expected %s%g, %g%s",
				       rpath(c), pa->pos.line, pa->pos.col, d->name, num, tensor,
				       d->min_open ? "(" : "[", d->min, d->max, d->max_open ? ")" : "]");
		out->v = num;
		out->found = true;
		return 0;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Models
 */

static int open_model(struct ctx *c, const char *ref, struct bf_pos pos, uint32_t *idx)
{
	struct bf_plan *p = c->p;
	for (size_t i = 0; i < p->n_models; i++)
		if (!strcmp(p->models[i]->ref, ref)) {
			*idx = (uint32_t)i;
			return 0;
		}
	struct bf_model *m;
	if (bf_model_open(ref, c->r->dir, &m, c->err))
		return bf_err_prefix(c->err, "%s:%d:%d", rpath(c), pos.line, pos.col);
	/* the same directory under another spelling is the same model */
	for (size_t i = 0; i < p->n_models; i++)
		if (!strcmp(p->models[i]->dir, m->dir)) {
			bf_model_close(m);
			*idx = (uint32_t)i;
			return 0;
		}
	if (p->n_models >= 4 * BF_MAX_MODELS) {
		bf_model_close(m);
		return bf_errf(c->err, "%s: more than %d distinct models", rpath(c), 4 * BF_MAX_MODELS);
	}
	p->models = bf_xrealloc(p->models, (p->n_models + 1) * sizeof(*p->models));
	c->mi = bf_xrealloc(c->mi, (p->n_models + 1) * sizeof(*c->mi));
	memset(&c->mi[p->n_models], 0, sizeof(*c->mi));
	p->models[p->n_models] = m;
	*idx = (uint32_t)p->n_models++;
	bf_info("source model %s: %s (%zu tensors in %zu shard%s, %.1f MB)", ref, m->dir, m->n_tensors,
		m->n_shards, m->n_shards == 1 ? "" : "s", (double)m->total_bytes / 1e6);
	return 0;
}

/* Find the main layer prefix and layer count of a model from its tensor names. */
static void scan_layers(struct ctx *c, uint32_t mi)
{
	struct minfo *info = &c->mi[mi];
	const struct bf_model *m = c->p->models[mi];
	struct { char *prefix; size_t count; long max; } pf[16];
	size_t npf = 0;
	/* the result depends only on the model; scanning again would leak the first prefix */
	if (info->scanned)
		return;
	info->scanned = true;
	for (size_t i = 0; i < m->n_tensors; i++) {
		size_t plen;
		long idx;
		const char *suf;
		if (!split_layer(m->tensors[i].name, &plen, &idx, &suf))
			continue;
		size_t k;
		for (k = 0; k < npf; k++)
			if (strlen(pf[k].prefix) == plen && !strncmp(pf[k].prefix, m->tensors[i].name, plen))
				break;
		if (k == npf) {
			if (npf == BF_ARRAY_LEN(pf))
				continue;
			pf[npf].prefix = bf_xstrndup(m->tensors[i].name, plen);
			pf[npf].count = 0;
			pf[npf].max = -1;
			npf++;
		}
		pf[k].count++;
		if (idx > pf[k].max)
			pf[k].max = idx;
	}
	size_t best = 0;
	for (size_t k = 1; k < npf; k++)
		if (pf[k].count > pf[best].count)
			best = k;
	info->n_prefixes = npf;
	info->n_layers = 0;
	for (size_t k = 0; k < npf; k++) {
		if (k == best) {
			info->prefix = pf[k].prefix;
			info->n_layers = pf[k].max + 1;
		} else if (!info->other_prefix) {
			info->other_prefix = pf[k].prefix;
		} else {
			free(pf[k].prefix);
		}
	}
}

/* Layer count and position t of a tensor name for gradients in a `models:` merge. */
static double models_form_t(const struct ctx *c, uint32_t mi, const char *name)
{
	size_t plen;
	long idx;
	const char *suf;
	const struct minfo *info = &c->mi[mi];
	if (!info->prefix || !split_layer(name, &plen, &idx, &suf) || strncmp(name, info->prefix, plen) ||
	    strlen(info->prefix) != plen)
		return 0.0;
	if (info->n_layers <= 1)
		return 1.0;
	return (double)idx / (double)(info->n_layers - 1);
}

/* ---------------------------------------------------------------------------------------------
 * Normalising the recipe into slices
 */

static int build_slices(struct ctx *c)
{
	const struct bf_recipe *r = c->r;
	struct bf_plan *p = c->p;
	int32_t gbase = -1;
	if (r->base_model) {
		uint32_t b;
		if (open_model(c, r->base_model, r->base_pos, &b))
			return -1;
		gbase = (int32_t)b;
	}
	if (!r->uses_slices) {
		struct nslice *s = bf_xcalloc(1, sizeof(*s));
		c->slices = s;
		c->n_slices = 1;
		s->src = bf_xcalloc(r->n_models + 1, sizeof(*s->src));
		s->base = gbase;
		s->base_ref = r->base_model;
		bool base_listed = false;
		for (size_t i = 0; i < r->n_models; i++) {
			uint32_t mi;
			if (open_model(c, r->models[i].model, r->models[i].pos, &mi))
				return -1;
			s->src[s->n++] = (struct nsrc){ mi, 0, 0, &r->models[i].params, r->models[i].model,
							r->models[i].pos };
			if ((int32_t)mi == gbase)
				base_listed = true;
		}
		if (gbase >= 0 && !base_listed)
			s->src[s->n++] = (struct nsrc){ (uint32_t)gbase, 0, 0, NULL, r->base_model, r->base_pos };
		/* every model covers all its layers; mergekit requires equal depths */
		for (size_t i = 0; i < s->n; i++) {
			scan_layers(c, s->src[i].model);
			s->src[i].end = c->mi[s->src[i].model].n_layers;
		}
		for (size_t i = 1; i < s->n; i++)
			if (s->src[i].end != s->src[0].end)
				return bf_errf(c->err,
					       "%s:%d:%d: model '%s' has %" PRId64 " layers but '%s' has %" PRId64
					       "; a models: merge needs models of equal depth (use slices: with "
					       "layer_range to pick layers)",
					       rpath(c), s->src[i].pos.line, s->src[i].pos.col, s->src[i].ref,
					       s->src[i].end, s->src[0].ref, s->src[0].end);
		return 0;
	}
	c->slices = bf_xcalloc(r->n_slices, sizeof(*c->slices));
	c->n_slices = r->n_slices;
	for (size_t si = 0; si < r->n_slices; si++) {
		const struct bf_slice *rs = &r->slices[si];
		struct nslice *s = &c->slices[si];
		s->index = si;
		s->params = &rs->params;
		s->src = bf_xcalloc(rs->n_src, sizeof(*s->src));
		for (size_t i = 0; i < rs->n_src; i++) {
			uint32_t mi;
			if (open_model(c, rs->src[i].model, rs->src[i].pos, &mi))
				return -1;
			scan_layers(c, mi);
			const struct bf_source *src = &rs->src[i];
			if (!src->has_range)
				return bf_errf(c->err, "%s:%d:%d: slice source '%s' needs a layer_range", rpath(c),
					       src->pos.line, src->pos.col, src->model);
			long nl = c->mi[mi].n_layers;
			if (src->layer_end > nl)
				return bf_errf(c->err,
					       "%s:%d:%d: layer_range [%" PRId64 ", %" PRId64 "] of model '%s' goes past "
					       "its %ld layers",
					       rpath(c), src->range_pos.line, src->range_pos.col, src->layer_start,
					       src->layer_end, src->model, nl);
			s->src[s->n++] = (struct nsrc){ mi, src->layer_start, src->layer_end, &src->params,
							src->model, src->pos };
		}
		for (size_t i = 1; i < s->n; i++)
			if (s->src[i].end - s->src[i].start != s->src[0].end - s->src[0].start)
				return bf_errf(c->err,
					       "%s:%d:%d: all sources of a slice must span the same number of layers: "
					       "'%s' has %" PRId64 ", '%s' has %" PRId64,
					       rpath(c), s->src[i].pos.line, s->src[i].pos.col, s->src[i].ref,
					       s->src[i].end - s->src[i].start, s->src[0].ref,
					       s->src[0].end - s->src[0].start);
		s->base = gbase;
		s->base_ref = r->base_model;
		if (rs->base_model) {
			uint32_t b;
			if (open_model(c, rs->base_model, rs->base_pos, &b))
				return -1;
			s->base = (int32_t)b;
			s->base_ref = rs->base_model;
		}
	}
	(void)p;
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Output tensors
 */

struct tmpl_input {
	uint32_t model;
	const char *name;             /* input tensor name (before tie fallback) */
	const struct bf_params *src_params;
	const char *ref;
	struct bf_pos pos;
};

static int add_tensor(struct ctx *c, const struct nslice *s, const char *oname, int32_t layer, double t,
		      const struct tmpl_input *ins, size_t nin)
{
	struct bf_plan *p = c->p;
	const struct bf_method *m = c->m;
	const struct bf_recipe *r = c->r;
	if (p->n_tensors == c->cap_tensors) {
		c->cap_tensors = c->cap_tensors ? 2 * c->cap_tensors : 256;
		p->tensors = bf_xrealloc(p->tensors, c->cap_tensors * sizeof(*p->tensors));
	}
	struct bf_otensor *o = &p->tensors[p->n_tensors];
	memset(o, 0, sizeof(*o));
	o->name = bf_xstrdup(oname);
	o->layer = layer;
	o->method = m;
	o->id = XXH3_64bits(oname, strlen(oname));
	o->in = bf_xcalloc(nin, sizeof(*o->in));
	p->n_tensors++; /* owned by the plan from here on, so failures below free it */

	/* bind inputs: base first for methods that use one */
	bool uses_base = m->base != BF_BASE_INPUT;
	int base_at = -1;
	if (uses_base && s->base >= 0)
		for (size_t i = 0; i < nin; i++)
			if ((int32_t)ins[i].model == s->base) {
				base_at = (int)i;
				break;
			}
	if (uses_base && m->base == BF_BASE_REQUIRED && s->base < 0)
		return bf_errf(c->err, "%s:%d:%d: merge_method %s needs a base_model", rpath(c),
			       r->method_pos.line, r->method_pos.col, m->name);
	if (uses_base && s->base >= 0 && base_at < 0)
		return bf_errf(c->err,
			       "%s: base_model '%s' is not among the sources of slice %zu (with slices:, list the "
			       "base model as a source)",
			       rpath(c), s->base_ref, s->index + 1);
	size_t order[BF_MAX_MODELS * 4 + 1], no = 0;
	if (base_at >= 0)
		order[no++] = (size_t)base_at;
	for (size_t i = 0; i < nin; i++)
		if ((int)i != base_at)
			order[no++] = i;
	o->has_base = base_at >= 0;

	uint32_t others = (uint32_t)(nin - (o->has_base ? 1 : 0));
	if (others < m->min_others || others > m->max_others) {
		char want[64];
		if (m->min_others == m->max_others)
			snprintf(want, sizeof(want), "exactly %u", m->min_others);
		else if (m->max_others >= 1000)
			snprintf(want, sizeof(want), "at least %u", m->min_others);
		else
			snprintf(want, sizeof(want), "%u to %u", m->min_others, m->max_others);
		return bf_errf(c->err, "%s:%d:%d: merge_method %s takes %s model%s%s, but %s has %u%s", rpath(c),
			       r->method_pos.line, r->method_pos.col, m->name, want,
			       m->max_others == 1 && m->min_others == 1 ? "" : "s",
			       m->base == BF_BASE_INPUT ? "" : " besides the base model",
			       r->uses_slices ? "a slice" : "the recipe", others,
			       o->has_base ? (m->base == BF_BASE_OPTIONAL ? " besides the base (the base model cannot also "
									    "be one of the models being merged)"
									  : " besides the base")
					   : "");
	}

	const struct bf_src_tensor *first = NULL;
	for (size_t k = 0; k < nin; k++) {
		const struct tmpl_input *ti = &ins[order[k]];
		const struct bf_model *md = p->models[ti->model];
		const struct bf_src_tensor *st = bf_model_tensor(md, ti->name);
		if (!st) {
			const char *tn = tied_name(ti->name);
			if (tn)
				st = bf_model_tensor(md, tn);
		}
		if (!st)
			return bf_errf(c->err, "%s:%d:%d: tensor '%s' required but not present in model '%s' (%s)",
				       rpath(c), ti->pos.line, ti->pos.col, ti->name, ti->ref, md->dir);
		struct bf_input *in = &o->in[k];
		in->model = ti->model;
		in->src = st;
		in->is_base = o->has_base && k == 0;
		if (!first) {
			first = st;
		} else {
			bool same = st->ndim == first->ndim;
			for (uint32_t d = 0; same && d < st->ndim; d++)
				same = st->shape[d] == first->shape[d];
			if (!same) {
				char a[128] = "", b[128] = "";
				for (uint32_t d = 0; d < first->ndim; d++)
					snprintf(a + strlen(a), sizeof(a) - strlen(a), "%s%" PRIu64, d ? ", " : "",
						 first->shape[d]);
				for (uint32_t d = 0; d < st->ndim; d++)
					snprintf(b + strlen(b), sizeof(b) - strlen(b), "%s%" PRIu64, d ? ", " : "",
						 st->shape[d]);
				return bf_errf(c->err,
					       "tensor '%s': shapes differ: model '%s' has [%s] but model '%s' has [%s]%s",
					       oname, p->models[o->in[0].model]->ref, a, md->ref, b,
					       strstr(oname, "embed") || strstr(oname, "lm_head")
						       ? " (different vocabulary sizes: blendfs cannot resize embeddings yet)"
						       : "");
			}
		}
		if (!bf_dtypes[st->dtype].math && (m->kernel || st->dtype != first->dtype) &&
		    strcmp(m->name, "passthrough"))
			return bf_errf(c->err,
				       "tensor '%s' of model '%s' has dtype %s; merge_method %s computes over F32, "
				       "F16 or BF16 only",
				       ti->name, md->ref, bf_dtypes[st->dtype].st_name, m->name);
		in->p[0] = NAN;
		for (int q = 0; q < BF_MAX_PARAMS; q++)
			in->p[q] = NAN;
	}
	o->ndim = first->ndim;
	memcpy(o->shape, first->shape, sizeof(o->shape));
	o->numel = first->numel;
	o->row_len = first->ndim >= 1 ? first->shape[first->ndim - 1] : 1;
	if (o->row_len == 0)
		o->row_len = 1;

	/* parameters */
	const struct bf_params *glev[3] = { s->params, &r->params, NULL };
	for (uint32_t q = 0; q < m->n_params; q++) {
		const struct bf_param_def *d = &m->params[q];
		o->g[q] = NAN;
		if (d->per_model) {
			for (size_t k = 0; k < nin; k++) {
				const struct tmpl_input *ti = &ins[order[k]];
				const struct bf_params *lev[3] = { ti->src_params, s->params, &r->params };
				struct pval v;
				if (eval_param(c, d, lev, 3, o->in[k].src->name, t, &v))
					return -1;
				if (v.found)
					o->in[k].p[q] = v.v;
				else if (!d->required || o->in[k].is_base)
					o->in[k].p[q] = d->def;
				else
					return bf_errf(c->err,
						       "%s:%d:%d: missing required parameter '%s' for model '%s' (tensor "
						       "'%s')%s",
						       rpath(c), ti->pos.line, ti->pos.col, d->name, ti->ref, ti->name,
						       ti->src_params ? ""
								      : "; it was added as an input because it is the base_model");
			}
		} else {
			struct pval v;
			if (eval_param(c, d, glev, 2, oname, t, &v))
				return -1;
			if (v.found)
				o->g[q] = v.v;
			else if (!d->required)
				o->g[q] = d->def;
			else
				return bf_errf(c->err, "%s:%d:%d: missing required parameter '%s' for merge_method %s "
						       "(tensor '%s')",
					       rpath(c), r->method_pos.line, r->method_pos.col, d->name, m->name, oname);
		}
	}

	/* output dtype: out_dtype, else the method's own promotion, else dtype, else the stored one */
	enum bf_dtype sd = o->in[0].src->dtype;
	if (!bf_dtypes[sd].math)
		o->dtype = sd; /* integer/bool tensors pass through unchanged */
	else if (r->out_dtype != BF_DT_NONE)
		o->dtype = r->out_dtype;
	else if (m->out_f32)
		o->dtype = BF_DT_F32;
	else if (r->dtype != BF_DT_NONE)
		o->dtype = r->dtype;
	else
		o->dtype = sd;
	/* from bits, not bf_dtype_size(): that is 0 for the sub-byte dtypes (F4, F6_*), which are
	 * passed through whole, and a whole number of bytes (the source header was validated) */
	uint64_t bits;
	if (!bf_mul_u64(o->numel, bf_dtypes[o->dtype].bits, &bits))
		return bf_errf(c->err, "tensor '%s': size overflows", oname);
	o->nbytes = bits / 8;

	/* passthrough of an unscaled tensor in its own dtype: the bytes are the source's */
	if (!m->kernel || (!strcmp(m->name, "passthrough") && isnan(o->in[0].p[0]) && o->dtype == sd))
		o->copy = true;
	if (!bf_dtypes[sd].math && !o->copy)
		return bf_errf(c->err, "tensor '%s' has dtype %s, which can only be passed through unscaled",
			       oname, bf_dtypes[sd].st_name);

	/* mergekit's save-order label: the largest input tensor name */
	const char *label = o->in[0].src->name;
	for (size_t k = 1; k < nin; k++)
		if (strcmp(o->in[k].src->name, label) > 0)
			label = o->in[k].src->name;
	o->label = bf_xstrdup(label);
	o->n_in = (uint32_t)nin;

	if (m->check && m->check(o, c->err))
		return bf_err_prefix(c->err, "%s: tensor '%s'", rpath(c), oname);
	return 0;
}

static bool name_taken(const struct bf_plan *p, const char *name)
{
	for (size_t i = 0; i < p->n_tensors; i++)
		if (!strcmp(p->tensors[i].name, name))
			return true;
	return false;
}

static struct tmpl_input slice_input(const struct nslice *s, size_t k, const char *name)
{
	return (struct tmpl_input){ s->src[k].model, name, s->src[k].params, s->src[k].ref, s->src[k].pos };
}

/* One output tensor `name` whose inputs are the tensor of that name in every source of s. */
static int add_by_name(struct ctx *c, const struct nslice *s, const char *name, int32_t layer, double t)
{
	struct tmpl_input ins[BF_MAX_MODELS + 1];
	for (size_t k = 0; k < s->n; k++)
		ins[k] = slice_input(s, k, name);
	return add_tensor(c, s, name, layer, t, ins, s->n);
}

/* An output head that the first source of s ties to its embedding (it has no lm_head.weight)
 * but another source has: the merge gets one. */
static int add_untied_head(struct ctx *c, const struct nslice *s)
{
	const char *head = "lm_head.weight";
	if (bf_model_tensor(c->p->models[s->src[0].model], head) || name_taken(c->p, head))
		return 0;
	for (size_t k = 1; k < s->n; k++)
		if (bf_model_tensor(c->p->models[s->src[k].model], head))
			return add_by_name(c, s, head, -1, 0.0);
	return 0;
}

/* Non-layer tensors (pre- or post-weights) of slice s, named after its first source. */
static int add_edge_tensors(struct ctx *c, const struct nslice *s, bool post)
{
	const struct bf_model *tm = c->p->models[s->src[0].model];
	const struct minfo *ti = &c->mi[s->src[0].model];
	for (size_t i = 0; i < tm->n_tensors; i++) {
		const char *name = tm->tensors[i].name;
		size_t plen;
		long idx;
		const char *suf;
		if (split_layer(name, &plen, &idx, &suf) && ti->prefix && strlen(ti->prefix) == plen &&
		    !strncmp(name, ti->prefix, plen))
			continue;
		if (c->r->uses_slices && split_layer(name, &plen, &idx, &suf))
			return bf_errf(c->err,
				       "%s: model '%s' has layers under more than one prefix ('%s' and '%.*s'); "
				       "slices: over multi-module models are not supported",
				       rpath(c), s->src[0].ref, ti->prefix, (int)plen, name);
		if (is_post_weight(name) != post || name_taken(c->p, name))
			continue;
		if (add_by_name(c, s, name, -1, 0.0))
			return -1;
	}
	return post ? add_untied_head(c, s) : 0;
}

static int build_tensors_models(struct ctx *c)
{
	/* `models:` merges tensor by tensor, by name; t comes from each tensor's layer number */
	const struct nslice *s = &c->slices[0];
	const struct bf_model *tm = c->p->models[s->src[0].model];
	for (size_t i = 0; i < tm->n_tensors; i++) {
		const char *name = tm->tensors[i].name;
		size_t plen;
		long idx;
		const char *suf;
		int32_t layer = split_layer(name, &plen, &idx, &suf) ? (int32_t)idx : -1;
		if (add_by_name(c, s, name, layer, models_form_t(c, s->src[0].model, name)))
			return -1;
	}
	if (add_untied_head(c, s))
		return -1;
	c->p->out_layers = (uint32_t)c->mi[s->src[0].model].n_layers;
	return 0;
}

static int build_tensors_slices(struct ctx *c)
{
	struct tmpl_input ins[BF_MAX_MODELS + 1];
	char **names = NULL;
	size_t n_names = 0;  /* entries of `names`: the current slice's source count */
	int rc = -1;
	if (add_edge_tensors(c, &c->slices[0], false))
		return -1;
	long out_layer = 0;
	for (size_t si = 0; si < c->n_slices; si++) {
		const struct nslice *s = &c->slices[si];
		int64_t len = s->src[0].end - s->src[0].start;
		for (int64_t j = 0; j < len; j++, out_layer++) {
			double t = len == 1 ? 1.0 : (double)j / (double)(len - 1);
			const struct bf_model *tm = c->p->models[s->src[0].model];
			const char *prefix = c->mi[s->src[0].model].prefix;
			size_t plen0 = strlen(prefix);
			for (size_t i = 0; i < tm->n_tensors; i++) {
				const char *name = tm->tensors[i].name;
				size_t plen;
				long idx;
				const char *suf;
				if (!split_layer(name, &plen, &idx, &suf) || plen != plen0 ||
				    strncmp(name, prefix, plen) || idx != s->src[0].start + j)
					continue;
				char *oname = bf_xasprintf("%s%ld%s", prefix, out_layer, suf);
				size_t nn = (size_t)s->n;
				names = bf_xcalloc(nn, sizeof(char *));
				n_names = nn;
				for (size_t k = 0; k < nn; k++) {
					const char *pk = c->mi[s->src[k].model].prefix;
					if (!pk || strcmp(pk, prefix)) {
						bf_errf(c->err,
							"%s:%d:%d: model '%s' names its layers '%s...' but '%s' uses '%s...'",
							rpath(c), s->src[k].pos.line, s->src[k].pos.col, s->src[k].ref,
							pk ? pk : "(none)", s->src[0].ref, prefix);
						free(oname);
						goto out;
					}
					names[k] = bf_xasprintf("%s%" PRId64 "%s", prefix, s->src[k].start + j, suf);
					ins[k] = slice_input(s, k, names[k]);
				}
				int r = add_tensor(c, s, oname, (int32_t)out_layer, t, ins, nn);
				free(oname);
				for (size_t k = 0; k < nn; k++)
					free(names[k]);
				free(names);
				names = NULL;
				if (r)
					return -1;
			}
		}
	}
	c->p->out_layers = (uint32_t)out_layer;
	if (add_edge_tensors(c, &c->slices[c->n_slices - 1], true))
		return -1;
	return 0;
out:
	if (names)
		for (size_t k = 0; k < n_names; k++) /* not slices[0].n: it may be another slice */
			free(names[k]);
	free(names);
	return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Save order, shards, headers
 */

static int cmp_label(const void *a, const void *b)
{
	const struct bf_otensor *x = a, *y = b;
	int r = strcmp(x->label, y->label);
	if (r)
		return r;
	/* plan order breaks ties: stashed in data_off until placement */
	return x->data_off < y->data_off ? -1 : x->data_off > y->data_off;
}

static int build_shards(struct ctx *c, uint64_t max_shard)
{
	struct bf_plan *p = c->p;
	for (size_t i = 0; i < p->n_tensors; i++)
		p->tensors[i].data_off = i;
	qsort(p->tensors, p->n_tensors, sizeof(*p->tensors), cmp_label);
	for (size_t i = 0; i < p->n_tensors; i++)
		if (i && !strcmp(p->tensors[i].name, p->tensors[i - 1].name))
			return bf_errf(c->err, "%s: output tensor '%s' would be written twice", rpath(c),
				       p->tensors[i].name);

	/* greedy packing in save order (mergekit's TensorWriter) */
	uint32_t shard = 0;
	uint64_t cur = 0, total = 0;
	bool nonempty = false;
	for (size_t i = 0; i < p->n_tensors; i++) {
		uint64_t sz = p->tensors[i].nbytes;
		if (max_shard > 0 && nonempty && cur + sz > max_shard) {
			shard++;
			cur = 0;
		}
		p->tensors[i].shard = shard;
		cur += sz;
		nonempty = true;
		total += sz;
	}
	p->total_size = total;
	p->n_shards = p->n_tensors ? shard + 1 : 1;
	p->shards = bf_xcalloc(p->n_shards, sizeof(*p->shards));
	for (size_t s = 0; s < p->n_shards; s++) {
		struct bf_oshard *sh = &p->shards[s];
		if (p->n_shards == 1)
			sh->name = bf_xstrdup("model.safetensors");
		else
			sh->name = bf_xasprintf("model-%05zu-of-%05zu.safetensors", s + 1, p->n_shards);
		size_t first = 0, n = 0;
		for (size_t i = 0; i < p->n_tensors; i++)
			if (p->tensors[i].shard == s) {
				if (!n)
					first = i;
				n++;
			}
		struct bf_st_out *outs = bf_xcalloc(n ? n : 1, sizeof(*outs));
		size_t *order = bf_xcalloc(n ? n : 1, sizeof(*order));
		uint64_t *offs = bf_xcalloc(n ? n : 1, sizeof(*offs));
		for (size_t k = 0; k < n; k++) {
			const struct bf_otensor *o = &p->tensors[first + k];
			outs[k] = (struct bf_st_out){ o->name, o->dtype, o->ndim, o->shape };
		}
		size_t hlen;
		int r = bf_st_serialize(outs, n, &sh->header, &hlen, order, offs, c->err);
		if (!r) {
			sh->header_len = hlen;
			sh->tensors = bf_xcalloc(n ? n : 1, sizeof(uint32_t));
			sh->n_tensors = (uint32_t)n;
			uint64_t data = 0;
			for (size_t k = 0; k < n; k++) {
				struct bf_otensor *o = &p->tensors[first + k];
				o->data_off = offs[k];
				o->file_off = hlen + offs[k];
				data += o->nbytes;
				sh->tensors[k] = (uint32_t)(first + order[k]);
			}
			sh->size = hlen + data;
		}
		free(outs);
		free(order);
		free(offs);
		if (r)
			return bf_err_prefix(c->err, "%s: shard %s", rpath(c), sh->name);
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Small files
 */

static void add_file(struct bf_plan *p, const char *name, char *data, size_t len)
{
	p->files = bf_xrealloc(p->files, (p->n_files + 1) * sizeof(*p->files));
	p->files[p->n_files++] = (struct bf_ofile){ bf_xstrdup(name), data, len };
}

/* Python json.dumps string escaping with ensure_ascii (what the index file uses). */
static void json_ascii_quote(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *u = (const unsigned char *)s; *u;) {
		uint32_t cp = *u;
		int extra = 0;
		if (cp >= 0xf0) { cp &= 0x07; extra = 3; }
		else if (cp >= 0xe0) { cp &= 0x0f; extra = 2; }
		else if (cp >= 0xc0) { cp &= 0x1f; extra = 1; }
		u++;
		for (int i = 0; i < extra && *u; i++, u++)
			cp = (cp << 6) | (*u & 0x3f);
		if (cp == '"') fputs("\\\"", f);
		else if (cp == '\\') fputs("\\\\", f);
		else if (cp == '\n') fputs("\\n", f);
		else if (cp == '\r') fputs("\\r", f);
		else if (cp == '\t') fputs("\\t", f);
		else if (cp == '\b') fputs("\\b", f);
		else if (cp == '\f') fputs("\\f", f);
		else if (cp < 0x20 || (cp >= 0x7f && cp < 0x10000)) fprintf(f, "\\u%04x", cp);
		else if (cp >= 0x10000) {
			cp -= 0x10000;
			fprintf(f, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
		} else fputc((int)cp, f);
	}
	fputc('"', f);
}

static void build_index(struct bf_plan *p)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	BF_ASSERT(f);
	fprintf(f, "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64 "\n  },\n  \"weight_map\": {", p->total_size);
	for (size_t i = 0; i < p->n_tensors; i++) {
		fputs(i ? ",\n    " : "\n    ", f);
		json_ascii_quote(f, p->tensors[i].name);
		fputs(": ", f);
		json_ascii_quote(f, p->shards[p->tensors[i].shard].name);
	}
	fputs("\n  }\n}", f);
	fclose(f);
	add_file(p, "model.safetensors.index.json", buf, len);
}

/* Locate the value of top-level key `key` in a JSON object text that jansson already accepted:
 * returns the value's [begin, end) or false. Skips nested values and strings only; this is a
 * span finder over validated JSON so that the donor's formatting survives the patch. */
static size_t skip_ws(const char *s, size_t i, size_t n)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

static size_t skip_string(const char *s, size_t i, size_t n)
{
	for (i++; i < n && s[i] != '"'; i++)
		if (s[i] == '\\')
			i++;
	return i + 1;
}

static size_t skip_value(const char *s, size_t i, size_t n)
{
	if (s[i] == '"')
		return skip_string(s, i, n);
	if (s[i] == '{' || s[i] == '[') {
		int depth = 0;
		while (i < n) {
			if (s[i] == '"') {
				i = skip_string(s, i, n);
				continue;
			}
			if (s[i] == '{' || s[i] == '[')
				depth++;
			else if (s[i] == '}' || s[i] == ']') {
				if (--depth == 0)
					return i + 1;
			}
			i++;
		}
		return n;
	}
	while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' &&
	       s[i] != '\r' && s[i] != '\t')
		i++;
	return i;
}

static bool json_find_key(const char *s, size_t n, size_t start, const char *key, size_t *vb, size_t *ve,
			  size_t *obj_end)
{
	size_t i = skip_ws(s, start, n);
	if (i >= n || s[i] != '{')
		return false;
	i++;
	size_t klen = strlen(key);
	for (;;) {
		i = skip_ws(s, i, n);
		if (i >= n)
			return false;
		if (s[i] == '}') {
			if (obj_end)
				*obj_end = i;
			return false;
		}
		if (s[i] == ',') {
			i++;
			continue;
		}
		if (s[i] != '"')
			return false;
		size_t kb = i + 1, ke = skip_string(s, i, n) - 1;
		i = skip_ws(s, ke + 1, n);
		if (i >= n || s[i] != ':')
			return false;
		i = skip_ws(s, i + 1, n);
		size_t e = skip_value(s, i, n);
		if (ke - kb == klen && !memcmp(s + kb, key, klen)) {
			*vb = i;
			*ve = e;
			return true;
		}
		i = e;
	}
}

static char *splice(const char *s, size_t n, size_t b, size_t e, const char *ins, size_t *outlen)
{
	size_t il = strlen(ins);
	char *o = bf_xmalloc(n - (e - b) + il + 1);
	memcpy(o, s, b);
	memcpy(o + b, ins, il);
	memcpy(o + b + il, s + e, n - e);
	*outlen = n - (e - b) + il;
	o[*outlen] = 0;
	return o;
}

/* Set a top-level key (or one inside a top-level object `parent`) to a JSON value text,
 * keeping the rest of the text byte for byte. Returns true if the key existed. */
static bool json_patch(char **text, size_t *len, const char *parent, const char *key, const char *val)
{
	size_t vb, ve, start = 0;
	if (parent) {
		size_t pb, pe;
		if (!json_find_key(*text, *len, 0, parent, &pb, &pe, NULL))
			return false;
		start = pb;
	}
	if (!json_find_key(*text, *len, start, key, &vb, &ve, NULL))
		return false;
	size_t nl;
	char *o = splice(*text, *len, vb, ve, val, &nl);
	free(*text);
	*text = o;
	*len = nl;
	return true;
}

static void json_insert_top(char **text, size_t *len, const char *key, const char *val)
{
	/* after the last member, before the closing brace, in the donor's 2-space style */
	size_t end = *len;
	while (end > 0 && (*text)[end - 1] != '}')
		end--;
	if (!end)
		return;
	size_t last = end - 1; /* the '}' */
	size_t b = last;
	while (b > 0 && ((*text)[b - 1] == ' ' || (*text)[b - 1] == '\n' || (*text)[b - 1] == '\r' ||
			 (*text)[b - 1] == '\t'))
		b--;
	bool empty = b > 0 && (*text)[b - 1] == '{';
	char *ins = bf_xasprintf("%s\n  \"%s\": %s", empty ? "" : ",", key, val);
	size_t nl;
	char *o = splice(*text, *len, b, b, ins, &nl);
	free(ins);
	free(*text);
	*text = o;
	*len = nl;
}

static int build_config(struct ctx *c)
{
	struct bf_plan *p = c->p;
	const struct bf_recipe *r = c->r;
	const struct bf_model *dm = p->models[p->donor];
	char *text;
	size_t len;
	int rc = bf_model_read_file(dm, "config.json", 16u << 20, &text, &len, c->err);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return bf_errf(c->err, "model '%s' (%s) has no config.json, which the output needs", dm->ref, dm->dir);
	enum bf_dtype od = r->out_dtype != BF_DT_NONE ? r->out_dtype : r->dtype;
	if (od != BF_DT_NONE) {
		char *val = bf_xasprintf("\"%s\"", bf_dtypes[od].torch_name);
		if (!json_patch(&text, &len, NULL, "torch_dtype", val) && !json_patch(&text, &len, NULL, "dtype", val))
			json_insert_top(&text, &len, "torch_dtype", val);
		free(val);
	}
	if (r->uses_slices) {
		static const char *const keys[] = { "num_hidden_layers", "n_layer", "num_layers", "n_layers" };
		char val[32];
		snprintf(val, sizeof(val), "%u", p->out_layers);
		bool done = false;
		for (size_t i = 0; i < BF_ARRAY_LEN(keys) && !done; i++)
			done = json_patch(&text, &len, NULL, keys[i], val);
		if (!done)
			done = json_patch(&text, &len, "text_config", "num_hidden_layers", val);
		if (!done)
			add_warning(p, bf_xasprintf("config.json of '%s' has no layer-count key; it was not updated "
						    "to the %u output layers", dm->ref, p->out_layers));
	}
	/* the patched text must still be valid JSON */
	json_error_t je;
	json_t *chk = json_loadb(text, len, 0, &je);
	if (!chk) {
		free(text);
		return bf_errf(c->err, "internal error: patched config.json is invalid: %s", je.text);
	}
	json_decref(chk);
	add_file(p, "config.json", text, len);
	return 0;
}

static int build_small_files(struct ctx *c)
{
	struct bf_plan *p = c->p;
	if (build_config(c))
		return -1;
	/* the tokenizer donor's files, byte for byte (mergekit's --copy-tokenizer list + vocab/merges) */
	static const char *const tok_files[] = {
		"generation_config.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json",
		"tokenizer.model", "added_tokens.json", "merges.txt", "vocab.json", "vocab.txt",
		"chat_template.jinja", "chat_template.json", "preprocessor_config.json",
		"video_preprocessor_config.json",
	};
	const struct bf_model *tm = p->models[p->tok_donor];
	for (size_t i = 0; i < BF_ARRAY_LEN(tok_files); i++) {
		char *data;
		size_t len;
		int rc = bf_model_read_file(tm, tok_files[i], MAX_SMALL_FILE, &data, &len, c->err);
		if (rc < 0)
			return -1;
		if (rc > 0)
			add_file(p, tok_files[i], data, len);
	}
	add_file(p, "mergekit_config.yml", bf_xstrndup(c->r->text, c->r->text_len), c->r->text_len);

	/* model card: nothing in it may depend on where the model is mounted or written */
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	BF_ASSERT(f);
	const struct bf_recipe *r = c->r;
	fputs("---\nbase_model:\n", f);
	bool any = false;
	for (size_t i = 0; i < p->n_models; i++) {
		const char *ref = p->models[i]->ref;
		const char *slash = strchr(ref, '/');
		bool hf = ref[0] != '/' && ref[0] != '~' && ref[0] != '.' && slash && !strchr(slash + 1, '/');
		if (hf) {
			fprintf(f, "- %s\n", ref);
			any = true;
		}
	}
	if (!any) {
		/* YAML: an empty list rather than a dangling key */
		fseek(f, -1, SEEK_CUR);
		fputs(" []\n", f);
	}
	char *stem = bf_xstrdup(r->path);
	char *base = basename(stem);
	char *dot = strrchr(base, '.');
	if (dot && dot != base)
		*dot = 0;
	fprintf(f, "library_name: transformers\ntags:\n- mergekit\n- merge\n- blendfs\n---\n# %s\n\n", base);
	free(stem);
	fputs("This is a merge of pre-trained language models, computed by blendfs from a "
	      "[mergekit](https://github.com/arcee-ai/mergekit) recipe.\n\n## Merge Details\n### Merge Method\n\n", f);
	const struct bf_method *m = c->m;
	if (m->paper)
		fprintf(f, "This model was merged using the [%s](%s) merge method", m->pretty, m->paper);
	else
		fprintf(f, "This model was merged using the %s merge method", m->pretty);
	const char *bref = r->base_model;
	if (bref && strcmp(m->name, "slerp"))
		fprintf(f, " using %s as a base", bref);
	fputs(".\n\n### Models Merged\n\nThe following models were included in the merge:\n", f);
	for (size_t i = 0; i < p->n_models; i++)
		if (!bref || strcmp(p->models[i]->ref, bref) || !strcmp(m->name, "slerp"))
			fprintf(f, "* %s\n", p->models[i]->ref);
	fprintf(f, "\n### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n"
		   "```yaml\n%s%s```\n", r->text, r->text_len && r->text[r->text_len - 1] == '\n' ? "" : "\n");
	fclose(f);
	add_file(p, "README.md", buf, len);
	if (p->n_shards > 1)
		build_index(p);
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Entry points
 */

int bf_plan_build(struct bf_recipe *recipe, const struct bf_plan_opts *opts, struct bf_plan **out,
		  struct bf_err *err)
{
	struct bf_plan *p = bf_xcalloc(1, sizeof(*p));
	struct ctx c = { .p = p, .r = recipe, .err = err };
	int rc = -1;
	p->recipe = recipe;
	p->seed = opts->has_seed ? opts->seed : recipe->has_seed ? recipe->seed : 0;
	p->recipe_hash = XXH3_64bits_withSeed(recipe->text, recipe->text_len, p->seed);

	c.m = p->method = bf_method_find(recipe->merge_method);
	if (!c.m) {
		const char *names[64];
		char list[512] = "";
		size_t nn = bf_n_methods < 64 ? bf_n_methods : 64;
		for (size_t i = 0; i < nn; i++) {
			names[i] = bf_methods[i]->name;
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "", names[i]);
		}
		const char *sug = bf_suggest(recipe->merge_method, names, nn);
		bf_errf(err, "%s:%d:%d: unknown merge_method '%s'%s%s%s; blendfs knows: %s", recipe->path,
			recipe->method_pos.line, recipe->method_pos.col, recipe->merge_method,
			sug ? " (did you mean '" : "", sug ? sug : "", sug ? "'?)" : "", list);
		goto fail;
	}
	/* parameters, every level, before any model is opened */
	if (check_params(&c, &recipe->params, false, NULL))
		goto fail;
	for (size_t i = 0; i < recipe->n_models; i++)
		if (check_params(&c, &recipe->models[i].params, true, recipe->models[i].model))
			goto fail;
	for (size_t s = 0; s < recipe->n_slices; s++) {
		if (check_params(&c, &recipe->slices[s].params, false, NULL))
			goto fail;
		for (size_t i = 0; i < recipe->slices[s].n_src; i++)
			if (check_params(&c, &recipe->slices[s].src[i].params, true, recipe->slices[s].src[i].model))
				goto fail;
	}
	if (c.m->base == BF_BASE_REQUIRED && !recipe->base_model) {
		bool all = recipe->uses_slices;
		for (size_t s = 0; all && s < recipe->n_slices; s++)
			all = recipe->slices[s].base_model != NULL;
		if (!all) {
			bf_errf(err, "%s:%d:%d: merge_method %s needs a base_model (the model the others are "
				     "fine-tunes of)", recipe->path, recipe->method_pos.line, recipe->method_pos.col,
				c.m->name);
			goto fail;
		}
	}

	if (build_slices(&c))
		goto fail;
	/* the donor of config.json: the base model, else the first model of the recipe */
	p->donor = c.slices[0].src[0].model;
	if (recipe->base_model)
		for (size_t i = 0; i < p->n_models; i++)
			if (!strcmp(p->models[i]->ref, recipe->base_model))
				p->donor = (uint32_t)i;
	p->tok_donor = p->donor;
	if (recipe->tokenizer_source) {
		if (!strcmp(recipe->tokenizer_source, "base")) {
			if (!recipe->base_model) {
				bf_errf(err, "%s:%d:%d: tokenizer_source: base needs a base_model", recipe->path,
					recipe->tokenizer_pos.line, recipe->tokenizer_pos.col);
				goto fail;
			}
		} else if (open_model(&c, recipe->tokenizer_source, recipe->tokenizer_pos, &p->tok_donor)) {
			goto fail;
		}
	}
	if (recipe->uses_slices ? build_tensors_slices(&c) : build_tensors_models(&c))
		goto fail;
	if (!p->n_tensors) {
		bf_errf(err, "%s: the recipe selects no tensors", recipe->path);
		goto fail;
	}
	if (build_shards(&c, opts->shard_size))
		goto fail;
	if (build_small_files(&c))
		goto fail;

	*out = p;
	p = NULL;
	rc = 0;
fail:
	for (size_t i = 0; i < c.p->n_models; i++) {
		free(c.mi[i].prefix);
		free(c.mi[i].other_prefix);
	}
	free(c.mi);
	for (size_t s = 0; s < c.n_slices; s++)
		free(c.slices[s].src);
	free(c.slices);
	bf_plan_free(p); /* NULL once handed to the caller */
	return rc;
}

void bf_plan_free(struct bf_plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_tensors; i++) {
		free(p->tensors[i].name);
		free(p->tensors[i].label);
		free(p->tensors[i].in);
	}
	free(p->tensors);
	for (size_t i = 0; i < p->n_shards; i++) {
		free(p->shards[i].name);
		free(p->shards[i].header);
		free(p->shards[i].tensors);
	}
	free(p->shards);
	for (size_t i = 0; i < p->n_files; i++) {
		free(p->files[i].name);
		free(p->files[i].data);
	}
	free(p->files);
	for (size_t i = 0; i < p->n_models; i++)
		bf_model_close(p->models[i]);
	free(p->models);
	for (size_t i = 0; i < p->n_warnings; i++)
		free(p->warnings[i]);
	free(p->warnings);
	bf_recipe_free(p->recipe);
	free(p);
}

long bf_plan_find(const struct bf_plan *p, const char *name)
{
	for (size_t i = 0; i < p->n_tensors; i++)
		if (!strcmp(p->tensors[i].name, name))
			return (long)i;
	return -1;
}

/* ---------------------------------------------------------------------------------------------
 * `blendfs check`
 */

static void fmt_bytes(char *buf, size_t n, uint64_t b)
{
	if (b >= 1000000000ull)
		snprintf(buf, n, "%.2f GB", (double)b / 1e9);
	else if (b >= 1000000ull)
		snprintf(buf, n, "%.2f MB", (double)b / 1e6);
	else
		snprintf(buf, n, "%" PRIu64 " bytes", b);
}

/* The parameter values of a tensor as text, for grouping and printing. */
static void describe_params(const struct bf_otensor *o, char *buf, size_t n)
{
	const struct bf_method *m = o->method;
	buf[0] = 0;
	for (uint32_t q = 0; q < m->n_params; q++) {
		const struct bf_param_def *d = &m->params[q];
		size_t l = strlen(buf);
		if (d->per_model) {
			snprintf(buf + l, n - l, "%s%s=[", l ? " " : "", d->name);
			for (uint32_t i = 0; i < o->n_in; i++) {
				l = strlen(buf);
				double v = o->in[i].p[q];
				if (isnan(v))
					snprintf(buf + l, n - l, "%s-", i ? "," : "");
				else
					snprintf(buf + l, n - l, "%s%.6g", i ? "," : "", v);
			}
			l = strlen(buf);
			snprintf(buf + l, n - l, "]");
		} else {
			double v = o->g[q];
			if (isnan(v))
				continue;
			if (d->type == BF_PT_BOOL)
				snprintf(buf + l, n - l, "%s%s=%s", l ? " " : "", d->name, v != 0 ? "true" : "false");
			else if (d->type == BF_PT_ENUM)
				snprintf(buf + l, n - l, "%s%s=%s", l ? " " : "", d->name, d->choices[(int)v]);
			else
				snprintf(buf + l, n - l, "%s%s=%.6g", l ? " " : "", d->name, v);
		}
	}
}

void bf_plan_print(const struct bf_plan *p, FILE *f)
{
	const struct bf_recipe *r = p->recipe;
	char sz[32];
	fprintf(f, "recipe:      %s\n", r->path);
	fprintf(f, "method:      %s (%s)\n", p->method->name, p->method->pretty);
	if (p->method->random)
		fprintf(f, "seed:        %" PRIu64 "\n", p->seed);
	fprintf(f, "sources:\n");
	for (size_t i = 0; i < p->n_models; i++) {
		const struct bf_model *m = p->models[i];
		fmt_bytes(sz, sizeof(sz), m->total_bytes);
		fprintf(f, "  [%zu] %s%s\n      %s: %zu tensors, %zu shard%s, %s\n", i, m->ref,
			r->base_model && !strcmp(r->base_model, m->ref) ? "  (base)" : "", m->dir, m->n_tensors,
			m->n_shards, m->n_shards == 1 ? "" : "s", sz);
	}
	fmt_bytes(sz, sizeof(sz), p->total_size);
	fprintf(f, "output:      %zu tensors, %u layers, %s in %zu shard%s\n", p->n_tensors, p->out_layers, sz,
		p->n_shards, p->n_shards == 1 ? "" : "s");
	for (size_t s = 0; s < p->n_shards; s++) {
		fmt_bytes(sz, sizeof(sz), p->shards[s].size);
		fprintf(f, "  %s: %u tensors, %s\n", p->shards[s].name, p->shards[s].n_tensors, sz);
	}
	fprintf(f, "files:      ");
	for (size_t i = 0; i < p->n_files; i++)
		fprintf(f, " %s", p->files[i].name);
	fprintf(f, "\ntensor groups (method, inputs and parameters resolved per tensor):\n");
	/* group consecutive tensors (in plan order by layer, then name) sharing the same description */
	size_t n = p->n_tensors;
	char **desc = bf_xcalloc(n, sizeof(char *));
	bool *done = bf_xcalloc(n, sizeof(bool));
	for (size_t i = 0; i < n; i++) {
		const struct bf_otensor *o = &p->tensors[i];
		char params[1024], ins[512] = "";
		describe_params(o, params, sizeof(params));
		for (uint32_t k = 0; k < o->n_in; k++)
			snprintf(ins + strlen(ins), sizeof(ins) - strlen(ins), "%s%zu%s", k ? "," : "",
				 (size_t)o->in[k].model, o->in[k].is_base ? "(base)" : "");
		/* group by the name with its layer number removed */
		size_t plen;
		long idx;
		const char *suf;
		char gname[512];
		if (split_layer(o->name, &plen, &idx, &suf))
			snprintf(gname, sizeof(gname), "%.*sN%s", (int)plen, o->name, suf);
		else
			snprintf(gname, sizeof(gname), "%s", o->name);
		desc[i] = bf_xasprintf("%s|%s|%s|%s|%s", gname, bf_dtypes[o->dtype].st_name, ins,
				       o->copy ? "copied from source" : params, o->method->name);
	}
	for (size_t i = 0; i < n; i++) {
		if (done[i])
			continue;
		char layers[256] = "";
		size_t cnt = 0;
		for (size_t j = i; j < n; j++) {
			if (done[j] || strcmp(desc[i], desc[j]))
				continue;
			done[j] = true;
			cnt++;
			if (p->tensors[j].layer >= 0 && strlen(layers) < 200)
				snprintf(layers + strlen(layers), sizeof(layers) - strlen(layers), "%s%d",
					 layers[0] ? "," : "", p->tensors[j].layer);
		}
		char *d = bf_xstrdup(desc[i]);
		char *fields[5];
		char *sp = d;
		for (int k = 0; k < 5; k++)
			fields[k] = strsep(&sp, "|");
		fprintf(f, "  %-48s %s  inputs %s  %s%s%s%s\n", fields[0], fields[1], fields[2], fields[3],
			layers[0] ? "  layers " : "", layers, cnt > 1 && !layers[0] ? "" : "");
		free(d);
	}
	for (size_t i = 0; i < n; i++)
		free(desc[i]);
	free(desc);
	free(done);
	for (size_t i = 0; i < p->n_warnings; i++)
		fprintf(f, "warning: %s\n", p->warnings[i]);
}
