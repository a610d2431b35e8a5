#!/bin/bash
# erofs.sh: every write-type operation on a mount fails with EROFS (files and directories).
. "$(dirname "$0")/lib.sh"
cd "$CONF" || fail "no conformance dir"
bf_mount cases/linear.yaml "$TMP/mnt"
$PY - "$TMP/mnt" <<'PY' || fail "a write-type operation did not fail with EROFS"
import errno, os, sys
m = sys.argv[1]
f, d = os.path.join(m, "config.json"), m
checks = [
    ("open O_WRONLY", lambda: os.open(f, os.O_WRONLY)),
    ("open O_RDWR", lambda: os.open(f, os.O_RDWR)),
    ("open O_TRUNC", lambda: os.open(f, os.O_RDONLY | os.O_TRUNC)),
    ("open O_APPEND", lambda: os.open(f, os.O_WRONLY | os.O_APPEND)),
    ("create", lambda: os.open(os.path.join(d, "new"), os.O_WRONLY | os.O_CREAT, 0o644)),
    ("create O_EXCL", lambda: os.open(os.path.join(d, "new2"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)),
    ("mkdir", lambda: os.mkdir(os.path.join(d, "dir"))),
    ("rmdir", lambda: os.rmdir(os.path.join(d, ".blendfs"))),
    ("unlink", lambda: os.unlink(f)),
    ("rename", lambda: os.rename(f, os.path.join(d, "x.json"))),
    ("chmod", lambda: os.chmod(f, 0o666)),
    ("chown", lambda: os.chown(f, 1, 1)),
    ("truncate", lambda: os.truncate(f, 0)),
    ("utimens", lambda: os.utime(f, (0, 0))),
    ("setxattr", lambda: os.setxattr(f, "user.x", b"1")),
    ("removexattr", lambda: os.removexattr(f, "user.x")),
    ("symlink", lambda: os.symlink("config.json", os.path.join(d, "link"))),
    ("link", lambda: os.link(f, os.path.join(d, "hard"))),
    ("mknod", lambda: os.mknod(os.path.join(d, "fifo"), 0o600 | 0o010000)),
    ("chmod dir", lambda: os.chmod(d, 0o777)),
]
bad = 0
for name, fn in checks:
    try:
        fn()
        print("FAIL %s succeeded" % name)
        bad += 1
    except OSError as e:
        if e.errno != errno.EROFS:
            print("FAIL %s: %s (expected EROFS)" % (name, errno.errorcode.get(e.errno, e.errno)))
            bad += 1
        else:
            print("ok    %s: EROFS" % name)
# reading still works and nothing changed
assert open(f, "rb").read(2) == b"{\n"
sys.exit(1 if bad else 0)
PY
grep " $TMP/mnt " /proc/mounts | grep -q " ro," || fail "not mounted with the ro flag"
ok "20 write-type operations fail with EROFS; the mount is flagged ro"
bf_umount "$TMP/mnt"
