/* bf_recipe.h: a mergekit recipe, parsed and checked for shape, not yet for meaning.
 *
 * Accepts mergekit's YAML schema (mergekit-spec.md section 1): top-level keys merge_method,
 * models | slices, base_model, parameters, dtype, out_dtype, tokenizer_source, plus blendfs's
 * random_seed. Model entries {model, parameters}; slices {sources: [{model, layer_range,
 * parameters}], base_model, parameters, residual_weight (accepted, unused as in mergekit)}.
 * Model references: "PATH[@REV]" or {path, revision} under `model:`.
 *
 * Checked here (each error is "FILE:LINE:COL: message"):
 *   - unknown keys anywhere in the structure (with a "did you mean" hint); keys mergekit knows
 *     but blendfs does not implement (modules, tokenizer, chat_template, lora "+" refs,
 *     override_architecture, tokenizer_source: union) get a clear "not supported" message
 *   - types: merge_method string; models/slices/sources lists of mappings; layer_range a list of
 *     two integers 0 <= start <= end < 2^31; dtype names; random_seed an integer in [0, 2^64)
 *   - exactly one of models / slices, non-empty, at most BF_MAX_MODELS sources per slice
 *   - parameter values: a number, true/false, a string (for enum parameters such as
 *     consensus_method), a gradient (non-empty list of at most 1024 numbers), or a conditional
 *     list of {filter, value} mappings whose value is any of the former (no nested lists of
 *     conditionals); numbers must be finite (no .nan/.inf), no hex/octal/underscores
 *   - a single {filter, value} mapping not inside a list is rejected (mergekit fails on it later)
 * NOT checked here: parameter names and ranges (they depend on the method: bf_plan validates them
 * against the method table, using the positions stored below), model existence, layer counts.
 */
#ifndef BF_RECIPE_H
#define BF_RECIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "bf_common.h"
#include "bf_dtype.h"

struct bf_pos { int line, col; }; /* 1-based; {0,0} = not present */

enum bf_set_kind { BF_SET_NUM, BF_SET_BOOL, BF_SET_STR, BF_SET_GRADIENT, BF_SET_CONDS };

struct bf_cond;
struct bf_setting {
	enum bf_set_kind kind;
	struct bf_pos pos;
	double num;              /* NUM; BOOL as 0.0 / 1.0 */
	char *str;               /* STR */
	double *grad;            /* GRADIENT */
	size_t n_grad;
	struct bf_cond *conds;   /* CONDS */
	size_t n_conds;
};

struct bf_cond {
	char *filter;            /* NULL when absent or "*" (matches every tensor) */
	struct bf_pos pos;
	struct bf_setting value; /* NUM, BOOL, STR or GRADIENT */
};

struct bf_param {
	char *name;
	struct bf_pos pos;       /* position of the key */
	struct bf_setting set;
};

struct bf_params {
	struct bf_param *v;
	size_t n;
};

struct bf_source {
	char *model;             /* reference as written, "@REV" included */
	struct bf_pos pos;
	bool has_range;
	int64_t layer_start, layer_end; /* half-open */
	struct bf_pos range_pos;
	struct bf_params params;
};

struct bf_slice {
	struct bf_source *src;
	size_t n_src;
	char *base_model;        /* NULL unless the slice overrides the global base */
	struct bf_pos base_pos;
	struct bf_params params;
	struct bf_pos pos;
};

struct bf_recipe {
	char *path;              /* as given on the command line */
	char *dir;               /* directory containing the recipe (for relative model paths) */
	char *text;              /* the exact file bytes, NUL-terminated (served as mergekit_config.yml) */
	size_t text_len;
	bool uses_slices;
	struct bf_source *models; size_t n_models; struct bf_pos models_pos;  /* models: form */
	struct bf_slice *slices; size_t n_slices; struct bf_pos slices_pos;   /* slices: form */
	char *base_model; struct bf_pos base_pos;                 /* NULL if absent */
	char *merge_method; struct bf_pos method_pos;
	struct bf_params params;                                  /* top-level parameters */
	enum bf_dtype dtype; struct bf_pos dtype_pos;             /* BF_DT_NONE if absent */
	enum bf_dtype out_dtype; struct bf_pos out_dtype_pos;     /* BF_DT_NONE if absent */
	char *tokenizer_source; struct bf_pos tokenizer_pos;      /* NULL, "base" or a model ref */
	bool has_seed; uint64_t seed; struct bf_pos seed_pos;
};

/* Read (max 1 MiB) and parse a recipe file. */
int bf_recipe_load(const char *path, struct bf_recipe **out, struct bf_err *err);
/* Parse from memory (fuzzing, tests). `path` is used for messages and to derive dir. */
int bf_recipe_parse(const char *text, size_t len, const char *path, struct bf_recipe **out,
		    struct bf_err *err);
void bf_recipe_free(struct bf_recipe *r);

/* mergekit's evaluate_setting: scalar -> itself; gradient -> interpolated at t in [0,1]
 * exactly as mergekit does it in double (s = t*(n-1), i0 = floor(s), i1 = min(n-1, i0+1),
 * f = s - i0, (1-f)*L[i0] + f*L[i1]); conditional list -> the first entry whose filter is absent,
 * "*", or a substring of `tensor`, evaluated recursively. Returns 1 with *num (and *str for
 * STR, else NULL) set, or 0 when no entry matched ("not set at this level"). */
int bf_setting_eval(const struct bf_setting *s, const char *tensor, double t, double *num,
		    const char **str);

/* The parameter called `name` in p, or NULL. */
const struct bf_param *bf_params_find(const struct bf_params *p, const char *name);

#endif
