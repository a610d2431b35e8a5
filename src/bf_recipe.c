/* bf_recipe.c: YAML tree (bf_yaml) -> struct bf_recipe, checked for shape (bf_recipe.h).
 *
 * Every mapping is walked in file order; each key is looked up in the table of keys valid at that
 * level, so the first error reported is the first one in the file. Unknown keys get a "did you
 * mean" hint, keys mergekit knows but blendfs does not implement get a "not supported" line.
 *
 * Scalar typing (only for plain scalars; quoted ones are always strings) follows what a mergekit
 * user means, not YAML 1.1 to the letter:
 *   - true/True/TRUE/false/False/FALSE are booleans; yes/no/on/off are rejected as ambiguous;
 *   - empty, ~ and null are "no value" and rejected wherever a value is needed;
 *   - decimal integers and floats (1, -0.3, .5, 5., 1e-5, +1) are numbers: 1e-5 is a string to
 *     PyYAML but pydantic makes it a float again, so it is a number here;
 *   - .inf/.nan, hex, octal (0o17 or a leading zero), binary and '_' separators are rejected, as
 *     is anything strtod cannot hold (1e999);
 *   - everything else is a string.
 * Numbers are parsed with strtod_l in the C locale, so a daemon that called setlocale() still
 * reads "0.5" correctly.
 *
 * Ownership: the recipe is built in place with calloc'd arrays whose counts are set before their
 * items are filled, so bf_recipe_free can release a half-built recipe on any error path.
 */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bf_recipe.h"
#include "bf_yaml.h"

#define MAX_SLICES 4096
#define MAX_GRADIENT 1024
#define MAX_CONDS 256
#define SHOW 64 /* bytes of a user string quoted in a message */

struct rctx {
	const char *file;
	struct bf_err *err;
	locale_t cloc; /* (locale_t)0 if newlocale failed: fall back to the current locale */
};

static int perr(const struct rctx *c, const struct bf_ynode *n, const char *fmt, ...) BF_PRINTF(3, 4);
static int perr(const struct rctx *c, const struct bf_ynode *n, const char *fmt, ...)
{
	char msg[BF_ERR_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return bf_errf(c->err, "%s:%d:%d: %s", c->file, n->line, n->col, msg);
}

static struct bf_pos pos_of(const struct bf_ynode *n)
{
	return (struct bf_pos){ n->line, n->col };
}

/* A scalar's text, cut for a message. */
#define SHOWN(n) (int)((n)->len > SHOW ? SHOW : (n)->len), (n)->str, ((n)->len > SHOW ? "..." : "")

/* ---------------------------------------------------------------------------------------------
 * Scalar typing
 */

enum skind { SK_NULL, SK_BOOL, SK_NUM, SK_STR };

struct sval {
	enum skind kind;
	double num;   /* BOOL: 0/1; NUM: the value */
	bool is_int;  /* NUM written as a decimal integer (no '.', no exponent) */
};

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* Decimal number syntax: [+-]? (D+ ('.' D*)? | '.' D+) ([eE] [+-]? D+)?. Sets *is_int. */
static bool number_syntax(const char *s, size_t len, bool *is_int)
{
	size_t i = 0, nint = 0, nfrac = 0;
	bool dot = false, exp = false;
	if (i < len && (s[i] == '+' || s[i] == '-'))
		i++;
	while (i < len && is_digit(s[i]))
		i++, nint++;
	if (i < len && s[i] == '.') {
		dot = true;
		i++;
		while (i < len && is_digit(s[i]))
			i++, nfrac++;
	}
	if (nint + nfrac == 0)
		return false;
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		size_t nexp = 0;
		exp = true;
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		while (i < len && is_digit(s[i]))
			i++, nexp++;
		if (!nexp)
			return false;
	}
	*is_int = !dot && !exp;
	return i == len;
}

static bool all_of(const char *s, size_t len, const char *set)
{
	if (!len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!strchr(set, s[i]) || !s[i])
			return false;
	return true;
}

static double to_double(const struct rctx *c, const char *s, char **end)
{
	if (c->cloc)
		return strtod_l(s, end, c->cloc);
	return strtod(s, end);
}

static int type_scalar(const struct rctx *c, const struct bf_ynode *n, struct sval *v)
{
	const char *s = n->str;
	size_t len = n->len;
	memset(v, 0, sizeof(*v));
	if (n->quoted) {
		v->kind = SK_STR;
		return 0;
	}
	if (!len || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL")) {
		v->kind = SK_NULL;
		return 0;
	}
	if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
		v->kind = SK_BOOL;
		v->num = 1.0;
		return 0;
	}
	if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
		v->kind = SK_BOOL;
		return 0;
	}
	if (!strcasecmp(s, "yes") || !strcasecmp(s, "no") || !strcasecmp(s, "on") || !strcasecmp(s, "off"))
		return perr(c, n, "'%s' is ambiguous (a boolean in YAML 1.1, a string in YAML 1.2): "
			    "write true or false", s);

	const char *p = s + (s[0] == '+' || s[0] == '-');
	size_t plen = len - (size_t)(p - s);
	if (!strcasecmp(p, ".inf") || !strcasecmp(p, ".nan") || !strcasecmp(p, "inf") ||
	    !strcasecmp(p, "nan") || !strcasecmp(p, "infinity"))
		return perr(c, n, "'%s': must be a finite number", s);
	if (plen > 2 && p[0] == '0') {
		const char *radix = NULL;
		if ((p[1] == 'x' || p[1] == 'X') && all_of(p + 2, plen - 2, "0123456789abcdefABCDEF_"))
			radix = "hexadecimal";
		else if ((p[1] == 'o' || p[1] == 'O') && all_of(p + 2, plen - 2, "01234567_"))
			radix = "octal";
		else if ((p[1] == 'b' || p[1] == 'B') && all_of(p + 2, plen - 2, "01_"))
			radix = "binary";
		if (radix)
			return perr(c, n, "'%s': %s numbers are not accepted (write a decimal number)", s, radix);
	}
	bool is_int = false;
	if (memchr(s, '_', len)) {
		/* "1_000" is a number to YAML 1.1 and a string to YAML 1.2: reject rather than guess */
		char tmp[128];
		size_t k = 0;
		for (size_t i = 0; i < len && k < sizeof(tmp) - 1; i++)
			if (s[i] != '_')
				tmp[k++] = s[i];
		if (len < sizeof(tmp) && number_syntax(tmp, k, &is_int))
			return perr(c, n, "'%s': digit separators ('_') are not accepted in numbers", s);
		v->kind = SK_STR;
		return 0;
	}
	if (!number_syntax(s, len, &is_int)) {
		v->kind = SK_STR;
		return 0;
	}
	if (is_int && plen > 1 && p[0] == '0')
		return perr(c, n, "'%s': a leading zero makes it octal in YAML 1.1 (write it without)", s);
	char *end;
	errno = 0;
	double d = to_double(c, s, &end);
	if (end != s + len)
		return perr(c, n, "'%s' is not a valid number", s);
	if ((errno == ERANGE && fabs(d) > 1.0) || !isfinite(d))
		return perr(c, n, "'%s' is out of range for a double: must be a finite number", s);
	/* underflow (1e-400) reads as 0 or a denormal, as Python's float() does */
	v->kind = SK_NUM;
	v->num = d;
	v->is_int = is_int;
	return 0;
}

static const char *kind_name(const struct bf_ynode *n)
{
	return n->kind == BF_Y_MAP ? "a mapping" : n->kind == BF_Y_SEQ ? "a list" : "a scalar";
}

/* A string value: any non-empty scalar that types as a string (quoted, or plain and not a
 * number/bool/null). */
static int get_string(const struct rctx *c, const struct bf_ynode *n, const char *what,
		      const char **out)
{
	struct sval v;
	if (n->kind != BF_Y_SCALAR)
		return perr(c, n, "%s must be a string, not %s", what, kind_name(n));
	if (type_scalar(c, n, &v) < 0)
		return -1;
	if (v.kind == SK_NULL)
		return perr(c, n, "%s: a value is required", what);
	if (v.kind != SK_STR)
		return perr(c, n, "%s must be a string, not '%.*s%s'", what, SHOWN(n));
	if (!n->len || memchr(n->str, 0, n->len))
		return perr(c, n, "%s must be a non-empty string without NUL bytes", what);
	*out = n->str;
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Keys
 */

struct unsup {
	const char *key;
	const char *hint;
};

/* Index of the key in `valid`, or -1 with an error (unsupported, or unknown with a hint). */
static int key_index(const struct rctx *c, const struct bf_ynode *key, const char *where,
		     const char *const *valid, size_t nvalid, const struct unsup *uns, size_t nuns)
{
	if (key->len == strlen(key->str)) {
		for (size_t i = 0; i < nvalid; i++)
			if (!strcmp(key->str, valid[i]))
				return (int)i;
		for (size_t i = 0; i < nuns; i++)
			if (!strcmp(key->str, uns[i].key))
				return perr(c, key, "'%s' is not supported by blendfs (%s)", uns[i].key,
					    uns[i].hint);
	}
	const char *sug = key->len <= SHOW ? bf_suggest(key->str, valid, nvalid) : NULL;
	if (sug)
		return perr(c, key, "unknown key '%.*s%s'%s (did you mean '%s'?)", SHOWN(key), where, sug);
	char list[512];
	size_t off = 0;
	list[0] = 0;
	for (size_t i = 0; i < nvalid && off < sizeof(list); i++)
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "", valid[i]);
	return perr(c, key, "unknown key '%.*s%s'%s (valid keys: %s)", SHOWN(key), where, list);
}

static int missing(const struct rctx *c, const struct bf_ynode *map, const char *key,
		   const char *where)
{
	return perr(c, map, "missing required key '%s'%s", key, where);
}

/* ---------------------------------------------------------------------------------------------
 * Model references
 */

static int check_ref_string(const struct rctx *c, const struct bf_ynode *n, const char *s)
{
	if (strchr(s, '+'))
		return perr(c, n, "model '%s': LoRA adapters ('+') are not supported by blendfs "
			    "(merge the adapter into its model first)", s);
	const char *at = strchr(s, '@');
	if (at && strchr(at + 1, '@'))
		return perr(c, n, "model '%s' has more than one '@' (the form is PATH or PATH@REVISION)", s);
	if (at == s)
		return perr(c, n, "model '%s' has an empty path before '@'", s);
	if (at && !at[1])
		return perr(c, n, "model '%s' has an empty revision after '@'", s);
	return 0;
}

/* {path: P, revision: R} (or a "P@R" string) under a mapping-form reference's `model:` */
static int parse_model_path(const struct rctx *c, const struct bf_ynode *n, char **out)
{
	static const char *const keys[] = { "path", "revision" };
	const char *path = NULL, *rev = NULL;
	if (n->kind == BF_Y_SCALAR) {
		const char *s;
		if (get_string(c, n, "model", &s) < 0 || check_ref_string(c, n, s) < 0)
			return -1;
		*out = bf_xstrdup(s);
		return 0;
	}
	if (n->kind != BF_Y_MAP)
		return perr(c, n, "model must be a string or a {path, revision} mapping, not %s",
			    kind_name(n));
	for (size_t i = 0; i < n->n; i++) {
		const struct bf_ynode *k = &n->items[2 * i], *v = &n->items[2 * i + 1];
		int ki = key_index(c, k, " in a model path", keys, 2, NULL, 0);
		if (ki < 0)
			return -1;
		const char **dst = ki == 0 ? &path : &rev;
		if (get_string(c, v, keys[ki], dst) < 0)
			return -1;
		if (strchr(*dst, '@'))
			return perr(c, v, "%s '%s' must not contain '@'", keys[ki], *dst);
		if (ki == 0 && strchr(path, '+'))
			return perr(c, v, "model '%s': LoRA adapters ('+') are not supported by blendfs", path);
	}
	if (!path)
		return missing(c, n, "path", " in a model path");
	*out = rev ? bf_xasprintf("%s@%s", path, rev) : bf_xstrdup(path);
	return 0;
}

/* A model reference: "PATH[@REV]" or {model: "P@R" | {path, revision}}. */
static int parse_model_ref(const struct rctx *c, const struct bf_ynode *n, const char *what,
			   char **out)
{
	static const char *const keys[] = { "model" };
	static const struct unsup uns[] = {
		{ "lora", "LoRA adapters are not supported; merge the adapter into its model first" },
		{ "override_architecture", "the architecture is read from the model's config.json" },
	};
	if (n->kind == BF_Y_SCALAR) {
		const char *s;
		if (get_string(c, n, what, &s) < 0 || check_ref_string(c, n, s) < 0)
			return -1;
		*out = bf_xstrdup(s);
		return 0;
	}
	if (n->kind != BF_Y_MAP)
		return perr(c, n, "%s must be a model reference (PATH[@REVISION]), not %s", what,
			    kind_name(n));
	const struct bf_ynode *m = NULL;
	for (size_t i = 0; i < n->n; i++) {
		if (key_index(c, &n->items[2 * i], " in a model reference", keys, 1, uns, 2) < 0)
			return -1;
		m = &n->items[2 * i + 1];
	}
	if (!m)
		return missing(c, n, "model", " in a model reference");
	return parse_model_path(c, m, out);
}

/* ---------------------------------------------------------------------------------------------
 * Parameters
 */

static void free_setting(struct bf_setting *s)
{
	free(s->str);
	free(s->grad);
	for (size_t i = 0; i < s->n_conds; i++) {
		free(s->conds[i].filter);
		free_setting(&s->conds[i].value);
	}
	free(s->conds);
	memset(s, 0, sizeof(*s));
}

static void free_params(struct bf_params *p)
{
	for (size_t i = 0; i < p->n; i++) {
		free(p->v[i].name);
		free_setting(&p->v[i].set);
	}
	free(p->v);
	p->v = NULL;
	p->n = 0;
}

static int parse_setting(const struct rctx *c, const struct bf_ynode *n, struct bf_setting *s,
			 bool top);

static int parse_gradient(const struct rctx *c, const struct bf_ynode *n, struct bf_setting *s)
{
	if (n->n > MAX_GRADIENT)
		return perr(c, n, "gradient has %zu values, more than the %d allowed", n->n, MAX_GRADIENT);
	s->kind = BF_SET_GRADIENT;
	s->grad = bf_xcalloc(n->n, sizeof(*s->grad));
	s->n_grad = n->n;
	for (size_t i = 0; i < n->n; i++) {
		const struct bf_ynode *it = &n->items[i];
		struct sval v;
		if (type_scalar(c, it, &v) < 0)
			return -1;
		if (v.kind != SK_NUM)
			return perr(c, it, "gradient values must be numbers, not '%.*s%s'", SHOWN(it));
		s->grad[i] = v.num;
	}
	return 0;
}

static int parse_conds(const struct rctx *c, const struct bf_ynode *n, struct bf_setting *s)
{
	static const char *const keys[] = { "filter", "value" };
	if (n->n > MAX_CONDS)
		return perr(c, n, "conditional parameter has %zu entries, more than the %d allowed", n->n,
			    MAX_CONDS);
	s->kind = BF_SET_CONDS;
	s->conds = bf_xcalloc(n->n, sizeof(*s->conds));
	s->n_conds = n->n;
	for (size_t i = 0; i < n->n; i++) {
		const struct bf_ynode *e = &n->items[i];
		struct bf_cond *cd = &s->conds[i];
		const struct bf_ynode *val = NULL;
		cd->pos = pos_of(e);
		for (size_t j = 0; j < e->n; j++) {
			const struct bf_ynode *k = &e->items[2 * j], *v = &e->items[2 * j + 1];
			int ki = key_index(c, k, " in a conditional parameter", keys, 2, NULL, 0);
			if (ki < 0)
				return -1;
			if (ki == 1) {
				val = v;
				continue;
			}
			struct sval sv;
			if (v->kind != BF_Y_SCALAR)
				return perr(c, v, "filter must be a string (a substring of tensor names), not %s",
					    kind_name(v));
			if (type_scalar(c, v, &sv) < 0)
				return -1;
			if (sv.kind == SK_NULL || !strcmp(v->str, "*"))
				continue; /* matches every tensor, as mergekit's None */
			if (memchr(v->str, 0, v->len))
				return perr(c, v, "filter must not contain NUL bytes");
			cd->filter = bf_xstrdup(v->str);
		}
		if (!val)
			return missing(c, e, "value", " in a conditional parameter entry");
		if (parse_setting(c, val, &cd->value, false) < 0)
			return -1;
	}
	return 0;
}

/* top: conditionals allowed (a parameter value); !top: inside a conditional's `value`. */
static int parse_setting(const struct rctx *c, const struct bf_ynode *n, struct bf_setting *s,
			 bool top)
{
	static const char nested[] = "nested conditional parameters are not supported (a "
		"conditional's value must be a number, true/false, a string or a gradient)";
	s->pos = pos_of(n);
	if (n->kind == BF_Y_MAP)
		return perr(c, n, "%s", top ? "a conditional parameter must be a list of {filter, "
			    "value} entries" : nested);
	if (n->kind == BF_Y_SCALAR) {
		struct sval v;
		if (type_scalar(c, n, &v) < 0)
			return -1;
		switch (v.kind) {
		case SK_NULL:
			return perr(c, n, "a value is required");
		case SK_BOOL:
			s->kind = BF_SET_BOOL;
			s->num = v.num;
			return 0;
		case SK_NUM:
			s->kind = BF_SET_NUM;
			s->num = v.num;
			return 0;
		case SK_STR:
			if (memchr(n->str, 0, n->len))
				return perr(c, n, "a string value must not contain NUL bytes");
			s->kind = BF_SET_STR;
			s->str = bf_xstrdup(n->str);
			return 0;
		}
	}
	if (n->n == 0)
		return perr(c, n, "empty list: a gradient needs 1 to %d numbers", MAX_GRADIENT);
	enum bf_ynode_kind k0 = n->items[0].kind;
	for (size_t i = 0; i < n->n; i++) {
		const struct bf_ynode *it = &n->items[i];
		if (it->kind == BF_Y_SEQ)
			return perr(c, it, "a list inside a parameter list: a gradient is a flat list of numbers");
		if (it->kind != k0)
			return perr(c, it, "a parameter list must hold only numbers (a gradient) or only "
				    "{filter, value} entries (a conditional), not both");
	}
	if (k0 == BF_Y_SCALAR)
		return parse_gradient(c, n, s);
	if (!top)
		return perr(c, n, "%s", nested);
	return parse_conds(c, n, s);
}

static int parse_params(const struct rctx *c, const struct bf_ynode *n, struct bf_params *p)
{
	if (n->kind != BF_Y_MAP) {
		struct sval v;
		if (n->kind == BF_Y_SCALAR && type_scalar(c, n, &v) == 0 && v.kind == SK_NULL)
			return perr(c, n, "parameters: a value is required (a mapping of name: value)");
		return perr(c, n, "parameters must be a mapping of name: value, not %s", kind_name(n));
	}
	p->v = bf_xcalloc(n->n, sizeof(*p->v));
	p->n = n->n;
	for (size_t i = 0; i < n->n; i++) {
		const struct bf_ynode *k = &n->items[2 * i];
		if (!k->len || memchr(k->str, 0, k->len))
			return perr(c, k, "a parameter name must be a non-empty string");
		p->v[i].name = bf_xstrdup(k->str);
		p->v[i].pos = pos_of(k);
		if (parse_setting(c, &n->items[2 * i + 1], &p->v[i].set, true) < 0)
			return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Models, slices, sources
 */

static void free_source(struct bf_source *s)
{
	free(s->model);
	free_params(&s->params);
}

static int get_int(const struct rctx *c, const struct bf_ynode *n, const char *what, int64_t *out)
{
	struct sval v;
	if (n->kind != BF_Y_SCALAR)
		return perr(c, n, "%s must be an integer, not %s", what, kind_name(n));
	if (type_scalar(c, n, &v) < 0)
		return -1;
	if (v.kind == SK_NULL)
		return perr(c, n, "%s: a value is required", what);
	if (v.kind != SK_NUM || !v.is_int)
		return perr(c, n, "%s must be an integer, not '%.*s%s'", what, SHOWN(n));
	char *end;
	errno = 0;
	long long x = strtoll(n->str, &end, 10);
	if (errno == ERANGE || *end)
		return perr(c, n, "%s '%s' is out of range", what, n->str);
	*out = x;
	return 0;
}

static int parse_layer_range(const struct rctx *c, const struct bf_ynode *n, struct bf_source *s)
{
	int64_t v[2];
	s->range_pos = pos_of(n);
	if (n->kind != BF_Y_SEQ)
		return perr(c, n, "layer_range must be a list [start, end], not %s", kind_name(n));
	if (n->n != 2)
		return perr(c, n, "layer_range must have exactly 2 values [start, end], not %zu", n->n);
	for (int i = 0; i < 2; i++) {
		const struct bf_ynode *it = &n->items[i];
		if (get_int(c, it, "layer_range value", &v[i]) < 0)
			return -1;
		if (v[i] < 0)
			return perr(c, it, "layer_range value %lld is negative", (long long)v[i]);
		if (v[i] > INT32_MAX)
			return perr(c, it, "layer_range value %lld is too large (at most %d)",
				    (long long)v[i], INT32_MAX);
	}
	if (v[0] > v[1])
		return perr(c, n, "layer_range [%lld, %lld] is reversed: start must be <= end",
			    (long long)v[0], (long long)v[1]);
	s->has_range = true;
	s->layer_start = v[0];
	s->layer_end = v[1];
	return 0;
}

/* An entry of `models:` (slice = false) or of a slice's `sources:` (slice = true). */
static int parse_source(const struct rctx *c, const struct bf_ynode *n, struct bf_source *s,
			bool slice)
{
	static const char *const mkeys[] = { "model", "parameters" };
	static const char *const skeys[] = { "model", "layer_range", "parameters" };
	const char *const *keys = slice ? skeys : mkeys;
	size_t nkeys = slice ? 3 : 2;
	const char *where = slice ? " in a slice source" : " in a models entry";
	const struct bf_ynode *model = NULL, *range = NULL;

	if (n->kind != BF_Y_MAP) {
		if (n->kind == BF_Y_SCALAR)
			return perr(c, n, "%s entries must be mappings like '- model: NAME', not a plain string",
				    slice ? "sources" : "models");
		return perr(c, n, "%s entries must be mappings like '- model: NAME', not %s",
			    slice ? "sources" : "models", kind_name(n));
	}
	for (size_t i = 0; i < n->n; i++) {
		const struct bf_ynode *k = &n->items[2 * i], *v = &n->items[2 * i + 1];
		int ki = key_index(c, k, where, keys, nkeys, NULL, 0);
		if (ki < 0)
			return -1;
		const char *name = keys[ki];
		if (!strcmp(name, "model")) {
			model = v;
			s->pos = pos_of(v);
			if (parse_model_ref(c, v, "model", &s->model) < 0)
				return -1;
		} else if (!strcmp(name, "layer_range")) {
			range = v;
			if (parse_layer_range(c, v, s) < 0)
				return -1;
		} else if (parse_params(c, v, &s->params) < 0) {
			return -1;
		}
	}
	if (!model)
		return missing(c, n, "model", where);
	if (slice && !range)
		return missing(c, n, "layer_range", where);
	return 0;
}

/* A non-empty list of at most `max` entries. */
static int get_list(const struct rctx *c, const struct bf_ynode *n, const char *what, size_t max)
{
	if (n->kind != BF_Y_SEQ)
		return perr(c, n, "%s must be a list, not %s", what, kind_name(n));
	if (n->n == 0)
		return perr(c, n, "%s is empty", what);
	if (n->n > max)
		return perr(c, n, "%s has %zu entries, more than the %zu allowed", what, n->n, max);
	return 0;
}

static int parse_slice(const struct rctx *c, const struct bf_ynode *n, struct bf_slice *sl)
{
	static const char *const keys[] = { "sources", "base_model", "parameters", "residual_weight" };
	const struct bf_ynode *sources = NULL;
	sl->pos = pos_of(n);
	if (n->kind != BF_Y_MAP)
		return perr(c, n, "slices entries must be mappings like '- sources: [...]', not %s",
			    kind_name(n));
	for (size_t i = 0; i < n->n; i++) {
		const struct bf_ynode *k = &n->items[2 * i], *v = &n->items[2 * i + 1];
		int ki = key_index(c, k, " in a slice", keys, BF_ARRAY_LEN(keys), NULL, 0);
		if (ki < 0)
			return -1;
		switch (ki) {
		case 0:
			sources = v;
			if (get_list(c, v, "sources", BF_MAX_MODELS) < 0)
				return -1;
			sl->src = bf_xcalloc(v->n, sizeof(*sl->src));
			sl->n_src = v->n;
			for (size_t j = 0; j < v->n; j++)
				if (parse_source(c, &v->items[j], &sl->src[j], true) < 0)
					return -1;
			break;
		case 1:
			sl->base_pos = pos_of(v);
			if (parse_model_ref(c, v, "base_model", &sl->base_model) < 0)
				return -1;
			break;
		case 2:
			if (parse_params(c, v, &sl->params) < 0)
				return -1;
			break;
		default: { /* residual_weight: parsed and unused, as in mergekit */
			struct sval sv;
			if (v->kind != BF_Y_SCALAR)
				return perr(c, v, "residual_weight must be a number, not %s", kind_name(v));
			if (type_scalar(c, v, &sv) < 0)
				return -1;
			if (sv.kind != SK_NUM)
				return perr(c, v, "residual_weight must be a number, not '%.*s%s'", SHOWN(v));
			break;
		}
		}
	}
	if (!sources)
		return missing(c, n, "sources", " in a slice");
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Top level
 */

static int parse_dtype(const struct rctx *c, const struct bf_ynode *n, const char *what,
		       enum bf_dtype *out)
{
	const char *s;
	if (get_string(c, n, what, &s) < 0)
		return -1;
	const char *bare = strncmp(s, "torch.", 6) ? s : s + 6;
	enum bf_dtype d = bf_dtype_from_torch_name(s);
	if (d == BF_DT_F32 || d == BF_DT_F16 || d == BF_DT_BF16) {
		*out = d;
		return 0;
	}
	if (d != BF_DT_NONE || !strcmp(bare, "int64"))
		return perr(c, n, "%s %s is not supported for merging (use bfloat16, float16 or float32)",
			    what, bare);
	static const char *const names[] = { "bfloat16", "float16", "float32" };
	const char *sug = strlen(bare) <= SHOW ? bf_suggest(bare, names, 3) : NULL;
	if (sug)
		return perr(c, n, "unknown %s '%.*s%s' (did you mean '%s'? valid: bfloat16, float16, float32)",
			    what, SHOWN(n), sug);
	return perr(c, n, "unknown %s '%.*s%s' (valid: bfloat16, float16, float32)", what, SHOWN(n));
}

static int parse_seed(const struct rctx *c, const struct bf_ynode *n, uint64_t *out)
{
	struct sval v;
	if (n->kind != BF_Y_SCALAR)
		return perr(c, n, "random_seed must be an integer, not %s", kind_name(n));
	if (type_scalar(c, n, &v) < 0)
		return -1;
	if (v.kind == SK_NULL)
		return perr(c, n, "random_seed: a value is required");
	if (v.kind != SK_NUM || !v.is_int)
		return perr(c, n, "random_seed must be an integer, not '%.*s%s'", SHOWN(n));
	if (n->str[0] == '-' && v.num != 0)
		return perr(c, n, "random_seed must be >= 0, not %s", n->str);
	const char *p = n->str + (n->str[0] == '+' || n->str[0] == '-');
	char *end;
	errno = 0;
	unsigned long long x = strtoull(p, &end, 10);
	if (errno == ERANGE || *end)
		return perr(c, n, "random_seed %s is too large (at most 18446744073709551615)", n->str);
	*out = x;
	return 0;
}

enum topkey {
	K_METHOD, K_MODELS, K_SLICES, K_BASE, K_PARAMS, K_DTYPE, K_OUT_DTYPE, K_TOKSRC, K_SEED,
};

static int parse_top(const struct rctx *c, const struct bf_ynode *root, struct bf_recipe *r)
{
	static const char *const keys[] = {
		[K_METHOD] = "merge_method", [K_MODELS] = "models", [K_SLICES] = "slices",
		[K_BASE] = "base_model", [K_PARAMS] = "parameters", [K_DTYPE] = "dtype",
		[K_OUT_DTYPE] = "out_dtype", [K_TOKSRC] = "tokenizer_source", [K_SEED] = "random_seed",
	};
	static const struct unsup uns[] = {
		{ "modules", "use models: or slices:" },
		{ "tokenizer", "use tokenizer_source: base or a model" },
		{ "chat_template", "the chosen tokenizer's files are served as they are" },
	};
	const struct bf_ynode *models_key = NULL, *slices_key = NULL;
	bool have_method = false;

	if (root->kind != BF_Y_MAP)
		return perr(c, root, "a recipe must be a mapping (merge_method:, models: or slices:, ...), "
			    "not %s", kind_name(root));
	for (size_t i = 0; i < root->n; i++) {
		const struct bf_ynode *k = &root->items[2 * i], *v = &root->items[2 * i + 1];
		const char *s;
		int ki = key_index(c, k, "", keys, BF_ARRAY_LEN(keys), uns, BF_ARRAY_LEN(uns));
		if (ki < 0)
			return -1;
		switch ((enum topkey)ki) {
		case K_METHOD:
			have_method = true;
			r->method_pos = pos_of(v);
			if (get_string(c, v, "merge_method", &s) < 0)
				return -1;
			r->merge_method = bf_xstrdup(s);
			break;
		case K_MODELS:
			if (slices_key)
				return perr(c, k, "both models: and slices: are given (slices: at line %d); use one",
					    slices_key->line);
			models_key = k;
			r->models_pos = pos_of(k);
			if (get_list(c, v, "models", BF_MAX_MODELS) < 0)
				return -1;
			r->models = bf_xcalloc(v->n, sizeof(*r->models));
			r->n_models = v->n;
			for (size_t j = 0; j < v->n; j++)
				if (parse_source(c, &v->items[j], &r->models[j], false) < 0)
					return -1;
			break;
		case K_SLICES:
			if (models_key)
				return perr(c, k, "both models: and slices: are given (models: at line %d); use one",
					    models_key->line);
			slices_key = k;
			r->uses_slices = true;
			r->slices_pos = pos_of(k);
			if (get_list(c, v, "slices", MAX_SLICES) < 0)
				return -1;
			r->slices = bf_xcalloc(v->n, sizeof(*r->slices));
			r->n_slices = v->n;
			for (size_t j = 0; j < v->n; j++)
				if (parse_slice(c, &v->items[j], &r->slices[j]) < 0)
					return -1;
			break;
		case K_BASE:
			r->base_pos = pos_of(v);
			if (parse_model_ref(c, v, "base_model", &r->base_model) < 0)
				return -1;
			break;
		case K_PARAMS:
			if (parse_params(c, v, &r->params) < 0)
				return -1;
			break;
		case K_DTYPE:
			r->dtype_pos = pos_of(v);
			if (parse_dtype(c, v, "dtype", &r->dtype) < 0)
				return -1;
			break;
		case K_OUT_DTYPE:
			r->out_dtype_pos = pos_of(v);
			if (parse_dtype(c, v, "out_dtype", &r->out_dtype) < 0)
				return -1;
			break;
		case K_TOKSRC:
			r->tokenizer_pos = pos_of(v);
			if (v->kind == BF_Y_SCALAR && !strcmp(v->str, "union"))
				return perr(c, v, "tokenizer_source: union is not supported yet (use base or a model)");
			if (v->kind == BF_Y_SCALAR && !strcmp(v->str, "base")) {
				r->tokenizer_source = bf_xstrdup("base");
				break;
			}
			if (parse_model_ref(c, v, "tokenizer_source", &r->tokenizer_source) < 0)
				return -1;
			break;
		case K_SEED:
			r->seed_pos = pos_of(v);
			if (parse_seed(c, v, &r->seed) < 0)
				return -1;
			r->has_seed = true;
			break;
		}
	}
	if (!have_method)
		return missing(c, root, "merge_method", "");
	if (!models_key && !slices_key)
		return perr(c, root, "the recipe needs models: (a whole-model merge) or slices: "
			    "(layer ranges); it has neither");
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Public API
 */

void bf_recipe_free(struct bf_recipe *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_models; i++)
		free_source(&r->models[i]);
	free(r->models);
	for (size_t i = 0; i < r->n_slices; i++) {
		struct bf_slice *sl = &r->slices[i];
		for (size_t j = 0; j < sl->n_src; j++)
			free_source(&sl->src[j]);
		free(sl->src);
		free(sl->base_model);
		free_params(&sl->params);
	}
	free(r->slices);
	free(r->base_model);
	free(r->merge_method);
	free_params(&r->params);
	free(r->tokenizer_source);
	free(r->path);
	free(r->dir);
	free(r->text);
	free(r);
}

int bf_recipe_parse(const char *text, size_t len, const char *path, struct bf_recipe **out,
		    struct bf_err *err)
{
	struct bf_ynode *root;
	*out = NULL;
	if (bf_yaml_load(text, len, path, &root, err) < 0)
		return -1;

	struct bf_recipe *r = bf_xcalloc(1, sizeof(*r));
	r->dtype = BF_DT_NONE;
	r->out_dtype = BF_DT_NONE;
	r->path = bf_xstrdup(path);
	const char *slash = strrchr(path, '/');
	r->dir = !slash ? bf_xstrdup(".") : slash == path ? bf_xstrdup("/")
		: bf_xstrndup(path, (size_t)(slash - path));
	r->text = bf_xstrndup(text, len);
	r->text_len = len;

	struct rctx c = { .file = path, .err = err };
	c.cloc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
	int rc = parse_top(&c, root, r);
	if (c.cloc)
		freelocale(c.cloc);
	bf_yaml_free(root);
	if (rc < 0) {
		bf_errf(err, "%s: invalid recipe", path); /* only if nothing more precise was said */
		bf_recipe_free(r);
		return -1;
	}
	*out = r;
	return 0;
}

int bf_recipe_load(const char *path, struct bf_recipe **out, struct bf_err *err)
{
	char *text;
	size_t len;
	*out = NULL;
	int rc = bf_read_file(path, BF_YAML_MAX_BYTES, &text, &len, err);
	if (rc == -ENOENT)
		return bf_errf(err, "%s: no such file", path);
	if (rc < 0)
		return -1;
	rc = bf_recipe_parse(text, len, path, out, err);
	free(text);
	return rc;
}

const struct bf_param *bf_params_find(const struct bf_params *p, const char *name)
{
	if (!p || !name)
		return NULL;
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->v[i].name, name))
			return &p->v[i];
	return NULL;
}

int bf_setting_eval(const struct bf_setting *s, const char *tensor, double t, double *num,
		    const char **str)
{
	double dummy_n;
	const char *dummy_s;
	if (!num)
		num = &dummy_n;
	if (!str)
		str = &dummy_s;
	*num = 0;
	*str = NULL;
	if (!s)
		return 0;
	switch (s->kind) {
	case BF_SET_NUM:
	case BF_SET_BOOL:
		*num = s->num;
		return 1;
	case BF_SET_STR:
		*str = s->str;
		return 1;
	case BF_SET_GRADIENT: {
		/* mergekit: scaled = t*(n-1); i0 = int(scaled); i1 = min(n-1, i0+1);
		 * frac = scaled - i0; (1 - frac)*L[i0] + frac*L[i1], all in double */
		size_t n = s->n_grad;
		if (!n)
			return 0;
		double scaled = t * (double)(n - 1);
		/* t outside [0, 1] (or NaN) is a caller bug mergekit would crash on; clamp instead of
		 * indexing out of bounds */
		if (!(scaled >= 0))
			scaled = 0;
		if (scaled > (double)(n - 1))
			scaled = (double)(n - 1);
		size_t i0 = (size_t)scaled; /* Python int(): truncation, scaled >= 0 */
		size_t i1 = i0 + 1 < n ? i0 + 1 : n - 1;
		double frac = scaled - (double)i0;
		*num = (1 - frac) * s->grad[i0] + frac * s->grad[i1];
		return 1;
	}
	case BF_SET_CONDS:
		for (size_t i = 0; i < s->n_conds; i++) {
			const struct bf_cond *cd = &s->conds[i];
			/* mergekit: filter is None or "*" or (tensor_name and filter in tensor_name) */
			if (!cd->filter || (tensor && tensor[0] && strstr(tensor, cd->filter)))
				return bf_setting_eval(&cd->value, tensor, t, num, str);
		}
		return 0;
	}
	return 0;
}
