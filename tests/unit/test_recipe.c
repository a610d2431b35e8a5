/* test_recipe.c: recipe schema, scalar typing, model references, setting evaluation, and the
 * rejection of bad recipes (each with its message and line:col). Runs with the working directory
 * set to tests/ (meson's workdir), so the conformance recipes are at conformance/cases/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_recipe.h"
#include "bf_test.h"

static struct bf_recipe *parse(const char *text, struct bf_err *e)
{
	struct bf_recipe *r = NULL;
	bf_err_clear(e);
	if (bf_recipe_parse(text, strlen(text), "t.yaml", &r, e) < 0) {
		if (r)
			printf("  parse failed but returned a recipe\n");
		return NULL;
	}
	return r;
}

static struct bf_recipe *parse_ok(const char *text)
{
	struct bf_err e;
	struct bf_recipe *r = parse(text, &e);
	if (!r)
		printf("  unexpected error: %s\n", e.msg);
	return r;
}

static double eval(const struct bf_setting *s, const char *tensor, double t)
{
	double v = -12345;
	const char *str = (const char *)1;
	if (bf_setting_eval(s, tensor, t, &v, &str) != 1)
		return -999;
	return v;
}

static const struct bf_setting *param(const struct bf_params *p, const char *name)
{
	const struct bf_param *q = bf_params_find(p, name);
	return q ? &q->set : NULL;
}

#define M1 "merge_method: linear\nmodels:\n  - model: a\n" /* 3 valid lines */

/* ---------------------------------------------------------------------------------------------
 * Conformance recipes
 */

BF_TEST(conformance_all_parse)
{
	static const struct { const char *name, *method; size_t n; bool slices; bool base; } cases[] = {
		{ "breadcrumbs", "breadcrumbs", 2, false, true },
		{ "breadcrumbs_ties", "breadcrumbs_ties", 3, false, true },
		{ "dare_ties", "dare_ties", 3, false, true },
		{ "della", "della", 2, false, true },
		{ "karcher", "karcher", 3, false, false },
		{ "linear", "linear", 3, false, false },
		{ "model_stock", "model_stock", 3, false, true },
		{ "multislerp", "multislerp", 3, false, true },
		{ "nearswap", "nearswap", 1, false, true },
		{ "nuslerp", "nuslerp", 2, false, true },
		{ "passthrough_frankenmerge", "passthrough", 2, true, false },
		{ "ram", "ram", 3, false, true },
		{ "sce", "sce", 3, false, true },
		{ "slerp_gradient", "slerp", 1, true, true },
		{ "task_arithmetic", "task_arithmetic", 2, false, true },
		{ "ties", "ties", 3, false, true },
		{ "ties_count", "ties", 3, false, true },
	};
	for (size_t i = 0; i < BF_ARRAY_LEN(cases); i++) {
		char path[256];
		snprintf(path, sizeof(path), "conformance/cases/%s.yaml", cases[i].name);
		struct bf_recipe *r = NULL;
		struct bf_err e = { { 0 } };
		int rc = bf_recipe_load(path, &r, &e);
		if (rc != 0 || !r) {
			BF_T_FAIL("%s: %s", path, e.msg);
			continue;
		}
		EXPECT_STR_EQ(r->merge_method, cases[i].method);
		EXPECT(r->uses_slices == cases[i].slices);
		EXPECT_EQ_U64(cases[i].slices ? r->n_slices : r->n_models, cases[i].n);
		EXPECT(cases[i].slices ? r->models == NULL : r->slices == NULL);
		EXPECT((r->base_model != NULL) == cases[i].base);
		if (r->base_model)
			EXPECT_STR_EQ(r->base_model, "fixtures/base");
		EXPECT_EQ_I64(r->dtype, BF_DT_BF16);
		EXPECT(!r->has_seed);
		EXPECT(r->tokenizer_source == NULL);
		EXPECT_STR_EQ(r->path, path);
		EXPECT_STR_EQ(r->dir, "conformance/cases");
		/* text is the exact file */
		FILE *f = fopen(path, "rb");
		char buf[8192];
		size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
		if (f)
			fclose(f);
		EXPECT_EQ_U64(r->text_len, n);
		EXPECT(n && !memcmp(r->text, buf, n) && r->text[n] == 0);
		for (size_t j = 0; j < r->n_models; j++) {
			EXPECT(!strncmp(r->models[j].model, "fixtures/", 9));
			EXPECT(!r->models[j].has_range);
		}
		bf_recipe_free(r);
	}
}

static struct bf_recipe *load_case(const char *name)
{
	char path[256];
	struct bf_recipe *r = NULL;
	struct bf_err e = { { 0 } };
	snprintf(path, sizeof(path), "conformance/cases/%s.yaml", name);
	if (bf_recipe_load(path, &r, &e) < 0)
		printf("  %s: %s\n", path, e.msg);
	return r;
}

BF_TEST(conformance_ties)
{
	struct bf_recipe *r = load_case("ties");
	EXPECT(r != NULL);
	if (!r)
		return;
	const struct bf_source *m = r->models;
	EXPECT_STR_EQ(m[0].model, "fixtures/ft_a");
	EXPECT_EQ_I64(m[0].pos.line, 3);
	EXPECT_EQ_I64(m[0].pos.col, 12);
	const struct bf_setting *d = param(&m[0].params, "density");
	EXPECT(d && d->kind == BF_SET_GRADIENT && d->n_grad == 2);
	if (d && d->n_grad == 2) {
		EXPECT_EQ_DBL(d->grad[0], 0.3);
		EXPECT_EQ_DBL(d->grad[1], 0.7);
	}
	EXPECT_EQ_I64(bf_params_find(&m[0].params, "density")->pos.line, 5);
	EXPECT_EQ_I64(bf_params_find(&m[0].params, "density")->pos.col, 7);
	const struct bf_setting *w = param(&m[0].params, "weight");
	EXPECT(w && w->kind == BF_SET_NUM && w->num == 1.0);
	w = param(&m[1].params, "weight");
	EXPECT(w && w->kind == BF_SET_GRADIENT && w->n_grad == 3);
	EXPECT_EQ_DBL(eval(w, "x", 0.5), 0.6);
	w = param(&m[2].params, "weight");
	EXPECT(w && w->kind == BF_SET_CONDS && w->n_conds == 2);
	if (w && w->n_conds == 2) {
		EXPECT_STR_EQ(w->conds[0].filter, "mlp");
		EXPECT(w->conds[1].filter == NULL);
		EXPECT_EQ_I64(w->conds[0].pos.line, 15);
		EXPECT_EQ_I64(w->conds[0].pos.col, 11);
	}
	EXPECT_EQ_DBL(eval(w, "model.layers.2.mlp.down_proj.weight", 0), 0.5);
	EXPECT_EQ_DBL(eval(w, "model.layers.2.self_attn.q_proj.weight", 0), 0.3);
	EXPECT(param(&m[2].params, "density")->num == 0.5);
	const struct bf_setting *nz = param(&r->params, "normalize");
	EXPECT(nz && nz->kind == BF_SET_BOOL && nz->num == 1.0);
	EXPECT(param(&r->params, "int8_mask") && param(&r->params, "int8_mask")->kind == BF_SET_BOOL);
	EXPECT_EQ_U64(r->params.n, 2);
	EXPECT_EQ_I64(r->out_dtype, BF_DT_NONE);
	EXPECT_EQ_I64(r->method_pos.line, 19);
	EXPECT_EQ_I64(r->method_pos.col, 15);
	EXPECT_EQ_I64(r->base_pos.line, 18);
	EXPECT_EQ_I64(r->dtype_pos.line, 23);
	EXPECT_EQ_I64(r->dtype_pos.col, 8);
	EXPECT_EQ_I64(r->models_pos.line, 2);
	bf_recipe_free(r);
}

BF_TEST(conformance_passthrough)
{
	struct bf_recipe *r = load_case("passthrough_frankenmerge");
	EXPECT(r != NULL);
	if (!r)
		return;
	EXPECT(r->uses_slices && r->n_slices == 2 && r->n_models == 0);
	const struct bf_slice *s0 = &r->slices[0], *s1 = &r->slices[1];
	EXPECT_EQ_U64(s0->n_src, 1);
	EXPECT_STR_EQ(s0->src[0].model, "fixtures/ft_a");
	EXPECT(s0->src[0].has_range);
	EXPECT_EQ_I64(s0->src[0].layer_start, 0);
	EXPECT_EQ_I64(s0->src[0].layer_end, 3);
	EXPECT_EQ_I64(s0->src[0].range_pos.line, 7);
	EXPECT_EQ_I64(s0->src[0].range_pos.col, 22);
	EXPECT_EQ_U64(s1->n_src, 1);
	EXPECT_STR_EQ(s1->src[0].model, "fixtures/ft_b");
	EXPECT_EQ_I64(s1->src[0].layer_start, 1);
	EXPECT_EQ_I64(s1->src[0].layer_end, 4);
	EXPECT(s1->base_model == NULL && s1->params.n == 0);
	EXPECT_EQ_I64(s1->pos.line, 8);
	const struct bf_setting *sc = param(&s1->src[0].params, "scale");
	EXPECT(sc && sc->kind == BF_SET_CONDS);
	EXPECT_EQ_DBL(eval(sc, "model.layers.1.self_attn.o_proj.weight", 0), 0.5);
	EXPECT_EQ_DBL(eval(sc, "model.layers.1.mlp.up_proj.weight", 0), 1.0);
	EXPECT(param(&s0->src[0].params, "scale") == NULL);
	EXPECT(r->params.n == 0);
	bf_recipe_free(r);
}

BF_TEST(conformance_linear)
{
	struct bf_recipe *r = load_case("linear");
	EXPECT(r != NULL);
	if (!r)
		return;
	const struct bf_setting *nz = param(&r->params, "normalize");
	EXPECT(nz && nz->kind == BF_SET_CONDS && nz->n_conds == 2);
	if (nz && nz->n_conds == 2) {
		EXPECT_EQ_U64(nz->conds[0].value.kind, BF_SET_BOOL);
		EXPECT_EQ_U64(nz->conds[1].value.kind, BF_SET_BOOL);
	}
	EXPECT_EQ_DBL(eval(nz, "model.layers.0.mlp.gate_proj.weight", 0), 0.0);
	EXPECT_EQ_DBL(eval(nz, "model.layers.0.self_attn.k_proj.weight", 0), 1.0);
	EXPECT_EQ_DBL(eval(nz, "model.embed_tokens.weight", 0), 1.0);
	const struct bf_setting *w = param(&r->models[2].params, "weight");
	EXPECT(w && w->kind == BF_SET_GRADIENT && w->n_grad == 3);
	EXPECT_EQ_DBL(eval(w, "x", 0), 0.1);
	EXPECT_EQ_DBL(eval(w, "x", 1), 0.4);
	EXPECT_EQ_DBL(eval(w, "x", 0.5), 0.25);
	EXPECT_EQ_DBL(param(&r->models[1].params, "weight")->num, 0.5);
	bf_recipe_free(r);
}

BF_TEST(conformance_others)
{
	struct bf_recipe *r = load_case("slerp_gradient");
	EXPECT(r && r->n_slices == 1 && r->slices[0].n_src == 2);
	if (r) {
		const struct bf_setting *t = param(&r->params, "t");
		EXPECT(t && t->kind == BF_SET_CONDS && t->n_conds == 3);
		EXPECT_EQ_DBL(eval(t, "model.layers.1.self_attn.v_proj.weight", 0.25), 0.5);
		EXPECT_EQ_DBL(eval(t, "model.layers.1.mlp.up_proj.weight", 0.25), 0.5);
		EXPECT_EQ_DBL(eval(t, "model.layers.1.mlp.up_proj.weight", 0.5), 0.7);
		EXPECT_EQ_DBL(eval(t, "model.layers.1.self_attn.v_proj.weight", 0.5), 0.3);
		EXPECT_EQ_DBL(eval(t, "model.norm.weight", 0.5), 0.5);
		EXPECT_EQ_I64(r->slices[0].src[1].layer_end, 4);
		bf_recipe_free(r);
	}
	r = load_case("karcher");
	EXPECT(r && r->base_model == NULL);
	if (r) {
		EXPECT_EQ_DBL(param(&r->params, "tol")->num, 1.0e-6);
		EXPECT_EQ_DBL(param(&r->params, "max_iter")->num, 20);
		EXPECT(r->models[2].params.n == 0);
		bf_recipe_free(r);
	}
	r = load_case("ties_count");
	EXPECT(r != NULL);
	if (r) {
		const struct bf_setting *cm = param(&r->params, "consensus_method");
		EXPECT(cm && cm->kind == BF_SET_STR);
		const char *s = NULL;
		double v = 7;
		EXPECT(bf_setting_eval(cm, "x", 0, &v, &s) == 1);
		EXPECT_STR_EQ(s, "count");
		bf_recipe_free(r);
	}
	r = load_case("task_arithmetic");
	EXPECT(r && r->out_dtype == BF_DT_F32);
	if (r) {
		EXPECT_EQ_DBL(param(&r->params, "lambda")->num, 0.9);
		const struct bf_setting *w = param(&r->models[1].params, "weight");
		EXPECT_EQ_DBL(eval(w, "model.layers.0.mlp.up_proj.weight", 0), 0.8);
		EXPECT_EQ_DBL(eval(w, "lm_head.weight", 0), 0.5);
		bf_recipe_free(r);
	}
	r = load_case("model_stock");
	EXPECT(r && r->out_dtype == BF_DT_F16 && r->out_dtype_pos.line == 12);
	if (r) {
		EXPECT_STR_EQ(r->models[0].model, "fixtures/ft_a_f16");
		EXPECT(param(&r->params, "filter_wise")->kind == BF_SET_BOOL);
		EXPECT_EQ_DBL(param(&r->params, "filter_wise")->num, 0.0);
		bf_recipe_free(r);
	}
	r = load_case("nearswap");
	EXPECT(r && r->n_models == 1);
	if (r) {
		EXPECT_EQ_DBL(param(&r->params, "t")->num, 0.0015);
		bf_recipe_free(r);
	}
	r = load_case("della");
	EXPECT(r != NULL);
	if (r) {
		EXPECT_EQ_DBL(param(&r->models[1].params, "epsilon")->num, 0.15);
		bf_recipe_free(r);
	}
}

/* ---------------------------------------------------------------------------------------------
 * Evaluation
 */

BF_TEST(gradient_eval)
{
	struct bf_recipe *r = parse_ok("merge_method: slerp\nslices:\n  - sources:\n"
				       "      - {model: a, layer_range: [0, 40]}\n"
				       "      - {model: b, layer_range: [0, 40]}\n"
				       "parameters:\n  t: [0, 0.5, 0.3, 0.7, 1]\n");
	EXPECT(r != NULL);
	if (!r)
		return;
	const struct bf_setting *t = param(&r->params, "t");
	EXPECT(t && t->kind == BF_SET_GRADIENT && t->n_grad == 5);
	EXPECT_EQ_DBL(eval(t, "x", 10.0 / 39.0), 0.4948717948717949);
	EXPECT_EQ_DBL(eval(t, "x", 20.0 / 39.0), 0.32051282051282043);
	EXPECT_EQ_DBL(eval(t, "x", 39.0 / 39.0), 1.0);
	EXPECT_EQ_DBL(eval(t, "x", 0.0 / 39.0), 0.0);
	EXPECT_NEAR(eval(t, "x", 1.0 / 39.0), 0.05128205128205128, 1e-16);
	EXPECT_EQ_DBL(eval(t, "x", 0.25), 0.5);  /* on a knot */
	EXPECT_EQ_DBL(eval(t, "x", 0.625), 0.5); /* halfway between 0.3 and 0.7 */
	/* out-of-range t is clamped, never out of bounds */
	EXPECT_EQ_DBL(eval(t, "x", 7.0), 1.0);
	EXPECT_EQ_DBL(eval(t, "x", -1.0), 0.0);
	EXPECT_EQ_I64(t->pos.line, 7);
	EXPECT_EQ_I64(t->pos.col, 6);
	bf_recipe_free(r);

	/* a one-element gradient is that element everywhere */
	struct bf_setting one = { .kind = BF_SET_GRADIENT, .grad = (double[]){ 0.25 }, .n_grad = 1 };
	EXPECT_EQ_DBL(eval(&one, "x", 0), 0.25);
	EXPECT_EQ_DBL(eval(&one, "x", 1), 0.25);
	/* the formula, literally: (1 - f) * L[i0] + f * L[i1] in double */
	struct bf_setting g = { .kind = BF_SET_GRADIENT, .grad = (double[]){ 0.1, 0.9, -0.3 }, .n_grad = 3 };
	double tt = 0.3, s = tt * 2, f = s - 0;
	EXPECT_EQ_DBL(eval(&g, "x", tt), (1 - f) * 0.1 + f * 0.9);
	tt = 0.8;
	s = tt * 2;
	f = s - 1;
	EXPECT_EQ_DBL(eval(&g, "x", tt), (1 - f) * 0.9 + f * -0.3);
}

BF_TEST(conditional_eval)
{
	struct bf_recipe *r = parse_ok(
		"merge_method: linear\n"
		"models:\n  - model: a\n"
		"parameters:\n"
		"  w:\n"
		"    - filter: self_attn\n      value: [0, 1]\n"
		"    - filter: layers.1.\n      value: 0.25\n"
		"    - filter: '*'\n      value: fixed\n"
		"  v:\n"
		"    - filter: MLP\n      value: 1\n"
		"    - {filter: 'mlp', value: 2}\n"
		"    - {filter: ~, value: 3}\n"
		"  u:\n"
		"    - filter: mlp\n      value: true\n");
	EXPECT(r != NULL);
	if (!r)
		return;
	const struct bf_setting *w = param(&r->params, "w"), *v = param(&r->params, "v"),
		*u = param(&r->params, "u");
	EXPECT(w && v && u);
	if (!w || !v || !u) {
		bf_recipe_free(r);
		return;
	}
	EXPECT(w->conds[2].filter == NULL); /* "*" */
	EXPECT(v->conds[2].filter == NULL); /* null */
	/* first match wins, in order; the value is evaluated with the same t */
	EXPECT_EQ_DBL(eval(w, "model.layers.1.self_attn.q_proj.weight", 0.5), 0.5);
	EXPECT_EQ_DBL(eval(w, "model.layers.1.mlp.up_proj.weight", 0.5), 0.25);
	double num = 9;
	const char *str = NULL;
	EXPECT(bf_setting_eval(w, "model.norm.weight", 0, &num, &str) == 1);
	EXPECT_STR_EQ(str, "fixed");
	/* case-sensitive substring */
	EXPECT_EQ_DBL(eval(v, "model.layers.0.mlp.up_proj.weight", 0), 2);
	EXPECT_EQ_DBL(eval(v, "model.layers.0.MLP.x", 0), 1);
	EXPECT_EQ_DBL(eval(v, "lm_head.weight", 0), 3);
	/* no match: 0, "not set at this level" */
	str = (const char *)1;
	EXPECT(bf_setting_eval(u, "model.layers.0.self_attn.q_proj.weight", 0, &num, &str) == 0);
	EXPECT(str == NULL);
	EXPECT_EQ_DBL(eval(u, "model.layers.0.mlp.up_proj.weight", 0), 1.0);
	/* scalars ignore tensor and t; NULL outputs are allowed */
	struct bf_setting sc = { .kind = BF_SET_NUM, .num = -2.5 };
	EXPECT_EQ_DBL(eval(&sc, NULL, 0.7), -2.5);
	EXPECT(bf_setting_eval(&sc, "x", 0, NULL, NULL) == 1);
	EXPECT(bf_params_find(&r->params, "nope") == NULL);
	EXPECT(bf_params_find(NULL, "w") == NULL);
	EXPECT_EQ_I64(bf_params_find(&r->params, "v")->pos.line, 12);
	EXPECT_EQ_I64(bf_params_find(&r->params, "v")->pos.col, 3);
	bf_recipe_free(r);
}

/* ---------------------------------------------------------------------------------------------
 * Accepted forms
 */

BF_TEST(scalar_typing)
{
	struct bf_recipe *r = parse_ok(
		M1 "parameters:\n"
		"  a: 1e-5\n  b: .5\n  c: 5.\n  d: -0.3\n  e: +1\n  f: 1.0e+3\n  g: 0\n  h: -0\n"
		"  i: True\n  j: FALSE\n  k: count\n  l: '0.5'\n  m: \"true\"\n  n: 1e-400\n"
		"  o: 1.5e308\n  p: 0.1.2\n  q: 1_a\n  r: tRue\n  s: 00.5\n  t: 12345678901234567890\n");
	EXPECT(r != NULL);
	if (!r)
		return;
	const struct bf_params *p = &r->params;
	EXPECT_EQ_U64(p->n, 20);
#define NUM(name, val) do { const struct bf_setting *_s = param(p, name); \
	EXPECT(_s && _s->kind == BF_SET_NUM); if (_s) EXPECT_EQ_DBL(_s->num, val); } while (0)
#define BOOLV(name, val) do { const struct bf_setting *_s = param(p, name); \
	EXPECT(_s && _s->kind == BF_SET_BOOL); if (_s) EXPECT_EQ_DBL(_s->num, val); } while (0)
#define STR(name, val) do { const struct bf_setting *_s = param(p, name); \
	EXPECT(_s && _s->kind == BF_SET_STR); if (_s) EXPECT_STR_EQ(_s->str, val); } while (0)
	NUM("a", 1e-5);
	NUM("b", 0.5);
	NUM("c", 5.0);
	NUM("d", -0.3);
	NUM("e", 1.0);
	NUM("f", 1000.0);
	NUM("g", 0.0);
	NUM("h", 0.0);
	BOOLV("i", 1.0);
	BOOLV("j", 0.0);
	STR("k", "count");
	STR("l", "0.5");
	STR("m", "true");
	NUM("n", 0.0); /* underflow reads as 0, as Python's float() does */
	NUM("o", 1.5e308);
	STR("p", "0.1.2");
	STR("q", "1_a");
	STR("r", "tRue");
	NUM("s", 0.5);
	NUM("t", 12345678901234567890.0);
#undef NUM
#undef BOOLV
#undef STR
	bf_recipe_free(r);
}

BF_TEST(model_references)
{
	struct bf_recipe *r = parse_ok(
		"merge_method: ties\n"
		"models:\n"
		"  - model: org/name@main\n"
		"  - model: {model: {path: /models/x, revision: abc123}}\n"
		"  - model:\n      model:\n        path: ./rel\n"
		"  - model: {model: 'p@r'}\n"
		"  - model: \"quoted/path\"\n"
		"base_model: {model: {path: base}}\n"
		"tokenizer_source: base\n");
	EXPECT(r != NULL);
	if (!r)
		return;
	EXPECT_EQ_U64(r->n_models, 5);
	EXPECT_STR_EQ(r->models[0].model, "org/name@main");
	EXPECT_STR_EQ(r->models[1].model, "/models/x@abc123");
	EXPECT_STR_EQ(r->models[2].model, "./rel");
	EXPECT_STR_EQ(r->models[3].model, "p@r");
	EXPECT_STR_EQ(r->models[4].model, "quoted/path");
	EXPECT_EQ_I64(r->models[1].pos.line, 4);
	EXPECT_EQ_I64(r->models[1].pos.col, 12);
	EXPECT_STR_EQ(r->base_model, "base");
	EXPECT_STR_EQ(r->tokenizer_source, "base");
	EXPECT_EQ_I64(r->tokenizer_pos.line, 11);
	EXPECT_EQ_I64(r->dtype, BF_DT_NONE);
	bf_recipe_free(r);

	r = parse_ok(M1 "tokenizer_source: org/tok@v2\n");
	EXPECT(r && r->tokenizer_source && !strcmp(r->tokenizer_source, "org/tok@v2"));
	bf_recipe_free(r);
}

BF_TEST(slices_and_misc)
{
	struct bf_recipe *r = parse_ok(
		"slices:\n"
		"  - sources:\n"
		"      - model: a\n        layer_range: [0, 2147483647]\n"
		"      - model: b\n        layer_range: [+3, 3]\n        parameters: {weight: 2}\n"
		"    base_model: c@v1\n"
		"    parameters: {t: 0.5}\n"
		"    residual_weight: 0.1\n"
		"  - sources: [{model: d, layer_range: [7, 7]}]\n"
		"merge_method: slerp\n"
		"random_seed: 18446744073709551615\n"
		"dtype: torch.float16\n"
		"out_dtype: float32\n");
	EXPECT(r != NULL);
	if (!r)
		return;
	EXPECT(r->uses_slices && r->n_slices == 2);
	const struct bf_slice *s = &r->slices[0];
	EXPECT_EQ_U64(s->n_src, 2);
	EXPECT_EQ_I64(s->src[0].layer_end, 2147483647);
	EXPECT_EQ_I64(s->src[1].layer_start, 3);
	EXPECT_EQ_I64(s->src[1].layer_end, 3);
	EXPECT_EQ_DBL(param(&s->src[1].params, "weight")->num, 2);
	EXPECT_STR_EQ(s->base_model, "c@v1");
	EXPECT_EQ_I64(s->base_pos.line, 8);
	EXPECT_EQ_I64(s->base_pos.col, 17);
	EXPECT_EQ_DBL(param(&s->params, "t")->num, 0.5);
	EXPECT_EQ_I64(r->slices[1].src[0].layer_start, 7);
	EXPECT(r->slices[1].base_model == NULL);
	EXPECT(r->base_model == NULL);
	EXPECT(r->has_seed);
	EXPECT_EQ_U64(r->seed, UINT64_MAX);
	EXPECT_EQ_I64(r->seed_pos.line, 13);
	EXPECT_EQ_I64(r->dtype, BF_DT_F16);
	EXPECT_EQ_I64(r->out_dtype, BF_DT_F32);
	EXPECT_EQ_I64(r->slices_pos.line, 1);
	EXPECT_STR_EQ(r->dir, ".");
	bf_recipe_free(r);

	struct bf_err e;
	const char *y = M1 "random_seed: 0\n";
	EXPECT(bf_recipe_parse(y, strlen(y), "/abs/dir/r.yaml", &r, &e) == 0);
	EXPECT(r && r->has_seed && r->seed == 0);
	if (r) {
		EXPECT_STR_EQ(r->dir, "/abs/dir");
		EXPECT_STR_EQ(r->path, "/abs/dir/r.yaml");
		EXPECT_EQ_U64(r->text_len, strlen(y));
		EXPECT_STR_EQ(r->text, y);
	}
	bf_recipe_free(r);
	EXPECT(bf_recipe_parse(y, strlen(y), "/r.yaml", &r, &e) == 0);
	EXPECT(r && !strcmp(r->dir, "/"));
	bf_recipe_free(r);
	bf_recipe_free(NULL);

	r = (struct bf_recipe *)1;
	bf_err_clear(&e);
	EXPECT(bf_recipe_load("conformance/cases/does-not-exist.yaml", &r, &e) < 0);
	EXPECT(r == NULL);
	EXPECT_STR_CONTAINS(e.msg, "conformance/cases/does-not-exist.yaml: no such file");
}

/* ---------------------------------------------------------------------------------------------
 * Rejections: each with the message and the position of the offending node
 */

struct bad {
	const char *yaml;
	const char *pos;  /* "L:C" */
	const char *sub;
};

static const struct bad bad_cases[] = {
	/* keys */
	{ "merge_methd: linear\nmodels:\n  - model: a\n", "1:1",
	  "unknown key 'merge_methd' (did you mean 'merge_method'?)" },
	{ M1 "xyzzy: 1\n", "4:1", "unknown key 'xyzzy' (valid keys: merge_method, models, slices" },
	{ M1 "    paramters: {weight: 1}\n", "4:5",
	  "unknown key 'paramters' in a models entry (did you mean 'parameters'?)" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_rnge: [0, 1]\n",
	  "5:9", "unknown key 'layer_rnge' in a slice source (did you mean 'layer_range'?)" },
	{ "merge_method: slerp\nslices:\n  - source: []\n", "3:5",
	  "unknown key 'source' in a slice (did you mean 'sources'?)" },
	{ M1 "parameters:\n  w:\n    - filtr: mlp\n      value: 1\n", "6:7",
	  "unknown key 'filtr' in a conditional parameter (did you mean 'filter'?)" },
	{ M1 "merge_method: ties\n", "4:1", "duplicate key 'merge_method' (first at line 1)" },
	{ M1 "    parameters:\n      weight: 1\n      weight: 2\n", "6:7",
	  "duplicate key 'weight' (first at line 5)" },
	{ M1 "modules: {}\n", "4:1", "'modules' is not supported by blendfs (use models: or slices:)" },
	{ M1 "tokenizer: {source: base}\n", "4:1", "'tokenizer' is not supported by blendfs" },
	{ M1 "chat_template: chatml\n", "4:1", "'chat_template' is not supported by blendfs" },
	{ M1 "tokenizer_source: union\n", "4:19",
	  "tokenizer_source: union is not supported yet (use base or a model)" },
	/* YAML-level hazards, through the recipe parser */
	{ "merge_method: &m linear\nmodels:\n  - model: a\n", "1:15", "anchors ('&m') are not allowed" },
	{ "merge_method: linear\nmodels:\n  - model: *a\n", "3:12", "aliases ('*a') are not allowed" },
	{ "merge_method: linear\nmodels: &l [{model: a}]\nslices: *l\n", "2:9", "anchors" },
	{ "merge_method: !!python/object:os.system linear\nmodels:\n  - model: a\n", "1:15",
	  "explicit tags" },
	{ M1 "---\nmerge_method: ties\n", "4:1", "more than one YAML document" },
	{ "merge_method: linear\nmodels: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
	  "2:40", "nesting deeper than 32 levels" },
	{ "\xff\xfem\0", "1:1", "UTF-16/UTF-32 byte order mark" },
	{ "merge_method: lin\xe9" "ar\n", "1:19", "invalid trailing UTF-8 octet" },
	{ "merge_method: linear\nmodels:\n\t- model: a\n", "3:1", "found character that cannot start any token" },
	{ "", "1:1", "the document is empty" },
	{ "- merge_method: linear\n", "1:1", "a recipe must be a mapping" },
	/* layer_range */
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: 5\n",
	  "5:22", "layer_range must be a list [start, end], not a scalar" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 1, 2]\n",
	  "5:22", "layer_range must have exactly 2 values [start, end], not 3" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: [0]\n",
	  "5:22", "exactly 2 values" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 1.5]\n",
	  "5:26", "layer_range value must be an integer, not '1.5'" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: [a, 2]\n",
	  "5:23", "layer_range value must be an integer, not 'a'" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: ['0', 2]\n",
	  "5:23", "must be an integer" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: [-1, 2]\n",
	  "5:23", "layer_range value -1 is negative" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: [5, 2]\n",
	  "5:22", "layer_range [5, 2] is reversed: start must be <= end" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 2147483648]\n",
	  "5:26", "too large" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 99999999999999999999]\n",
	  "5:26", "out of range" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 010]\n",
	  "5:26", "leading zero" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        layer_range: {a: 1}\n",
	  "5:22", "layer_range must be a list" },
	{ "merge_method: slerp\nslices:\n  - sources:\n      - model: a\n        parameters: {t: 1}\n",
	  "4:9", "missing required key 'layer_range' in a slice source" },
	/* scalar typing */
	{ M1 "parameters: {normalize: yes}\n", "4:25", "'yes' is ambiguous" },
	{ M1 "parameters: {normalize: Off}\n", "4:25", "write true or false" },
	{ M1 "parameters: {normalize: ON}\n", "4:25", "write true or false" },
	{ M1 "parameters: {t: .nan}\n", "4:17", "'.nan': must be a finite number" },
	{ M1 "parameters: {t: -.Inf}\n", "4:17", "must be a finite number" },
	{ M1 "parameters: {t: inf}\n", "4:17", "must be a finite number" },
	{ M1 "parameters: {t: 0x1F}\n", "4:17", "'0x1F': hexadecimal numbers are not accepted" },
	{ M1 "parameters: {t: 0o17}\n", "4:17", "octal numbers are not accepted" },
	{ M1 "parameters: {t: 0b101}\n", "4:17", "binary numbers are not accepted" },
	{ M1 "parameters: {t: 1_000}\n", "4:17", "'1_000': digit separators ('_') are not accepted" },
	{ M1 "parameters: {t: 0.000_1}\n", "4:17", "digit separators" },
	{ M1 "parameters: {t: 1e999}\n", "4:17", "'1e999' is out of range for a double" },
	{ M1 "parameters: {t: -1e999}\n", "4:17", "out of range" },
	{ M1 "parameters: {t: 017}\n", "4:17", "'017': a leading zero makes it octal" },
	{ M1 "parameters:\n  weight:\n", "5:10", "a value is required" },
	{ M1 "parameters:\n  weight: ~\n", "5:11", "a value is required" },
	{ M1 "parameters:\n  weight: null\n", "5:11", "a value is required" },
	/* parameter shapes */
	{ M1 "parameters:\n  weight: [0.5, {filter: mlp, value: 1}]\n", "5:17",
	  "a parameter list must hold only numbers (a gradient) or only {filter, value} entries" },
	{ M1 "parameters:\n  weight: [{filter: mlp, value: 1}, 0.5]\n", "5:37", "not both" },
	{ M1 "parameters:\n  weight: {filter: mlp, value: 0.5}\n", "5:11",
	  "a conditional parameter must be a list of {filter, value} entries" },
	{ M1 "parameters:\n  weight:\n    - filter: mlp\n      value: [{filter: x, value: 1}]\n", "7:14",
	  "nested conditional parameters are not supported" },
	{ M1 "parameters:\n  weight:\n    - filter: mlp\n      value: {filter: x, value: 1}\n", "7:14",
	  "nested conditional parameters are not supported" },
	{ M1 "parameters:\n  weight:\n    - filter: mlp\n", "6:7",
	  "missing required key 'value' in a conditional parameter entry" },
	{ M1 "parameters:\n  weight:\n    - filter: [mlp]\n      value: 1\n", "6:15", "filter must be a string" },
	{ M1 "parameters:\n  t: [0.1, abc]\n", "5:12", "gradient values must be numbers, not 'abc'" },
	{ M1 "parameters:\n  t: [0.1, true]\n", "5:12", "gradient values must be numbers, not 'true'" },
	{ M1 "parameters:\n  t: [0.1, '0.2']\n", "5:12", "gradient values must be numbers" },
	{ M1 "parameters:\n  t: [0.1, ~]\n", "5:12", "gradient values must be numbers" },
	{ M1 "parameters:\n  t: [[0.1]]\n", "5:7", "a list inside a parameter list" },
	{ M1 "parameters:\n  t: []\n", "5:6", "empty list: a gradient needs 1 to 1024 numbers" },
	{ M1 "parameters: [1, 2]\n", "4:13", "parameters must be a mapping of name: value, not a list" },
	{ M1 "parameters:\n", "4:12", "parameters: a value is required" },
	{ M1 "    parameters: {'': 1}\n", "4:18", "a parameter name must be a non-empty string" },
	/* models / slices */
	{ "merge_method: linear\nmodels: []\n", "2:9", "models is empty" },
	{ "merge_method: linear\nmodels:\n", "2:8", "models must be a list, not a scalar" },
	{ M1 "slices:\n  - sources: [{model: a, layer_range: [0, 1]}]\n", "4:1",
	  "both models: and slices: are given (models: at line 2); use one" },
	{ "slices: [{sources: [{model: a, layer_range: [0, 1]}]}]\nmerge_method: slerp\nmodels: [{model: a}]\n",
	  "3:1", "both models: and slices: are given (slices: at line 1)" },
	{ "merge_method: linear\nbase_model: a\n", "1:1",
	  "the recipe needs models: (a whole-model merge) or slices: (layer ranges); it has neither" },
	{ "models:\n  - model: a\ndtype: float16\n", "1:1", "missing required key 'merge_method'" },
	{ "merge_method:\nmodels:\n  - model: a\n", "1:14", "merge_method: a value is required" },
	{ "merge_method: 5\nmodels:\n  - model: a\n", "1:15", "merge_method must be a string, not '5'" },
	{ "merge_method: [linear]\nmodels:\n  - model: a\n", "1:15", "merge_method must be a string, not a list" },
	{ "merge_method: linear\nmodels:\n  - a\n  - b\n", "3:5",
	  "models entries must be mappings like '- model: NAME', not a plain string" },
	{ "merge_method: linear\nmodels:\n  - parameters: {weight: 1}\n", "3:5",
	  "missing required key 'model' in a models entry" },
	{ "merge_method: slerp\nslices:\n  - base_model: a\n", "3:5", "missing required key 'sources' in a slice" },
	{ "merge_method: slerp\nslices:\n  - sources: []\n", "3:14", "sources is empty" },
	{ "merge_method: slerp\nslices: []\n", "2:9", "slices is empty" },
	{ "merge_method: slerp\nslices:\n  - sources: [{model: a, layer_range: [0, 1]}]\n    residual_weight: big\n",
	  "4:22", "residual_weight must be a number, not 'big'" },
	/* model references */
	{ "merge_method: linear\nmodels:\n  - model: org/base+org/lora\n", "3:12",
	  "LoRA adapters ('+') are not supported" },
	{ "merge_method: linear\nmodels:\n  - model: org/m@rev@other\n", "3:12",
	  "model 'org/m@rev@other' has more than one '@'" },
	{ "merge_method: linear\nmodels:\n  - model: '@rev'\n", "3:12", "empty path before '@'" },
	{ "merge_method: linear\nmodels:\n  - model: org/m@\n", "3:12", "empty revision after '@'" },
	{ "merge_method: linear\nmodels:\n  - model: ''\n", "3:12", "model must be a non-empty string" },
	{ "merge_method: linear\nmodels:\n  - model:\n", "3:11", "model: a value is required" },
	{ "merge_method: linear\nmodels:\n  - model: [a]\n", "3:12", "model must be a model reference" },
	{ "merge_method: linear\nmodels:\n  - model: {model: {path: a}, lora: {path: b}}\n", "3:31",
	  "'lora' is not supported by blendfs" },
	{ "merge_method: linear\nmodels:\n  - model: {model: a, override_architecture: X}\n", "3:23",
	  "'override_architecture' is not supported by blendfs" },
	{ "merge_method: linear\nmodels:\n  - model: {model: {path: a, rev: b}}\n", "3:30",
	  "unknown key 'rev' in a model path (did you mean 'revision'?)" },
	{ "merge_method: linear\nmodels:\n  - model: {model: {revision: b}}\n", "3:20",
	  "missing required key 'path' in a model path" },
	{ "merge_method: linear\nmodels:\n  - model: {model: {path: a@b}}\n", "3:27", "path 'a@b' must not contain '@'" },
	{ "merge_method: linear\nmodels:\n  - model: {}\n", "3:12", "missing required key 'model' in a model reference" },
	{ M1 "base_model: x+y\n", "4:13", "LoRA adapters" },
	{ M1 "tokenizer_source: a@b@c\n", "4:19", "more than one '@'" },
	/* dtype */
	{ M1 "dtype: float64\n", "4:8", "dtype float64 is not supported for merging (use bfloat16, float16 or float32)" },
	{ M1 "dtype: int64\n", "4:8", "dtype int64 is not supported for merging (use bfloat16, float16 or float32)" },
	{ M1 "out_dtype: torch.int64\n", "4:12", "out_dtype int64 is not supported for merging" },
	{ M1 "dtype: bfloat\n", "4:8", "unknown dtype 'bfloat' (did you mean 'bfloat16'? valid: bfloat16, float16, float32)" },
	{ M1 "dtype: fp8\n", "4:8", "unknown dtype 'fp8' (valid: bfloat16, float16, float32)" },
	{ M1 "dtype: 16\n", "4:8", "dtype must be a string" },
	/* random_seed */
	{ M1 "random_seed: -1\n", "4:14", "random_seed must be >= 0, not -1" },
	{ M1 "random_seed: 1.5\n", "4:14", "random_seed must be an integer, not '1.5'" },
	{ M1 "random_seed: 1e3\n", "4:14", "random_seed must be an integer" },
	{ M1 "random_seed: '7'\n", "4:14", "random_seed must be an integer" },
	{ M1 "random_seed: 18446744073709551616\n", "4:14", "random_seed 18446744073709551616 is too large" },
	{ M1 "random_seed:\n", "4:13", "random_seed: a value is required" },
};

BF_TEST(bad_recipes)
{
	for (size_t i = 0; i < BF_ARRAY_LEN(bad_cases); i++) {
		const struct bad *b = &bad_cases[i];
		struct bf_recipe *r = (struct bf_recipe *)1;
		struct bf_err e;
		char pre[64];
		bf_err_clear(&e);
		size_t len = strlen(b->yaml);
		if (len == 2 && (unsigned char)b->yaml[0] == 0xff)
			len = 4; /* the UTF-16 case holds a NUL */
		int rc = bf_recipe_parse(b->yaml, len, "t.yaml", &r, &e);
		snprintf(pre, sizeof(pre), "t.yaml:%s: ", b->pos);
		if (rc == 0 || r != NULL || strncmp(e.msg, pre, strlen(pre)) || !strstr(e.msg, b->sub))
			BF_T_FAIL("case %zu (rc %d): want \"%s%s\", got \"%s\"\n    yaml: %s", i, rc, pre,
				  b->sub, e.msg, b->yaml);
		if (rc == 0 && r && r != (struct bf_recipe *)1)
			bf_recipe_free(r);
	}
	printf("  %zu bad recipes checked\n", BF_ARRAY_LEN(bad_cases));
}

/* Generated bad inputs: list caps. */
BF_TEST(bad_recipes_caps)
{
	char *buf = malloc(1 << 20);
	size_t off;
	struct bf_recipe *r;
	struct bf_err e;

	/* 64 models: fine; 65: too many */
	off = (size_t)sprintf(buf, "merge_method: linear\nmodels:\n");
	for (int i = 0; i < BF_MAX_MODELS; i++)
		off += (size_t)sprintf(buf + off, "  - model: m%d\n", i);
	r = parse_ok(buf);
	EXPECT(r && r->n_models == BF_MAX_MODELS);
	bf_recipe_free(r);
	off += (size_t)sprintf(buf + off, "  - model: one_more\n");
	EXPECT(parse(buf, &e) == NULL);
	EXPECT_STR_CONTAINS(e.msg, "t.yaml:3:3: models has 65 entries, more than the 64 allowed");

	/* 65 sources in one slice */
	off = (size_t)sprintf(buf, "merge_method: linear\nslices:\n  - sources:\n");
	for (int i = 0; i <= BF_MAX_MODELS; i++)
		off += (size_t)sprintf(buf + off, "      - {model: m%d, layer_range: [0, 1]}\n", i);
	EXPECT(parse(buf, &e) == NULL);
	EXPECT_STR_CONTAINS(e.msg, "t.yaml:4:7: sources has 65 entries, more than the 64 allowed");

	/* 4096 slices fine, 4097 not */
	off = (size_t)sprintf(buf, "merge_method: passthrough\nslices:\n");
	for (int i = 0; i < 4096; i++)
		off += (size_t)sprintf(buf + off, "- sources: [{model: m, layer_range: [%d, %d]}]\n", i, i + 1);
	r = parse_ok(buf);
	EXPECT(r && r->n_slices == 4096 && r->slices[4095].src[0].layer_end == 4096);
	bf_recipe_free(r);
	off += (size_t)sprintf(buf + off, "- sources: [{model: m, layer_range: [0, 1]}]\n");
	EXPECT(parse(buf, &e) == NULL);
	EXPECT_STR_CONTAINS(e.msg, "t.yaml:3:1: slices has 4097 entries, more than the 4096 allowed");

	/* gradient: 1024 values fine, 1025 not */
	off = (size_t)sprintf(buf, M1 "parameters:\n  t: [0");
	for (int i = 1; i < 1024; i++)
		off += (size_t)sprintf(buf + off, ", %d", i % 2);
	sprintf(buf + off, "]\n");
	r = parse_ok(buf);
	EXPECT(r && param(&r->params, "t")->n_grad == 1024);
	if (r)
		EXPECT_EQ_DBL(eval(param(&r->params, "t"), "x", 1.0), 1.0);
	bf_recipe_free(r);
	sprintf(buf + off, ", 1]\n");
	EXPECT(parse(buf, &e) == NULL);
	EXPECT_STR_CONTAINS(e.msg, "t.yaml:5:6: gradient has 1025 values, more than the 1024 allowed");

	/* conditionals: 256 entries fine, 257 not */
	off = (size_t)sprintf(buf, M1 "parameters:\n  w:\n");
	for (int i = 0; i < 256; i++)
		off += (size_t)sprintf(buf + off, "    - {filter: x%dx, value: %d}\n", i, i);
	r = parse_ok(buf);
	EXPECT(r && param(&r->params, "w")->n_conds == 256);
	if (r)
		EXPECT_EQ_DBL(eval(param(&r->params, "w"), "layer.x255x", 0), 255);
	bf_recipe_free(r);
	off += (size_t)sprintf(buf + off, "    - {value: 0}\n");
	EXPECT(parse(buf, &e) == NULL);
	EXPECT_STR_CONTAINS(e.msg, "t.yaml:6:5: conditional parameter has 257 entries, more than the 256 allowed");
	free(buf);
}

int main(void)
{
	RUN(conformance_all_parse);
	RUN(conformance_ties);
	RUN(conformance_passthrough);
	RUN(conformance_linear);
	RUN(conformance_others);
	RUN(gradient_eval);
	RUN(conditional_eval);
	RUN(scalar_typing);
	RUN(model_references);
	RUN(slices_and_misc);
	RUN(bad_recipes);
	RUN(bad_recipes_caps);
	return bf_test_report();
}
