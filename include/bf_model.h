/* bf_model.h: a source model directory, opened once and held for the life of a mount.
 *
 * Resolution of a recipe reference "PATH[@REV]" (no network, ever):
 *   1. the whole string as a local directory: absolute, else relative to the current directory,
 *      else relative to the recipe's directory;
 *   2. a Hugging Face id "org/name[@REV]" in the local Hub cache, first of $HF_HUB_CACHE,
 *      $HF_HOME/hub, ~/.cache/huggingface/hub: models--org--name/snapshots/<commit>/, where the
 *      commit is REV itself if snapshots/REV exists, else the content of refs/REV (default "main").
 *   When nothing is found the error lists every place that was looked at.
 *
 * Weights: model.safetensors, or model.safetensors.index.json + its shards. Index rules: metadata
 * optional, weight_map an object of tensor -> shard; shard names plain basenames ending in
 * ".safetensors" (no '/', no "..", no NUL); every mapped tensor exists in its shard; a tensor name
 * appears in one shard only. Every shard header passes bf_st_parse. pytorch_model.bin is refused
 * with a message saying so.
 *
 * Ownership: bf_model_open returns a model owning its fds (O_RDONLY|O_CLOEXEC), strings and the
 * parsed config. Read-only after open, so any thread may call the const functions concurrently.
 * Sources are read with pread, never mmap: a truncated source gives EIO, not SIGBUS.
 *
 * Freshness: each shard remembers (dev, ino, size, mtime, ctime) from open time.
 * bf_model_check_fresh() re-fstats (rate-limited per shard) and, on any change, marks the shard
 * stale forever: every later read from it fails with -ESTALE-as-EIO and one log line names the
 * file. A rename/delete of the path is harmless (we hold the old inode).
 */
#ifndef BF_MODEL_H
#define BF_MODEL_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <jansson.h>
#include "bf_common.h"
#include "bf_dtype.h"

struct bf_src_shard {
	char *name;              /* file name inside the model dir */
	char *path;              /* full path, for messages */
	int fd;
	struct stat st;          /* identity at open */
	uint64_t data_start;     /* 8 + N */
	_Atomic int stale;       /* 1 once a change was seen; never cleared */
	_Atomic uint64_t last_check_ns;
};

struct bf_src_tensor {
	char *name;
	enum bf_dtype dtype;
	uint32_t ndim;
	uint64_t shape[BF_MAX_NDIM];
	uint64_t numel;
	uint32_t shard;          /* index into model->shards */
	uint64_t offset;         /* absolute file offset of the first byte */
	uint64_t nbytes;
};

struct bf_model {
	char *ref;               /* as written in the recipe */
	char *dir;               /* resolved absolute directory (realpath) */
	struct bf_src_shard *shards;
	size_t n_shards;
	struct bf_src_tensor *tensors; /* sorted by name (strcmp) */
	size_t n_tensors;
	json_t *config;          /* parsed config.json, or NULL if the directory has none */
	uint64_t total_bytes;    /* sum of tensor bytes */
};

/* Resolve and open. `recipe_dir` may be NULL. */
int bf_model_open(const char *ref, const char *recipe_dir, struct bf_model **out, struct bf_err *err);
/* Open a directory or a single .safetensors file directly (blendfs inspect). */
int bf_model_open_path(const char *path, struct bf_model **out, struct bf_err *err);
void bf_model_close(struct bf_model *m);

const struct bf_src_tensor *bf_model_tensor(const struct bf_model *m, const char *name);

/* Read len bytes of tensor t starting at byte `off` within the tensor. Returns 0, or -EIO after
 * logging (rate-limited) why: short read, I/O error, or a stale shard. Never reads outside t. */
int bf_model_pread(const struct bf_model *m, const struct bf_src_tensor *t, uint64_t off,
		   void *buf, size_t len);

/* fstat the shard at most every `interval_ms`; returns 0 if unchanged, -EIO if stale (logged once). */
int bf_model_check_fresh(const struct bf_model *m, uint32_t shard, unsigned interval_ms);

/* Read a small file of the model directory (config, tokenizer). Returns 1 and a malloc'd buffer,
 * 0 if absent, -1 with err on error or if larger than max. Only plain names, no '/'. */
int bf_model_read_file(const struct bf_model *m, const char *name, size_t max, char **data,
		       size_t *len, struct bf_err *err);

/* Number of layers from config.json (num_hidden_layers, n_layer, num_layers, n_layers), or -1. */
int bf_model_config_layers(const struct bf_model *m);

#endif
