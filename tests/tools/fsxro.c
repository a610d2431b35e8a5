/* fsxro.c: a read-only fsx. Seeded random reads of FILE by several threads, every byte compared
 * with REFERENCE (a plain copy, e.g. `blendfs merge` output).
 *
 *   fsxro [-t THREADS] [-n OPS] [-s SEED] [-m MAXLEN] [-d N] [-q] FILE REFERENCE
 *
 * -d N drops FILE from the page cache (posix_fadvise DONTNEED) every N ops of each thread, so
 * that reads keep reaching the file system instead of being served from the page cache.
 *
 * Each thread mixes: pread at a random offset and length (1 byte .. MAXLEN, biased towards odd
 * sizes and boundaries), readv of two pieces, a private mmap of a random window read with
 * memcpy, and a sequential read() pass with an odd buffer size. Every op is replayable from
 * (SEED, thread, op index); a mismatch prints that triple and the first differing offset.
 * Ends with "fsxro: N ops, M mismatches, E errors" and exits 1 on any mismatch or error.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *path;
static unsigned char *ref;
static uint64_t size;
static uint64_t ops_per_thread, seed, maxlen = 4 << 20, drop_every;
static int quiet;
static _Atomic uint64_t n_ops, n_bad, n_err;

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void report(int th, uint64_t op, const char *kind, uint64_t off, uint64_t len, const unsigned char *got)
{
	uint64_t i = 0;
	while (i < len && got[i] == ref[off + i])
		i++;
	if (i == len)
		return;
	atomic_fetch_add(&n_bad, 1);
	fprintf(stderr, "fsxro: MISMATCH %s seed=%" PRIu64 " thread=%d op=%" PRIu64 " off=%" PRIu64 " len=%" PRIu64
			" first diff at %" PRIu64 " (got 0x%02x, want 0x%02x)\n",
		kind, seed, th, op, off, len, off + i, got[i], ref[off + i]);
}

static void pick(uint64_t *rs, uint64_t *off, uint64_t *len)
{
	uint64_t r = splitmix(rs);
	switch (r % 4) {
	case 0: *len = 1 + splitmix(rs) % 64; break;                   /* tiny */
	case 1: *len = 1 + splitmix(rs) % (maxlen < 65536 ? maxlen : 65536); break;
	default: *len = 1 + splitmix(rs) % maxlen; break;
	}
	if (*len > size)
		*len = size;
	*off = splitmix(rs) % (size - *len + 1);
	if (splitmix(rs) % 8 == 0) /* end of file */
		*off = size - *len;
}

static void *worker(void *arg)
{
	int th = (int)(intptr_t)arg;
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "fsxro: open %s: %s\n", path, strerror(errno));
		atomic_fetch_add(&n_err, 1);
		return NULL;
	}
	unsigned char *buf = malloc(maxlen + 1);
	long page = sysconf(_SC_PAGESIZE);
	for (uint64_t op = 0; op < ops_per_thread; op++) {
		uint64_t rs = seed ^ ((uint64_t)th << 48) ^ (op * 0x100000001B3ull), off, len;
		splitmix(&rs);
		pick(&rs, &off, &len);
		if (drop_every && op % drop_every == drop_every - 1)
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		int kind = (int)(splitmix(&rs) % 10);
		if (kind < 5) {
			ssize_t r = pread(fd, buf, len, (off_t)off);
			if (r != (ssize_t)len) {
				fprintf(stderr, "fsxro: pread off=%" PRIu64 " len=%" PRIu64 " returned %zd (%s)\n", off, len, r,
					r < 0 ? strerror(errno) : "short");
				atomic_fetch_add(&n_err, 1);
			} else {
				report(th, op, "pread", off, len, buf);
			}
		} else if (kind < 7) {
			uint64_t a = len / 3;
			struct iovec iov[2] = { { buf, a }, { buf + a, len - a } };
			ssize_t r = preadv(fd, iov, 2, (off_t)off);
			if (r != (ssize_t)len) {
				fprintf(stderr, "fsxro: preadv off=%" PRIu64 " returned %zd\n", off, r);
				atomic_fetch_add(&n_err, 1);
			} else {
				report(th, op, "preadv", off, len, buf);
			}
		} else if (kind < 9) {
			uint64_t base = off / (uint64_t)page * (uint64_t)page;
			size_t mlen = (size_t)(off + len - base);
			unsigned char *m = mmap(NULL, mlen, PROT_READ, MAP_PRIVATE, fd, (off_t)base);
			if (m == MAP_FAILED) {
				fprintf(stderr, "fsxro: mmap off=%" PRIu64 ": %s\n", base, strerror(errno));
				atomic_fetch_add(&n_err, 1);
			} else {
				memcpy(buf, m + (off - base), len);
				munmap(m, mlen);
				report(th, op, "mmap", off, len, buf);
			}
		} else {
			/* a sequential pass over a window with an odd buffer size */
			size_t bs = 1 + splitmix(&rs) % 200000;
			uint64_t end = off + len;
			if (lseek(fd, (off_t)off, SEEK_SET) < 0)
				atomic_fetch_add(&n_err, 1);
			for (uint64_t p = off; p < end;) {
				size_t want = end - p < bs ? (size_t)(end - p) : bs;
				ssize_t r = read(fd, buf, want);
				if (r <= 0) {
					fprintf(stderr, "fsxro: read at %" PRIu64 " returned %zd\n", p, r);
					atomic_fetch_add(&n_err, 1);
					break;
				}
				report(th, op, "read", p, (uint64_t)r, buf);
				p += (uint64_t)r;
			}
		}
		atomic_fetch_add(&n_ops, 1);
	}
	free(buf);
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = 4, opt;
	ops_per_thread = 1000;
	seed = 1;
	while ((opt = getopt(argc, argv, "t:n:s:m:d:q")) != -1) {
		switch (opt) {
		case 't': threads = atoi(optarg); break;
		case 'n': ops_per_thread = strtoull(optarg, NULL, 10); break;
		case 's': seed = strtoull(optarg, NULL, 10); break;
		case 'm': maxlen = strtoull(optarg, NULL, 10); break;
		case 'q': quiet = 1; break;
		case 'd': drop_every = strtoull(optarg, NULL, 10); break;
		default:
			fprintf(stderr, "usage: fsxro [-t THREADS] [-n OPS_PER_THREAD] [-s SEED] [-m MAXLEN] FILE REFERENCE\n");
			return 2;
		}
	}
	if (argc - optind != 2 || threads < 1 || !maxlen) {
		fprintf(stderr, "usage: fsxro [-t THREADS] [-n OPS_PER_THREAD] [-s SEED] [-m MAXLEN] FILE REFERENCE\n");
		return 2;
	}
	path = argv[optind];
	int rfd = open(argv[optind + 1], O_RDONLY);
	struct stat st, st2;
	if (rfd < 0 || fstat(rfd, &st) || stat(path, &st2)) {
		fprintf(stderr, "fsxro: cannot open inputs: %s\n", strerror(errno));
		return 2;
	}
	if (st.st_size != st2.st_size) {
		fprintf(stderr, "fsxro: size mismatch: %s is %lld bytes, %s is %lld\n", path, (long long)st2.st_size,
			argv[optind + 1], (long long)st.st_size);
		return 1;
	}
	size = (uint64_t)st.st_size;
	if (!size) {
		printf("fsxro: empty file\n");
		return 0;
	}
	ref = malloc(size);
	for (uint64_t got = 0; got < size;) {
		ssize_t r = pread(rfd, ref + got, size - got, (off_t)got);
		if (r <= 0) {
			fprintf(stderr, "fsxro: reading reference failed\n");
			return 2;
		}
		got += (uint64_t)r;
	}
	close(rfd);
	pthread_t *t = calloc((size_t)threads, sizeof(pthread_t));
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	printf("fsxro: %" PRIu64 " ops, %" PRIu64 " mismatches, %" PRIu64 " errors (%d threads, seed %" PRIu64 ", %s)\n",
	       atomic_load(&n_ops), atomic_load(&n_bad), atomic_load(&n_err), threads, seed, path);
	free(t);
	free(ref);
	return atomic_load(&n_bad) || atomic_load(&n_err) ? 1 : 0;
}
