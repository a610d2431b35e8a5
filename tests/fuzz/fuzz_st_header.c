/* fuzz_st_header.c: bytes -> bf_st_parse (the safetensors header validator), and for every header
 * that validates, a round trip through the writer (bf_st_serialize) and back.
 *
 * Input layout: the first 8 bytes (little-endian) give D, the number of tensor-data bytes that
 * follow the header in the imagined file (taken mod 2^49: past the 2^48 offset cap, so both the
 * "truncated" and the "trailing bytes" checks are reachable); the rest is the header JSON, N bytes.
 * The file size handed to the parser is 8 + N + D. An input shorter than 8 bytes is all header
 * with D = 0. Seeds are real headers: corpus/st_header/ (see README.md).
 *
 * Invariants checked (a failure aborts):
 *   - a rejection always carries a message naming the file;
 *   - an accepted header tiles [0, D) exactly, each tensor holding numel * bits / 8 bytes;
 *   - the writer accepts every tensor list the reader accepts, its output is a header the reader
 *     accepts for a file of (its length + D) bytes, with the same tensors (name, dtype, shape,
 *     size), N a multiple of 8, and the same bytes whatever order the tensors are given in.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_st.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet();
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct bf_st_tensor *)a)->name, ((const struct bf_st_tensor *)b)->name);
}

static void check_layout(const struct bf_st_header *h, uint64_t n, uint64_t d)
{
	FZ_CHECK(h->header_len == n && h->data_start == 8 + n, "header_len %llu", (unsigned long long)h->header_len);
	uint64_t pos = 0;
	for (size_t i = 0; i < h->n_tensors; i++) {
		const struct bf_st_tensor *t = &h->tensors[i];
		FZ_CHECK(t->name && t->name[0] && strlen(t->name) <= BF_ST_MAX_NAME, "tensor %zu name", i);
		FZ_CHECK(t->dtype >= 0 && t->dtype < BF_DT_COUNT && t->ndim <= BF_MAX_NDIM, "tensor %s", t->name);
		uint64_t numel = 1;
		for (uint32_t k = 0; k < t->ndim; k++)
			numel *= t->shape[k]; /* cannot overflow: the parser checked */
		FZ_CHECK(numel == t->numel, "tensor %s numel", t->name);
		FZ_CHECK(t->begin == pos && t->end >= t->begin, "tensor %s not contiguous", t->name);
		FZ_CHECK((t->end - t->begin) * 8 == t->numel * bf_dtypes[t->dtype].bits, "tensor %s size", t->name);
		pos = t->end;
	}
	FZ_CHECK(pos == d, "data %llu != D %llu", (unsigned long long)pos, (unsigned long long)d);
}

static void roundtrip(const struct bf_st_header *h, uint64_t d)
{
	size_t n = h->n_tensors;
	struct bf_st_out *outs = calloc(n ? n : 1, sizeof(*outs));
	struct bf_st_out *rev = calloc(n ? n : 1, sizeof(*rev));
	size_t *order = calloc(n ? n : 1, sizeof(*order));
	uint64_t *offs = calloc(n ? n : 1, sizeof(*offs));
	FZ_CHECK(outs && rev && order && offs, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const struct bf_st_tensor *t = &h->tensors[i];
		outs[i] = (struct bf_st_out){ t->name, t->dtype, t->ndim, t->shape };
		rev[n - 1 - i] = outs[i];
	}
	char *buf = NULL, *buf2 = NULL;
	size_t len = 0, len2 = 0;
	struct bf_err err;
	bf_err_clear(&err);
	FZ_CHECK(bf_st_serialize(outs, n, &buf, &len, order, offs, &err) == 0,
		 "writer rejects what the reader accepted: %s", err.msg);
	FZ_CHECK(len >= 8 + 2 && (len - 8) % 8 == 0, "writer length %zu", len);
	uint64_t hn = 0;
	for (int i = 7; i >= 0; i--)
		hn = (hn << 8) | (unsigned char)buf[i];
	FZ_CHECK(hn == len - 8, "length prefix %llu != %zu", (unsigned long long)hn, len - 8);

	/* file order: offsets tile [0, D) in `order` */
	uint64_t pos = 0;
	for (size_t k = 0; k < n; k++) {
		FZ_CHECK(order[k] < n, "order[%zu]", k);
		FZ_CHECK(offs[order[k]] == pos, "offset of %s", outs[order[k]].name);
		for (size_t j = 0; j < n; j++)
			if (!strcmp(h->tensors[j].name, outs[order[k]].name))
				pos += h->tensors[j].end - h->tensors[j].begin;
	}
	FZ_CHECK(pos == d, "writer data %llu != %llu", (unsigned long long)pos, (unsigned long long)d);

	/* the reader accepts the writer's header, with the same tensors */
	struct bf_st_header h2;
	bf_err_clear(&err);
	FZ_CHECK(bf_st_parse(buf + 8, len - 8, len + d, "roundtrip.safetensors", &h2, &err) == 0,
		 "reader rejects the writer's header: %s\n%.*s", err.msg, (int)(len - 8), buf + 8);
	FZ_CHECK(h2.n_tensors == n, "tensor count %zu != %zu", h2.n_tensors, n);
	struct bf_st_tensor *a = calloc(n ? n : 1, sizeof(*a)), *b = calloc(n ? n : 1, sizeof(*b));
	FZ_CHECK(a && b, "out of memory");
	memcpy(a, h->tensors, n * sizeof(*a));
	memcpy(b, h2.tensors, n * sizeof(*b));
	qsort(a, n, sizeof(*a), cmp_name);
	qsort(b, n, sizeof(*b), cmp_name);
	for (size_t i = 0; i < n; i++) {
		FZ_CHECK(!strcmp(a[i].name, b[i].name), "name %s != %s", a[i].name, b[i].name);
		FZ_CHECK(a[i].dtype == b[i].dtype && a[i].ndim == b[i].ndim &&
			 !memcmp(a[i].shape, b[i].shape, a[i].ndim * sizeof(uint64_t)) &&
			 a[i].end - a[i].begin == b[i].end - b[i].begin, "tensor %s changed", a[i].name);
	}
	free(a);
	free(b);
	bf_st_header_free(&h2);

	/* deterministic: the input order does not matter */
	bf_err_clear(&err);
	FZ_CHECK(bf_st_serialize(rev, n, &buf2, &len2, NULL, NULL, &err) == 0, "writer (reversed): %s", err.msg);
	FZ_CHECK(len2 == len && !memcmp(buf, buf2, len), "writer output depends on the input order");
	free(buf);
	free(buf2);
	free(outs);
	free(rev);
	free(order);
	free(offs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t d = 0;
	if (size >= 8) {
		for (int i = 7; i >= 0; i--)
			d = (d << 8) | data[i];
		d &= (1ull << 49) - 1;
		data += 8;
		size -= 8;
	}
	struct bf_st_header h;
	struct bf_err err;
	bf_err_clear(&err);
	if (bf_st_parse((const char *)data, size, 8 + size + d, "fuzz.safetensors", &h, &err) < 0) {
		FZ_CHECK(!strncmp(err.msg, "fuzz.safetensors: ", 18), "message: '%s'", err.msg);
		FZ_CHECK(h.n_tensors == 0 && h.tensors == NULL, "output not cleared on failure");
		return 0;
	}
	check_layout(&h, size, d);
	roundtrip(&h, d);
	bf_st_header_free(&h);
	return 0;
}
