/* fuzz_recipe.c: bytes -> bf_recipe_parse (libyaml events -> bf_yaml tree -> recipe schema), then
 * bf_recipe_free. libyaml itself is fuzzed by OSS-Fuzz; this target aims at blendfs's layer on
 * top of it: limits, rejections, scalar typing, the schema walk and every error path's cleanup.
 *
 * For a recipe that parses, every parameter setting at every level is evaluated
 * (bf_setting_eval) for a few tensor names and positions, as the planner would.
 *
 * Invariants: a rejection returns NULL with a message "fuzz/recipe.yaml:..." (the file named
 * first); an accepted recipe keeps the exact input bytes; evaluation never fails on a parsed
 * setting except "no entry matched" for conditionals (the planner range-checks the values).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_recipe.h"
#include "fuzz.h"

#define PATH "fuzz/recipe.yaml"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet();
	return 0;
}

static void eval_all(const struct bf_params *ps)
{
	static const char *const tensors[] = { "model.layers.3.mlp.up_proj.weight", "lm_head.weight", "", NULL };
	static const double ts[] = { 0.0, 0.25, 1.0, -1.0, 2.0, NAN };
	for (size_t i = 0; i < ps->n; i++) {
		const struct bf_param *p = &ps->v[i];
		FZ_CHECK(p->name && p->name[0], "parameter %zu has no name", i);
		FZ_CHECK(bf_params_find(ps, p->name) != NULL, "parameter %s not found", p->name);
		for (size_t a = 0; a < sizeof(tensors) / sizeof(tensors[0]); a++)
			for (size_t b = 0; b < sizeof(ts) / sizeof(ts[0]); b++) {
				double num = 0;
				const char *str = NULL;
				int r = bf_setting_eval(&p->set, tensors[a], ts[b], &num, &str);
				FZ_CHECK(r == 1 || p->set.kind == BF_SET_CONDS, "parameter %s did not evaluate", p->name);
				FZ_CHECK(!str || p->set.kind == BF_SET_STR || p->set.kind == BF_SET_CONDS, "%s", p->name);
			}
	}
}

static void check_source(const struct bf_source *s)
{
	FZ_CHECK(s->model && s->model[0], "source without a model");
	FZ_CHECK(!s->has_range || (s->layer_start >= 0 && s->layer_start <= s->layer_end),
		 "layer_range [%lld, %lld]", (long long)s->layer_start, (long long)s->layer_end);
	eval_all(&s->params);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bf_recipe *r = (struct bf_recipe *)1;
	struct bf_err err;
	bf_err_clear(&err);
	if (bf_recipe_parse((const char *)data, size, PATH, &r, &err) < 0) {
		FZ_CHECK(r == NULL, "failed parse left *out set");
		FZ_CHECK(!strncmp(err.msg, PATH ":", strlen(PATH) + 1), "message: '%s'", err.msg);
		return 0;
	}
	FZ_CHECK(r && r->text_len == size && !memcmp(r->text, data, size) && r->text[size] == 0, "text");
	FZ_CHECK(r->merge_method && r->merge_method[0], "no merge_method");
	FZ_CHECK(r->uses_slices ? (r->n_slices > 0 && r->n_models == 0) : (r->n_models > 0 && r->n_slices == 0),
		 "models %zu slices %zu", r->n_models, r->n_slices);
	for (size_t i = 0; i < r->n_models; i++)
		check_source(&r->models[i]);
	for (size_t s = 0; s < r->n_slices; s++) {
		FZ_CHECK(r->slices[s].n_src > 0 && r->slices[s].n_src <= BF_MAX_MODELS, "slice %zu", s);
		for (size_t i = 0; i < r->slices[s].n_src; i++)
			check_source(&r->slices[s].src[i]);
		eval_all(&r->slices[s].params);
	}
	eval_all(&r->params);
	bf_recipe_free(r);
	return 0;
}
