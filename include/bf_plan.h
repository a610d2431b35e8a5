/* bf_plan.h: recipe + source headers -> the complete description of the output model.
 *
 * Everything a mount or a merge needs is decided here, at mount time, from the recipe and the
 * source models' headers and small files only (no tensor data is read):
 *   - which output tensors exist, their names, shapes and dtypes, and for each the method, the
 *     inputs (model + source tensor) and every parameter value resolved for that tensor
 *     (gradients and filters evaluated, mergekit's precedence applied, ranges checked);
 *   - the save order and shard packing (mergekit's rules, mergekit-spec.md 3.7), each shard's
 *     exact header bytes and size, the index file;
 *   - the small files: config.json (patched), tokenizer files, mergekit_config.yml, README.md.
 * A plan is immutable once built, shared read-only by all FUSE threads (runtime state such as
 * statistics lives in bf_exec).
 *
 * Model-layout rules (mergekit-spec.md 1.3): `models:` merges tensors by name over one slice
 * covering every layer; `slices:` renumbers layers with a running counter, takes pre-weights
 * (embeddings) from slice 0's first source, post-weights (final norm, lm_head) from the last
 * slice's first source. Layer tensors are recognised by the first ".<number>." in their name
 * (model.layers.N., transformer.h.N., ...). All inputs of an output tensor must have the same
 * shape, or planning fails naming the tensor and the models.
 */
#ifndef BF_PLAN_H
#define BF_PLAN_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include "bf_common.h"
#include "bf_dtype.h"
#include "bf_method.h"
#include "bf_model.h"
#include "bf_recipe.h"

struct bf_input {
	uint32_t model;                   /* index into plan->models */
	const struct bf_src_tensor *src;
	bool is_base;
	double p[BF_MAX_PARAMS];          /* per-model parameters by method param index (NAN = unset) */
};

struct bf_otensor {
	char *name;
	enum bf_dtype dtype;              /* output dtype */
	uint32_t ndim;
	uint64_t shape[BF_MAX_NDIM];
	uint64_t numel, nbytes;
	uint64_t row_len;                 /* last dim (a 1-D tensor is one row; 0-d: 1) */
	const struct bf_method *method;
	double g[BF_MAX_PARAMS];          /* global parameters by method param index (NAN = unset) */
	uint32_t n_in;
	struct bf_input *in;              /* base first when has_base */
	bool has_base;
	bool copy;                        /* bytes identical to in[0]'s: served straight from the source */
	int32_t layer;                    /* output layer index, -1 for non-layer tensors */
	char *label;                      /* mergekit's save-order label: max input tensor name */
	uint32_t shard;                   /* placement */
	uint64_t data_off;                /* offset in the shard's data region */
	uint64_t file_off;                /* absolute offset in the shard file */
	uint64_t id;                      /* XXH3 of the name: cache keys, RNG streams */
};

struct bf_oshard {
	char *name;                       /* model.safetensors or model-0000i-of-0000N.safetensors */
	char *header;                     /* 8 + N bytes */
	uint64_t header_len;              /* 8 + N */
	uint64_t size;                    /* header + data */
	uint32_t *tensors;                /* tensor indices in file order */
	uint32_t n_tensors;
};

struct bf_ofile {                         /* small in-memory files */
	char *name;
	char *data;
	size_t len;
};

struct bf_plan_opts {
	uint64_t shard_size;              /* bytes per shard; 0 = no splitting. mergekit default 5e9 */
	bool has_seed;                    /* --seed given: overrides the recipe's random_seed */
	uint64_t seed;
};

struct bf_plan {
	struct bf_recipe *recipe;         /* owned */
	const struct bf_method *method;
	struct bf_model **models;         /* owned, deduplicated by resolved directory */
	size_t n_models;
	uint32_t donor;                   /* model whose config.json is used */
	uint32_t tok_donor;               /* model whose tokenizer files are used */
	struct bf_otensor *tensors;       /* save order */
	size_t n_tensors;
	struct bf_oshard *shards;
	size_t n_shards;
	struct bf_ofile *files;           /* config.json, tokenizer..., index, mergekit_config.yml, README.md */
	size_t n_files;
	uint64_t total_size;              /* sum of tensor bytes */
	uint32_t out_layers;              /* layers in the output (-1 if unknown) */
	uint64_t seed;
	uint64_t recipe_hash;             /* XXH3 of the recipe text + seed: part of every cache key */
	char **warnings;                  /* non-fatal notes (ignored parameters...), for check/mount logs */
	size_t n_warnings;
};

/* Build a plan. Takes ownership of `recipe` (freed with the plan, also on failure). On failure
 * returns -1 with one message naming the recipe position, model, file or tensor at fault. */
int bf_plan_build(struct bf_recipe *recipe, const struct bf_plan_opts *opts, struct bf_plan **out,
		  struct bf_err *err);
void bf_plan_free(struct bf_plan *p);

/* Print the plan for `blendfs check` (sources, tensor groups with method + resolved parameters,
 * layers, shards, sizes). */
void bf_plan_print(const struct bf_plan *p, FILE *f);

static inline double bf_gparam(const struct bf_otensor *t, int idx) { return t->g[idx]; }
static inline double bf_mparam(const struct bf_otensor *t, uint32_t i, int idx) { return t->in[i].p[idx]; }

/* Index of the output tensor called name, or -1. */
long bf_plan_find(const struct bf_plan *p, const char *name);

#endif
