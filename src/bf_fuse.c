/* bf_fuse.c: libfuse low-level operations over a bf_vfs (see bf_fuse.h).
 *
 * The tree never changes while mounted, so entries and attributes are cached by the kernel for a
 * day, and the page cache of every model file is kept across opens (keep_cache). A read reply
 * is exactly min(size, file_size - off) bytes: a short reply in the middle of a file would be
 * zero-filled by the kernel. Computation errors become EIO for that read only.
 */
#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 12)
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bf_fault.h"
#include "bf_fuse.h"
#include "bf_log.h"

_Static_assert(sizeof(fuse_ino_t) >= sizeof(uint64_t), "inode numbers are 64-bit");

#define TIMEOUT 86400.0

/* A .blendfs/status snapshot, one per open of the file. Its file handle is an id, not an
 * address: the kernel can still hand the daemon a READ after the RELEASE of the same file (a
 * reader killed mid-read leaves its request behind), which must then find nothing rather than
 * freed memory. */
struct status_snap {
	uint64_t id;
	char *text;
	size_t len;
	struct status_snap *next;
};

static void snap_free(struct status_snap *s)
{
	if (s) {
		free(s->text);
		free(s);
	}
}

struct fs {
	struct bf_vfs *v;
	struct bf_exec *x;
	uid_t uid;
	gid_t gid;
	const char *mountpoint;
	unsigned readahead_kb;
	_Atomic int ra_done;
	pthread_mutex_t snap_lock; /* guards snaps and snap_id */
	struct status_snap *snaps;
	uint64_t snap_id;          /* the last id given (ids start at 1; fh 0 is "no snapshot") */
};

static void set_readahead(const char *mountpoint, unsigned kb);

/* The kernel caps the mount's read-ahead at the value in FUSE_INIT's reply when it processes it,
 * so raising it has to wait until INIT is done: the first request after INIT does it. */
static void after_init(struct fs *f)
{
	if (!atomic_exchange(&f->ra_done, 1))
		set_readahead(f->mountpoint, f->readahead_kb);
}

static struct fs *fs_of(fuse_req_t req) { return fuse_req_userdata(req); }

static void fill_attr(const struct fs *f, const struct bf_vnode *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = f->uid;
	st->st_gid = f->gid;
	st->st_atim = st->st_mtim = st->st_ctim = f->v->mtime;
	st->st_blksize = 1 << 20;
	if (n->kind == BF_V_DIR) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	}
}

static void bf_ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *f = fs_of(req);
	after_init(f);
	const struct bf_vnode *n = bf_vfs_lookup(f->v, parent, name);
	if (!n) {
		/* negative entries are cached too: the tree never changes */
		struct fuse_entry_param e = { .ino = 0, .entry_timeout = TIMEOUT };
		fuse_reply_entry(req, &e);
		return;
	}
	struct fuse_entry_param e = { .ino = n->ino, .attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT };
	fill_attr(f, n, &e.attr);
	fuse_reply_entry(req, &e);
}

static void bf_ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct fs *f = fs_of(req);
	after_init(f);
	const struct bf_vnode *n = bf_vfs_get(f->v, ino);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct stat st;
	fill_attr(f, n, &st);
	fuse_reply_attr(req, &st, TIMEOUT);
}

static void bf_ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	struct fs *f = fs_of(req);
	const struct bf_vnode *d = bf_vfs_get(f->v, ino);
	if (!d || d->kind != BF_V_DIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	/* directory offsets: 0 = start, 1 = after ".", 2 = after "..", i + 2 = after node index i */
	off_t o = off;
	for (;;) {
		struct stat st = { 0 };
		const char *name;
		off_t next;
		if (o == 0) {
			name = ".";
			st.st_ino = d->ino;
			st.st_mode = S_IFDIR;
			next = 1;
		} else if (o == 1) {
			name = "..";
			st.st_ino = d->parent;
			st.st_mode = S_IFDIR;
			next = 2;
		} else {
			size_t cur = (size_t)(o - 2);
			const struct bf_vnode *c = bf_vfs_next_child(f->v, d->ino, &cur);
			if (!c)
				break;
			name = c->name;
			st.st_ino = c->ino;
			st.st_mode = c->kind == BF_V_DIR ? S_IFDIR : S_IFREG;
			next = (off_t)cur + 2;
		}
		size_t need = fuse_add_direntry(req, buf + used, size - used, name, &st, next);
		if (need > size - used)
			break;
		used += need;
		o = next;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void bf_ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fs_of(req);
	const struct bf_vnode *n = bf_vfs_get(f->v, ino);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->kind == BF_V_DIR) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_CREAT | O_APPEND))) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (n->kind == BF_V_STATUS) {
		struct status_snap *s = calloc(1, sizeof(*s));
		if (s)
			s->text = bf_vfs_status_text(f->v, f->x, &s->len);
		if (!s || !s->text) {
			snap_free(s);
			fuse_reply_err(req, ENOMEM);
			return;
		}
		pthread_mutex_lock(&f->snap_lock);
		s->id = ++f->snap_id;
		s->next = f->snaps;
		f->snaps = s;
		pthread_mutex_unlock(&f->snap_lock);
		fi->fh = s->id;
		fi->direct_io = 1; /* generated text: its size is not known to stat */
	} else {
		fi->keep_cache = 1;
	}
	fuse_reply_open(req, fi);
}

/* The snapshot with id fh, unlinked from the list. Caller holds snap_lock. */
static struct status_snap *snap_unlink(struct fs *f, uint64_t fh)
{
	for (struct status_snap **pp = &f->snaps; *pp; pp = &(*pp)->next)
		if ((*pp)->id == fh) {
			struct status_snap *s = *pp;
			*pp = s->next;
			return s;
		}
	return NULL;
}

static void bf_ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct fs *f = fs_of(req);
	struct status_snap *s = NULL;
	if (fi->fh) {
		pthread_mutex_lock(&f->snap_lock);
		s = snap_unlink(f, fi->fh);
		pthread_mutex_unlock(&f->snap_lock);
	}
	snap_free(s);
	fuse_reply_err(req, 0);
}

/* One reply buffer per worker thread, grown to the largest request seen (page faults on fresh
 * memory cost more than the copy itself), freed when the thread exits. */
static pthread_key_t buf_key;
struct rbuf {
	char *p;
	size_t cap;
};

static void rbuf_free(void *p)
{
	struct rbuf *b = p;
	free(b->p);
	free(b);
}

/* This thread's object under key, zero-allocated on first use (the key's destructor frees
 * it). NULL when allocation fails, or is made to fail by BLENDFS_FAULT_ALLOC. */
static void *thread_object(pthread_key_t key, size_t size)
{
	if (bf_fault_alloc())
		return NULL;
	void *p = pthread_getspecific(key);
	if (!p) {
		p = calloc(1, size);
		if (!p || pthread_setspecific(key, p)) {
			free(p);
			return NULL;
		}
	}
	return p;
}

static char *reply_buffer(size_t size)
{
	struct rbuf *b = thread_object(buf_key, sizeof(*b));
	if (!b)
		return NULL;
	if (size > b->cap) {
		char *p = NULL;
		if (posix_memalign((void **)&p, 4096, size))
			return NULL;
		free(b->p);
		b->p = p;
		b->cap = size;
	}
	return b->p;
}

/* Per-thread pin lists (iovec arrays), kept across requests. */
static pthread_key_t pins_key;

static void pins_destroy(void *p)
{
	bf_exec_pins_free(p);
	free(p);
}

static struct bf_exec_pins *thread_pins(void)
{
	return thread_object(pins_key, sizeof(struct bf_exec_pins));
}

static void bf_ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *f = fs_of(req);
	const struct bf_vnode *n = bf_vfs_get(f->v, ino);
	if (!n || off < 0) {
		fuse_reply_err(req, n ? EINVAL : ENOENT);
		return;
	}
	if (n->kind == BF_V_STATUS) {
		/* replied under the lock, which a RELEASE takes before freeing the snapshot (no
		 * allocation here: the status stays readable when memory is short) */
		bool found = false;
		pthread_mutex_lock(&f->snap_lock);
		for (const struct status_snap *s = f->snaps; s && !found; s = s->next)
			if (s->id == fi->fh) {
				size_t o = (size_t)off < s->len ? (size_t)off : s->len;
				fuse_reply_buf(req, s->text + o, s->len - o < size ? s->len - o : size);
				found = true;
			}
		pthread_mutex_unlock(&f->snap_lock);
		if (!found)
			fuse_reply_err(req, EBADF); /* its file was released: nobody waits for this reply */
		return;
	}
	if (n->kind == BF_V_MEM) {
		size_t o = (uint64_t)off < n->size ? (size_t)off : (size_t)n->size;
		size_t l = n->size - o < size ? (size_t)n->size - o : size;
		fuse_reply_buf(req, n->data + o, l);
		return;
	}
	if (n->kind == BF_V_SHARD) {
		/* reply straight from the pinned cache chunks: no copy */
		struct bf_exec_pins *p = thread_pins();
		uint64_t o = (uint64_t)off;
		size_t l = o >= n->size ? 0 : (n->size - o < size ? (size_t)(n->size - o) : size);
		int r = p ? bf_exec_pin(f->x, n->shard, o, l, p) : -ENOMEM;
		if (r) {
			fuse_reply_err(req, r == -ENOMEM ? ENOMEM : EIO);
			return;
		}
		if (p->n)
			fuse_reply_iov(req, p->iov, (int)p->n);
		else
			fuse_reply_buf(req, NULL, 0);
		bf_exec_unpin(f->x, p);
		return;
	}
	char *buf = reply_buffer(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t r = bf_vfs_read(f->v, f->x, n, (uint64_t)off, size, buf);
	if (r < 0)
		fuse_reply_err(req, r == -ENOMEM ? ENOMEM : EIO);
	else
		fuse_reply_buf(req, buf, (size_t)r);
}

static void bf_ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct fs *f = fs_of(req);
	struct statvfs s = { 0 };
	uint64_t total = 0;
	for (size_t i = 0; i < f->v->n; i++)
		total += f->v->nodes[i].size;
	s.f_bsize = 4096;
	s.f_frsize = 4096;
	s.f_blocks = (total + 4095) / 4096;
	s.f_files = f->v->n;
	s.f_namemax = 255;
	s.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
	fuse_reply_statfs(req, &s);
}

static void bf_ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	(void)ino;
	(void)name;
	(void)size;
	fuse_reply_err(req, ENODATA);
}

static void bf_ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	(void)ino;
	if (size == 0)
		fuse_reply_xattr(req, 0);
	else
		fuse_reply_buf(req, NULL, 0);
}

/* Every write-type operation: read-only file system. */
static void erofs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	(void)ino; (void)attr; (void)to_set; (void)fi;
	fuse_reply_err(req, EROFS);
}
static void erofs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)parent; (void)name; (void)mode; (void)rdev;
	fuse_reply_err(req, EROFS);
}
static void erofs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)parent; (void)name; (void)mode;
	fuse_reply_err(req, EROFS);
}
static void erofs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent; (void)name;
	fuse_reply_err(req, EROFS);
}
static void erofs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link; (void)parent; (void)name;
	fuse_reply_err(req, EROFS);
}
static void erofs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
			 const char *newname, unsigned int flags)
{
	(void)parent; (void)name; (void)newparent; (void)newname; (void)flags;
	fuse_reply_err(req, EROFS);
}
static void erofs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino; (void)newparent; (void)newname;
	fuse_reply_err(req, EROFS);
}
static void erofs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	(void)ino; (void)buf; (void)size; (void)off; (void)fi;
	fuse_reply_err(req, EROFS);
}
static void erofs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			 struct fuse_file_info *fi)
{
	(void)parent; (void)name; (void)mode; (void)fi;
	fuse_reply_err(req, EROFS);
}
static void erofs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
			   int flags)
{
	(void)ino; (void)name; (void)value; (void)size; (void)flags;
	fuse_reply_err(req, EROFS);
}
static void erofs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino; (void)name;
	fuse_reply_err(req, EROFS);
}
static void erofs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			    struct fuse_file_info *fi)
{
	(void)ino; (void)mode; (void)offset; (void)length; (void)fi;
	fuse_reply_err(req, EROFS);
}
static void erofs_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
				  fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len,
				  int flags)
{
	(void)ino_in; (void)off_in; (void)fi_in; (void)ino_out; (void)off_out; (void)fi_out; (void)len; (void)flags;
	fuse_reply_err(req, EROFS);
}

static void bf_ll_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* requests as large as the kernel allows (1 MiB with the default max_pages) */
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	/* sizes and mtimes never change: nothing to invalidate */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->max_background < 64)
		conn->max_background = 64;
	conn->congestion_threshold = 48;
}

static const struct fuse_lowlevel_ops bf_ll_ops = {
	.init = bf_ll_init,
	.lookup = bf_ll_lookup,
	.getattr = bf_ll_getattr,
	.readdir = bf_ll_readdir,
	.open = bf_ll_open,
	.release = bf_ll_release,
	.read = bf_ll_read,
	.statfs = bf_ll_statfs,
	.getxattr = bf_ll_getxattr,
	.listxattr = bf_ll_listxattr,
	.setattr = erofs_setattr,
	.mknod = erofs_mknod,
	.mkdir = erofs_mkdir,
	.unlink = erofs_unlink,
	.rmdir = erofs_unlink,
	.symlink = erofs_symlink,
	.rename = erofs_rename,
	.link = erofs_link,
	.write = erofs_write,
	.create = erofs_create,
	.setxattr = erofs_setxattr,
	.removexattr = erofs_removexattr,
	.fallocate = erofs_fallocate,
	.copy_file_range = erofs_copy_file_range,
};

/* The mount's device number from /proc/self/mountinfo (a stat of the mount point would ask our
 * own, not yet serving, daemon). */
static int mount_devnum(const char *mountpoint, unsigned *maj, unsigned *min)
{
	char real[PATH_MAX];
	if (!realpath(mountpoint, real))
		snprintf(real, sizeof(real), "%s", mountpoint);
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -1;
	char line[4096];
	int found = -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned a, b;
		char mp[PATH_MAX];
		if (sscanf(line, "%*d %*d %u:%u %*s %4095s", &a, &b, mp) == 3 && !strcmp(mp, real) &&
		    strstr(line, " fuse.blendfs ")) {
			*maj = a;
			*min = b;
			found = 0; /* keep the last: the newest mount on that point */
		}
	}
	fclose(f);
	return found;
}

static void set_readahead(const char *mountpoint, unsigned kb)
{
	if (!mountpoint)
		return;
	unsigned maj, min;
	if (!kb || geteuid() != 0)
		return;
	if (mount_devnum(mountpoint, &maj, &min)) {
		bf_warn("could not find the mount in /proc/self/mountinfo; read-ahead left at the default");
		return;
	}
	char path[128];
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
	FILE *f = fopen(path, "we");
	if (!f || fprintf(f, "%u\n", kb) < 0 || fclose(f)) {
		bf_warn("could not raise %s to %u (reads stay at the default read-ahead size)", path, kb);
		return;
	}
	bf_info("read-ahead of the mount set to %u KiB (%s)", kb, path);
}

/* SIGTERM/SIGINT/SIGHUP: detach the mount at once (new opens fail, `ls` no longer shows it) but
 * keep serving the files readers already have open; the loop ends when the last of them is
 * closed and the kernel drops the connection. A second signal stops the daemon immediately.
 * This is squashfuse's lazy-unmount behaviour: a loader reading a shard is never cut off. */
static char g_mnt[PATH_MAX];
static char g_fusermount[PATH_MAX];
static struct fuse_session *g_se;
static volatile sig_atomic_t g_terms;

static void on_term(int sig)
{
	(void)sig;
	if (g_terms++ > 0) {
		fuse_session_exit(g_se);
		return;
	}
	int saved = errno;
	if (geteuid() == 0 && umount2(g_mnt, MNT_DETACH) == 0) {
		errno = saved;
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		char a0[] = "fusermount3", a1[] = "-u", a2[] = "-z", a3[] = "-q";
		char *argv[] = { a0, a1, a2, a3, g_mnt, NULL };
		char *envp[] = { NULL };
		execve(g_fusermount, argv, envp);
		_exit(127);
	}
	errno = saved;
}

static int install_signals(struct fuse_session *se, const char *mountpoint)
{
	g_se = se;
	if (!realpath(mountpoint, g_mnt))
		snprintf(g_mnt, sizeof(g_mnt), "%s", mountpoint);
	static const char *const paths[] = { "/usr/bin/fusermount3", "/bin/fusermount3", "/usr/local/bin/fusermount3" };
	for (size_t i = 0; i < BF_ARRAY_LEN(paths); i++)
		if (access(paths[i], X_OK) == 0) {
			snprintf(g_fusermount, sizeof(g_fusermount), "%s", paths[i]);
			break;
		}
	struct sigaction sa = { 0 };
	sa.sa_handler = on_term;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL) || sigaction(SIGHUP, &sa, NULL))
		return -1;
	sa.sa_handler = SIG_IGN;
	return sigaction(SIGPIPE, &sa, NULL);
}

static void remove_signals(void)
{
	struct sigaction sa = { 0 };
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);
}

int bf_fuse_main(struct bf_vfs *v, struct bf_exec *x, const struct bf_fuse_opts *o)
{
	struct fs f = { .v = v, .x = x, .uid = getuid(), .gid = getgid(), .mountpoint = o->mountpoint,
			.readahead_kb = o->readahead_kb, .snap_lock = PTHREAD_MUTEX_INITIALIZER };
	char *opts = bf_xasprintf("ro,default_permissions,fsname=blendfs,subtype=blendfs,auto_unmount%s%s",
				  o->fuse_opts && *o->fuse_opts ? "," : "", o->fuse_opts ? o->fuse_opts : "");
	char a0[] = "blendfs", a1[] = "-o", a3[] = "-d";
	char *argv[] = { a0, a1, opts, o->debug ? a3 : NULL, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(o->debug ? 4 : 3, argv);
	struct fuse_session *se = NULL;
	struct fuse_loop_config *cfg = NULL;
	int ret = 1;

	pthread_key_create(&buf_key, rbuf_free);
	pthread_key_create(&pins_key, pins_destroy);
	se = fuse_session_new(&args, &bf_ll_ops, sizeof(bf_ll_ops), &f);
	if (!se) {
		bf_error("cannot create the FUSE session (bad -o option?)");
		goto out_args;
	}
	if (install_signals(se, o->mountpoint)) {
		bf_error("cannot install signal handlers");
		goto out_session;
	}
	if (fuse_session_mount(se, o->mountpoint)) {
		bf_error("cannot mount on %s (is /dev/fuse there, and fusermount3 installed?)", o->mountpoint);
		goto out_signals;
	}
	bf_info("mounted %s on %s", v->plan->recipe->path, o->mountpoint);
	if (!o->foreground) {
		/* after this only the daemon runs; its stderr is /dev/null */
		bf_log_to_syslog(true);
		if (fuse_daemonize(0)) {
			bf_error("cannot daemonise");
			goto out_unmount;
		}
		bf_log_to_stderr(false);
	}
	if (bf_exec_start_prefetch(x))
		bf_warn("cannot start the prefetch thread; reads are computed on demand only");
	cfg = fuse_loop_cfg_create();
	if (!cfg)
		goto out_unmount;
	fuse_loop_cfg_set_max_threads(cfg, o->max_threads ? o->max_threads : 16);
	/* idle workers stay: a new thread would fault in fresh scratch and reply buffers */
	fuse_loop_cfg_set_idle_threads(cfg, o->max_threads ? o->max_threads : 16);
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	ret = fuse_session_loop_mt(se, cfg) ? 1 : 0;
	fuse_loop_cfg_destroy(cfg);
	bf_info("unmounting %s", o->mountpoint);
out_unmount:
	fuse_session_unmount(se);
out_signals:
	remove_signals();
out_session:
	fuse_session_destroy(se);
out_args:
	fuse_opt_free_args(&args);
	free(opts);
	/* snapshots of files still open at unmount (the session has no thread left) */
	while (f.snaps) {
		struct status_snap *s = f.snaps;
		f.snaps = s->next;
		snap_free(s);
	}
	pthread_mutex_destroy(&f.snap_lock);
	return ret;
}

static int run_wait(char *const argv[])
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

int bf_fuse_unmount(const char *mountpoint, bool lazy, struct bf_err *err)
{
	char a0[] = "fusermount3", a1[] = "-u", a2[] = "-z";
	char *mp = bf_xstrdup(mountpoint);
	char *argv[] = { a0, a1, lazy ? a2 : mp, lazy ? mp : NULL, NULL };
	int r = run_wait(argv);
	free(mp);
	if (r == 0)
		return 0;
	if (geteuid() == 0 && umount2(mountpoint, lazy ? MNT_DETACH : 0) == 0)
		return 0;
	int e = errno;
	return bf_errf(err, "cannot unmount %s: %s%s", mountpoint, strerror(e),
		       e == EBUSY ? " (files are open; close them or use --lazy)" : "");
}
