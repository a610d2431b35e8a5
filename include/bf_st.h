/* bf_st.h: safetensors headers: parse + validate (reader side) and serialize (writer side).
 *
 * Pure functions over byte buffers: no file I/O except bf_st_read_header(), which only reads the
 * 8-byte length and the header bytes of an open fd with pread.
 *
 * Validation (reliability.md section 2; every rule has a test and a bad-corpus file):
 *   - file shorter than 8 bytes; N > 100,000,000; 8+N beyond the file      -> error
 *   - header not UTF-8, not JSON, not an object, duplicate keys             -> error
 *   - header must start with '{' (leading whitespace tolerated, as the Rust reader does),
 *     trailing bytes after the JSON only spaces
 *   - __metadata__: object of string values
 *   - each tensor: exactly the keys dtype/shape/data_offsets; known dtype; shape a list of at most
 *     BF_MAX_NDIM integers in [0, 2^48-1]; data_offsets two integers in [0, 2^48-1], begin <= end
 *   - name: 1..1024 bytes, valid UTF-8 (jansson guarantees), no NUL
 *   - at most 1,000,000 tensors
 *   - numel * bits computed with overflow checks, a whole number of bytes, == end - begin
 *   - sorted by begin: contiguous from 0 with no gap or overlap
 *   - 8 + N + last end == file size exactly (no truncation, no trailing bytes)
 * Every error message names `what` (the file path) and the tensor where one is involved.
 */
#ifndef BF_ST_H
#define BF_ST_H

#include <stdint.h>
#include <stddef.h>
#include "bf_common.h"
#include "bf_dtype.h"

#define BF_ST_MAX_HEADER 100000000ull
#define BF_ST_MAX_TENSORS 1000000u
#define BF_ST_MAX_NAME 1024u
#define BF_ST_MAX_DIM ((1ull << 48) - 1)

struct bf_st_tensor {
	char *name;            /* owned, NUL-terminated */
	enum bf_dtype dtype;
	uint32_t ndim;
	uint64_t shape[BF_MAX_NDIM];
	uint64_t numel;        /* product of shape (1 for a 0-d scalar) */
	uint64_t begin, end;   /* byte offsets relative to the data start (8 + N) */
	size_t seq;            /* position in the header's JSON: orders empty tensors that share an
	                        * offset as the header lists them (the file order of a writer) */
};

struct bf_st_header {
	uint64_t header_len;   /* N */
	uint64_t data_start;   /* 8 + N */
	size_t n_tensors;
	struct bf_st_tensor *tensors; /* sorted by begin (= file order) */
};

/* Validate header JSON bytes `json[0..n)` for a file of `file_size` bytes. On success fills *out
 * (caller frees with bf_st_header_free). On failure returns -1 with err naming `what`. */
int bf_st_parse(const char *json, size_t n, uint64_t file_size, const char *what,
		struct bf_st_header *out, struct bf_err *err);

/* Read and validate the header of an open safetensors file. `what` names it in errors.
 * If hdr_bytes is non-NULL, receives the raw 8+N prefix (malloc'd) for hashing. */
int bf_st_read_header(int fd, const char *what, struct bf_st_header *out,
		      char **hdr_bytes, struct bf_err *err);

void bf_st_header_free(struct bf_st_header *h);

/* Writer. Tensors are given in any order; the header lists and places them in the order the
 * reference writer uses: dtype rank descending, then name ascending (bytewise), data packed
 * with no gaps. The JSON is compact, starts with "__metadata__":{"format":"pt"}, escapes names
 * as serde_json does, and is padded with spaces so N is a multiple of 8.
 *   out:  malloc'd 8 + N bytes (the length prefix included)
 *   order: (optional, n entries) receives the input index of each tensor in file order
 *   offsets: (optional, n entries, input order) receives each tensor's begin offset */
struct bf_st_out {
	const char *name;
	enum bf_dtype dtype;
	uint32_t ndim;
	const uint64_t *shape;
};
int bf_st_serialize(const struct bf_st_out *t, size_t n, char **out, size_t *out_len,
		    size_t *order, uint64_t *offsets, struct bf_err *err);

/* Append `s` to a JSON string literal the way serde_json writes it (quotes included):
 * escapes " \ and control characters (\b \f \n \r \t, else \u00xx lowercase), keeps UTF-8 raw.
 * Writes at most cap bytes; returns the length it needs (like snprintf). */
size_t bf_json_quote(char *dst, size_t cap, const char *s);

#endif
