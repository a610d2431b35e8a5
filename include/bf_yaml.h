/* bf_yaml.h: a small, hostile-input-safe YAML document loader on top of libyaml's event parser.
 *
 * Produces a tree of scalars, sequences and mappings, each node carrying its 1-based line and
 * column. It is NOT a general YAML loader. It rejects, with "FILE:LINE:COL: message":
 *   - input over 1 MiB, a scalar over 64 KiB, nesting deeper than 32, more than 100,000 events
 *   - invalid UTF-8 / libyaml syntax errors (libyaml's problem text and mark)
 *   - anchors, aliases (no "billion laughs"), explicit tags (!!python/..., !foo)
 *   - more than one document; an empty document yields an error too
 *   - mapping keys that are not plain scalars
 *   - the same key twice in one mapping (both lines named)
 * Typing scalars is the caller's job (bf_recipe): a scalar keeps its text and whether it was
 * quoted (quoted scalars are always strings).
 */
#ifndef BF_YAML_H
#define BF_YAML_H

#include <stddef.h>
#include <stdbool.h>
#include "bf_common.h"

#define BF_YAML_MAX_BYTES (1u << 20)
#define BF_YAML_MAX_SCALAR (64u << 10)
#define BF_YAML_MAX_DEPTH 32
#define BF_YAML_MAX_EVENTS 100000

enum bf_ynode_kind { BF_Y_SCALAR, BF_Y_SEQ, BF_Y_MAP };

struct bf_ynode {
	enum bf_ynode_kind kind;
	int line, col;          /* 1-based position of the node's first character */
	char *str;              /* BF_Y_SCALAR: NUL-terminated text (owned) */
	size_t len;             /* BF_Y_SCALAR: length of str */
	bool quoted;            /* BF_Y_SCALAR: single/double quoted or block literal */
	size_t n;               /* BF_Y_SEQ: number of items; BF_Y_MAP: number of pairs */
	struct bf_ynode *items; /* SEQ: items[0..n); MAP: items[2i] = key (scalar), items[2i+1] = value */
};

/* Parse text[0..len) (need not be NUL-terminated). `fname` is used in messages. On success
 * *root is a malloc'd tree the caller frees with bf_yaml_free. */
int bf_yaml_load(const char *text, size_t len, const char *fname, struct bf_ynode **root,
		 struct bf_err *err);
void bf_yaml_free(struct bf_ynode *root);

/* Lookup helper: value node for `key` in a mapping, or NULL. */
const struct bf_ynode *bf_yaml_get(const struct bf_ynode *map, const char *key);

#endif
