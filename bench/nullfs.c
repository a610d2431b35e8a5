/* nullfs.c: the bench's "transport ceiling" FUSE server (libfuse 3 low-level API).
 *
 * One read-only regular file, /data, of a given size. Every READ is answered with constant bytes
 * from one shared, pre-faulted buffer: no computation, no source I/O, no allocation, so its
 * throughput is what the kernel <-> /dev/fuse <-> page cache path alone allows on this machine.
 *
 * Set up exactly like blendfs (src/bf_fuse.c) so the comparison is fair:
 *   mount options  ro,default_permissions,fsname=nullfs,subtype=nullfs,auto_unmount
 *   init           FUSE_CAP_ASYNC_READ on, FUSE_CAP_AUTO_INVAL_DATA off, max_background 64,
 *                  congestion_threshold 48, kernel-default max_write/max_pages (1 MiB READs)
 *   loop           fuse_session_loop_mt, max 16 threads, 8 idle, no clone_fd
 *   open           keep_cache off, direct_io off (cached mode: page cache, kernel read-ahead)
 * It does not touch read_ahead_kb: the bench driver sets the mount's bdi like blendfs does.
 *
 * It counts READ requests by size and, on unmount, writes them as JSON to --stats PATH:
 *   {"reads": N, "bytes": B, "sizes": {"1048576": n, "131072": n, ...}}
 *
 * usage: nullfs --size BYTES [--threads N] [--stats PATH] [-f] [-d] MOUNTPOINT
 * Build: cc -O2 -o nullfs bench/nullfs.c $(pkg-config --cflags --libs fuse3)   (bench/run.py does)
 */
#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 12)
#define _GNU_SOURCE
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATA_INO 2
#define TIMEOUT 86400.0
#define MAX_REPLY (8u << 20) /* larger than any READ the kernel sends (max_pages <= 256 today) */
#define NSIZES 64            /* distinct READ sizes remembered */

static const char data_name[] = "data";
static uint64_t g_size;
static char *g_buf;
static const char *g_stats;

static struct {
	pthread_mutex_t mu;
	uint64_t reads, bytes;
	size_t n;
	uint64_t size[NSIZES], count[NSIZES];
	uint64_t other; /* sizes beyond NSIZES distinct ones */
} st = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void count_read(size_t size)
{
	pthread_mutex_lock(&st.mu);
	st.reads++;
	st.bytes += size;
	size_t i;
	for (i = 0; i < st.n && st.size[i] != size; i++)
		;
	if (i < st.n)
		st.count[i]++;
	else if (st.n < NSIZES) {
		st.size[st.n] = size;
		st.count[st.n++] = 1;
	} else
		st.other++;
	pthread_mutex_unlock(&st.mu);
}

static void fill_attr(fuse_ino_t ino, struct stat *s)
{
	memset(s, 0, sizeof(*s));
	s->st_ino = ino;
	s->st_uid = getuid();
	s->st_gid = getgid();
	s->st_mtime = s->st_ctime = s->st_atime = 1700000000;
	if (ino == FUSE_ROOT_ID) {
		s->st_mode = S_IFDIR | 0555;
		s->st_nlink = 2;
	} else {
		s->st_mode = S_IFREG | 0444;
		s->st_nlink = 1;
		s->st_size = (off_t)g_size;
		s->st_blksize = 4096;
		s->st_blocks = (blkcnt_t)((g_size + 511) / 512);
	}
}

static void nf_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->max_background < 64)
		conn->max_background = 64;
	conn->congestion_threshold = 48;
}

static void nf_destroy(void *userdata)
{
	(void)userdata;
	if (!g_stats)
		return;
	FILE *f = fopen(g_stats, "w");
	if (!f)
		return;
	fprintf(f, "{\"reads\": %llu, \"bytes\": %llu, \"other_sizes\": %llu, \"sizes\": {",
		(unsigned long long)st.reads, (unsigned long long)st.bytes, (unsigned long long)st.other);
	for (size_t i = 0; i < st.n; i++)
		fprintf(f, "%s\"%llu\": %llu", i ? ", " : "", (unsigned long long)st.size[i],
			(unsigned long long)st.count[i]);
	fprintf(f, "}}\n");
	fclose(f);
}

static void nf_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (parent != FUSE_ROOT_ID || strcmp(name, data_name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct fuse_entry_param e = { .ino = DATA_INO, .attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT };
	fill_attr(DATA_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void nf_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	if (ino != FUSE_ROOT_ID && ino != DATA_INO) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct stat s;
	fill_attr(ino, &s);
	fuse_reply_attr(req, &s, TIMEOUT);
}

static void nf_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	char buf[512];
	size_t used = 0;
	const char *names[] = { ".", "..", data_name };
	const fuse_ino_t inos[] = { FUSE_ROOT_ID, FUSE_ROOT_ID, DATA_INO };
	for (off_t i = off; i < 3; i++) {
		struct stat s;
		fill_attr(inos[i], &s);
		size_t need = fuse_add_direntry(req, buf + used, sizeof(buf) - used, names[i], &s, i + 1);
		if (used + need > size || used + need > sizeof(buf))
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
}

static void nf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != DATA_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	fi->keep_cache = 0;
	fi->direct_io = 0;
	fuse_reply_open(req, fi);
}

static void nf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	if (ino != DATA_INO || off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	uint64_t o = (uint64_t)off;
	size_t n = o >= g_size ? 0 : (g_size - o < size ? (size_t)(g_size - o) : size);
	if (n > MAX_REPLY) {
		fuse_reply_err(req, EIO);
		return;
	}
	count_read(size);
	fuse_reply_buf(req, g_buf, n);
}

static void nf_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct statvfs s = { .f_bsize = 4096, .f_frsize = 4096, .f_blocks = (g_size + 4095) / 4096,
			     .f_files = 2, .f_namemax = 255 };
	fuse_reply_statfs(req, &s);
}

static const struct fuse_lowlevel_ops ops = {
	.init = nf_init,
	.destroy = nf_destroy,
	.lookup = nf_lookup,
	.getattr = nf_getattr,
	.readdir = nf_readdir,
	.open = nf_open,
	.read = nf_read,
	.statfs = nf_statfs,
};

static int usage(void)
{
	fprintf(stderr, "usage: nullfs --size BYTES [--threads N] [--stats PATH] [-f] [-d] MOUNTPOINT\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *mnt = NULL;
	int threads = 16, fg = 0, debug = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--size") && i + 1 < argc)
			g_size = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--stats") && i + 1 < argc)
			g_stats = argv[++i];
		else if (!strcmp(argv[i], "-f"))
			fg = 1;
		else if (!strcmp(argv[i], "-d"))
			debug = fg = 1;
		else if (argv[i][0] != '-' && !mnt)
			mnt = argv[i];
		else
			return usage();
	}
	if (!mnt || !g_size || threads < 1)
		return usage();
	/* one constant reply buffer, pre-faulted (fresh pages would cost more than the copy) */
	g_buf = mmap(NULL, MAX_REPLY, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (g_buf == MAP_FAILED)
		return 3;
	memset(g_buf, 0x3c, MAX_REPLY);

	char a0[] = "nullfs", a1[] = "-o", a2[] = "ro,default_permissions,fsname=nullfs,subtype=nullfs,auto_unmount",
	     a3[] = "-d";
	char *fargv[] = { a0, a1, a2, debug ? a3 : NULL, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(debug ? 4 : 3, fargv);
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		return 3;
	if (fuse_set_signal_handlers(se) || fuse_session_mount(se, mnt)) {
		fuse_session_destroy(se);
		return 3;
	}
	if (fuse_daemonize(fg))
		return 3;
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(cfg, (unsigned)threads);
	fuse_loop_cfg_set_idle_threads(cfg, 8);
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	int r = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	return r ? 1 : 0;
}
