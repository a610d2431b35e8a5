/* bf_common.c: errors, checked allocation, small file and size helpers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bf_common.h"

void bf_abort(const char *file, int line, const char *expr)
{
	fprintf(stderr, "blendfs: internal error at %s:%d: assertion '%s' failed\n", file, line, expr);
	abort();
}

int bf_verrf(struct bf_err *e, const char *fmt, va_list ap)
{
	if (e && !e->msg[0])
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	return -1;
}

int bf_errf(struct bf_err *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bf_verrf(e, fmt, ap);
	va_end(ap);
	return -1;
}

int bf_err_prefix(struct bf_err *e, const char *fmt, ...)
{
	char pre[BF_ERR_MAX], old[BF_ERR_MAX];
	va_list ap;
	if (!e)
		return -1;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	if (!e->msg[0]) {
		snprintf(e->msg, sizeof(e->msg), "%s", pre);
		return -1;
	}
	memcpy(old, e->msg, sizeof(old));
	size_t pl = strlen(pre);
	if (pl > sizeof(e->msg) - 3)
		pl = sizeof(e->msg) - 3;
	memcpy(e->msg, pre, pl);
	memcpy(e->msg + pl, ": ", 2);
	size_t rest = sizeof(e->msg) - pl - 3;
	size_t ol = strnlen(old, rest);
	memcpy(e->msg + pl + 2, old, ol);
	e->msg[pl + 2 + ol] = 0;
	return -1;
}

static BF_NORETURN void oom(size_t n)
{
	fprintf(stderr, "blendfs: out of memory allocating %zu bytes\n", n);
	abort();
}

void *bf_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *bf_xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);
	if (!p)
		oom(n * sz);
	return p;
}

void *bf_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *bf_xstrdup(const char *s)
{
	return bf_xstrndup(s, strlen(s));
}

char *bf_xstrndup(const char *s, size_t n)
{
	char *p = bf_xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char *bf_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	int r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		oom(0);
	return s;
}

/* Damerau-free Levenshtein, bounded: words are short keys. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 64 || lb > 64)
		return SIZE_MAX;
	size_t prev[65], cur[65];
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
			size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
			cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
		}
		memcpy(prev, cur, (lb + 1) * sizeof(size_t));
	}
	return prev[lb];
}

const char *bf_suggest(const char *word, const char *const *cands, size_t n)
{
	const char *best = NULL;
	size_t bestd = SIZE_MAX, wl = strlen(word);
	for (size_t i = 0; i < n; i++) {
		size_t d = edit_distance(word, cands[i]);
		if (d < bestd) {
			bestd = d;
			best = cands[i];
		}
	}
	/* a plausible typo: at most a third of the word changed (and at least one edit allowed) */
	size_t limit = wl / 3 > 1 ? wl / 3 : 1;
	if (best && bestd <= limit)
		return best;
	/* also accept a candidate that contains the word or vice versa ("seed" vs "random_seed") */
	for (size_t i = 0; i < n && wl >= 3; i++)
		if (strstr(cands[i], word) || strstr(word, cands[i]))
			return cands[i];
	return NULL;
}

int bf_read_fd(int fd, off_t size, const char *path, size_t max, char **data, size_t *len,
	       struct bf_err *err)
{
	if (size < 0 || (uint64_t)size > max)
		return bf_errf(err, "%s: file is %lld bytes, more than the %zu allowed", path,
			       (long long)size, max);
	size_t n = (size_t)size, got = 0;
	char *buf = bf_xmalloc(n + 1);
	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			bf_errf(err, "%s: read failed: %s", path, r < 0 ? strerror(errno) : "file shrank");
			free(buf);
			return -1;
		}
		got += (size_t)r;
	}
	buf[n] = 0;
	*data = buf;
	if (len)
		*len = n;
	return 0;
}

int bf_read_file(const char *path, size_t max, char **data, size_t *len, struct bf_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		return bf_errf(err, "%s: cannot open: %s", path, strerror(errno));
	}
	struct stat st;
	int r;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		r = bf_errf(err, "%s: not a regular file", path);
	else
		r = bf_read_fd(fd, st.st_size, path, max, data, len, err);
	close(fd);
	return r;
}

int bf_parse_size(const char *s, uint64_t *out)
{
	if (!s || !*s)
		return -1;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0 || s[0] == '-' || s[0] == '+')
		return -1;
	double mul = 1;
	static const struct { const char *suf; double mul; } sufs[] = {
		{ "", 1 }, { "B", 1 },
		{ "K", 1024.0 }, { "KiB", 1024.0 }, { "M", 1048576.0 }, { "MiB", 1048576.0 },
		{ "G", 1073741824.0 }, { "GiB", 1073741824.0 }, { "T", 1099511627776.0 }, { "TiB", 1099511627776.0 },
		{ "KB", 1e3 }, { "MB", 1e6 }, { "GB", 1e9 }, { "TB", 1e12 },
	};
	size_t i;
	for (i = 0; i < BF_ARRAY_LEN(sufs); i++)
		if (!strcasecmp(end, sufs[i].suf) && (sufs[i].suf[0] || !*end)) {
			/* "k"/"m"/"g" lower-case are the binary ones too; "kb" etc. decimal */
			mul = sufs[i].mul;
			break;
		}
	if (i == BF_ARRAY_LEN(sufs))
		return -1;
	double r = v * mul;
	if (r >= 18446744073709551615.0 || r != floor(r))
		return -1;
	*out = (uint64_t)r;
	return 0;
}

uint64_t bf_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
