/* main.c: the blendfs command line.
 *
 *   blendfs mount   [options] RECIPE.yaml MOUNTPOINT
 *   blendfs umount  [-z] MOUNTPOINT
 *   blendfs merge   [options] RECIPE.yaml OUTDIR
 *   blendfs check   [options] RECIPE.yaml
 *   blendfs inspect PATH
 *
 * Each command is one acquisition ladder: recipe -> plan (opens and validates every source) ->
 * engine -> output, with a cleanup label per resource. Nothing is mounted or written until the
 * whole recipe has been validated against every source header.
 *
 * Exit codes: 0 success; 1 the recipe, a model or an input is invalid (nothing mounted/written);
 * 2 bad command line; 3 a system failure (mount, I/O, memory).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bf_config.h"
#include "bf_exec.h"
#include "bf_fuse.h"
#include "bf_log.h"
#include "bf_model.h"
#include "bf_plan.h"
#include "bf_recipe.h"
#include "bf_st.h"
#include "bf_vfs.h"

enum { EXIT_INPUT = 1, EXIT_USAGE = 2, EXIT_SYSTEM = 3 };

struct common_opts {
	uint64_t cache_bytes;
	uint64_t chunk_bytes;
	uint64_t shard_size;
	unsigned threads;
	bool has_seed;
	uint64_t seed;
};

static void common_defaults(struct common_opts *c)
{
	memset(c, 0, sizeof(*c));
	c->cache_bytes = (uint64_t)BF_DEFAULT_CACHE_MIB << 20;
	c->chunk_bytes = 1u << 20;
	c->shard_size = 5000000000ull;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	c->threads = n > 0 ? (unsigned)n : 1;
}

static int usage_error(const char *cmd, const char *fmt, ...) BF_PRINTF(2, 3);
static int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "blendfs %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'blendfs %s --help'.\n", cmd);
	return EXIT_USAGE;
}

/* Options shared by mount, merge and check. Returns 1 if handled, 0 if not ours, -1 on error. */
enum {
	OPT_CACHE = 256, OPT_CHUNK, OPT_SHARD, OPT_THREADS, OPT_SEED, OPT_LOGLEVEL, OPT_LOGFILE,
	OPT_READAHEAD, OPT_NOSYNC, OPT_FORCE, OPT_FUSE_THREADS, OPT_PREFETCH,
};

static int parse_common(const char *cmd, int opt, const char *arg, struct common_opts *c)
{
	uint64_t v;
	switch (opt) {
	case OPT_CACHE:
		if (bf_parse_size(arg, &v))
			return usage_error(cmd, "--cache-size: '%s' is not a size (e.g. 512M, 2G)", arg), -1;
		c->cache_bytes = v;
		return 1;
	case OPT_CHUNK:
		if (bf_parse_size(arg, &v) || v < 1024 || v > (1ull << 30) || v % 8)
			return usage_error(cmd, "--chunk-size: '%s' is not a size between 1K and 1G (a multiple of 8)", arg), -1;
		c->chunk_bytes = v;
		return 1;
	case OPT_SHARD:
		if (bf_parse_size(arg, &v))
			return usage_error(cmd, "--shard-size: '%s' is not a size (e.g. 5e9, 2G; 0 = one file)", arg), -1;
		c->shard_size = v;
		return 1;
	case OPT_THREADS: {
		char *end;
		unsigned long n = strtoul(arg, &end, 10);
		if (*end || !*arg || n < 1 || n > 1024)
			return usage_error(cmd, "--threads: '%s' is not a number from 1 to 1024", arg), -1;
		c->threads = (unsigned)n;
		return 1;
	}
	case OPT_SEED: {
		char *end;
		errno = 0;
		unsigned long long n = strtoull(arg, &end, 10);
		if (*end || !*arg || errno || arg[0] == '-')
			return usage_error(cmd, "--seed: '%s' is not a non-negative integer", arg), -1;
		c->has_seed = true;
		c->seed = n;
		return 1;
	}
	case OPT_LOGLEVEL: {
		enum bf_log_level l;
		if (bf_log_parse_level(arg, &l))
			return usage_error(cmd, "--log-level: '%s' is not one of error, warn, info, debug", arg), -1;
		bf_log_set_level(l);
		return 1;
	}
	case OPT_LOGFILE: {
		int r = bf_log_to_file(arg);
		if (r)
			return usage_error(cmd, "--log-file: cannot open %s: %s", arg, strerror(-r)), -1;
		return 1;
	}
	}
	return 0;
}

#define COMMON_LONGOPTS                                                                            \
	{ "cache-size", required_argument, NULL, OPT_CACHE },                                      \
	{ "chunk-size", required_argument, NULL, OPT_CHUNK },                                      \
	{ "shard-size", required_argument, NULL, OPT_SHARD },                                      \
	{ "threads", required_argument, NULL, OPT_THREADS },                                       \
	{ "seed", required_argument, NULL, OPT_SEED },                                             \
	{ "log-level", required_argument, NULL, OPT_LOGLEVEL },                                    \
	{ "log-file", required_argument, NULL, OPT_LOGFILE },                                      \
	{ "help", no_argument, NULL, 'h' }

/* recipe -> plan; prints the error and returns an exit code on failure */
static int load_plan(const char *recipe_path, const struct common_opts *c, struct bf_plan **plan)
{
	struct bf_err err = { { 0 } };
	struct bf_recipe *r;
	if (bf_recipe_load(recipe_path, &r, &err)) {
		fprintf(stderr, "blendfs: %s\n", err.msg);
		return EXIT_INPUT;
	}
	struct bf_plan_opts po = { .shard_size = c->shard_size, .has_seed = c->has_seed, .seed = c->seed };
	if (bf_plan_build(r, &po, plan, &err)) {
		fprintf(stderr, "blendfs: %s\n", err.msg);
		return EXIT_INPUT;
	}
	for (size_t i = 0; i < (*plan)->n_warnings; i++)
		bf_warn("%s", (*plan)->warnings[i]);
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * mount
 */

static const char mount_help[] =
	"usage: blendfs mount [options] RECIPE.yaml MOUNTPOINT\n"
	"\n"
	"Validate a mergekit recipe against its source models, then mount the merged model read-only\n"
	"at MOUNTPOINT. Tensor bytes are computed when read. Returns once the files are visible.\n"
	"\n"
	"  -f, --foreground      stay in the foreground (logs go to stderr)\n"
	"  -o OPTS               extra FUSE mount options (e.g. allow_other)\n"
	"      --cache-size SIZE byte budget of the computed-chunk cache (default " "%u" "M)\n"
	"      --chunk-size SIZE output bytes computed per chunk (default 1M)\n"
	"      --threads N       FUSE worker threads (default 16)\n"
	"      --shard-size SIZE bytes per output shard (default 5e9, as mergekit; 0 = one file)\n"
	"      --seed N          seed for random methods (overrides the recipe's random_seed)\n"
	"      --readahead-kb N  set the mount's read-ahead when root (default 1024; 0 = leave)\n"
	"      --prefetch N      threads computing ahead of sequential readers (default: CPUs - 1,\n"
	"                        at most 4; 0 = off)\n"
	"      --log-level L     error | warn | info | debug (default info)\n"
	"      --log-file PATH   also log to PATH (a daemonised mount logs to syslog)\n"
	"  -d, --debug           trace FUSE requests (implies -f)\n";

/* Prefetch threads when --prefetch is not given: one per CPU this process may run on, less one
 * for the reader, at most 4. A 16-core machine measured one sequential reader at 2x the
 * throughput with 4 than with 1 for linear, +25-60% for ties and dare_ties; linear and ties
 * were slower with 8 or 15 (docs/performance.md, round 6). 2 CPUs: 1, as before. */
static unsigned default_prefetch(void)
{
	cpu_set_t set;
	long n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 2)
		return 1;
	return n - 1 < 4 ? (unsigned)(n - 1) : 4;
}

/* Whether /proc/self/mountinfo lists a fuse.blendfs mount on mnt (as given, made absolute
 * without resolving links: a dead mount cannot be stat'ed, so realpath() cannot walk it). */
static bool stale_blendfs_mount(const char *mnt)
{
	char *abs = NULL;
	while (mnt[0] == '.' && mnt[1] == '/')
		mnt += 2;
	if (mnt[0] == '/') {
		abs = bf_xstrdup(mnt);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)))
			return false;
		abs = bf_xasprintf("%s/%s", cwd, mnt);
	}
	size_t n = strlen(abs);
	while (n > 1 && abs[n - 1] == '/')
		abs[--n] = 0;
	FILE *f = fopen("/proc/self/mountinfo", "r");
	bool found = false;
	char line[4 * PATH_MAX]; /* room for two escaped paths and the options */
	while (f && !found && fgets(line, sizeof(line), f)) {
		/* id parent major:minor root MOUNTPOINT options ... - FSTYPE source super */
		char point[PATH_MAX], fstype[64];
		const char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", point) != 1 || sscanf(sep + 3, "%63s", fstype) != 1)
			continue;
		/* mountinfo escapes space, tab, newline and backslash as \ooo */
		char *w = point;
		for (const char *r = point; *r; r++) {
			if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
			    r[3] <= '7') {
				*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
				r += 3;
			} else {
				*w++ = *r;
			}
		}
		*w = 0;
		found = !strcmp(point, abs) && !strcmp(fstype, "fuse.blendfs");
	}
	if (f)
		fclose(f);
	free(abs);
	return found;
}

static int cmd_mount(int argc, char **argv)
{
	struct common_opts c;
	common_defaults(&c);
	struct bf_fuse_opts fo = { .max_threads = 16, .readahead_kb = 1024 };
	static const struct option longopts[] = {
		COMMON_LONGOPTS,
		{ "foreground", no_argument, NULL, 'f' },
		{ "debug", no_argument, NULL, 'd' },
		{ "readahead-kb", required_argument, NULL, OPT_READAHEAD },
		{ "prefetch", required_argument, NULL, OPT_PREFETCH },
		{ NULL, 0, NULL, 0 },
	};
	char *fuse_opts = NULL;
	unsigned prefetch = default_prefetch();
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+fdo:h", longopts, NULL)) != -1) {
		int r = parse_common("mount", opt, optarg, &c);
		if (r < 0) {
			free(fuse_opts);
			return EXIT_USAGE;
		}
		if (r)
			continue;
		switch (opt) {
		case 'f': fo.foreground = true; break;
		case 'd': fo.debug = fo.foreground = true; break;
		case 'o': {
			char *n = fuse_opts ? bf_xasprintf("%s,%s", fuse_opts, optarg) : bf_xstrdup(optarg);
			free(fuse_opts);
			fuse_opts = n;
			break;
		}
		case OPT_READAHEAD: {
			char *end;
			unsigned long n = strtoul(optarg, &end, 10);
			if (*end || !*optarg || n > (1u << 20)) {
				free(fuse_opts);
				return usage_error("mount", "--readahead-kb: '%s' is not a number of KiB", optarg);
			}
			fo.readahead_kb = (unsigned)n;
			break;
		}
		case OPT_PREFETCH: {
			char *end;
			unsigned long n = strtoul(optarg, &end, 10);
			if (*end || !*optarg || n > 64) {
				free(fuse_opts);
				return usage_error("mount", "--prefetch: '%s' is not a number from 0 to 64", optarg);
			}
			prefetch = (unsigned)n;
			break;
		}
		case 'h':
			printf(mount_help, BF_DEFAULT_CACHE_MIB);
			free(fuse_opts);
			return 0;
		default:
			free(fuse_opts);
			return usage_error("mount", "unknown option");
		}
	}
	/* --threads means FUSE workers here */
	fo.max_threads = c.threads > 1 ? c.threads : 16;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--threads"))
			fo.max_threads = c.threads;
	if (argc - optind != 2) {
		free(fuse_opts);
		return usage_error("mount", "expected RECIPE.yaml and MOUNTPOINT");
	}
	const char *recipe = argv[optind], *mnt = argv[optind + 1];
	fo.mountpoint = mnt;
	fo.fuse_opts = fuse_opts;

	int ret;
	struct bf_plan *plan = NULL;
	struct bf_exec *x = NULL;
	struct bf_vfs *v = NULL;
	struct bf_err err = { { 0 } };

	struct stat st;
	/* a dead FUSE mount can still answer stat() from the attribute cache; opening the directory
	 * asks its daemon */
	int dfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	bool dead = dfd < 0 && errno == ENOTCONN;
	if (dfd >= 0)
		close(dfd);
	if (dead && stale_blendfs_mount(mnt)) {
		/* a blendfs daemon died and its auto_unmount helper did not clear the mount: clear
		 * it now (only a blendfs mount, only a dead one), so that a restart just works */
		struct bf_err uerr = { { 0 } };
		if (bf_fuse_unmount(mnt, true, &uerr) == 0)
			fprintf(stderr, "blendfs: %s was a stale blendfs mount (its daemon had died): unmounted it\n", mnt);
		else
			fprintf(stderr, "blendfs: %s\n", uerr.msg);
	}
	if (stat(mnt, &st) < 0) {
		if (errno == ENOTCONN)
			fprintf(stderr, "blendfs: %s is a stale mount (its daemon died); run: fusermount3 -u %s\n", mnt, mnt);
		else
			fprintf(stderr, "blendfs: mount point %s: %s\n", mnt, strerror(errno));
		ret = EXIT_INPUT;
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "blendfs: mount point %s is not a directory\n", mnt);
		ret = EXIT_INPUT;
		goto out;
	}
	ret = load_plan(recipe, &c, &plan);
	if (ret)
		goto out;
	/* the daemon must never read its own mount (deadlock): refuse sources below the mount point */
	char realmnt[PATH_MAX];
	if (realpath(mnt, realmnt)) {
		size_t l = strlen(realmnt);
		for (size_t i = 0; i < plan->n_models; i++)
			if (!strncmp(plan->models[i]->dir, realmnt, l) &&
			    (plan->models[i]->dir[l] == '/' || plan->models[i]->dir[l] == 0)) {
				fprintf(stderr, "blendfs: source model %s lies inside the mount point %s\n",
					plan->models[i]->dir, mnt);
				ret = EXIT_INPUT;
				goto out_plan;
			}
	}
	struct bf_exec_opts eo = { .cache_bytes = c.cache_bytes, .chunk_bytes = c.chunk_bytes,
				   .prefetch_threads = prefetch };
	if (bf_exec_new(plan, &eo, &x, &err)) {
		fprintf(stderr, "blendfs: %s\n", err.msg);
		ret = EXIT_SYSTEM;
		goto out_plan;
	}
	struct stat rst;
	struct timespec mtime = { 0, 0 };
	if (stat(recipe, &rst) == 0)
		mtime = rst.st_mtim;
	bf_vfs_build(plan, &mtime, &v);
	ret = bf_fuse_main(v, x, &fo) ? EXIT_SYSTEM : 0;
	bf_vfs_free(v);
	bf_exec_free(x);
out_plan:
	bf_plan_free(plan);
out:
	free(fuse_opts);
	return ret;
}

/* ---------------------------------------------------------------------------------------------
 * umount
 */

static int cmd_umount(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "lazy", no_argument, NULL, 'z' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool lazy = false;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+zh", longopts, NULL)) != -1) {
		if (opt == 'z')
			lazy = true;
		else if (opt == 'h') {
			printf("usage: blendfs umount [-z|--lazy] MOUNTPOINT\n\nUnmount a blendfs mount. "
			       "--lazy detaches it now and lets open files finish.\n");
			return 0;
		} else
			return usage_error("umount", "unknown option");
	}
	if (argc - optind != 1)
		return usage_error("umount", "expected MOUNTPOINT");
	struct bf_err err = { { 0 } };
	if (bf_fuse_unmount(argv[optind], lazy, &err)) {
		fprintf(stderr, "blendfs: %s\n", err.msg);
		return EXIT_SYSTEM;
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * merge
 */

struct merge_job {
	struct bf_exec *x;
	const struct bf_plan *p;
	int *fds;                  /* per shard */
	_Atomic size_t next;       /* next chunk, counted over all shards */
	_Atomic int failed;
	char errmsg[512];
	pthread_mutex_t lock;
	_Atomic uint64_t done_bytes;
	_Atomic int finished;
};

#define MERGE_PIECE (8u << 20)

/* Record a failure: the first message wins, and every worker stops at its next step. */
__attribute__((format(printf, 3, 4)))
static void merge_fail(struct merge_job *j, int e, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&j->lock);
	if (!j->errmsg[0]) {
		va_start(ap, fmt);
		vsnprintf(j->errmsg, sizeof(j->errmsg), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&j->lock);
	atomic_store(&j->failed, e);
}

/* Run fn on up to nt threads (th has room for nt) and wait for them all. Returns how many
 * started: 0 means none could. */
static unsigned merge_run(void *(*fn)(void *), struct merge_job *j, pthread_t *th, unsigned nt)
{
	unsigned started = 0;
	for (unsigned i = 0; i < nt; i++)
		started += pthread_create(&th[started], NULL, fn, j) == 0;
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	return started;
}

/* Statistics first, one tensor per worker at a time: otherwise every worker would wait on the
 * one computing the statistics of the tensor they all reach together. Not for the random
 * methods: their statistics draw the masks, kept as bits for the chunks within a budget that
 * would hold only the first few tensors' if all were drawn up front (the rest would be drawn
 * again); drawn when the chunks reach them, the bits are used and freed at once. */
static void *merge_stats_worker(void *arg)
{
	struct merge_job *j = arg;
	for (;;) {
		size_t ti = atomic_fetch_add(&j->next, 1);
		if (ti >= j->p->n_tensors || atomic_load(&j->failed))
			break;
		const struct bf_method *m = j->p->tensors[ti].method;
		if (m && m->random)
			continue;
		int r = bf_exec_prepare(j->x, ti);
		if (r)
			merge_fail(j, -r, "statistics of %s failed: %s", j->p->tensors[ti].name, strerror(-r));
	}
	return NULL;
}

static void *merge_worker(void *arg)
{
	struct merge_job *j = arg;
	uint64_t C = bf_exec_chunk_bytes(j->x);
	char *buf = malloc(C);
	if (!buf) {
		merge_fail(j, ENOMEM, "no memory for a %llu-byte chunk buffer", (unsigned long long)C);
		return NULL;
	}
	for (;;) {
		/* the next (shard, chunk) in file order over all shards */
		size_t idx = atomic_fetch_add(&j->next, 1);
		uint32_t s = 0;
		uint64_t k = idx;
		while (s < j->p->n_shards) {
			uint64_t nk = (j->p->shards[s].size + C - 1) / C;
			if (k < nk)
				break;
			k -= nk;
			s++;
		}
		if (s >= j->p->n_shards || atomic_load(&j->failed))
			break;
		long n = bf_exec_compute_chunk(j->x, s, k, buf);
		int e = n < 0 ? (int)-n : 0;
		const char *what = "computing";
		for (long w = 0; !e && w < n;) {
			ssize_t r = pwrite(j->fds[s], buf + w, (size_t)(n - w), (off_t)(k * C + (uint64_t)w));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				e = r < 0 ? errno : EIO;
				what = "writing";
			}
			w += r > 0 ? r : 0;
		}
		if (e) {
			merge_fail(j, e, "%s %s failed: %s", what, j->p->shards[s].name, strerror(e));
			break;
		}
		atomic_fetch_add(&j->done_bytes, (uint64_t)n);
	}
	free(buf);
	return NULL;
}

/* Progress of `blendfs merge`: a bar redrawn in place when stderr is a terminal, else one plain
 * line per 10% (logs and CI output stay readable). */
static void fmt_si(char *b, size_t n, double v, const char *unit)
{
	if (v >= 1e9)
		snprintf(b, n, "%.2f G%s", v / 1e9, unit);
	else if (v >= 1e6)
		snprintf(b, n, "%.1f M%s", v / 1e6, unit);
	else
		snprintf(b, n, "%.0f k%s", v / 1e3, unit);
}

static void *merge_progress(void *arg)
{
	struct merge_job *j = arg;
	bool tty = isatty(2);
	uint64_t t0 = bf_now_ns(), total = j->p->total_size ? j->p->total_size : 1;
	int last_decile = -1;
	for (;;) {
		bool fin = atomic_load(&j->finished);
		uint64_t done = atomic_load(&j->done_bytes);
		double secs = (double)(bf_now_ns() - t0) / 1e9, rate = secs > 0 ? (double)done / secs : 0;
		double eta = rate > 0 ? (double)(total - done) / rate : 0;
		int pct = (int)(100.0 * (double)done / (double)total);
		char d[32], tot[32], r[32];
		fmt_si(d, sizeof(d), (double)done, "B");
		fmt_si(tot, sizeof(tot), (double)total, "B");
		fmt_si(r, sizeof(r), rate, "B/s");
		if (tty) {
			char bar[31];
			int fill = pct * 30 / 100;
			for (int i = 0; i < 30; i++)
				bar[i] = i < fill ? '#' : '-';
			bar[30] = 0;
			fprintf(stderr, "\rmerge [%s] %3d%%  %s/%s  %s  ETA %.0fs   ", bar, pct, d, tot, r, eta);
			if (fin)
				fputc('\n', stderr);
		} else if (pct / 10 > last_decile || fin) {
			last_decile = pct / 10;
			fprintf(stderr, "blendfs: merge %d%% (%s of %s, %s)\n", pct, d, tot, r);
		}
		if (fin)
			break;
		struct timespec ts = { 0, tty ? 200000000 : 100000000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* mkdir -p, as mergekit's os.makedirs(exist_ok=True) */
static int mkdir_p(const char *path)
{
	char *p = bf_xstrdup(path);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = 0;
			if (mkdir(p, 0755) < 0 && errno != EEXIST) {
				free(p);
				return -1;
			}
			*s = '/';
		}
	int r = mkdir(p, 0755) < 0 && errno != EEXIST ? -1 : 0;
	free(p);
	return r;
}

static const char merge_help[] =
	"usage: blendfs merge [options] RECIPE.yaml OUTDIR\n"
	"\n"
	"Write the merged model to OUTDIR: exactly the files and bytes a mount of the recipe shows,\n"
	"computed by the same plan and kernels. Files are written under temporary names, synced, and\n"
	"renamed into place.\n"
	"\n"
	"      --threads N       compute threads (default: all cores)\n"
	"      --shard-size SIZE bytes per output shard (default 5e9, as mergekit; 0 = one file)\n"
	"      --seed N          seed for random methods (overrides the recipe's random_seed)\n"
	"      --chunk-size SIZE output bytes computed per chunk (default 1M)\n"
	"      --no-sync         do not fsync the written files\n"
	"      --force           overwrite files that already exist in OUTDIR\n"
	"      --log-level L     error | warn | info | debug\n";

static int cmd_merge(int argc, char **argv)
{
	struct common_opts c;
	common_defaults(&c);
	c.cache_bytes = 64u << 20;
	bool sync = true, force = false;
	static const struct option longopts[] = {
		COMMON_LONGOPTS,
		{ "no-sync", no_argument, NULL, OPT_NOSYNC },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ NULL, 0, NULL, 0 },
	};
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		int r = parse_common("merge", opt, optarg, &c);
		if (r < 0)
			return EXIT_USAGE;
		if (r)
			continue;
		if (opt == OPT_NOSYNC)
			sync = false;
		else if (opt == OPT_FORCE)
			force = true;
		else if (opt == 'h') {
			printf("%s", merge_help);
			return 0;
		} else
			return usage_error("merge", "unknown option");
	}
	if (argc - optind != 2)
		return usage_error("merge", "expected RECIPE.yaml and OUTDIR");
	const char *recipe = argv[optind], *outdir = argv[optind + 1];

	struct bf_plan *plan = NULL;
	struct bf_exec *x = NULL;
	struct bf_vfs *v = NULL;
	struct bf_err err = { { 0 } };
	int ret = load_plan(recipe, &c, &plan);
	if (ret)
		return ret;
	int dfd = -1;
	if (mkdir_p(outdir)) {
		fprintf(stderr, "blendfs: cannot create %s: %s\n", outdir, strerror(errno));
		ret = EXIT_SYSTEM;
		goto out_plan;
	}
	dfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		fprintf(stderr, "blendfs: cannot open %s: %s\n", outdir, strerror(errno));
		ret = EXIT_SYSTEM;
		goto out_plan;
	}
	struct timespec mtime = { 0, 0 };
	bf_vfs_build(plan, &mtime, &v);
	/* refuse to clobber unless asked */
	for (size_t i = 1; i < v->n && !force; i++) {
		const struct bf_vnode *n = &v->nodes[i];
		if (n->hidden || n->kind == BF_V_DIR)
			continue;
		if (faccessat(dfd, n->name, F_OK, 0) == 0) {
			fprintf(stderr, "blendfs: %s/%s exists (use --force to overwrite)\n", outdir, n->name);
			ret = EXIT_INPUT;
			goto out_vfs;
		}
	}
	struct bf_exec_opts eo = { .cache_bytes = c.cache_bytes, .chunk_bytes = c.chunk_bytes };
	if (bf_exec_new(plan, &eo, &x, &err)) {
		fprintf(stderr, "blendfs: %s\n", err.msg);
		ret = EXIT_SYSTEM;
		goto out_vfs;
	}
	/* temporary files, each filled then synced and renamed */
	int *fds = calloc(plan->n_shards, sizeof(int));
	char **tmpn = calloc(v->n, sizeof(char *));
	for (size_t s = 0; s < plan->n_shards; s++)
		fds[s] = -1;
	ret = 0;
	for (size_t i = 1; i < v->n && !ret; i++) {
		const struct bf_vnode *n = &v->nodes[i];
		if (n->hidden || n->kind == BF_V_DIR)
			continue;
		tmpn[i] = bf_xasprintf(".%s.blendfs-tmp", n->name);
		int fd = openat(dfd, tmpn[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			fprintf(stderr, "blendfs: cannot create %s/%s: %s\n", outdir, tmpn[i], strerror(errno));
			ret = EXIT_SYSTEM;
			break;
		}
		if (n->kind == BF_V_MEM) {
			if (write_all(fd, n->data, n->size) || (sync && fsync(fd))) {
				fprintf(stderr, "blendfs: writing %s/%s failed: %s\n", outdir, n->name, strerror(errno));
				ret = EXIT_SYSTEM;
			}
			close(fd);
		} else {
			const struct bf_oshard *sh = &plan->shards[n->shard];
			if (ftruncate(fd, (off_t)sh->size)) {
				fprintf(stderr, "blendfs: writing %s/%s failed: %s\n", outdir, n->name, strerror(errno));
				ret = EXIT_SYSTEM;
				close(fd);
			} else {
				fds[n->shard] = fd;
			}
		}
	}
	if (!ret) {
		struct merge_job j = { .x = x, .p = plan, .fds = fds };
		pthread_mutex_init(&j.lock, NULL);
		unsigned nt = c.threads ? c.threads : 1;
		pthread_t *th = calloc(nt, sizeof(pthread_t)), prog;
		bool progress = bf_log_get_level() >= BF_LOG_INFO &&
				pthread_create(&prog, NULL, merge_progress, &j) == 0;
		/* statistics of every tensor first, then the chunks, on the same threads */
		unsigned ran = th ? merge_run(merge_stats_worker, &j, th, nt) : 0;
		atomic_store(&j.next, 0);
		if (ran && !atomic_load(&j.failed))
			ran = merge_run(merge_worker, &j, th, nt);
		if (!ran)
			merge_fail(&j, EAGAIN, "cannot start a worker thread");
		atomic_store(&j.finished, 1);
		if (progress)
			pthread_join(prog, NULL);
		free(th);
		pthread_mutex_destroy(&j.lock);
		if (atomic_load(&j.failed)) {
			fprintf(stderr, "blendfs: %s\n", j.errmsg[0] ? j.errmsg : strerror(atomic_load(&j.failed)));
			ret = EXIT_SYSTEM;
		}
	}
	for (size_t s = 0; s < plan->n_shards; s++)
		if (fds[s] >= 0) {
			if (!ret && sync && fsync(fds[s])) {
				fprintf(stderr, "blendfs: fsync failed: %s\n", strerror(errno));
				ret = EXIT_SYSTEM;
			}
			close(fds[s]);
		}
	for (size_t i = 1; i < v->n; i++) {
		if (!tmpn[i])
			continue;
		if (!ret && renameat(dfd, tmpn[i], dfd, v->nodes[i].name)) {
			fprintf(stderr, "blendfs: cannot rename into %s/%s: %s\n", outdir, v->nodes[i].name, strerror(errno));
			ret = EXIT_SYSTEM;
		}
		if (ret)
			unlinkat(dfd, tmpn[i], 0);
		free(tmpn[i]);
	}
	if (!ret && sync)
		fsync(dfd);
	free(tmpn);
	free(fds);
	bf_exec_free(x);
out_vfs:
	bf_vfs_free(v);
	close(dfd);
out_plan:
	bf_plan_free(plan);
	return ret;
}

/* ---------------------------------------------------------------------------------------------
 * check, inspect
 */

static int cmd_check(int argc, char **argv)
{
	struct common_opts c;
	common_defaults(&c);
	static const struct option longopts[] = { COMMON_LONGOPTS, { NULL, 0, NULL, 0 } };
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		int r = parse_common("check", opt, optarg, &c);
		if (r < 0)
			return EXIT_USAGE;
		if (r)
			continue;
		if (opt == 'h') {
			printf("usage: blendfs check [--shard-size SIZE] [--seed N] RECIPE.yaml\n\n"
			       "Validate a recipe against its source models and print the plan: sources, output\n"
			       "tensors grouped with the method and parameters resolved for them, layers, shards and\n"
			       "sizes. Nothing is computed.\n");
			return 0;
		}
		return usage_error("check", "unknown option");
	}
	if (argc - optind != 1)
		return usage_error("check", "expected RECIPE.yaml");
	bf_log_set_level(BF_LOG_WARN);
	struct bf_plan *plan;
	int ret = load_plan(argv[optind], &c, &plan);
	if (ret)
		return ret;
	bf_plan_print(plan, stdout);
	bf_plan_free(plan);
	return 0;
}

static int cmd_inspect(int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: blendfs inspect PATH\n\nValidate a model directory or a .safetensors file and list "
		       "its tensors (name, dtype, shape, bytes).\n");
		return 0;
	}
	if (argc != 2)
		return usage_error("inspect", "expected one PATH");
	struct bf_model *m;
	struct bf_err err = { { 0 } };
	bf_log_set_level(BF_LOG_WARN);
	if (bf_model_open_path(argv[1], &m, &err)) {
		fprintf(stderr, "blendfs: %s\n", err.msg);
		return EXIT_INPUT;
	}
	uint64_t total = 0;
	for (size_t i = 0; i < m->n_tensors; i++) {
		const struct bf_src_tensor *t = &m->tensors[i];
		char shape[160] = "";
		for (uint32_t d = 0; d < t->ndim; d++)
			snprintf(shape + strlen(shape), sizeof(shape) - strlen(shape), "%s%" PRIu64, d ? ", " : "", t->shape[d]);
		printf("%-64s %-6s [%s] %" PRIu64 "\n", t->name, bf_dtypes[t->dtype].st_name, shape, t->nbytes);
		total += t->nbytes;
	}
	int layers = bf_model_config_layers(m);
	printf("%zu tensors, %" PRIu64 " bytes in %zu shard%s%s", m->n_tensors, total, m->n_shards,
	       m->n_shards == 1 ? "" : "s", layers > 0 ? "" : "\n");
	if (layers > 0)
		printf(", %d layers (config.json)\n", layers);
	printf("valid\n");
	bf_model_close(m);
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * main
 */

static const char main_help[] =
	"usage: blendfs COMMAND [options] ...\n"
	"\n"
	"Mount a mergekit merge recipe as a Hugging Face model directory whose weights are computed\n"
	"when read, or write the same model to disk.\n"
	"\n"
	"commands:\n"
	"  mount RECIPE.yaml MOUNTPOINT   validate and mount the merged model (read-only)\n"
	"  umount MOUNTPOINT              unmount it\n"
	"  merge RECIPE.yaml OUTDIR       write the merged model (same bytes as the mount)\n"
	"  check RECIPE.yaml              validate and print the plan; computes nothing\n"
	"  inspect PATH                   validate and list a model directory or .safetensors file\n"
	"\n"
	"'blendfs COMMAND --help' describes each command. Exit status: 0 success, 1 invalid recipe or\n"
	"model (nothing mounted or written), 2 bad command line, 3 system failure.\n";

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "%s", main_help);
		return EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V") || !strcmp(cmd, "version")) {
		printf("blendfs %s\n", BF_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		printf("%s", main_help);
		return 0;
	}
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "mount", cmd_mount }, { "umount", cmd_umount }, { "unmount", cmd_umount },
		{ "merge", cmd_merge }, { "check", cmd_check }, { "inspect", cmd_inspect },
	};
	for (size_t i = 0; i < BF_ARRAY_LEN(cmds); i++)
		if (!strcmp(cmd, cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	const char *names[] = { "mount", "umount", "merge", "check", "inspect" };
	const char *sug = bf_suggest(cmd, names, BF_ARRAY_LEN(names));
	fprintf(stderr, "blendfs: unknown command '%s'%s%s%s\n%s", cmd, sug ? " (did you mean '" : "",
		sug ? sug : "", sug ? "'?)" : "", main_help);
	return EXIT_USAGE;
}
