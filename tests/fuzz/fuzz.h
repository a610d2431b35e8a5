/* fuzz.h: what the blendfs fuzz targets share (tests/fuzz/README.md).
 *
 * Every target defines LLVMFuzzerTestOneInput (and LLVMFuzzerInitialize). It is linked either with
 * libFuzzer (-Dfuzzing_engine=libfuzzer) or with main.c, which replays corpus files, so the same
 * code runs as a fuzzer and as an ordinary `meson test` (suite fuzz-replay).
 *
 * A target aborts (FZ_CHECK) when an invariant of the module under test is broken: a crash, a
 * sanitizer report or an FZ_CHECK failure are all findings.
 */
#ifndef BF_FUZZ_H
#define BF_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Abort with file:line and a message: libFuzzer saves the input as a crash. */
#define FZ_CHECK(cond, ...) do { if (!(cond)) fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)
__attribute__((noreturn, format(printf, 4, 5)))
void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...);

/* Consume fuzzer bytes as structured choices (like LLVM's FuzzedDataProvider): when the input
 * runs out every read returns 0, so a short input is still a complete, valid choice. */
struct fz_in {
	const uint8_t *p;
	size_t n;
};
uint8_t fz_u8(struct fz_in *in);
uint32_t fz_u32(struct fz_in *in);
/* A value in [0, n) (n >= 1). */
uint32_t fz_below(struct fz_in *in, uint32_t n);
bool fz_bool(struct fz_in *in);

/* A fresh private directory for this process under /dev/shm (else $TMPDIR or /tmp), removed at
 * exit. Returns its path (static storage). */
const char *fz_tmpdir(const char *tag);
/* snprintf into buf[cap] that aborts instead of truncating; returns buf. */
__attribute__((format(printf, 3, 4)))
char *fz_fmt(char *buf, size_t cap, const char *fmt, ...);
/* Write a whole file (created or truncated). Aborts on I/O errors: they are not findings. */
void fz_write(const char *path, const void *data, size_t len);
/* Remove everything inside directory `dir` (not the directory itself). */
void fz_clear_dir(const char *dir);
/* Quiet the library's logger (warnings about ignored tensors etc. are expected here). */
void fz_quiet(void);

#endif
