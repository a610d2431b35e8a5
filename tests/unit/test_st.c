/* test_st.c: safetensors header validation (every rule of bf_st.h) and the writer's bytes.
 *
 * Run from tests/ (meson's workdir): the writer is checked byte for byte against headers that
 * mergekit + the Rust safetensors crate wrote (conformance/expected/).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "bf_common.h"
#include "bf_st.h"
#include "bf_test.h"

#define EXPECTED "conformance/expected"
#define FIXTURES "conformance/fixtures"

/* Parse a header string as if the file held `data_len` bytes of tensor data after it. */
static int parse_str(const char *json, int64_t data_len, struct bf_err *e)
{
	struct bf_st_header h;
	size_t n = strlen(json);
	bf_err_clear(e);
	int rc = bf_st_parse(json, n, (uint64_t)((int64_t)(8 + n) + data_len), "x.safetensors", &h, e);
	if (rc == 0)
		bf_st_header_free(&h);
	return rc;
}

/* Write bytes to a fresh temp file and return an fd open on it for reading. */
static int tmpfile_with(const void *data, size_t len)
{
	char path[] = "/tmp/bf_test_st_XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	unlink(path);
	if (len && write(fd, data, len) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A file: 8-byte LE length `n_claim`, the header text, then `data_len` zero bytes. */
static int tmpfile_st(uint64_t n_claim, const char *hdr, size_t data_len)
{
	size_t hl = strlen(hdr), total = 8 + hl + data_len;
	unsigned char *b = calloc(1, total);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(n_claim >> (8 * i));
	memcpy(b + 8, hdr, hl);
	int fd = tmpfile_with(b, total);
	free(b);
	return fd;
}

#define T1(name, shape, b, e) "\"" name "\":{\"dtype\":\"BF16\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

struct bad_case {
	const char *what;
	const char *json;
	int64_t data_len;
	const char *expect;
};

static const struct bad_case bad_cases[] = {
	{ "not json", "{\"a\":", 0, "not valid JSON" },
	{ "not json 2", "{\"a\" 1}", 0, "not valid JSON" },
	{ "not an object (array)", "[1,2]", 0, "not a JSON object" },
	{ "not an object (string)", "\"abc\"", 0, "not a JSON object" },
	{ "empty header", "        ", 0, "header is empty" },
	{ "duplicate key", "{" T1("a", "[1]", 0, 2) "," T1("a", "[1]", 2, 4) "}", 4, "duplicate" },
	{ "leading garbage", "x{}", 0, "does not start with '{'" },
	{ "leading NUL", "\0{}", 0, "does not start with" },
	{ "trailing garbage", "{}x", 0, "trailing bytes after the JSON object" },
	{ "trailing newline", "{} \n", 0, "trailing bytes after the JSON object" },
	{ "second object", "{}{}", 0, "trailing bytes after the JSON object" },
	{ "unknown dtype", "{\"t\":{\"dtype\":\"BF17\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2,
	  "tensor 't': unknown dtype 'BF17'" },
	{ "lowercase dtype", "{\"t\":{\"dtype\":\"bf16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2,
	  "unknown dtype 'bf16'" },
	{ "dtype not string", "{\"t\":{\"dtype\":16,\"shape\":[1],\"data_offsets\":[0,2]}}", 2,
	  "dtype is not a string" },
	{ "shape not list", "{" T1("t", "5", 0, 10) "}", 10, "tensor 't': shape is not a list" },
	{ "negative dim", "{" T1("t", "[-1]", 0, 2) "}", 2, "shape[0] is not an integer in [0, 2^48-1]" },
	{ "dim 2^48", "{" T1("t", "[1,281474976710656]", 0, 2) "}", 2, "shape[1] is not an integer" },
	{ "dim real", "{" T1("t", "[2.0]", 0, 4) "}", 4, "shape[0] is not an integer" },
	{ "dim exponent", "{" T1("t", "[1e1]", 0, 20) "}", 20, "shape[0] is not an integer" },
	{ "dim plus sign", "{" T1("t", "[+1]", 0, 2) "}", 2, "not valid JSON" },
	{ "dim too big for int64", "{" T1("t", "[99999999999999999999]", 0, 2) "}", 2, "not valid JSON" },
	{ "dim string", "{" T1("t", "[\"1\"]", 0, 2) "}", 2, "shape[0] is not an integer" },
	{ "real offset", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2.0]}}", 2,
	  "data_offsets are not integers" },
	{ "negative offset", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[-2,0]}}", 2,
	  "data_offsets are not integers" },
	{ "offset 2^48", "{\"t\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[281474976710656,281474976710656]}}",
	  0, "data_offsets are not integers" },
	{ "offsets one entry", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0]}}", 2,
	  "data_offsets is not a list of two integers" },
	{ "offsets three entries", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2,4]}}", 2,
	  "data_offsets is not a list of two integers" },
	{ "offsets reversed", "{" T1("t", "[5]", 20, 10) "}", 20, "[20, 10] are reversed" },
	{ "gap at start", "{" T1("t", "[1]", 2, 4) "}", 4, "tensor 't': data_offsets [2, 4] leave a gap" },
	{ "gap between", "{" T1("a", "[1]", 0, 2) "," T1("b", "[1]", 4, 6) "}", 6,
	  "tensor 'b': data_offsets [4, 6] leave a gap: the previous tensor ends at 2" },
	{ "overlap", "{" T1("a", "[2]", 0, 4) "," T1("b", "[2]", 2, 6) "}", 6,
	  "tensor 'b': data_offsets [2, 6] overlap the previous tensor" },
	{ "shared offsets (json attack)", "{" T1("a", "[2]", 0, 4) "," T1("b", "[2]", 0, 4) "}", 4, "overlap" },
	{ "size mismatch", "{" T1("t", "[3]", 0, 4) "}", 4, "hold 4 bytes but shape [3] of BF16 needs 6" },
	{ "truncated data", "{" T1("t", "[3]", 0, 6) "}", 5, "truncated: header and data need" },
	{ "trailing bytes", "{" T1("t", "[3]", 0, 6) "}", 7, "1 trailing bytes after the last tensor" },
	{ "N beyond file", "{}", -3, "extends beyond the end of the file" },
	{ "numel overflow", "{" T1("t", "[281474976710655,281474976710655]", 0, 2) "}", 2,
	  "overflows the element count" },
	{ "bits overflow", "{\"t\":{\"dtype\":\"F64\",\"shape\":[281474976710655,65536],\"data_offsets\":[0,8]}}",
	  8, "overflows" },
	{ "misaligned F4", "{\"t\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
	  "misaligned: shape [3] of F4 is 12 bits" },
	{ "misaligned F6", "{\"t\":{\"dtype\":\"F6_E2M3\",\"shape\":[2,3],\"data_offsets\":[0,5]}}", 5,
	  "misaligned" },
	{ "metadata non-string", "{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", 0,
	  "__metadata__ value for 'n' is not a string" },
	{ "metadata not object", "{\"__metadata__\":[\"pt\"]}", 0, "__metadata__ is not an object" },
	{ "metadata null", "{\"__metadata__\":null}", 0, "__metadata__ is not an object" },
	{ "extra key", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2],\"extra\":1}}", 2,
	  "tensor 't': unexpected key 'extra'" },
	{ "missing data_offsets", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[1]}}", 2, "missing 'data_offsets'" },
	{ "missing dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,2]}}", 2, "missing 'dtype'" },
	{ "missing shape", "{\"t\":{\"dtype\":\"BF16\",\"data_offsets\":[0,2]}}", 2, "missing 'shape'" },
	{ "tensor not object", "{\"t\":[1]}", 0, "tensor 't': entry is not an object" },
	{ "too many dims", "{" T1("t", "[1,1,1,1,1,1,1,1,1]", 0, 2) "}", 2, "shape has 9 dimensions" },
	{ "empty name", "{" T1("", "[1]", 0, 2) "}", 2, "empty name" },
	{ "NUL escape in name", "{" T1("a\\u0000b", "[1]", 0, 2) "}", 2, "not valid JSON" },
	{ "raw control char in name", "{" T1("a\x01", "[1]", 0, 2) "}", 2, "not valid JSON" },
	{ "invalid UTF-8 in name", "{" T1("a\xff", "[1]", 0, 2) "}", 2, "not valid JSON" },
	{ "overlong UTF-8", "{" T1("\xc0\xaf", "[1]", 0, 2) "}", 2, "not valid JSON" },
	{ "lone surrogate escape", "{" T1("\\ud800", "[1]", 0, 2) "}", 2, "not valid JSON" },
	{ "invalid UTF-8 in metadata", "{\"__metadata__\":{\"a\":\"\xfe\"}}", 0, "not valid JSON" },
	{ "single quotes", "{'t':1}", 0, "not valid JSON" },
	{ "comment", "{/* x */}", 0, "not valid JSON" },
};

BF_TEST(bad_headers)
{
	struct bf_err e;
	for (size_t i = 0; i < BF_ARRAY_LEN(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		int rc;
		if (!strcmp(c->what, "leading NUL")) {
			/* strlen would stop at the NUL: pass the buffer length explicitly */
			struct bf_st_header h;
			bf_err_clear(&e);
			rc = bf_st_parse(c->json, 3, 8 + 3, "x.safetensors", &h, &e);
			if (rc == 0)
				bf_st_header_free(&h);
			/* a NUL is not whitespace: the header does not start with '{' */
			if (rc == 0 || !strstr(e.msg, "does not start with '{'"))
				BF_T_FAIL("case '%s': rc %d, message \"%s\"", c->what, rc, e.msg);
			continue;
		}
		rc = parse_str(c->json, c->data_len, &e);
		if (rc != -1 || !strstr(e.msg, c->expect) || strncmp(e.msg, "x.safetensors: ", 15))
			BF_T_FAIL("case '%s': rc %d, message \"%s\", expected \"%s\"", c->what, rc, e.msg, c->expect);
	}
	EXPECT(BF_ARRAY_LEN(bad_cases) >= 25);
}

BF_TEST(error_message_shape)
{
	struct bf_err e;
	const char *j = "{\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[32],\"data_offsets\":[10,20]}}";
	EXPECT(parse_str(j, 20, &e) == -1);
	EXPECT_STR_EQ(e.msg, "x.safetensors: tensor 'model.norm.weight': data_offsets [10, 20] hold 10 bytes "
		      "but shape [32] of BF16 needs 64");
	/* a name with control characters is shown sanitised, and a long one is cut */
	char big[3000];
	snprintf(big, sizeof(big), "{\"a\\nb\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}");
	EXPECT(parse_str(big, 0, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "tensor 'a?b': unknown dtype 'X'");
	char name[1100];
	memset(name, 'n', 1025);
	name[1025] = 0;
	snprintf(big, sizeof(big), "{\"%s\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", name);
	EXPECT(parse_str(big, 0, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "name is 1025 bytes, more than the 1024 allowed");
	EXPECT_STR_CONTAINS(e.msg, "nnn...'");
	EXPECT(strlen(e.msg) < 400);
	/* exactly 1024 is fine */
	name[1024] = 0;
	snprintf(big, sizeof(big), "{\"%s\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", name);
	EXPECT(parse_str(big, 0, &e) == 0);
}

BF_TEST(header_too_large)
{
	struct bf_err e = { { 0 } };
	struct bf_st_header h;
	static const char dummy[8] = "{}      ";
	/* bf_st_parse refuses n > 1e8 before looking at the bytes */
	EXPECT(bf_st_parse(dummy, BF_ST_MAX_HEADER + 1, BF_ST_MAX_HEADER + 100, "x.safetensors", &h, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "x.safetensors: header length 100000001 exceeds the limit");
	/* file_size below 8 */
	bf_err_clear(&e);
	EXPECT(bf_st_parse(dummy, 2, 7, "x.safetensors", &h, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "extends beyond the end of the file");
}

BF_TEST(valid_edge_cases)
{
	struct bf_err e = { { 0 } };
	struct bf_st_header h;

	/* empty header {} with no data, as the Rust writer pads it */
	const char *j = "{}      ";
	EXPECT(bf_st_parse(j, 8, 16, "x", &h, &e) == 0);
	EXPECT_EQ_U64(h.n_tensors, 0);
	EXPECT_EQ_U64(h.header_len, 8);
	EXPECT_EQ_U64(h.data_start, 16);
	bf_st_header_free(&h);
	/* unpadded and metadata only */
	EXPECT(parse_str("{}", 0, &e) == 0);
	EXPECT(parse_str("{\"__metadata__\":{\"format\":\"pt\",\"k\":\"\"}}", 0, &e) == 0);
	EXPECT(parse_str("{\"__metadata__\":{}}", 0, &e) == 0);
	/* leading JSON whitespace tolerated (the Rust reader does) */
	EXPECT(parse_str(" \t\r\n{}", 0, &e) == 0);

	/* 0-d scalar: numel 1 */
	j = "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}  ";
	EXPECT(bf_st_parse(j, strlen(j), 8 + strlen(j) + 4, "x", &h, &e) == 0);
	EXPECT_EQ_U64(h.n_tensors, 1);
	EXPECT_STR_EQ(h.tensors[0].name, "s");
	EXPECT_EQ_U64(h.tensors[0].ndim, 0);
	EXPECT_EQ_U64(h.tensors[0].numel, 1);
	EXPECT_EQ_I64(h.tensors[0].dtype, BF_DT_F32);
	EXPECT_EQ_U64(h.tensors[0].end, 4);
	bf_st_header_free(&h);

	/* zero-sized tensors anywhere in the sequence; tensors listed out of order get sorted */
	j = "{\"z2\":{\"dtype\":\"F16\",\"shape\":[4,0],\"data_offsets\":[6,6]},"
	    "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,3],\"data_offsets\":[0,6]},"
	    "\"z0\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[0,0]},"
	    "\"c\":{\"dtype\":\"F4\",\"shape\":[2,2],\"data_offsets\":[6,8]}}";
	EXPECT(parse_str(j, 8, &e) == 0);
	EXPECT(bf_st_parse(j, strlen(j), 8 + strlen(j) + 8, "x", &h, &e) == 0);
	EXPECT_EQ_U64(h.n_tensors, 4);
	if (h.n_tensors == 4) {
		EXPECT_STR_EQ(h.tensors[0].name, "z0");
		EXPECT_STR_EQ(h.tensors[1].name, "b");
		EXPECT_STR_EQ(h.tensors[2].name, "z2");
		EXPECT_STR_EQ(h.tensors[3].name, "c");
		EXPECT_EQ_U64(h.tensors[2].numel, 0);
		EXPECT_EQ_U64(h.tensors[1].shape[1], 3);
		EXPECT_EQ_U64(h.tensors[3].numel, 4);
	}
	bf_st_header_free(&h);

	/* the largest allowed values */
	EXPECT(parse_str("{\"t\":{\"dtype\":\"U8\",\"shape\":[281474976710655,0],\"data_offsets\":[0,0]}}", 0, &e) == 0);
	/* 8 dimensions and a UTF-8 name */
	EXPECT(parse_str("{\"caf\xc3\xa9.\xe2\x82\xac\":{\"dtype\":\"BOOL\",\"shape\":[1,1,1,1,1,1,1,2],"
			 "\"data_offsets\":[0,2]}}", 2, &e) == 0);
	/* every dtype the table knows parses */
	for (int d = 0; d < BF_DT_COUNT; d++) {
		char buf[256];
		snprintf(buf, sizeof(buf), "{\"t\":{\"dtype\":\"%s\",\"shape\":[8],\"data_offsets\":[0,%u]}}",
			 bf_dtypes[d].st_name, bf_dtypes[d].bits);
		if (parse_str(buf, bf_dtypes[d].bits, &e) != 0)
			BF_T_FAIL("dtype %s: %s", bf_dtypes[d].st_name, e.msg);
	}
	EXPECT(!bf_err_isset(&e));
	/* header_free on a zeroed header and NULL is harmless */
	memset(&h, 0, sizeof(h));
	bf_st_header_free(&h);
	bf_st_header_free(NULL);
}

BF_TEST(read_header_fixture)
{
	struct bf_err e = { { 0 } };
	struct bf_st_header h;
	char *raw = NULL;
	int fd = open(FIXTURES "/base/model.safetensors", O_RDONLY | O_CLOEXEC);
	EXPECT(fd >= 0);
	if (fd < 0)
		return;
	EXPECT(bf_st_read_header(fd, "base", &h, &raw, &e) == 0);
	EXPECT_EQ_U64(h.header_len, 3960);
	EXPECT_EQ_U64(h.data_start, 3968);
	EXPECT_EQ_U64(h.n_tensors, 39);
	if (h.n_tensors == 39) {
		EXPECT_STR_EQ(h.tensors[0].name, "lm_head.weight");
		EXPECT_EQ_U64(h.tensors[0].begin, 0);
		EXPECT_EQ_U64(h.tensors[0].end, 16384);
		EXPECT_STR_EQ(h.tensors[1].name, "model.embed_tokens.weight");
		EXPECT_EQ_U64(h.tensors[1].ndim, 2);
		EXPECT_EQ_U64(h.tensors[1].shape[0], 256);
		EXPECT_EQ_U64(h.tensors[1].shape[1], 32);
		EXPECT_EQ_U64(h.tensors[38].end + h.data_start, 111040);
		for (size_t i = 1; i < h.n_tensors; i++)
			EXPECT(h.tensors[i].begin == h.tensors[i - 1].end);
	}
	char pre[3968];
	EXPECT(pread(fd, pre, sizeof(pre), 0) == (ssize_t)sizeof(pre));
	EXPECT(raw && memcmp(raw, pre, sizeof(pre)) == 0);
	free(raw);
	bf_st_header_free(&h);
	/* without the raw prefix */
	EXPECT(bf_st_read_header(fd, "base", &h, NULL, &e) == 0);
	bf_st_header_free(&h);
	close(fd);
}

BF_TEST(read_header_bad_files)
{
	struct bf_err e;
	struct bf_st_header h;
	char *raw = (char *)1;
	int fd;

	/* fewer than 8 bytes */
	bf_err_clear(&e);
	fd = tmpfile_with("\x02\0\0\0\0", 5);
	EXPECT(bf_st_read_header(fd, "small.safetensors", &h, &raw, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "small.safetensors: file is 5 bytes, too small");
	EXPECT(raw == NULL);
	close(fd);
	/* empty */
	bf_err_clear(&e);
	fd = tmpfile_with("", 0);
	EXPECT(bf_st_read_header(fd, "empty", &h, NULL, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "too small");
	close(fd);
	/* N > 100,000,000 */
	bf_err_clear(&e);
	fd = tmpfile_st(100000001ull, "{}", 0);
	EXPECT(bf_st_read_header(fd, "big", &h, NULL, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "big: header length 100000001 exceeds the limit of 100000000 bytes");
	close(fd);
	/* N = 2^64-1: no overflow in 8 + N */
	bf_err_clear(&e);
	fd = tmpfile_st(UINT64_MAX, "{}", 0);
	EXPECT(bf_st_read_header(fd, "huge", &h, NULL, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "exceeds the limit");
	close(fd);
	/* N beyond the file */
	bf_err_clear(&e);
	fd = tmpfile_st(1000, "{}      ", 0);
	EXPECT(bf_st_read_header(fd, "short", &h, NULL, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "short: header length 1000 extends beyond the end of the file (16 bytes)");
	close(fd);
	/* N one past the file */
	bf_err_clear(&e);
	fd = tmpfile_st(9, "{}      ", 0);
	EXPECT(bf_st_read_header(fd, "short", &h, NULL, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "extends beyond");
	close(fd);
	/* truncated data */
	bf_err_clear(&e);
	const char *hj = "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
	fd = tmpfile_st(strlen(hj), hj, 15);
	EXPECT(bf_st_read_header(fd, "trunc", &h, &raw, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "trunc: truncated");
	EXPECT(raw == NULL);
	close(fd);
	/* trailing bytes */
	bf_err_clear(&e);
	fd = tmpfile_st(strlen(hj), hj, 17);
	EXPECT(bf_st_read_header(fd, "trail", &h, NULL, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "1 trailing bytes");
	close(fd);
	/* exact */
	bf_err_clear(&e);
	fd = tmpfile_st(strlen(hj), hj, 16);
	EXPECT(bf_st_read_header(fd, "ok", &h, &raw, &e) == 0);
	EXPECT_EQ_U64(h.n_tensors, 1);
	EXPECT(raw && !memcmp(raw + 8, hj, strlen(hj)) && raw[0] == (char)strlen(hj));
	free(raw);
	bf_st_header_free(&h);
	close(fd);
	/* a bad fd */
	bf_err_clear(&e);
	EXPECT(bf_st_read_header(-1, "nofd", &h, NULL, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "nofd: cannot stat");
}

/* Serialize a parsed file's tensor list (fed in reverse order) and compare with its bytes. */
static void check_writer_against(const char *path)
{
	struct bf_err e = { { 0 } };
	struct bf_st_header h;
	char *raw = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		BF_T_FAIL("%s: %s", path, strerror(errno));
		return;
	}
	if (bf_st_read_header(fd, path, &h, &raw, &e) < 0) {
		BF_T_FAIL("%s", e.msg);
		close(fd);
		return;
	}
	close(fd);
	size_t n = h.n_tensors;
	struct bf_st_out *o = calloc(n, sizeof(*o));
	size_t *order = calloc(n, sizeof(*order));
	uint64_t *offs = calloc(n, sizeof(*offs));
	for (size_t i = 0; i < n; i++) {
		const struct bf_st_tensor *t = &h.tensors[n - 1 - i];
		o[i] = (struct bf_st_out){ t->name, t->dtype, t->ndim, t->shape };
	}
	char *out = NULL;
	size_t out_len = 0;
	EXPECT(bf_st_serialize(o, n, &out, &out_len, order, offs, &e) == 0);
	EXPECT_EQ_U64(out_len, h.data_start);
	EXPECT(out && out_len == h.data_start && memcmp(out, raw, out_len) == 0);
	for (size_t k = 0; k < n; k++) {
		/* file order k is input n-1-k; offsets agree with the file */
		EXPECT_EQ_U64(order[k], n - 1 - k);
		EXPECT_EQ_U64(offs[n - 1 - k], h.tensors[k].begin);
	}
	free(out);
	free(o);
	free(order);
	free(offs);
	free(raw);
	bf_st_header_free(&h);
}

BF_TEST(writer_matches_reference_bytes)
{
	check_writer_against(EXPECTED "/linear/model.safetensors");          /* BF16 */
	check_writer_against(EXPECTED "/task_arithmetic/model.safetensors"); /* F32 */
	check_writer_against(FIXTURES "/ft_a_f16/model.safetensors");        /* F16 */
	check_writer_against(FIXTURES "/ft_a/model-00001-of-00002.safetensors");
	check_writer_against(FIXTURES "/ft_b_f32/model-00002-of-00002.safetensors");
}

BF_TEST(writer_order_and_layout)
{
	struct bf_err e = { { 0 } };
	const uint64_t s4[] = { 4 }, s23[] = { 2, 3 }, s0[] = { 0 };
	const struct bf_st_out t[] = {
		{ "b", BF_DT_F16, 1, s4 },
		{ "a", BF_DT_BF16, 2, s23 },
		{ "c", BF_DT_F32, 0, NULL },     /* scalar */
		{ "B", BF_DT_BF16, 1, s4 },      /* 'B' < 'a' bytewise */
		{ "i", BF_DT_I64, 1, s4 },
		{ "z", BF_DT_F32, 1, s0 },       /* zero-sized */
	};
	size_t order[6];
	uint64_t offs[6];
	char *out;
	size_t len;
	EXPECT(bf_st_serialize(t, 6, &out, &len, order, offs, &e) == 0);
	const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
		"\"i\":{\"dtype\":\"I64\",\"shape\":[4],\"data_offsets\":[0,32]},"
		"\"c\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[32,36]},"
		"\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[36,36]},"
		"\"B\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[36,44]},"
		"\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[44,56]},"
		"\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[56,64]}}";
	size_t wl = strlen(want), pad = (8 - wl % 8) % 8;
	EXPECT_EQ_U64(len, 8 + wl + pad);
	EXPECT_EQ_U64((len - 8) % 8, 0);
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = (n << 8) | (unsigned char)out[i];
	EXPECT_EQ_U64(n, len - 8);
	EXPECT(memcmp(out + 8, want, wl) == 0);
	for (size_t i = 8 + wl; i < len; i++)
		EXPECT(out[i] == ' ');
	static const size_t want_order[] = { 4, 2, 5, 3, 1, 0 };
	for (int k = 0; k < 6; k++)
		EXPECT_EQ_U64(order[k], want_order[k]);
	EXPECT_EQ_U64(offs[0], 56);
	EXPECT_EQ_U64(offs[1], 44);
	EXPECT_EQ_U64(offs[2], 32);
	EXPECT_EQ_U64(offs[3], 36);
	EXPECT_EQ_U64(offs[4], 0);
	EXPECT_EQ_U64(offs[5], 36);

	/* what we write, we read back */
	struct bf_st_header h;
	EXPECT(bf_st_parse(out + 8, len - 8, len + 64, "rt", &h, &e) == 0);
	EXPECT_EQ_U64(h.n_tensors, 6);
	bf_st_header_free(&h);
	free(out);

	/* no tensors: just the metadata, 32 bytes */
	EXPECT(bf_st_serialize(NULL, 0, &out, &len, NULL, NULL, &e) == 0);
	EXPECT_EQ_U64(len, 40);
	EXPECT(len == 40 && !memcmp(out + 8, "{\"__metadata__\":{\"format\":\"pt\"}}", 32));
	free(out);
}

/* Empty tensors share an offset with their neighbours: the header's order decides between them,
 * so what the writer writes parses back in the order written (fuzz_plan found the parser
 * ordering such ties by name, against the writer's dtype-first order). */
BF_TEST(empty_tensors_keep_file_order)
{
	struct bf_err e = { { 0 } };
	const uint64_t s0[] = { 0 }, s2[] = { 2 };
	const struct bf_st_out t[] = {
		{ "A", BF_DT_BF16, 1, s0 },
		{ "w", BF_DT_BF16, 1, s2 },
		{ "z", BF_DT_F32, 1, s0 },
	};
	size_t order[3];
	uint64_t offs[3];
	char *out;
	size_t len;
	EXPECT(bf_st_serialize(t, 3, &out, &len, order, offs, &e) == 0);
	/* written: z (F32 first) at [0,0], then A at [0,0] and w at [0,4] */
	EXPECT(order[0] == 2 && order[1] == 0 && order[2] == 1);
	EXPECT(offs[0] == 0 && offs[1] == 0 && offs[2] == 0);
	struct bf_st_header h;
	EXPECT(bf_st_parse(out + 8, len - 8, len + 4, "rt", &h, &e) == 0);
	EXPECT_EQ_U64(h.n_tensors, 3);
	for (size_t k = 0; k < h.n_tensors && k < 3; k++)
		EXPECT_STR_EQ(h.tensors[k].name, t[order[k]].name);
	bf_st_header_free(&h);
	free(out);

	/* by hand: "b" before "a", both empty at 0 */
	const char *j = "{\"b\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[0,0]},"
			"\"a\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[0,0]}}";
	EXPECT(bf_st_parse(j, strlen(j), 8 + strlen(j), "x", &h, &e) == 0);
	EXPECT_EQ_U64(h.n_tensors, 2);
	if (h.n_tensors == 2) {
		EXPECT_STR_EQ(h.tensors[0].name, "b");
		EXPECT_STR_EQ(h.tensors[1].name, "a");
	}
	bf_st_header_free(&h);
}

BF_TEST(writer_escapes_names)
{
	struct bf_err e = { { 0 } };
	const uint64_t s1[] = { 1 };
	const struct bf_st_out t[] = { { "q\"b\\s/\x01\x1f\x7f\xc3\xa9\t", BF_DT_U8, 1, s1 } };
	char *out;
	size_t len;
	EXPECT(bf_st_serialize(t, 1, &out, &len, NULL, NULL, &e) == 0);
	const char *want = "\"q\\\"b\\\\s/\\u0001\\u001f\x7f\xc3\xa9\\t\":{";
	EXPECT(memmem(out, len, want, strlen(want)) != NULL);
	struct bf_st_header h;
	EXPECT(bf_st_parse(out + 8, len - 8, len + 1, "rt", &h, &e) == 0);
	EXPECT(h.n_tensors == 1 && !strcmp(h.tensors[0].name, t[0].name));
	bf_st_header_free(&h);
	free(out);
}

BF_TEST(writer_rejects)
{
	struct bf_err e;
	const uint64_t s1[] = { 1 }, s3[] = { 3 }, sbig[] = { 1ull << 48 }, sovf[] = { 1ull << 40, 1ull << 40 };
	char *out = (char *)1;
	size_t len = 7;
	struct { struct bf_st_out t[2]; size_t n; const char *expect; } cases[] = {
		{ { { "a", BF_DT_U8, 1, s1 }, { "a", BF_DT_F32, 1, s1 } }, 2, "tensor 'a' is listed twice" },
		{ { { "", BF_DT_U8, 1, s1 } }, 1, "invalid tensor name ''" },
		{ { { "__metadata__", BF_DT_U8, 1, s1 } }, 1, "invalid tensor name" },
		{ { { "f4", BF_DT_F4, 1, s3 } }, 1, "not a whole number of bytes" },
		{ { { "big", BF_DT_U8, 1, sbig } }, 1, "shape out of range" },
		{ { { "ovf", BF_DT_U8, 2, sovf } }, 1, "shape out of range" },
		{ { { "bad\xff", BF_DT_U8, 1, s1 } }, 1, "not valid UTF-8" },
		{ { { "dt", BF_DT_COUNT, 1, s1 } }, 1, "invalid dtype" },
		{ { { "nd", BF_DT_U8, BF_MAX_NDIM + 1, s1 } }, 1, "invalid shape" },
	};
	for (size_t i = 0; i < BF_ARRAY_LEN(cases); i++) {
		bf_err_clear(&e);
		out = (char *)1;
		int rc = bf_st_serialize(cases[i].t, cases[i].n, &out, &len, NULL, NULL, &e);
		if (rc != -1 || out != NULL || !strstr(e.msg, cases[i].expect))
			BF_T_FAIL("case %zu: rc %d, \"%s\"", i, rc, e.msg);
	}
	/* the data end must stay within 2^48-1 */
	const uint64_t half[] = { 1ull << 47 };
	const struct bf_st_out two[] = { { "x", BF_DT_U8, 1, half }, { "y", BF_DT_U8, 1, half } };
	bf_err_clear(&e);
	EXPECT(bf_st_serialize(two, 2, &out, &len, NULL, NULL, &e) == -1);
	EXPECT_STR_CONTAINS(e.msg, "2^48-1");
}

BF_TEST(json_quote)
{
	char buf[64];
	EXPECT_EQ_U64(bf_json_quote(buf, sizeof(buf), "abc"), 5);
	EXPECT_STR_EQ(buf, "\"abc\"");
	EXPECT_EQ_U64(bf_json_quote(buf, sizeof(buf), ""), 2);
	EXPECT_STR_EQ(buf, "\"\"");
	bf_json_quote(buf, sizeof(buf), "a\"b\\c\b\f\n\r\t\x01\x1f\x7f/\xe2\x82\xac");
	EXPECT_STR_EQ(buf, "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f\x7f/\xe2\x82\xac\"");
	/* snprintf-like: the needed length, truncated output still NUL-terminated */
	EXPECT_EQ_U64(bf_json_quote(NULL, 0, "a\nb"), 6);
	memset(buf, 'X', sizeof(buf));
	EXPECT_EQ_U64(bf_json_quote(buf, 4, "a\nb"), 6);
	EXPECT_STR_EQ(buf, "\"a\\");
	EXPECT(buf[4] == 'X');
	memset(buf, 'X', sizeof(buf));
	EXPECT_EQ_U64(bf_json_quote(buf, 1, "abc"), 5);
	EXPECT(buf[0] == 0 && buf[1] == 'X');
	EXPECT_EQ_U64(bf_json_quote(buf, 7, "abc"), 5);
	EXPECT_STR_EQ(buf, "\"abc\"");
	EXPECT_EQ_U64(bf_json_quote(buf, 6, "abc"), 5);
	EXPECT_STR_EQ(buf, "\"abc\"");
	EXPECT_EQ_U64(bf_json_quote(buf, 5, "abc"), 5);
	EXPECT_STR_EQ(buf, "\"abc");
}

int main(void)
{
	RUN(bad_headers);
	RUN(error_message_shape);
	RUN(header_too_large);
	RUN(valid_edge_cases);
	RUN(read_header_fixture);
	RUN(read_header_bad_files);
	RUN(writer_matches_reference_bytes);
	RUN(writer_order_and_layout);
	RUN(empty_tensors_keep_file_order);
	RUN(writer_escapes_names);
	RUN(writer_rejects);
	RUN(json_quote);
	return bf_test_report();
}
