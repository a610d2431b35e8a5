/* bf_yaml.c: libyaml event loop -> small owned tree, with the limits and rejections listed in
 * bf_yaml.h.
 *
 * The tree is built bottom-up. Every open sequence or mapping is a frame on a fixed stack (depth
 * is capped, so the stack is an array); a frame collects its children in a growable array, and
 * only when the container ends is that array handed to the node, which is then appended to the
 * parent frame. No pointer into a growing array is ever kept, so a realloc cannot leave one
 * dangling.
 *
 * Duplicate keys: each mapping frame keeps a small open-addressing hash of its keys (an index into
 * the frame's items), so a 50,000-key mapping costs O(n), not O(n^2) string compares.
 *
 * Every error path releases the frames, the partial root and the current event; the caller gets
 * either a complete tree or nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "bf_yaml.h"

#define KEY_SHOW 64 /* bytes of a key quoted in a message */

struct frame {
	struct bf_ynode node;   /* kind, line, col; items/n filled at the end */
	struct bf_ynode *items;
	size_t count, cap;      /* count = number of child nodes (keys and values for a mapping) */
	size_t *hash;           /* MAP only: slots hold key item index + 1, 0 = empty */
	size_t hcap, nkeys;
};

struct loader {
	const char *fname;
	struct bf_err *err;
	struct frame stack[BF_YAML_MAX_DEPTH];
	int depth;
	struct bf_ynode *root;
};

static void free_contents(struct bf_ynode *n)
{
	if (n->kind == BF_Y_SCALAR) {
		free(n->str);
	} else {
		size_t cnt = n->kind == BF_Y_MAP ? 2 * n->n : n->n;
		for (size_t i = 0; i < cnt; i++)
			free_contents(&n->items[i]);
		free(n->items);
	}
}

void bf_yaml_free(struct bf_ynode *root)
{
	if (!root)
		return;
	free_contents(root);
	free(root);
}

static void free_frame(struct frame *f)
{
	for (size_t i = 0; i < f->count; i++)
		free_contents(&f->items[i]);
	free(f->items);
	free(f->hash);
	memset(f, 0, sizeof(*f));
}

static uint64_t hash_bytes(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void hash_insert(size_t *tab, size_t hcap, const struct bf_ynode *items, size_t idx)
{
	size_t m = hcap - 1, h = (size_t)hash_bytes(items[idx].str, items[idx].len) & m;
	while (tab[h])
		h = (h + 1) & m;
	tab[h] = idx + 1;
}

/* Look for an earlier key equal to items[idx]; insert it if there is none. Returns the earlier
 * key's index + 1, or 0. */
static size_t key_seen(struct frame *f, size_t idx)
{
	const struct bf_ynode *k = &f->items[idx];
	if ((f->nkeys + 1) * 2 > f->hcap) {
		size_t ncap = f->hcap ? f->hcap * 2 : 16;
		size_t *nt = bf_xcalloc(ncap, sizeof(*nt));
		for (size_t i = 0; i < f->hcap; i++)
			if (f->hash[i])
				hash_insert(nt, ncap, f->items, f->hash[i] - 1);
		free(f->hash);
		f->hash = nt;
		f->hcap = ncap;
	}
	size_t m = f->hcap - 1, h = (size_t)hash_bytes(k->str, k->len) & m;
	while (f->hash[h]) {
		const struct bf_ynode *o = &f->items[f->hash[h] - 1];
		if (o->len == k->len && !memcmp(o->str, k->str, k->len))
			return f->hash[h];
		h = (h + 1) & m;
	}
	f->hash[h] = idx + 1;
	f->nkeys++;
	return 0;
}

/* Append a finished node (ownership moves, even on failure) to the current container, or make it
 * the root. Fails only for a duplicate mapping key. */
static int attach(struct loader *ld, struct bf_ynode *n)
{
	if (ld->depth == 0) {
		BF_ASSERT(!ld->root);
		ld->root = bf_xmalloc(sizeof(*ld->root));
		*ld->root = *n;
		return 0;
	}
	struct frame *f = &ld->stack[ld->depth - 1];
	if (f->count == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 8;
		f->items = bf_xrealloc(f->items, f->cap * sizeof(*f->items));
	}
	f->items[f->count++] = *n;
	if (f->node.kind == BF_Y_MAP && (f->count & 1)) {
		size_t prev = key_seen(f, f->count - 1);
		if (prev) {
			const struct bf_ynode *k = &f->items[f->count - 1];
			return bf_errf(ld->err, "%s:%d:%d: duplicate key '%.*s'%s (first at line %d)",
				       ld->fname, k->line, k->col, (int)(k->len > KEY_SHOW ? KEY_SHOW : k->len),
				       k->str, k->len > KEY_SHOW ? "..." : "", f->items[prev - 1].line);
		}
	}
	return 0;
}

/* A container cannot sit where a mapping expects a key. */
static int check_key_slot(struct loader *ld, int line, int col, const char *what)
{
	if (ld->depth > 0) {
		const struct frame *f = &ld->stack[ld->depth - 1];
		if (f->node.kind == BF_Y_MAP && !(f->count & 1))
			return bf_errf(ld->err, "%s:%d:%d: a mapping key must be a scalar, not a %s",
				       ld->fname, line, col, what);
	}
	return 0;
}

static int push(struct loader *ld, enum bf_ynode_kind kind, int line, int col)
{
	if (check_key_slot(ld, line, col, kind == BF_Y_MAP ? "mapping" : "sequence") < 0)
		return -1;
	if (ld->depth >= BF_YAML_MAX_DEPTH)
		return bf_errf(ld->err, "%s:%d:%d: nesting deeper than %d levels", ld->fname, line, col,
			       BF_YAML_MAX_DEPTH);
	struct frame *f = &ld->stack[ld->depth++];
	memset(f, 0, sizeof(*f));
	f->node.kind = kind;
	f->node.line = line;
	f->node.col = col;
	return 0;
}

static int pop(struct loader *ld)
{
	BF_ASSERT(ld->depth > 0);
	struct frame *f = &ld->stack[ld->depth - 1];
	struct bf_ynode n = f->node;
	n.items = f->items;
	n.n = n.kind == BF_Y_MAP ? f->count / 2 : f->count;
	BF_ASSERT(n.kind != BF_Y_MAP || !(f->count & 1));
	free(f->hash);
	memset(f, 0, sizeof(*f));
	ld->depth--;
	/* attach fails only on a duplicate key (never for a container); the frame owns n then */
	return attach(ld, &n);
}

static void pos_of_offset(const char *text, size_t len, size_t off, int *line, int *col)
{
	int l = 1, c = 1;
	if (off > len)
		off = len;
	for (size_t i = 0; i < off; i++) {
		if (text[i] == '\n') {
			l++;
			c = 1;
		} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
			c++;
		}
	}
	*line = l;
	*col = c;
}

static int parser_error(const yaml_parser_t *p, const char *text, size_t len, const char *fname,
			struct bf_err *err)
{
	int line, col;
	const char *problem = p->problem ? p->problem : "YAML syntax error";
	switch (p->error) {
	case YAML_MEMORY_ERROR:
		return bf_errf(err, "%s:1:1: out of memory while parsing YAML", fname);
	case YAML_READER_ERROR:
		pos_of_offset(text, len, p->problem_offset, &line, &col);
		if (p->problem_value != -1)
			return bf_errf(err, "%s:%d:%d: %s (byte 0x%02x at offset %zu)", fname, line, col,
				       problem, (unsigned)p->problem_value & 0xffu, p->problem_offset);
		return bf_errf(err, "%s:%d:%d: %s (at offset %zu)", fname, line, col, problem,
			       p->problem_offset);
	default:
		line = (int)p->problem_mark.line + 1;
		col = (int)p->problem_mark.column + 1;
		if (p->context)
			return bf_errf(err, "%s:%d:%d: %s (%s)", fname, line, col, problem, p->context);
		return bf_errf(err, "%s:%d:%d: %s", fname, line, col, problem);
	}
}

/* Returns 1 at the end of the stream, 0 to go on, -1 on error. */
static int on_event(struct loader *ld, const yaml_event_t *ev, int *ndocs)
{
	int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
	const char *fn = ld->fname;
	const yaml_char_t *anchor = NULL, *tag = NULL;

	switch (ev->type) {
	case YAML_STREAM_START_EVENT:
	case YAML_DOCUMENT_END_EVENT:
	case YAML_NO_EVENT:
		return 0;
	case YAML_STREAM_END_EVENT:
		if (*ndocs == 0)
			return bf_errf(ld->err, "%s:1:1: the document is empty", fn);
		return 1;
	case YAML_DOCUMENT_START_EVENT:
		if (++*ndocs > 1)
			return bf_errf(ld->err, "%s:%d:%d: more than one YAML document (a recipe is one document)",
				       fn, line, col);
		return 0;
	case YAML_ALIAS_EVENT:
		return bf_errf(ld->err, "%s:%d:%d: aliases ('*%s') are not allowed in a recipe", fn, line,
			       col, (const char *)ev->data.alias.anchor);
	case YAML_SCALAR_EVENT:
		anchor = ev->data.scalar.anchor;
		tag = ev->data.scalar.tag;
		break;
	case YAML_SEQUENCE_START_EVENT:
		anchor = ev->data.sequence_start.anchor;
		tag = ev->data.sequence_start.tag;
		break;
	case YAML_MAPPING_START_EVENT:
		anchor = ev->data.mapping_start.anchor;
		tag = ev->data.mapping_start.tag;
		break;
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		return pop(ld);
	}
	if (anchor)
		return bf_errf(ld->err, "%s:%d:%d: anchors ('&%s') are not allowed in a recipe", fn, line,
			       col, (const char *)anchor);
	if (tag)
		return bf_errf(ld->err, "%s:%d:%d: explicit tags ('%s') are not allowed in a recipe", fn,
			       line, col, (const char *)tag);
	if (ev->type == YAML_SEQUENCE_START_EVENT)
		return push(ld, BF_Y_SEQ, line, col);
	if (ev->type == YAML_MAPPING_START_EVENT)
		return push(ld, BF_Y_MAP, line, col);

	size_t len = ev->data.scalar.length;
	if (len > BF_YAML_MAX_SCALAR)
		return bf_errf(ld->err, "%s:%d:%d: scalar is %zu bytes, more than the %u allowed", fn,
			       line, col, len, BF_YAML_MAX_SCALAR);
	struct bf_ynode n = { .kind = BF_Y_SCALAR, .line = line, .col = col, .len = len };
	n.quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
	n.str = bf_xstrndup((const char *)ev->data.scalar.value, len);
	return attach(ld, &n); /* on a duplicate key the frame already owns n */
}

int bf_yaml_load(const char *text, size_t len, const char *fname, struct bf_ynode **root,
		 struct bf_err *err)
{
	const unsigned char *u = (const unsigned char *)text;
	*root = NULL;
	if (len > BF_YAML_MAX_BYTES)
		return bf_errf(err, "%s:1:1: file is %zu bytes, more than the %u allowed", fname, len,
			       BF_YAML_MAX_BYTES);
	if ((len >= 2 && ((u[0] == 0xfe && u[1] == 0xff) || (u[0] == 0xff && u[1] == 0xfe))) ||
	    (len >= 4 && u[0] == 0 && u[1] == 0 && u[2] == 0xfe && u[3] == 0xff))
		return bf_errf(err, "%s:1:1: UTF-16/UTF-32 byte order mark: a recipe must be UTF-8", fname);

	yaml_parser_t parser;
	if (!yaml_parser_initialize(&parser))
		return bf_errf(err, "%s:1:1: out of memory while parsing YAML", fname);
	yaml_parser_set_input_string(&parser, u, len); /* no BOM or a UTF-8 BOM: read as UTF-8 */

	struct loader ld = { .fname = fname, .err = err };
	int ndocs = 0, rc = -1;
	for (unsigned long nev = 0;; nev++) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&parser, &ev)) {
			parser_error(&parser, text, len, fname, err);
			break;
		}
		if (nev >= BF_YAML_MAX_EVENTS) {
			bf_errf(err, "%s:%d:%d: more than %d YAML events: the recipe is too large", fname,
				(int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
				BF_YAML_MAX_EVENTS);
			yaml_event_delete(&ev);
			break;
		}
		int r = on_event(&ld, &ev, &ndocs);
		yaml_event_delete(&ev);
		if (r < 0)
			break;
		if (r > 0) {
			rc = 0;
			break;
		}
	}
	yaml_parser_delete(&parser);

	while (ld.depth > 0)
		free_frame(&ld.stack[--ld.depth]);
	if (rc == 0 && ld.root && ld.root->kind == BF_Y_SCALAR && !ld.root->quoted && ld.root->len == 0)
		rc = bf_errf(err, "%s:%d:%d: the document is empty", fname, ld.root->line, ld.root->col);
	if (rc < 0 || !ld.root) {
		if (rc == 0)
			rc = bf_errf(err, "%s:1:1: the document is empty", fname);
		bf_yaml_free(ld.root);
		return rc;
	}
	*root = ld.root;
	return 0;
}

const struct bf_ynode *bf_yaml_get(const struct bf_ynode *map, const char *key)
{
	if (!map || map->kind != BF_Y_MAP || !key)
		return NULL;
	size_t kl = strlen(key);
	for (size_t i = 0; i < map->n; i++) {
		const struct bf_ynode *k = &map->items[2 * i];
		if (k->kind == BF_Y_SCALAR && k->len == kl && !memcmp(k->str, key, kl))
			return &map->items[2 * i + 1];
	}
	return NULL;
}
