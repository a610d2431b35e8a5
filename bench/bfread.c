/* bfread.c: the bench's reader. Reads files the way model loaders do and prints one JSON line.
 *
 *   bfread seq  [-t THREADS] [-b BUF] [--deadline S] [-S I:START:END]... FILE...
 *        read() every byte into a reused, pre-faulted BUF (default 1 MiB)
 *   bfread mmap [-t THREADS] [-b BUF] [--deadline S] [-S I:START:END]... FILE...
 *        safetensors-style: open, posix_fadvise(POSIX_FADV_SEQUENTIAL), mmap(PROT_READ,
 *        MAP_PRIVATE) of the whole file, memcpy every byte out in BUF-sized pieces
 *   bfread rand -s SIZE -n COUNT [--seed N] [--deadline S] [--fadv-random] FILE...
 *        COUNT single-threaded preads of SIZE bytes at random SIZE-aligned offsets (files
 *        weighted by size); prints latency percentiles
 *   bfread resident [-L LEN] FILE...
 *        bytes of the first LEN bytes (default: all) of each file that are in the page cache
 *        (mincore); prints {"mode":"resident", "bytes":..., "files":...}
 *
 * The work is a list of streams (file, start, end), taken in order from a shared queue by the
 * THREADS threads; each stream is read sequentially through its own descriptor (and its own
 * mapping for mmap), so it has its own read-ahead state. Default streams:
 *   - as many files as threads or more: one stream per whole file (a loader's thread pool
 *     over shards);
 *   - fewer files than threads: every file cut into THREADS contiguous ranges (1 MiB aligned),
 *     so with 2 threads and one shard, thread 0 reads the first half and thread 1 the second.
 * -S I:START:END (repeatable) replaces them: bytes [START, END) of the I-th FILE (from 0).
 * --deadline S stops every stream after S seconds; the rate is then over the bytes read, and
 * "partial" is true. The streams' reached offsets are printed so that the same bytes can be
 * read again with -S.
 *
 * Output (seq/mmap): {"mode", "threads", "bytes" (read), "total_bytes" (asked), "seconds",
 *                     "gbps" (bytes/seconds/1e9), "utime", "stime" (CPU s of this process),
 *                     "partial", "streams": [{"file", "start", "end", "reached"}], "sum"}
 * Output (rand):     {"mode":"rand", "size", "count" (done), "p50_us", "p90_us", "p99_us",
 *                     "max_us", "mean_us"}
 * Exit status: 0 ok, 1 I/O error, 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1u << 20)
#define MAX_STREAMS 4096

static int nfiles;
static char **files;
static uint64_t *fsize;
static size_t bufsz = MIB;
static int nthreads = 1;
static int use_mmap;
static double deadline; /* absolute CLOCK_MONOTONIC seconds, 0 = none */
static atomic_int next_stream;
static atomic_int failed;
static atomic_int expired;

struct stream {
	int file;
	uint64_t start, end, reached;
};
static struct stream streams[MAX_STREAMS];
static int nstreams;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int past_deadline(void)
{
	if (!deadline)
		return 0;
	if (atomic_load_explicit(&expired, memory_order_relaxed))
		return 1;
	if (now() < deadline)
		return 0;
	atomic_store(&expired, 1);
	return 1;
}

/* Read stream st; returns a checksum of one byte per 4 KiB copied. */
static uint64_t read_stream(struct stream *st, char *buf)
{
	uint64_t sum = 0, off = st->start, end = st->end;
	const char *path = files[st->file];
	st->reached = off;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(path);
		failed = 1;
		return 0;
	}
	if (!use_mmap) {
		while (off < end && !past_deadline()) {
			size_t want = end - off < bufsz ? (size_t)(end - off) : bufsz;
			ssize_t r = pread(fd, buf, want, (off_t)off);
			if (r <= 0) {
				if (r < 0 && errno == EINTR)
					continue;
				fprintf(stderr, "%s: read at %llu: %s\n", path, (unsigned long long)off,
					r ? strerror(errno) : "unexpected end of file");
				failed = 1;
				break;
			}
			for (ssize_t k = 0; k < r; k += 4096)
				sum += (unsigned char)buf[k];
			off += (uint64_t)r;
			st->reached = off;
		}
	} else if (end > off) {
		posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
		char *m = mmap(NULL, fsize[st->file], PROT_READ, MAP_PRIVATE, fd, 0);
		if (m == MAP_FAILED) {
			perror("mmap");
			failed = 1;
		} else {
			while (off < end && !past_deadline()) {
				size_t n = end - off < bufsz ? (size_t)(end - off) : bufsz;
				memcpy(buf, m + off, n);
				__asm__ volatile("" ::"r"(buf) : "memory");
				for (size_t k = 0; k < n; k += 4096)
					sum += (unsigned char)buf[k];
				off += n;
				st->reached = off;
			}
			munmap(m, fsize[st->file]);
		}
	}
	close(fd);
	return sum;
}

struct worker {
	pthread_t th;
	uint64_t sum;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	char *buf = NULL;
	if (posix_memalign((void **)&buf, 4096, bufsz))
		return NULL;
	memset(buf, 0, bufsz); /* pre-fault */
	for (;;) {
		int i = atomic_fetch_add(&next_stream, 1);
		if (i >= nstreams || past_deadline())
			break;
		w->sum += read_stream(&streams[i], buf);
	}
	free(buf);
	return NULL;
}

static void add_stream(int file, uint64_t start, uint64_t end)
{
	if (nstreams == MAX_STREAMS) {
		fprintf(stderr, "too many streams\n");
		exit(2);
	}
	streams[nstreams++] = (struct stream){ file, start, end, start };
}

static void default_streams(void)
{
	for (int i = 0; i < nfiles; i++) {
		if (nfiles >= nthreads) {
			add_stream(i, 0, fsize[i]);
			continue;
		}
		uint64_t part = (fsize[i] / (uint64_t)nthreads + MIB - 1) / MIB * MIB;
		for (int k = 0; k < nthreads; k++) {
			uint64_t a = part * (uint64_t)k, b = a + part;
			if (a > fsize[i])
				a = fsize[i];
			if (b > fsize[i] || k == nthreads - 1)
				b = fsize[i];
			add_stream(i, a, b);
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* random reads: run by one thread so that main can give up at the deadline even while a read
 * is stuck in the file system (the in-flight read then counts with its time so far) */
static struct {
	size_t size;
	int count, *fds;
	uint64_t total;
	char *buf;
	double *lat;
	atomic_int done;
	_Atomic double cur_t0; /* start of the read in flight, 0 if none */
} rs;

static void *rand_worker(void *arg)
{
	(void)arg;
	for (int k = 0; k < rs.count && !(k > 0 && past_deadline()); k++) {
		uint64_t slot = rng() % rs.total;
		int i = 0;
		while (slot >= fsize[i] / rs.size) {
			slot -= fsize[i] / rs.size;
			i++;
		}
		double t0 = now();
		atomic_store(&rs.cur_t0, t0);
		ssize_t r = pread(rs.fds[i], rs.buf, rs.size, (off_t)(slot * rs.size));
		rs.lat[k] = (now() - t0) * 1e6;
		atomic_store(&rs.cur_t0, 0.0);
		if (r != (ssize_t)rs.size) {
			fprintf(stderr, "%s: pread: %s\n", files[i], r < 0 ? strerror(errno) : "short read");
			failed = 1;
			break;
		}
		atomic_store(&rs.done, k + 1);
	}
	return NULL;
}

static int print_rand(int censored)
{
	int count = atomic_load(&rs.done);
	double t0 = atomic_load(&rs.cur_t0);
	if (censored && t0 > 0)
		rs.lat[count++] = (now() - t0) * 1e6;
	else
		censored = 0;
	if (!count) {
		fprintf(stderr, "no read completed\n");
		return 1;
	}
	double sumlat = 0;
	for (int k = 0; k < count; k++)
		sumlat += rs.lat[k];
	qsort(rs.lat, (size_t)count, sizeof(double), cmp_double);
#define PCT(p) rs.lat[(size_t)((double)(count - 1) * (p) + 0.5)]
	printf("{\"mode\": \"rand\", \"size\": %zu, \"count\": %d, \"censored\": %d, \"p50_us\": %.1f, "
	       "\"p90_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, \"mean_us\": %.1f}\n",
	       rs.size, count, censored, PCT(0.50), PCT(0.90), PCT(0.99), rs.lat[count - 1], sumlat / count);
	fflush(stdout);
	return 0;
}

/* join thread th, giving up GRACE seconds after the deadline; returns 0 if joined */
#define GRACE 0.25
static int join_by_deadline(pthread_t th)
{
	if (!deadline)
		return pthread_join(th, NULL);
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	double left = deadline + GRACE - now();
	if (left < 0)
		left = 0;
	double abs_s = (double)rt.tv_sec + (double)rt.tv_nsec * 1e-9 + left;
	struct timespec ts = { (time_t)abs_s, (long)((abs_s - (double)(time_t)abs_s) * 1e9) };
	return pthread_timedjoin_np(th, NULL, &ts);
}

static int do_rand(size_t size, int count, int fadv_random)
{
	rs.size = size;
	rs.count = count;
	rs.fds = calloc((size_t)nfiles, sizeof(int));
	for (int i = 0; i < nfiles; i++) {
		rs.fds[i] = open(files[i], O_RDONLY | O_CLOEXEC);
		if (rs.fds[i] < 0) {
			perror(files[i]);
			return 1;
		}
		if (fadv_random)
			posix_fadvise(rs.fds[i], 0, 0, POSIX_FADV_RANDOM);
		rs.total += fsize[i] / size;
	}
	if (!rs.total) {
		fprintf(stderr, "files smaller than the read size\n");
		return 2;
	}
	if (posix_memalign((void **)&rs.buf, 4096, size))
		return 1;
	memset(rs.buf, 0, size);
	rs.lat = calloc((size_t)count + 1, sizeof(double));
	pthread_t th;
	if (pthread_create(&th, NULL, rand_worker, NULL))
		return 1;
	if (join_by_deadline(th)) {
		/* a read is stuck past the deadline: report, and leave without waiting for it */
		int r = print_rand(1);
		_exit(r);
	}
	if (failed)
		return 1;
	return print_rand(0);
}

static int do_resident(uint64_t limit)
{
	uint64_t res = 0;
	long pg = sysconf(_SC_PAGESIZE);
	for (int i = 0; i < nfiles; i++) {
		uint64_t len = limit && limit < fsize[i] ? limit : fsize[i];
		if (!len)
			continue;
		int fd = open(files[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			perror(files[i]);
			return 1;
		}
		void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
		close(fd);
		if (m == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		size_t np = (len + (uint64_t)pg - 1) / (uint64_t)pg;
		unsigned char *v = malloc(np);
		if (!v || mincore(m, len, v)) {
			perror("mincore");
			return 1;
		}
		for (size_t k = 0; k < np; k++)
			if (v[k] & 1)
				res += (uint64_t)pg;
		free(v);
		munmap(m, len);
	}
	printf("{\"mode\": \"resident\", \"bytes\": %llu, \"files\": %d}\n", (unsigned long long)res, nfiles);
	return 0;
}

static size_t parse_size(const char *s)
{
	char *e;
	double v = strtod(s, &e);
	switch (*e) {
	case 'k': case 'K': v *= 1024; break;
	case 'm': case 'M': v *= 1024 * 1024; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
	}
	return (size_t)v;
}

static double t_start;

static void print_seq(const char *mode, uint64_t sum)
{
	double dt = now() - t_start;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	uint64_t bytes = 0, total = 0;
	for (int k = 0; k < nstreams; k++) {
		bytes += streams[k].reached - streams[k].start;
		total += streams[k].end - streams[k].start;
	}
	printf("{\"mode\": \"%s\", \"threads\": %d, \"bytes\": %llu, \"total_bytes\": %llu, \"seconds\": %.6f, "
	       "\"gbps\": %.4f, \"utime\": %.3f, \"stime\": %.3f, \"partial\": %s, \"sum\": %llu, \"streams\": [",
	       mode, nthreads, (unsigned long long)bytes, (unsigned long long)total, dt, (double)bytes / dt / 1e9,
	       (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6,
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6, bytes < total ? "true" : "false",
	       (unsigned long long)sum);
	for (int k = 0; k < nstreams; k++)
		printf("%s{\"file\": %d, \"start\": %llu, \"end\": %llu, \"reached\": %llu}", k ? ", " : "",
		       streams[k].file, (unsigned long long)streams[k].start, (unsigned long long)streams[k].end,
		       (unsigned long long)streams[k].reached);
	printf("]}\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		goto usage;
	const char *mode = argv[1];
	size_t rsize = 4096;
	int count = 1000, fadv_random = 0;
	uint64_t limit = 0;
	int i = 2;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-t") && i + 1 < argc)
			nthreads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-b") && i + 1 < argc)
			bufsz = parse_size(argv[++i]);
		else if (!strcmp(argv[i], "-s") && i + 1 < argc)
			rsize = parse_size(argv[++i]);
		else if (!strcmp(argv[i], "-n") && i + 1 < argc)
			count = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			rng_state ^= strtoull(argv[++i], NULL, 0) * 0x2545F4914F6CDD1Dull;
		else if (!strcmp(argv[i], "-L") && i + 1 < argc)
			limit = parse_size(argv[++i]);
		else if (!strcmp(argv[i], "--deadline") && i + 1 < argc)
			deadline = atof(argv[++i]);
		else if (!strcmp(argv[i], "-S") && i + 1 < argc) {
			int f;
			unsigned long long a, b;
			if (sscanf(argv[++i], "%d:%llu:%llu", &f, &a, &b) != 3 || b < a)
				goto usage;
			add_stream(f, a, b);
		} else if (!strcmp(argv[i], "--fadv-random"))
			fadv_random = 1;
		else
			goto usage;
	}
	nfiles = argc - i;
	files = argv + i;
	if (nfiles < 1 || nthreads < 1 || bufsz < 4096 || count < 1 || rsize < 1)
		goto usage;
	fsize = calloc((size_t)nfiles, sizeof(uint64_t));
	for (int k = 0; k < nfiles; k++) {
		struct stat s;
		if (stat(files[k], &s)) {
			perror(files[k]);
			return 1;
		}
		fsize[k] = (uint64_t)s.st_size;
	}
	for (int k = 0; k < nstreams; k++)
		if (streams[k].file < 0 || streams[k].file >= nfiles || streams[k].end > fsize[streams[k].file])
			goto usage;
	if (deadline)
		deadline += now();
	if (!strcmp(mode, "resident"))
		return do_resident(limit);
	if (!strcmp(mode, "rand"))
		return do_rand(rsize, count, fadv_random);
	if (strcmp(mode, "seq") && strcmp(mode, "mmap"))
		goto usage;
	use_mmap = !strcmp(mode, "mmap");
	if (!nstreams)
		default_streams();

	struct worker *w = calloc((size_t)nthreads, sizeof(*w));
	t_start = now();
	for (int k = 0; k < nthreads; k++) {
		if (pthread_create(&w[k].th, NULL, work, &w[k])) {
			perror("pthread_create");
			return 1;
		}
	}
	uint64_t sum = 0;
	for (int k = 0; k < nthreads; k++) {
		if (join_by_deadline(w[k].th)) {
			/* a read is stuck in the file system past the deadline: report the bytes done so
			 * far (not the read in flight) and exit without waiting for it */
			print_seq(mode, 0);
			_exit(0);
		}
		sum += w[k].sum;
	}
	if (failed)
		return 1;
	print_seq(mode, sum);
	return 0;
usage:
	fprintf(stderr, "usage: bfread seq|mmap [-t THREADS] [-b BUF] [--deadline S] [-S I:START:END]... FILE...\n"
			"       bfread rand -s SIZE -n COUNT [--seed N] [--deadline S] [--fadv-random] FILE...\n"
			"       bfread resident [-L LEN] FILE...\n");
	return 2;
}
