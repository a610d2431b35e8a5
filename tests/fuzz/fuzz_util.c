/* fuzz_util.c: helpers shared by the fuzz targets (fuzz.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_log.h"
#include "fuzz.h"

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s:%d: fuzz invariant failed: %s: ", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

uint8_t fz_u8(struct fz_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

uint32_t fz_u32(struct fz_in *in)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v = (v << 8) | fz_u8(in);
	return v;
}

uint32_t fz_below(struct fz_in *in, uint32_t n)
{
	if (n <= 1)
		return 0;
	return (n <= 256 ? fz_u8(in) : fz_u32(in)) % n;
}

bool fz_bool(struct fz_in *in)
{
	return fz_u8(in) & 1;
}

char *fz_fmt(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, cap, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap) {
		fprintf(stderr, "fuzz: path too long: %s...\n", buf);
		exit(2);
	}
	return buf;
}

static char tmp_path[PATH_MAX];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void tmp_cleanup(void)
{
	if (tmp_path[0])
		nftw(tmp_path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fz_tmpdir(const char *tag)
{
	if (tmp_path[0])
		return tmp_path;
	struct stat st;
	const char *base = "/dev/shm";
	if (stat(base, &st) != 0 || !S_ISDIR(st.st_mode) || access(base, W_OK) != 0) {
		base = getenv("TMPDIR");
		if (!base || !base[0])
			base = "/tmp";
	}
	snprintf(tmp_path, sizeof(tmp_path), "%s/blendfs-fuzz-%s.XXXXXX", base, tag);
	if (!mkdtemp(tmp_path)) {
		fprintf(stderr, "fuzz: mkdtemp %s: %s\n", tmp_path, strerror(errno));
		exit(2);
	}
	atexit(tmp_cleanup);
	return tmp_path;
}

void fz_write(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "fuzz: cannot create %s: %s\n", path, strerror(errno));
		exit(2);
	}
	const char *p = data;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
			exit(2);
		}
		p += w;
		len -= (size_t)w;
	}
	close(fd);
}

void fz_clear_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno == EISDIR)
			unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
	}
	closedir(d);
}

void fz_quiet(void)
{
	/* every message is still formatted (its arguments are exercised), none is printed */
	bf_log_set_level(BF_LOG_DEBUG);
	bf_log_to_stderr(false);
}
