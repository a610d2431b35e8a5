/* bf_st.c: safetensors headers: parse + validate, and the deterministic writer.
 *
 * Not here: tensor data (readers pread it through bf_model; writers fill it in bf_fuse/bf_cache).
 *
 * Reader. The bytes are untrusted. The order of checks:
 *   1. sizes: N <= 100 MB and 8 + N within the file (bf_st_read_header also: file >= 8 bytes);
 *   2. optional leading JSON whitespace, then '{'; jansson decodes one object (duplicate keys
 *      rejected, UTF-8 validated, \u0000 refused) and stops at its closing brace; the rest of the
 *      header must be spaces (the writers' padding);
 *   3. per entry: __metadata__ is an object of strings; a tensor name is 1..1024 bytes; a tensor
 *      object has exactly dtype/shape/data_offsets; every number is a JSON integer in
 *      [0, 2^48-1]; numel * bits is computed with overflow checks, must be whole bytes and equal
 *      end - begin;
 *   4. sorted by (begin, end, name), the tensors must tile [0, last end) with no gap or overlap;
 *   5. 8 + N + last end == file size.
 * No count or offset from the file is used before it is bounded.
 *
 * Writer. The Rust crate's prepare(): tensors sorted by dtype descending (enum order), then name
 * bytewise ascending, packed back to back; compact JSON with __metadata__ {"format":"pt"} first;
 * padded with spaces to a multiple of 8; u64 LE length prefix.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "bf_common.h"
#include "bf_st.h"

/* ---- small helpers -------------------------------------------------------------------------- */

/* A printable, bounded copy of an untrusted name for an error message. */
#define DISP_MAX 200
struct disp {
	char s[DISP_MAX + 4];
};

static const char *disp(struct disp *d, const char *s, size_t len)
{
	size_t n = len < DISP_MAX ? len : DISP_MAX, j = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		d->s[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	if (len > DISP_MAX) {
		memcpy(d->s + j, "...", 3);
		j += 3;
	}
	d->s[j] = 0;
	return d->s;
}

/* "[256, 32]" */
static const char *fmt_shape(char *buf, size_t cap, const uint64_t *shape, uint32_t ndim)
{
	size_t o = 0;
	o += (size_t)snprintf(buf + o, cap - o, "[");
	for (uint32_t i = 0; i < ndim && o < cap; i++)
		o += (size_t)snprintf(buf + o, cap - o, "%s%" PRIu64, i ? ", " : "", shape[i]);
	if (o < cap)
		snprintf(buf + o, cap - o, "]");
	return buf;
}

static bool is_json_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* A JSON integer in [0, 2^48-1]. */
static bool get_u48(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v))
		return false;
	json_int_t i = json_integer_value(v);
	if (i < 0 || (uint64_t)i > BF_ST_MAX_DIM)
		return false;
	*out = (uint64_t)i;
	return true;
}

static void tensor_free_all(struct bf_st_tensor *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(t[i].name);
	free(t);
}

void bf_st_header_free(struct bf_st_header *h)
{
	if (!h)
		return;
	tensor_free_all(h->tensors, h->n_tensors);
	memset(h, 0, sizeof(*h));
}

/* ---- reader --------------------------------------------------------------------------------- */

static int check_metadata(const json_t *meta, const char *what, struct bf_err *err)
{
	const char *k;
	json_t *v;
	struct disp d;
	if (!json_is_object(meta))
		return bf_errf(err, "%s: __metadata__ is not an object", what);
	json_object_foreach((json_t *)meta, k, v) {
		if (!json_is_string(v))
			return bf_errf(err, "%s: __metadata__ value for '%s' is not a string", what,
				       disp(&d, k, strlen(k)));
	}
	return 0;
}

/* Validate one tensor entry (its name already checked) into *t (t->name is set by the caller). */
static int parse_tensor(const json_t *obj, const char *what, const char *name,
			struct bf_st_tensor *t, struct bf_err *err)
{
	char sb[256];
	if (!json_is_object(obj))
		return bf_errf(err, "%s: tensor '%s': entry is not an object", what, name);

	const json_t *jd = json_object_get(obj, "dtype");
	const json_t *js = json_object_get(obj, "shape");
	const json_t *jo = json_object_get(obj, "data_offsets");
	if (!jd)
		return bf_errf(err, "%s: tensor '%s': missing 'dtype'", what, name);
	if (!js)
		return bf_errf(err, "%s: tensor '%s': missing 'shape'", what, name);
	if (!jo)
		return bf_errf(err, "%s: tensor '%s': missing 'data_offsets'", what, name);
	if (json_object_size(obj) != 3) {
		const char *k;
		json_t *v;
		struct disp d;
		json_object_foreach((json_t *)obj, k, v) {
			if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
				return bf_errf(err, "%s: tensor '%s': unexpected key '%s' (only dtype, "
					       "shape and data_offsets are allowed)", what, name,
					       disp(&d, k, strlen(k)));
		}
		return bf_errf(err, "%s: tensor '%s': unexpected keys", what, name);
	}

	if (!json_is_string(jd))
		return bf_errf(err, "%s: tensor '%s': dtype is not a string", what, name);
	t->dtype = bf_dtype_from_st_name(json_string_value(jd), json_string_length(jd));
	if (t->dtype == BF_DT_NONE) {
		struct disp d;
		return bf_errf(err, "%s: tensor '%s': unknown dtype '%s'", what, name,
			       disp(&d, json_string_value(jd), json_string_length(jd)));
	}

	if (!json_is_array(js))
		return bf_errf(err, "%s: tensor '%s': shape is not a list", what, name);
	size_t nd = json_array_size(js);
	if (nd > BF_MAX_NDIM)
		return bf_errf(err, "%s: tensor '%s': shape has %zu dimensions, more than the %d supported",
			       what, name, nd, BF_MAX_NDIM);
	t->ndim = (uint32_t)nd;
	t->numel = 1;
	bool numel_ovf = false;
	for (size_t i = 0; i < nd; i++) {
		if (!get_u48(json_array_get(js, i), &t->shape[i]))
			return bf_errf(err, "%s: tensor '%s': shape[%zu] is not an integer in [0, 2^48-1]",
				       what, name, i);
		if (!numel_ovf && !bf_mul_u64(t->numel, t->shape[i], &t->numel))
			numel_ovf = true;
	}

	if (!json_is_array(jo) || json_array_size(jo) != 2)
		return bf_errf(err, "%s: tensor '%s': data_offsets is not a list of two integers", what, name);
	if (!get_u48(json_array_get(jo, 0), &t->begin) || !get_u48(json_array_get(jo, 1), &t->end))
		return bf_errf(err, "%s: tensor '%s': data_offsets are not integers in [0, 2^48-1]", what, name);
	if (t->end < t->begin)
		return bf_errf(err, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] are "
			       "reversed (end before begin)", what, name, t->begin, t->end);

	uint64_t bits;
	if (numel_ovf || !bf_mul_u64(t->numel, bf_dtypes[t->dtype].bits, &bits))
		return bf_errf(err, "%s: tensor '%s': shape %s of %s overflows the element count", what,
			       name, fmt_shape(sb, sizeof(sb), t->shape, t->ndim), bf_dtypes[t->dtype].st_name);
	if (bits % 8)
		return bf_errf(err, "%s: tensor '%s': misaligned: shape %s of %s is %" PRIu64 " bits, "
			       "not a whole number of bytes", what, name,
			       fmt_shape(sb, sizeof(sb), t->shape, t->ndim), bf_dtypes[t->dtype].st_name, bits);
	if (t->end - t->begin != bits / 8)
		return bf_errf(err, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
			       " bytes but shape %s of %s needs %" PRIu64, what, name, t->begin, t->end,
			       t->end - t->begin, fmt_shape(sb, sizeof(sb), t->shape, t->ndim),
			       bf_dtypes[t->dtype].st_name, bits / 8);
	return 0;
}

static int cmp_by_offset(const void *a, const void *b)
{
	const struct bf_st_tensor *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int bf_st_parse(const char *json, size_t n, uint64_t file_size, const char *what,
		struct bf_st_header *out, struct bf_err *err)
{
	memset(out, 0, sizeof(*out));
	if (n > BF_ST_MAX_HEADER)
		return bf_errf(err, "%s: header length %zu exceeds the limit of %llu bytes", what, n,
			       BF_ST_MAX_HEADER);
	if (file_size < 8 || n > file_size - 8)
		return bf_errf(err, "%s: header length %zu extends beyond the end of the file (%" PRIu64
			       " bytes)", what, n, file_size);

	size_t lead = 0;
	while (lead < n && is_json_ws(json[lead]))
		lead++;
	if (lead == n)
		return bf_errf(err, "%s: header is empty", what);
	if (json[lead] != '{')
		return bf_errf(err, "%s: header is not a JSON object (does not start with '{')", what);

	json_error_t je;
	json_t *root = json_loadb(json + lead, n - lead, JSON_REJECT_DUPLICATES | JSON_DISABLE_EOF_CHECK, &je);
	if (!root)
		return bf_errf(err, "%s: header is not valid JSON: %s (at byte %zu)", what, je.text,
			       lead + (size_t)(je.position > 0 ? je.position : 0));
	int rc = -1;
	struct bf_st_tensor *ts = NULL;
	size_t nt = 0;

	if (!json_is_object(root)) {
		bf_errf(err, "%s: header is not a JSON object", what);
		goto out;
	}
	/* jansson reports the bytes it consumed; what follows must be the writer's space padding. */
	size_t used = lead + (size_t)(je.position > 0 ? je.position : 0);
	if (used > n)
		used = n;
	for (size_t i = used; i < n; i++)
		if (json[i] != ' ') {
			bf_errf(err, "%s: header has trailing bytes after the JSON object (byte %zu is "
				"0x%02x; only space padding is allowed)", what, i, (unsigned char)json[i]);
			goto out;
		}

	size_t nkeys = json_object_size(root);
	bool has_meta = json_object_get(root, "__metadata__") != NULL;
	size_t cap = nkeys - (has_meta ? 1 : 0);
	if (cap > BF_ST_MAX_TENSORS) {
		bf_errf(err, "%s: header lists %zu tensors, more than the %u allowed", what, cap,
			BF_ST_MAX_TENSORS);
		goto out;
	}
	ts = bf_xcalloc(cap ? cap : 1, sizeof(*ts));

	for (void *it = json_object_iter(root); it; it = json_object_iter_next(root, it)) {
		const char *key = json_object_iter_key(it);
		size_t klen = json_object_iter_key_len(it);
		json_t *val = json_object_iter_value(it);
		struct disp d;
		if (klen == 12 && !memcmp(key, "__metadata__", 12)) {
			if (check_metadata(val, what, err) < 0)
				goto out;
			continue;
		}
		if (klen == 0) {
			bf_errf(err, "%s: a tensor has an empty name", what);
			goto out;
		}
		if (klen > BF_ST_MAX_NAME) {
			bf_errf(err, "%s: tensor '%s': name is %zu bytes, more than the %u allowed", what,
				disp(&d, key, klen), klen, BF_ST_MAX_NAME);
			goto out;
		}
		if (memchr(key, 0, klen)) {
			bf_errf(err, "%s: tensor '%s': name contains a NUL byte", what, disp(&d, key, klen));
			goto out;
		}
		BF_ASSERT(nt < cap);
		struct bf_st_tensor *t = &ts[nt];
		if (parse_tensor(val, what, disp(&d, key, klen), t, err) < 0)
			goto out;
		t->name = bf_xstrndup(key, klen);
		t->seq = nt;
		nt++;
	}

	qsort(ts, nt, sizeof(*ts), cmp_by_offset);
	uint64_t pos = 0;
	for (size_t i = 0; i < nt; i++) {
		struct disp d;
		const struct bf_st_tensor *t = &ts[i];
		if (t->begin != pos) {
			if (t->begin > pos)
				bf_errf(err, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] leave a "
					"gap: the previous tensor ends at %" PRIu64, what,
					disp(&d, t->name, strlen(t->name)), t->begin, t->end, pos);
			else
				bf_errf(err, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap "
					"the previous tensor, which ends at %" PRIu64, what,
					disp(&d, t->name, strlen(t->name)), t->begin, t->end, pos);
			goto out;
		}
		pos = t->end;
	}
	/* 8 + n + pos cannot overflow: n <= 1e8 and pos <= 2^48. */
	uint64_t need = 8 + (uint64_t)n + pos;
	if (need > file_size) {
		bf_errf(err, "%s: truncated: header and data need %" PRIu64 " bytes but the file has %" PRIu64,
			what, need, file_size);
		goto out;
	}
	if (need < file_size) {
		bf_errf(err, "%s: %" PRIu64 " trailing bytes after the last tensor (file is %" PRIu64
			" bytes, header and data account for %" PRIu64 ")", what, file_size - need,
			file_size, need);
		goto out;
	}

	out->header_len = n;
	out->data_start = 8 + (uint64_t)n;
	out->n_tensors = nt;
	out->tensors = ts;
	ts = NULL;
	rc = 0;
out:
	if (ts)
		tensor_free_all(ts, nt);
	json_decref(root);
	return rc;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t got = 0;
	while (got < len) {
		ssize_t r = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;
		got += (size_t)r;
	}
	return 0;
}

int bf_st_read_header(int fd, const char *what, struct bf_st_header *out,
		      char **hdr_bytes, struct bf_err *err)
{
	memset(out, 0, sizeof(*out));
	if (hdr_bytes)
		*hdr_bytes = NULL;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return bf_errf(err, "%s: cannot stat: %s", what, strerror(errno));
	uint64_t size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
	if (size < 8)
		return bf_errf(err, "%s: file is %" PRIu64 " bytes, too small for a safetensors header", what, size);

	unsigned char lenb[8];
	int r = pread_full(fd, lenb, 8, 0);
	if (r < 0)
		return bf_errf(err, "%s: cannot read the header length: %s", what, strerror(-r));
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = (n << 8) | lenb[i];
	if (n > BF_ST_MAX_HEADER)
		return bf_errf(err, "%s: header length %" PRIu64 " exceeds the limit of %llu bytes", what, n,
			       BF_ST_MAX_HEADER);
	if (n > size - 8)
		return bf_errf(err, "%s: header length %" PRIu64 " extends beyond the end of the file (%"
			       PRIu64 " bytes)", what, n, size);

	char *buf = bf_xmalloc((size_t)n + 8);
	memcpy(buf, lenb, 8);
	r = pread_full(fd, buf + 8, (size_t)n, 8);
	if (r < 0) {
		free(buf);
		return bf_errf(err, "%s: cannot read the %" PRIu64 "-byte header: %s", what, n, strerror(-r));
	}
	if (bf_st_parse(buf + 8, (size_t)n, size, what, out, err) < 0) {
		free(buf);
		return -1;
	}
	if (hdr_bytes)
		*hdr_bytes = buf;
	else
		free(buf);
	return 0;
}

/* ---- writer --------------------------------------------------------------------------------- */

size_t bf_json_quote(char *dst, size_t cap, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
#define PUT(ch) do { if (o + 1 < cap) dst[o] = (ch); o++; } while (0)
	PUT('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		unsigned char c = *p;
		switch (c) {
		case '"': PUT('\\'); PUT('"'); break;
		case '\\': PUT('\\'); PUT('\\'); break;
		case '\b': PUT('\\'); PUT('b'); break;
		case '\f': PUT('\\'); PUT('f'); break;
		case '\n': PUT('\\'); PUT('n'); break;
		case '\r': PUT('\\'); PUT('r'); break;
		case '\t': PUT('\\'); PUT('t'); break;
		default:
			if (c < 0x20) {
				PUT('\\'); PUT('u'); PUT('0'); PUT('0');
				PUT(hex[c >> 4]); PUT(hex[c & 15]);
			} else {
				PUT((char)c);
			}
		}
	}
	PUT('"');
#undef PUT
	if (cap)
		dst[o < cap ? o : cap - 1] = 0;
	return o;
}

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_reserve(struct sbuf *b, size_t extra)
{
	if (b->cap - b->len > extra)
		return;
	size_t c = b->cap ? b->cap : 256;
	while (c - b->len <= extra)
		c *= 2;
	b->p = bf_xrealloc(b->p, c);
	b->cap = c;
}

static void sb_put(struct sbuf *b, const char *s)
{
	size_t n = strlen(s);
	sb_reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void sb_u64(struct sbuf *b, uint64_t v)
{
	char t[24];
	snprintf(t, sizeof(t), "%" PRIu64, v);
	sb_put(b, t);
}

static void sb_quote(struct sbuf *b, const char *s)
{
	size_t need = bf_json_quote(NULL, 0, s);
	sb_reserve(b, need + 1);
	bf_json_quote(b->p + b->len, need + 1, s);
	b->len += need;
}

struct wt {
	const struct bf_st_out *t;
	size_t idx;
	uint64_t nbytes;
};

static int cmp_write_order(const void *a, const void *b)
{
	const struct wt *x = a, *y = b;
	if (x->t->dtype != y->t->dtype)
		return x->t->dtype > y->t->dtype ? -1 : 1;
	int c = strcmp(x->t->name, y->t->name);
	if (c)
		return c;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int cmp_name_ptr(const void *a, const void *b)
{
	return strcmp((*(const struct wt *const *)a)->t->name, (*(const struct wt *const *)b)->t->name);
}

int bf_st_serialize(const struct bf_st_out *t, size_t n, char **out, size_t *out_len,
		    size_t *order, uint64_t *offsets, struct bf_err *err)
{
	*out = NULL;
	*out_len = 0;
	if (n > BF_ST_MAX_TENSORS)
		return bf_errf(err, "safetensors writer: %zu tensors, more than the %u allowed", n,
			       BF_ST_MAX_TENSORS);
	struct wt *w = bf_xcalloc(n ? n : 1, sizeof(*w));
	struct wt **byname = NULL;
	struct sbuf b = { 0 };
	int rc = -1;

	for (size_t i = 0; i < n; i++) {
		const struct bf_st_out *x = &t[i];
		struct disp d;
		size_t nl = x->name ? strlen(x->name) : 0;
		const char *nm = x->name ? disp(&d, x->name, nl) : "(null)";
		if (nl == 0 || nl > BF_ST_MAX_NAME || !strcmp(x->name, "__metadata__")) {
			bf_errf(err, "safetensors writer: invalid tensor name '%s'", nm);
			goto out;
		}
		json_t *probe = json_stringn(x->name, nl); /* validates UTF-8 */
		if (!probe) {
			bf_errf(err, "safetensors writer: tensor '%s': name is not valid UTF-8", nm);
			goto out;
		}
		json_decref(probe);
		if ((int)x->dtype < 0 || x->dtype >= BF_DT_COUNT) {
			bf_errf(err, "safetensors writer: tensor '%s': invalid dtype %d", nm, (int)x->dtype);
			goto out;
		}
		if (x->ndim > BF_MAX_NDIM || (x->ndim && !x->shape)) {
			bf_errf(err, "safetensors writer: tensor '%s': invalid shape (%u dimensions)", nm, x->ndim);
			goto out;
		}
		uint64_t numel = 1, bits;
		for (uint32_t k = 0; k < x->ndim; k++)
			if (x->shape[k] > BF_ST_MAX_DIM || !bf_mul_u64(numel, x->shape[k], &numel)) {
				bf_errf(err, "safetensors writer: tensor '%s': shape out of range", nm);
				goto out;
			}
		if (!bf_mul_u64(numel, bf_dtypes[x->dtype].bits, &bits) || bits % 8) {
			bf_errf(err, "safetensors writer: tensor '%s': size is not a whole number of bytes", nm);
			goto out;
		}
		w[i].t = x;
		w[i].idx = i;
		w[i].nbytes = bits / 8;
	}

	byname = bf_xcalloc(n ? n : 1, sizeof(*byname));
	for (size_t i = 0; i < n; i++)
		byname[i] = &w[i];
	qsort(byname, n, sizeof(*byname), cmp_name_ptr);
	for (size_t i = 1; i < n; i++)
		if (!strcmp(byname[i - 1]->t->name, byname[i]->t->name)) {
			struct disp d;
			bf_errf(err, "safetensors writer: tensor '%s' is listed twice",
				disp(&d, byname[i]->t->name, strlen(byname[i]->t->name)));
			goto out;
		}

	qsort(w, n, sizeof(*w), cmp_write_order);

	sb_reserve(&b, 64);
	memset(b.p, 0, 8);
	b.len = 8;
	sb_put(&b, "{\"__metadata__\":{\"format\":\"pt\"}");
	uint64_t pos = 0;
	for (size_t k = 0; k < n; k++) {
		const struct bf_st_out *x = w[k].t;
		uint64_t end;
		if (!bf_add_u64(pos, w[k].nbytes, &end) || end > BF_ST_MAX_DIM) {
			bf_errf(err, "safetensors writer: data exceeds 2^48-1 bytes");
			goto out;
		}
		sb_put(&b, ",");
		sb_quote(&b, x->name);
		sb_put(&b, ":{\"dtype\":\"");
		sb_put(&b, bf_dtypes[x->dtype].st_name);
		sb_put(&b, "\",\"shape\":[");
		for (uint32_t j = 0; j < x->ndim; j++) {
			if (j)
				sb_put(&b, ",");
			sb_u64(&b, x->shape[j]);
		}
		sb_put(&b, "],\"data_offsets\":[");
		sb_u64(&b, pos);
		sb_put(&b, ",");
		sb_u64(&b, end);
		sb_put(&b, "]}");
		if (order)
			order[k] = w[k].idx;
		if (offsets)
			offsets[w[k].idx] = pos;
		pos = end;
	}
	sb_put(&b, "}");
	while ((b.len - 8) % 8)
		sb_put(&b, " ");
	uint64_t hn = b.len - 8;
	if (hn > BF_ST_MAX_HEADER) {
		bf_errf(err, "safetensors writer: header of %" PRIu64 " bytes exceeds the limit", hn);
		goto out;
	}
	for (int i = 0; i < 8; i++)
		b.p[i] = (char)(unsigned char)(hn >> (8 * i));
	*out = b.p;
	*out_len = b.len;
	b.p = NULL;
	rc = 0;
out:
	free(b.p);
	free(byname);
	free(w);
	return rc;
}
