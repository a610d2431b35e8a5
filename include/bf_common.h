/* bf_common.h: what every blendfs module shares.
 *
 * - BF_ASSERT: programmer errors only. Input problems never assert; they return an error.
 * - struct bf_err: the one error channel for everything that parses or validates input. A failing
 *   function fills it with a single human message ("recipe.yaml:12:5: unknown key 'densty' (did you
 *   mean 'density'?)") and returns -1 (or a negative errno). The first message written wins, so a
 *   caller can add context only where the callee left none.
 * - checked arithmetic for every size read from a file.
 *
 * Not here: logging (bf_log.h), FUSE (only bf_fuse.c knows it).
 */
#ifndef BF_COMMON_H
#define BF_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BF_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define BF_MAX_NDIM 8          /* safetensors allows more; no model weight needs it */
#define BF_MAX_MODELS 64       /* inputs to one output tensor */
#define BF_ERR_MAX 2048

#if defined(__GNUC__)
#define BF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define BF_NORETURN __attribute__((noreturn))
#define BF_LIKELY(x) __builtin_expect(!!(x), 1)
#define BF_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define BF_PRINTF(a, b)
#define BF_NORETURN
#define BF_LIKELY(x) (x)
#define BF_UNLIKELY(x) (x)
#endif

BF_NORETURN void bf_abort(const char *file, int line, const char *expr);
#define BF_ASSERT(x) do { if (BF_UNLIKELY(!(x))) bf_abort(__FILE__, __LINE__, #x); } while (0)

struct bf_err {
	char msg[BF_ERR_MAX]; /* empty string = no error */
};

/* Set the message if none is set yet. Always returns -1 so callers can `return bf_errf(...)`. */
int bf_errf(struct bf_err *e, const char *fmt, ...) BF_PRINTF(2, 3);
int bf_verrf(struct bf_err *e, const char *fmt, va_list ap) BF_PRINTF(2, 0);
/* Prefix an existing message ("PREFIX: old message"); sets one if empty. Returns -1. */
int bf_err_prefix(struct bf_err *e, const char *fmt, ...) BF_PRINTF(2, 3);
static inline void bf_err_clear(struct bf_err *e) { if (e) e->msg[0] = 0; }
static inline bool bf_err_isset(const struct bf_err *e) { return e && e->msg[0]; }

/* Checked arithmetic: return false on overflow (result untouched). */
static inline bool bf_mul_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static inline bool bf_add_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_add_overflow(a, b, r); }

/* Memory helpers that abort on exhaustion. Only for start-up (mount-time) structures whose
 * size is bounded by validated input; the read path uses plain malloc and returns ENOMEM. */
void *bf_xmalloc(size_t n);
void *bf_xcalloc(size_t n, size_t sz);
void *bf_xrealloc(void *p, size_t n);
char *bf_xstrdup(const char *s);
char *bf_xstrndup(const char *s, size_t n);
char *bf_xasprintf(const char *fmt, ...) BF_PRINTF(1, 2);

/* The candidate nearest to `word` by edit distance, or NULL if none is close enough to be a
 * plausible typo. Used for "did you mean" hints. */
const char *bf_suggest(const char *word, const char *const *cands, size_t n);

/* Read a whole small file (config, tokenizer, recipe) with a size cap. Returns 0 and a
 * NUL-terminated malloc'd buffer, -ENOENT if absent, or -1 with err set (names the path). */
int bf_read_file(const char *path, size_t max, char **data, size_t *len, struct bf_err *err);
/* The same for a file already open: reads `size` bytes (its fstat size) from offset 0 of fd,
 * which stays open and owned by the caller. 0 with a NUL-terminated malloc'd buffer, or -1 with
 * err set (too large, a read error, or the file shrank). */
int bf_read_fd(int fd, off_t size, const char *path, size_t max, char **data, size_t *len,
	       struct bf_err *err);

/* Parse sizes like "512M", "2G", "5e9", "1048576", "64K" (binary suffixes K/M/G/T = 2^10.., and
 * KB/MB/GB = 10^3.. as mergekit's parse_kmb uses decimal). Returns 0 or -1 on junk/overflow. */
int bf_parse_size(const char *s, uint64_t *out);

/* Monotonic clock in nanoseconds. */
uint64_t bf_now_ns(void);

#endif
