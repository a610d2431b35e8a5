/* test_yaml.c: the hostile-input YAML loader: tree shape, positions, limits, rejections. */
#include <stdlib.h>
#include <string.h>

#include "bf_yaml.h"
#include "bf_test.h"

static int load(const char *text, size_t len, struct bf_ynode **root, struct bf_err *e)
{
	bf_err_clear(e);
	return bf_yaml_load(text, len, "t.yaml", root, e);
}

static int loads(const char *text, struct bf_ynode **root, struct bf_err *e)
{
	return load(text, strlen(text), root, e);
}

/* The text must be rejected with a message that starts with "t.yaml:POS: " and contains sub. */
#define EXPECT_REJECT(text, len, pos, sub) do { \
	struct bf_ynode *_r = (struct bf_ynode *)1; struct bf_err _e; \
	EXPECT(load((text), (len), &_r, &_e) < 0); \
	EXPECT(_r == NULL); \
	if (strncmp(_e.msg, "t.yaml:" pos ": ", strlen("t.yaml:" pos ": "))) \
		BF_T_FAIL("expected position t.yaml:%s in \"%s\"", pos, _e.msg); \
	EXPECT_STR_CONTAINS(_e.msg, sub); \
	bf_yaml_free(_r == (struct bf_ynode *)1 ? NULL : _r); \
} while (0)
#define EXPECT_REJECTS(text, pos, sub) EXPECT_REJECT(text, strlen(text), pos, sub)

#define EXPECT_SCALAR(n, text, l, c, q) do { const struct bf_ynode *_n = (n); \
	EXPECT(_n != NULL); \
	if (_n) { EXPECT_EQ_U64(_n->kind, BF_Y_SCALAR); EXPECT_STR_EQ(_n->str, text); \
		EXPECT_EQ_U64(_n->len, strlen(text)); EXPECT_EQ_I64(_n->line, l); \
		EXPECT_EQ_I64(_n->col, c); EXPECT(_n->quoted == (q)); } \
} while (0)

BF_TEST(tree_and_positions)
{
	const char *y =
		"# comment\n"
		"a: 1\n"
		"b:\n"
		"  - x\n"
		"  - 'y'\n"
		"  - \"z w\"\n"
		"c: {d: e, f: [1, 2]}\n"
		"g: |\n"
		"  text\n"
		"h:\n";
	struct bf_ynode *r = NULL;
	struct bf_err e;
	EXPECT(loads(y, &r, &e) == 0);
	EXPECT_STR_EQ(e.msg, "");
	if (!r)
		return;
	EXPECT_EQ_U64(r->kind, BF_Y_MAP);
	EXPECT_EQ_U64(r->n, 5);
	EXPECT_EQ_I64(r->line, 2);
	EXPECT_EQ_I64(r->col, 1);
	EXPECT_SCALAR(&r->items[0], "a", 2, 1, false);
	EXPECT_SCALAR(&r->items[1], "1", 2, 4, false);
	EXPECT_SCALAR(&r->items[2], "b", 3, 1, false);
	const struct bf_ynode *b = bf_yaml_get(r, "b");
	EXPECT(b == &r->items[3]);
	EXPECT_EQ_U64(b->kind, BF_Y_SEQ);
	EXPECT_EQ_U64(b->n, 3);
	EXPECT_EQ_I64(b->line, 4);
	EXPECT_EQ_I64(b->col, 3);
	EXPECT_SCALAR(&b->items[0], "x", 4, 5, false);
	EXPECT_SCALAR(&b->items[1], "y", 5, 5, true);
	EXPECT_SCALAR(&b->items[2], "z w", 6, 5, true);
	const struct bf_ynode *c = bf_yaml_get(r, "c");
	EXPECT(c && c->kind == BF_Y_MAP && c->n == 2);
	EXPECT_EQ_I64(c->line, 7);
	EXPECT_EQ_I64(c->col, 4);
	EXPECT_SCALAR(bf_yaml_get(c, "d"), "e", 7, 8, false);
	const struct bf_ynode *f = bf_yaml_get(c, "f");
	EXPECT(f && f->kind == BF_Y_SEQ && f->n == 2);
	EXPECT_EQ_I64(f->line, 7);
	EXPECT_EQ_I64(f->col, 14);
	EXPECT_SCALAR(&f->items[1], "2", 7, 18, false);
	EXPECT_SCALAR(bf_yaml_get(r, "g"), "text\n", 8, 4, true); /* block literal counts as quoted */
	EXPECT_SCALAR(bf_yaml_get(r, "h"), "", 10, 3, false);     /* empty value: empty plain scalar */
	EXPECT(bf_yaml_get(r, "nope") == NULL);
	EXPECT(bf_yaml_get(b, "x") == NULL); /* not a mapping */
	EXPECT(bf_yaml_get(NULL, "a") == NULL);
	bf_yaml_free(r);
	bf_yaml_free(NULL);
}

BF_TEST(scalars_keep_bytes)
{
	/* a double-quoted "\0" escape is a real NUL inside the scalar: len must say so */
	struct bf_ynode *r = NULL;
	struct bf_err e;
	EXPECT(loads("k: \"a\\0b\"\n", &r, &e) == 0);
	if (!r)
		return;
	const struct bf_ynode *k = bf_yaml_get(r, "k");
	EXPECT(k && k->len == 3 && !memcmp(k->str, "a\0b", 4) && k->quoted);
	bf_yaml_free(r);

	/* the input need not be NUL-terminated: parse a prefix of a longer buffer */
	const char buf[] = "a: 1\nb: 2\nGARBAGE: [";
	EXPECT(load(buf, 10, &r, &e) == 0);
	EXPECT(r && r->n == 2);
	bf_yaml_free(r);

	/* a UTF-8 byte order mark is fine */
	EXPECT(loads("\xef\xbb\xbf" "a: 1\n", &r, &e) == 0);
	EXPECT(r && r->n == 1);
	EXPECT_SCALAR(bf_yaml_get(r, "a"), "1", 1, 4, false);
	bf_yaml_free(r);

	/* a document that is a lone scalar or list loads; typing it is the caller's job */
	EXPECT(loads("hello\n", &r, &e) == 0);
	EXPECT_SCALAR(r, "hello", 1, 1, false);
	bf_yaml_free(r);
	EXPECT(loads("--- [1]\n...\n", &r, &e) == 0);
	EXPECT(r && r->kind == BF_Y_SEQ && r->n == 1);
	bf_yaml_free(r);
}

BF_TEST(same_key_in_different_mappings_is_fine)
{
	struct bf_ynode *r = NULL;
	struct bf_err e;
	EXPECT(loads("a: {x: 1}\nb: {x: 2}\nc: [{x: 3}, {x: 4}]\n", &r, &e) == 0);
	EXPECT_STR_EQ(e.msg, "");
	bf_yaml_free(r);
}

BF_TEST(duplicate_keys)
{
	EXPECT_REJECTS("a: 1\nb: 2\na: 3\n", "3:1", "duplicate key 'a' (first at line 1)");
	EXPECT_REJECTS("m:\n  x: 1\n  y: 2\n  x: 3\n", "4:3", "duplicate key 'x' (first at line 2)");
	EXPECT_REJECTS("a: 1\n'a': 2\n", "2:1", "duplicate key 'a' (first at line 1)");
	EXPECT_REJECTS("{p: 1, q: 2, p: 3}", "1:14", "duplicate key 'p' (first at line 1)");
	/* the duplicate's value is a container that was already built: freed cleanly */
	EXPECT_REJECTS("a: [1, 2]\nb: 1\na: {c: [d]}\n", "3:1", "duplicate key 'a'");

	/* a large mapping goes through the hash (and its growth), not a quadratic scan */
	size_t nkeys = 20000, cap = nkeys * 16 + 64, off = 0;
	char *big = malloc(cap);
	for (size_t i = 0; i < nkeys; i++)
		off += (size_t)snprintf(big + off, cap - off, "k%zu: %zu\n", i, i);
	struct bf_ynode *r = NULL;
	struct bf_err e;
	EXPECT(load(big, off, &r, &e) == 0);
	EXPECT(r && r->n == nkeys);
	if (r) {
		const struct bf_ynode *v = bf_yaml_get(r, "k12345");
		EXPECT(v && !strcmp(v->str, "12345") && v->line == 12346);
	}
	bf_yaml_free(r);
	off += (size_t)snprintf(big + off, cap - off, "k777: again\n");
	EXPECT_REJECT(big, off, "20001:1", "duplicate key 'k777' (first at line 778)");
	free(big);
}

BF_TEST(anchors_aliases_tags)
{
	EXPECT_REJECTS("a: &x 1\nb: *x\n", "1:4", "anchors ('&x') are not allowed");
	EXPECT_REJECTS("b: *x\n", "1:4", "aliases ('*x') are not allowed");
	EXPECT_REJECTS("a: &s [1]\n", "1:4", "anchors");
	EXPECT_REJECTS("a: &m {k: v}\n", "1:4", "anchors");
	/* billion laughs: rejected at the first anchor, long before anything expands */
	EXPECT_REJECTS("a: &a [\"lol\",\"lol\",\"lol\"]\n"
		       "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
		       "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
		       "d: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n", "1:4", "anchors ('&a')");
	EXPECT_REJECTS("a: !!python/object/apply:os.system [\"rm -rf /\"]\n", "1:4",
		       "explicit tags ('tag:yaml.org,2002:python/object/apply:os.system') are not allowed");
	EXPECT_REJECTS("a: !foo x\n", "1:4", "explicit tags ('!foo')");
	EXPECT_REJECTS("a: !!str 1\n", "1:4", "explicit tags");
	EXPECT_REJECTS("--- !!map\na: 1\n", "1:5", "explicit tags");
	EXPECT_REJECTS("a: ! x\n", "1:4", "explicit tags ('!')");
}

BF_TEST(documents)
{
	EXPECT_REJECTS("a: 1\n---\nb: 2\n", "2:1", "more than one YAML document");
	EXPECT_REJECTS("---\na: 1\n...\n---\nb: 2\n", "4:1", "more than one YAML document");
	EXPECT_REJECTS("", "1:1", "the document is empty");
	EXPECT_REJECTS("# just a comment\n\n", "1:1", "the document is empty");
	EXPECT_REJECTS("---\n", "2:1", "the document is empty");
	/* a null document is a scalar to this layer; the recipe layer wants a mapping */
	struct bf_ynode *r = NULL;
	struct bf_err e;
	EXPECT(loads("~\n", &r, &e) == 0);
	EXPECT_SCALAR(r, "~", 1, 1, false);
	bf_yaml_free(r);
}

BF_TEST(encodings)
{
	EXPECT_REJECT("\xff\xfe" "a\0:\0 \0" "1\0", 10, "1:1", "UTF-16/UTF-32 byte order mark");
	EXPECT_REJECT("\xfe\xff\0a\0:\0 \0" "1", 10, "1:1", "byte order mark");
	EXPECT_REJECT("\0\0\xfe\xff\0\0\0a", 8, "1:1", "byte order mark");
	EXPECT_REJECTS("a: 1\nb: \xff\n", "2:4", "invalid leading UTF-8 octet");
	EXPECT_REJECTS("a: \xc3\n", "1:5", "invalid trailing UTF-8 octet");
	EXPECT_REJECT("a: x\0y\n", 7, "1:5", "control characters are not allowed");
}

BF_TEST(syntax_errors)
{
	EXPECT_REJECTS("a:\n\tb: 1\n", "2:1", "found character that cannot start any token");
	EXPECT_REJECTS("a: [1, 2\n", "2:1", "did not find expected ',' or ']'");
	EXPECT_REJECTS("a: 'open\n", "2:1", "found unexpected end of stream (while scanning a quoted scalar)");
	EXPECT_REJECTS("a: 1\n b: 2\n", "2:3", "mapping values are not allowed in this context");
	EXPECT_REJECTS("- a\nb: 1\n", "2:1", "did not find expected '-' indicator");
}

BF_TEST(non_scalar_keys)
{
	EXPECT_REJECTS("? [a, b]\n: 1\n", "1:3", "a mapping key must be a scalar, not a sequence");
	EXPECT_REJECTS("{{x: 1}: 2}\n", "1:2", "a mapping key must be a scalar, not a mapping");
	EXPECT_REJECTS("a:\n  ? {k: v}\n  : 1\n", "2:5", "a mapping key must be a scalar");
}

static char *nested(int depth, size_t *len)
{
	char *s = malloc((size_t)depth * 2 + 8);
	size_t n = 0;
	for (int i = 0; i < depth; i++)
		s[n++] = '[';
	s[n++] = '1';
	for (int i = 0; i < depth; i++)
		s[n++] = ']';
	s[n++] = '\n';
	s[n] = 0;
	*len = n;
	return s;
}

BF_TEST(depth_limit)
{
	size_t len;
	struct bf_ynode *r = NULL;
	struct bf_err e;
	char *s = nested(BF_YAML_MAX_DEPTH, &len);
	EXPECT(load(s, len, &r, &e) == 0);
	const struct bf_ynode *n = r;
	int d = 0;
	while (n && n->kind == BF_Y_SEQ) {
		d++;
		n = n->n ? &n->items[0] : NULL;
	}
	EXPECT_EQ_I64(d, BF_YAML_MAX_DEPTH);
	EXPECT(n && !strcmp(n->str, "1") && n->col == BF_YAML_MAX_DEPTH + 1);
	bf_yaml_free(r);
	free(s);

	s = nested(BF_YAML_MAX_DEPTH + 1, &len);
	EXPECT_REJECT(s, len, "1:33", "nesting deeper than 32 levels");
	free(s);
	s = nested(40, &len);
	EXPECT_REJECT(s, len, "1:33", "nesting deeper than 32 levels");
	free(s);
	/* deep block mappings: a: b: c: ... each one level deeper */
	char buf[4096];
	size_t off = 0;
	for (int i = 0; i < 40; i++)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%*sk%d:\n", 2 * i, "", i);
	EXPECT_REJECT(buf, off, "33:65", "nesting deeper than 32 levels");
}

/* "[0,0,...,0]" with n items: n + 6 events (stream, document, sequence start/end each). */
static char *flat_seq(size_t n, size_t *len)
{
	char *s = malloc(2 * n + 4);
	size_t k = 0;
	s[k++] = '[';
	for (size_t i = 0; i < n; i++) {
		if (i)
			s[k++] = ',';
		s[k++] = '0';
	}
	s[k++] = ']';
	s[k] = 0;
	*len = k;
	return s;
}

BF_TEST(event_limit)
{
	size_t len;
	struct bf_ynode *r = NULL;
	struct bf_err e;
	char *s = flat_seq(BF_YAML_MAX_EVENTS - 6, &len);
	EXPECT(load(s, len, &r, &e) == 0);
	EXPECT(r && r->kind == BF_Y_SEQ && r->n == BF_YAML_MAX_EVENTS - 6);
	bf_yaml_free(r);
	free(s);
	s = flat_seq(BF_YAML_MAX_EVENTS - 5, &len);
	EXPECT_REJECT(s, len, "2:1", "more than 100000 YAML events");
	free(s);
	/* a longer stream stops at event 100001: the item with index 99997, at column 2*99997+2 */
	s = flat_seq(150000, &len);
	EXPECT_REJECT(s, len, "1:199996", "more than 100000 YAML events");
	free(s);
}

BF_TEST(size_limits)
{
	size_t max = BF_YAML_MAX_SCALAR;
	char *s = malloc(BF_YAML_MAX_BYTES + 16);
	struct bf_ynode *r = NULL;
	struct bf_err e;

	memcpy(s, "k: ", 3);
	memset(s + 3, 'x', max);
	s[3 + max] = '\n';
	EXPECT(load(s, max + 4, &r, &e) == 0);
	EXPECT(r && bf_yaml_get(r, "k") && bf_yaml_get(r, "k")->len == max);
	bf_yaml_free(r);

	memset(s + 3, 'x', max + 1);
	s[4 + max] = '\n';
	EXPECT_REJECT(s, max + 5, "1:4", "scalar is 65537 bytes, more than the 65536 allowed");

	/* quoted scalars count their decoded length too */
	s[3] = '"';
	memset(s + 4, 'x', max + 1);
	s[5 + max] = '"';
	s[6 + max] = '\n';
	EXPECT_REJECT(s, max + 7, "1:4", "scalar is 65537 bytes");

	/* whole input: 1 MiB of comment lines is fine up to the limit, one byte more is not */
	memset(s, '#', BF_YAML_MAX_BYTES + 1);
	for (size_t i = 100; i < BF_YAML_MAX_BYTES; i += 100)
		s[i] = '\n';
	memcpy(s, "a: 1\n", 5);
	EXPECT(load(s, BF_YAML_MAX_BYTES, &r, &e) == 0);
	EXPECT(r && r->n == 1);
	bf_yaml_free(r);
	EXPECT_REJECT(s, BF_YAML_MAX_BYTES + 1, "1:1", "file is 1048577 bytes, more than the 1048576 allowed");
	free(s);
}

int main(void)
{
	RUN(tree_and_positions);
	RUN(scalars_keep_bytes);
	RUN(same_key_in_different_mappings_is_fine);
	RUN(duplicate_keys);
	RUN(anchors_aliases_tags);
	RUN(documents);
	RUN(encodings);
	RUN(syntax_errors);
	RUN(non_scalar_keys);
	RUN(depth_limit);
	RUN(event_limit);
	RUN(size_limits);
	return bf_test_report();
}
