#!/usr/bin/python3
"""blendfs benchmark driver (project issue 4). See docs/performance.md.

Generates synthetic Llama-shaped bf16 source models (a base and 3 fine-tunes, cached under
--models-dir), then measures blendfs against baselines measured in the same run:
  - passthrough_ll (libfuse's example, compiled here) serving a plain file from the page cache,
  - bench/nullfs.c, the "transport ceiling" (constant-byte replies, same FUSE set-up as blendfs),
  - the page cache itself (`cat` and the bench reader on a warm source file).
Prints one table and writes every raw number as JSON. Needs root and /dev/fuse.

  bench/run.sh --quick        # small models, 1 run, < 1 minute
  bench/run.sh                # 1 GB models, 3 runs (median), < ~15 minutes
  bench/run.sh --help         # every option
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
GEN = os.path.join(REPO, "tests", "tools", "gen_models.py")
PY = "/usr/bin/python3"
RECIPES = ["linear", "slerp", "ties", "dare_ties", "della", "passthrough"]
# (reader, threads): read() with 1 MiB buffers, or safetensors-style mmap + memcpy
MODES = [("read", 1), ("read", 2), ("mmap", 1), ("mmap", 2)]
TARGET_SEQ = {"linear": 2.0, "passthrough": 2.0, "slerp": 1.0, "ties": 1.0, "dare_ties": 1.0, "della": 1.0}
VOCAB = 32000
LAYERS = 16          # every generated set has 16 layers so bench/recipes/*.yaml fit every size
MIB = 1 << 20
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

LOG_T0 = time.monotonic()


def log(msg):
    sys.stderr.write("[%6.1fs] %s\n" % (time.monotonic() - LOG_T0, msg))
    sys.stderr.flush()


class BenchError(Exception):
    pass


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    try:
        return subprocess.run(cmd, **kw)
    except subprocess.CalledProcessError as e:
        raise BenchError("%s failed (%d): %s" % (" ".join(cmd), e.returncode, (e.stderr or "").strip()[-2000:]))


# ------------------------------------------------------------------------------------------------
# building

def build(args):
    """blendfs (release unless --blendfs is given) and the bench tools, into the bench build dir."""
    bd = args.build_dir
    info = {}
    if args.blendfs:
        blendfs = os.path.abspath(args.blendfs)
        info["buildtype"] = "unknown (--blendfs)"
        opts = os.path.join(os.path.dirname(os.path.dirname(blendfs)), "meson-info", "intro-buildoptions.json")
    else:
        if not os.path.exists(os.path.join(bd, "build.ninja")):
            log("configuring %s (meson, --buildtype=release)" % bd)
            run(["meson", "setup", bd, "--buildtype=release", "-Dtests=false"], cwd=REPO)
        log("building blendfs in %s" % bd)
        run(["ninja", "-C", bd, "src/blendfs"], cwd=REPO)
        blendfs = os.path.join(bd, "src", "blendfs")
        opts = os.path.join(bd, "meson-info", "intro-buildoptions.json")
    if os.path.exists(opts):
        with open(opts) as f:
            for o in json.load(f):
                if o["name"] in ("buildtype", "optimization", "b_ndebug", "simd", "openmp"):
                    info[o["name"]] = o["value"]
        if info.get("buildtype") != "release":
            log("WARNING: blendfs build type is %r, not release: figures are not comparable" % info.get("buildtype"))
    info["version"] = run([blendfs, "--version"]).stdout.strip()
    info["blendfs"] = blendfs
    info["git"] = run(["git", "-C", REPO, "describe", "--always", "--dirty"], check=False).stdout.strip()

    tools = os.path.join(bd, "bench-tools")
    os.makedirs(tools, exist_ok=True)
    fuse = run(["pkg-config", "--cflags", "--libs", "fuse3"]).stdout.split()
    ptll_src = "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c"
    if not os.path.exists(ptll_src):
        raise BenchError("%s is missing: apt-get install libfuse3-dev" % ptll_src)
    specs = [("bfread", os.path.join(BENCH, "bfread.c"), ["-pthread"]),
             ("nullfs", os.path.join(BENCH, "nullfs.c"), fuse),
             ("passthrough_ll", ptll_src, fuse)]
    out = {}
    for name, src, extra in specs:
        exe = os.path.join(tools, name)
        if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
            log("compiling %s" % name)
            run(["cc", "-O2", "-Wall", "-o", exe, src] + extra)
        out[name] = exe
    return blendfs, out, info


# ------------------------------------------------------------------------------------------------
# models

def llama_dims(size_gb):
    """hidden size (multiple of 128, head_dim 128) giving a 16-layer, vocab-32000 bf16 Llama of
    about size_gb * 1e9 bytes; GQA 4:1 where the head count allows."""
    best = None
    for h in range(256, 16384 + 1, 128):
        heads = h // 128
        kv = heads // 4 if heads % 4 == 0 else (heads // 2 if heads % 2 == 0 else heads)
        inter = -(-int(3.5 * h) // 256) * 256
        per_layer = 2 * h * h + 2 * h * kv * 128 + 3 * h * inter + 2 * h
        total = 2 * (2 * VOCAB * h + h + LAYERS * per_layer)
        err = abs(total - size_gb * 1e9)
        if best is None or err < best[0]:
            best = (err, h, inter, heads, kv, total)
    _, h, inter, heads, kv, total = best
    return {"hidden": h, "intermediate": inter, "layers": LAYERS, "heads": heads, "kv_heads": kv,
            "vocab": VOCAB, "bytes_per_model": total}


def gen(outdir, extra):
    run([PY, GEN, outdir] + extra, cwd=REPO)


def ensure_models(args):
    d = llama_dims(args.size)
    setdir = os.path.join(args.models_dir, "l%d-h%d-v%d" % (LAYERS, d["hidden"], VOCAB))
    mark = os.path.join(setdir, ".complete")
    if not os.path.exists(mark):
        shutil.rmtree(setdir, ignore_errors=True)
        os.makedirs(setdir)
        dims = ["--hidden", str(d["hidden"]), "--intermediate", str(d["intermediate"]), "--layers", str(LAYERS),
                "--heads", str(d["heads"]), "--kv-heads", str(d["kv_heads"]), "--vocab", str(VOCAB)]
        log("generating source models in %s (4 x %.2f GB)" % (setdir, d["bytes_per_model"] / 1e9))
        gen(os.path.join(setdir, "base"), dims + ["--seed", "1"])
        base = os.path.join(setdir, "base")
        gen(os.path.join(setdir, "chat"), ["--from", base, "--seed", "2"])
        gen(os.path.join(setdir, "code"), ["--from", base, "--seed", "3", "--shards", "2"])
        gen(os.path.join(setdir, "math"), ["--from", base, "--seed", "4", "--sparse", "0.3"])
        with open(mark, "w") as f:
            json.dump(d, f)
    d["dir"] = setdir
    d["sources"] = sorted(glob.glob(os.path.join(setdir, "*", "*.safetensors")))

    big = os.path.join(args.models_dir, "llama70b-sparse")
    mark = os.path.join(big, ".complete")
    if not os.path.exists(mark) and not args.skip_70b:
        shutil.rmtree(big, ignore_errors=True)
        log("generating 2 Llama-70B-shaped sparse models (headers only) in %s" % big)
        dims = ["--hidden", "8192", "--intermediate", "28672", "--layers", "80", "--heads", "64", "--kv-heads", "8",
                "--vocab", str(VOCAB), "--max-shard-bytes", "5000000000", "--sparse-data"]
        for name, seed in (("a", 1), ("b", 2)):
            gen(os.path.join(big, name), dims + ["--seed", str(seed)])
        with open(mark, "w") as f:
            f.write("ok\n")
    big_sources = sorted(glob.glob(os.path.join(big, "*", "*.safetensors")))
    return d, big, big_sources


def header_end(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
    return 8 + n


TOOLS = {}


def resident_bytes(paths, limit=None):
    """bytes of the files (of their first `limit` bytes) in the page cache (mincore, as fincore)."""
    if not paths:
        return 0
    cmd = [TOOLS["bfread"], "resident"] + (["-L", str(limit)] if limit else [])
    return json.loads(run(cmd + list(paths)).stdout)["bytes"]


def drop_file_cache(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_sources(paths):
    """read every source byte once so that it sits in the page cache; returns residency."""
    total = sum(os.path.getsize(p) for p in paths)
    res = resident_bytes(paths)
    if res < total:
        for p in paths:
            with open(p, "rb", buffering=0) as f:
                while f.read(8 * MIB):
                    pass
        res = resident_bytes(paths)
    return res, total


# ------------------------------------------------------------------------------------------------
# processes and mounts

def find_pid(argv):
    """the (daemonised) process whose command line is exactly argv."""
    want = "\0".join(argv) + "\0"
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p) as f:
                if f.read() == want:
                    found.append(int(p))
        except OSError:
            pass
    return max(found) if found else None


def proc_cpu(pid):
    """user + system CPU seconds of a process (all its threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except (OSError, TypeError):
        return None
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, TypeError):
        pass
    return None


def proc_io(pid):
    out = {}
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                k, v = line.split(":")
                out[k] = int(v)
    except (OSError, TypeError):
        pass
    return out


def is_mounted(mnt):
    real = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == real:
                return True
    return False


def set_subreaper():
    """orphaned daemons (blendfs, nullfs and passthrough_ll daemonise) become our children, so
    that the bench can wait for them precisely and reap them (PID 1 may not, in a container)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def alive(pid):
    try:
        r = os.waitpid(pid, os.WNOHANG)
        return r[0] == 0
    except ChildProcessError:
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(") ", 1)[1][0] not in "ZX"
        except OSError:
            return False


def reap_orphans(keep=()):
    """reap zombie children that no Popen object owns (auto_unmount helpers, daemons)."""
    me = str(os.getpid())
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in keep:
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if st[0] == "Z" and st[1] == me:
            try:
                os.waitpid(int(p), os.WNOHANG)
            except ChildProcessError:
                pass


def wait_exit(pid, timeout=20.0):
    t = time.monotonic() + timeout
    while pid and alive(pid):
        if time.monotonic() > t:
            return False
        time.sleep(0.005)
    return True


def mount_devnum(mnt):
    real = os.path.realpath(mnt)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            x = line.split()
            if x[4] == real:
                found = x[2]
    return found


def unmount(mnt, pid=None, grace=3.0, abort=False):
    """unmount, then wait for the server to exit. abort: first abort the FUSE connection
    (/sys/fs/fuse/connections/N/abort), for a server still computing replies to a reader that
    the bench gave up on at a deadline (a request already in the server cannot be interrupted,
    and umount would wait for it). A server still alive `grace` seconds after the unmount is
    killed so that it does not compete with the next measurement. Returns True if killed."""
    if abort:
        dev = mount_devnum(mnt)
        if dev:
            try:
                with open("/sys/fs/fuse/connections/%s/abort" % dev.split(":")[1], "w") as f:
                    f.write("1")
            except OSError as e:
                log("cannot abort the FUSE connection of %s: %s" % (mnt, e))
    for _ in range(50):
        if not is_mounted(mnt):
            break
        r = subprocess.run(["fusermount3", "-u", "-q"] + (["-z"] if abort else []) + [mnt],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            break
        time.sleep(0.1)
    else:
        subprocess.run(["fusermount3", "-u", "-z", "-q", mnt], stderr=subprocess.DEVNULL)
    killed = False
    if pid and not wait_exit(pid, grace):
        try:
            os.kill(pid, 9)
            killed = True
        except ProcessLookupError:
            pass
        wait_exit(pid, 20)
    reap_orphans()
    return killed


def ensure_fusectl():
    d = "/sys/fs/fuse/connections"
    if os.path.isdir(d) and not os.listdir(d) and not any(
            l.split()[2] == "fusectl" for l in open("/proc/mounts")):
        subprocess.run(["mount", "-t", "fusectl", "none", d], stderr=subprocess.DEVNULL)


def bdi_path(mnt):
    st = os.stat(mnt)
    return "/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(st.st_dev), os.minor(st.st_dev))


def fix_readahead(mnt, probe, kb):
    """After the mount answered a request (so FUSE_INIT is done: INIT lowers the bdi read-ahead to
    what the server replied), read the mount's read_ahead_kb and set it to kb (None: leave)."""
    os.stat(probe)
    path = bdi_path(mnt)
    with open(path) as f:
        found = int(f.read())
    now = found
    if kb is not None and found != kb:
        with open(path, "w") as f:
            f.write("%d\n" % kb)
        with open(path) as f:
            now = int(f.read())
    return {"found_kb": found, "used_kb": now}


class Server:
    """one FUSE mount: blendfs (recipe), passthrough_ll (plain file) or nullfs (ceiling)."""

    def __init__(self, ctx, kind, recipe=None, ra_kb="default", debug_log=None):
        self.ctx, self.kind, self.recipe = ctx, kind, recipe
        self.ra_kb = ctx.args.readahead_kb if ra_kb == "default" else ra_kb
        self.debug_log = debug_log
        self.mnt = os.path.join(ctx.work, "mnt-" + kind)
        os.makedirs(self.mnt, exist_ok=True)
        self.pid = None
        self.popen = None
        self.mount_s = None
        self.stats_file = None

    def mount(self):
        ctx = self.ctx
        if is_mounted(self.mnt):
            unmount(self.mnt)
        if self.kind == "blendfs":
            argv = [ctx.blendfs, "mount", "--cache-size", ctx.args.cache_size, "--log-level", "warn"]
            if ctx.args.prefetch is not None:
                argv += ["--prefetch", str(ctx.args.prefetch)]
            argv += [os.path.join(ctx.recipes_dir, self.recipe + ".yaml"), self.mnt]
            cwd = self.recipe_cwd()
            if self.debug_log:
                argv.insert(2, "-d")
                self.logf = open(self.debug_log, "w")
                self.popen = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=self.logf)
                self.pid = self.popen.pid
                t = time.monotonic() + 30
                while not is_mounted(self.mnt):
                    if self.popen.poll() is not None or time.monotonic() > t:
                        raise BenchError("blendfs -d did not mount")
                    time.sleep(0.01)
            else:
                t0 = time.perf_counter()
                r = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                self.mount_s = time.perf_counter() - t0
                if r.returncode:
                    raise BenchError("blendfs mount %s failed (%d): %s" % (self.recipe, r.returncode, r.stderr.strip()))
                self.pid = find_pid(argv)
            self.files = sorted(glob.glob(os.path.join(self.mnt, "*.safetensors")))
        elif self.kind == "ptll":
            argv = [ctx.tools["passthrough_ll"], "-o",
                    "ro,default_permissions,fsname=ptll,subtype=passthrough_ll,auto_unmount,source=%s,cache=always"
                    % ctx.plain_dir, self.mnt]
            run(argv)
            self.pid = find_pid(argv)
            self.files = [os.path.join(self.mnt, ctx.plain_name)]
        elif self.kind == "nullfs":
            self.stats_file = os.path.join(ctx.work, "nullfs-stats.json")
            if os.path.exists(self.stats_file):
                os.unlink(self.stats_file)
            argv = [ctx.tools["nullfs"], "--size", str(ctx.plain_size), "--stats", self.stats_file, self.mnt]
            run(argv)
            self.pid = find_pid(argv)
            self.files = [os.path.join(self.mnt, "data")]
        else:
            raise ValueError(self.kind)
        self.ra = fix_readahead(self.mnt, self.files[0], self.ra_kb)
        return self

    def recipe_cwd(self):
        return self.ctx.big_dir if self.recipe == "slerp70b" else self.ctx.models["dir"]

    def cpu(self):
        return proc_cpu(self.pid)

    def hwm(self):
        return proc_status(self.pid, "VmHWM")

    def status(self):
        out = {}
        if self.kind != "blendfs":
            return out
        try:
            with open(os.path.join(self.mnt, ".blendfs", "status")) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    v = v.strip()
                    try:
                        out[k] = float(v) if "." in v else int(v)
                    except ValueError:
                        out[k] = v
        except OSError:
            pass
        return out

    def umount(self, grace=3.0, abort=False):
        self.killed = unmount(self.mnt, self.pid, grace, abort)
        for p in PENDING:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        PENDING.clear()
        if self.popen:
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
            self.logf.close()
        out = {}
        if self.stats_file and os.path.exists(self.stats_file):
            with open(self.stats_file) as f:
                out = json.load(f)
        return out


# ------------------------------------------------------------------------------------------------
# readers

PENDING = []   # readers that printed their result but are stuck in a read the bench gave up on


def reader(cmd):
    """run bfread; it prints its JSON line and then exits, except when a read of its is stuck in
    the file system past the deadline: then the process stays in PENDING until the unmount."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line:
        p.wait()
        raise BenchError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.read().strip()[-2000:]))
    res = json.loads(line)
    try:
        p.wait(timeout=0.2)
    except subprocess.TimeoutExpired:
        PENDING.append(p)
        res["reader_stuck"] = True
    return res


def bfread(ctx, mode, threads, files, deadline=None, streams=None):
    cmd = [ctx.tools["bfread"], "seq" if mode == "read" else "mmap", "-t", str(threads), "-b", "1M"]
    if deadline:
        cmd += ["--deadline", "%.3f" % deadline]
    for s in streams or []:
        cmd += ["-S", "%d:%d:%d" % tuple(s)]
    return reader(cmd + list(files))


def bfrand(ctx, size, files, count, deadline, seed):
    cmd = [ctx.tools["bfread"], "rand", "-s", str(size), "-n", str(count), "--seed", str(seed),
           "--deadline", "%.3f" % deadline]
    return reader(cmd + list(files))


def fuse_seq_session(ctx, server, mode, threads):
    """fresh mount -> cold read of every byte -> the same read again (warm) -> unmount."""
    t0 = time.monotonic()
    server.mount()
    try:
        c0 = server.cpu()
        cold = bfread(ctx, mode, threads, server.files, ctx.args.read_deadline)
        c1 = server.cpu()
        if cold.get("partial"):
            # the server is still computing for the reads the bench gave up on: a second read
            # now would measure that contention, not the page cache
            warm = {"gbps": None, "bytes": 0, "seconds": 0, "partial": True,
                    "skipped": "cold read cut at the deadline"}
        else:
            warm = bfread(ctx, mode, threads, server.files, ctx.args.read_deadline)
        c2 = server.cpu()
        # the status file would wait behind the computation the reader left in flight
        st = server.status() if not PENDING else {}
        hwm = server.hwm()
    finally:
        cut = bool(PENDING) or locals().get("cold", {}).get("partial") or locals().get("warm", {}).get("partial")
        nstats = server.umount(0.2 if cut else 3.0, abort=cut)
    out = {"server": server.kind, "recipe": server.recipe, "mode": mode, "threads": threads,
           "mount_s": server.mount_s, "readahead": server.ra, "cold": cold, "warm": warm,
           "daemon_cpu_cold_s": None if c0 is None or c1 is None else c1 - c0,
           "daemon_cpu_warm_s": None if c1 is None or c2 is None else c2 - c1,
           "vmhwm": hwm, "status": st}
    out["daemon_killed"] = server.killed
    out["session_s"] = time.monotonic() - t0
    if ctx.args.verbose:
        log("  %s %s %s%d: cold %.3f GB/s%s, session %.1f s%s" % (
            server.kind, server.recipe or "", mode, threads, cold["gbps"], " (cut)" if cold.get("partial") else "",
            out["session_s"], ", daemon killed" if server.killed else ""))
    if nstats:
        out["read_sizes"] = nstats
    return out


def fuse_rand_session(ctx, server, size, seed):
    server.mount()
    try:
        r = bfrand(ctx, size, server.files, ctx.args.rand_count, ctx.args.rand_deadline, seed)
        hwm = server.hwm()
    finally:
        cut = bool(PENDING) or locals().get("r", {}).get("censored")
        nstats = server.umount(0.2 if cut else 3.0, abort=cut)
    r.update({"server": server.kind, "recipe": server.recipe, "mount_s": server.mount_s, "vmhwm": hwm,
              "daemon_killed": server.killed})
    if nstats:
        r["read_sizes"] = nstats
    return r


def merge_session(ctx, recipe):
    """blendfs merge (synced) to the local disk, then read the copy back with a cold page cache."""
    out_dir = os.path.join(ctx.args.models_dir, "merge-out")
    shutil.rmtree(out_dir, ignore_errors=True)
    argv = [ctx.blendfs, "merge", "--log-level", "warn", os.path.join(ctx.recipes_dir, recipe + ".yaml"), out_dir]
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=ctx.models["dir"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    res = {"recipe": recipe}
    try:
        _, err = p.communicate(timeout=ctx.args.merge_timeout)
        res["merge_s"] = time.perf_counter() - t0
        if p.returncode:
            raise BenchError("blendfs merge %s failed (%d): %s" % (recipe, p.returncode, err.strip()))
    except subprocess.TimeoutExpired:
        el = time.perf_counter() - t0
        # progress: blocks written so far to the temporary shard files (written, not yet synced)
        done = total = 0
        for f in glob.glob(os.path.join(out_dir, ".*.safetensors.blendfs-tmp")):
            st = os.stat(f)
            done += min(st.st_blocks * 512, st.st_size)
            total += st.st_size
        p.kill()
        p.wait()
        frac = done / total if total else 0
        res.update({"merge_timeout": True, "merge_elapsed_s": el, "merge_progress": frac,
                    "merge_s": el / frac if frac > 0.01 else None, "estimated": True})
        shutil.rmtree(out_dir, ignore_errors=True)
        return res
    shards = sorted(glob.glob(os.path.join(out_dir, "*.safetensors")))
    drop_file_cache(shards)
    res["resident_before_readback"] = resident_bytes(shards)
    rb = bfread(ctx, "read", 1, shards)
    res["readback"] = rb
    res["bytes"] = rb["bytes"]
    shutil.rmtree(out_dir, ignore_errors=True)
    return res


def page_cache_session(ctx):
    """the page cache alone: cat and the bench reader on a warm source file."""
    out = {}
    f = ctx.plain_file
    t0 = time.perf_counter()
    subprocess.run(["cat", f], stdout=subprocess.DEVNULL, check=True)
    dt = time.perf_counter() - t0
    out["cat"] = {"bytes": ctx.plain_size, "seconds": dt, "gbps": ctx.plain_size / dt / 1e9}
    for mode, t in MODES:
        out["%s%d" % (mode, t)] = bfread(ctx, mode, t, [f])
    return out


def mount70b_session(ctx):
    """time `blendfs mount` of the 70B-shaped recipe; the sources' pages brought into the page
    cache (mincore, after dropping them) and the daemon's I/O counters show what was read."""
    drop_file_cache(ctx.big_sources)
    s = Server(ctx, "blendfs", "slerp70b")
    s.mount()
    try:
        res = {"mount_s": s.mount_s, "resident_bytes": resident_bytes(ctx.big_sources, 64 * MIB),
               "daemon_io": proc_io(s.pid), "vmhwm": s.hwm(), "readahead": s.ra,
               "files": len(s.files), "output_bytes": sum(os.path.getsize(f) for f in s.files)}
    finally:
        s.umount()
    return res


def strace70b(ctx):
    """one extra mount of the 70B recipe under strace -f: every byte read from a source
    .safetensors file (read/pread64/preadv/mmap), checked against that file's header length."""
    log_path = os.path.join(ctx.work, "strace70b.log")
    mnt = os.path.join(ctx.work, "mnt-strace")
    os.makedirs(mnt, exist_ok=True)
    argv = ["strace", "-f", "-qq", "-s", "0", "-e", "signal=none", "-e",
            "trace=open,openat,close,read,pread64,preadv,preadv2,readv,mmap,lseek,dup,dup2,dup3,fcntl",
            "-o", log_path, ctx.blendfs, "mount", "--log-level", "warn",
            os.path.join(ctx.recipes_dir, "slerp70b.yaml"), mnt]
    p = subprocess.Popen(argv, cwd=ctx.big_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.monotonic() + 60
    while not is_mounted(mnt) and time.monotonic() < t and p.poll() is None:
        time.sleep(0.05)
    os.listdir(mnt)
    time.sleep(0.2)
    unmount(mnt)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    fds = {}      # fd -> path (fds are shared by the forked daemon, so keyed by fd only)
    pos = {}      # fd -> file position for read()
    per = {}      # path -> [bytes read, max end offset, calls]
    mmaps = 0
    rx_open = re.compile(r'^\d+\s+open(?:at)?\((?:[^,]+, )?"([^"]+)".*\)\s+=\s+(\d+)')
    rx_call = re.compile(r'^\d+\s+(\w+)\((\d+),(.*)\)\s+=\s+(-?\d+)')
    with open(log_path) as f:
        for line in f:
            m = rx_open.match(line)
            if m:
                fds[int(m.group(2))] = m.group(1)
                pos[int(m.group(2))] = 0
                continue
            m = rx_call.match(line)
            if not m:
                m2 = re.match(r'^\d+\s+mmap\(.*?, \d+, [^,]+, [^,]+, (\d+), (\d+)\)\s+=', line)
                if m2 and fds.get(int(m2.group(1)), "").endswith(".safetensors"):
                    mmaps += 1
                continue
            call, fd, rest, ret = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
            path = fds.get(fd)
            if call == "close":
                fds.pop(fd, None)
                continue
            if not path or not path.endswith(".safetensors") or ret < 0:
                continue
            e = per.setdefault(path, [0, 0, 0])
            if call in ("read", "readv"):
                start = pos.get(fd, 0)
                pos[fd] = start + ret
            elif call in ("pread64", "preadv", "preadv2"):
                start = int(rest.rsplit(",", 1)[1].strip().split()[0]) if call == "pread64" else int(
                    rest.split(",")[-1 if call == "preadv" else -2].strip())
            elif call == "lseek":
                pos[fd] = ret
                continue
            else:
                continue
            e[0] += ret
            e[1] = max(e[1], start + ret)
            e[2] += 1
    headers = {p: header_end(p) for p in ctx.big_sources}
    beyond = sum(1 for p, e in per.items() if e[1] > headers.get(os.path.realpath(p), headers.get(p, 0)))
    return {"bytes_read": sum(e[0] for e in per.values()), "read_calls": sum(e[2] for e in per.values()),
            "files_read": len(per), "files": len(ctx.big_sources), "header_bytes": sum(headers.values()),
            "files_read_beyond_header": beyond, "mmaps_of_sources": mmaps}


def trace_read_sizes(ctx, recipe, mode, threads, ra):
    """blendfs -d (foreground, traced) for one cold read: the READ sizes the daemon is sent."""
    logp = os.path.join(ctx.work, "blendfs-d.log")
    s = Server(ctx, "blendfs", recipe, ra_kb=ra, debug_log=logp)
    s.mount()
    try:
        r = bfread(ctx, mode, threads, s.files, ctx.args.read_deadline)
    finally:
        cut = bool(PENDING) or locals().get("r", {}).get("partial")
        s.umount(0.2 if cut else 3.0, abort=cut)
    reads = set()
    sizes = {}
    with open(logp, errors="replace") as f:
        for line in f:
            m = re.match(r"unique: (\d+), opcode: READ", line)
            if m:
                reads.add(m.group(1))
                continue
            m = re.match(r"\s+unique: (\d+), success, outsize: (\d+)", line)
            if m and m.group(1) in reads:
                k = str(int(m.group(2)) - 16)
                sizes[k] = sizes.get(k, 0) + 1
    os.unlink(logp)
    return {"recipe": recipe, "mode": mode, "threads": threads, "readahead": s.ra, "sizes": sizes,
            "gbps_traced": r["gbps"]}


def perf_profile(ctx, recipe):
    """perf record (cpu-clock, call graphs off) of the daemon and the reader during one cold
    read() pass; returns the top symbols of the whole system."""
    s = Server(ctx, "blendfs", recipe)
    s.mount()
    data = os.path.join(ctx.work, "perf.data")
    try:
        p = subprocess.Popen(["perf", "record", "-a", "-e", "cpu-clock", "-F", "1999", "-o", data, "--", "sleep",
                              "3600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        r = bfread(ctx, "read", 1, s.files, ctx.args.read_deadline)
        p.send_signal(2)
        p.wait()
    finally:
        cut = bool(PENDING) or locals().get("r", {}).get("partial")
        s.umount(0.2 if cut else 3.0, abort=cut)
    rep = run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "comm,dso,sym",
               "--percent-limit", "1"], check=False).stdout
    top = []
    for line in rep.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[.\]\s+(.*)", line)
        if m:
            top.append({"pct": float(m.group(1)), "comm": m.group(2), "dso": m.group(3), "sym": m.group(4).strip()})
    os.unlink(data)
    return {"recipe": recipe, "gbps": r["gbps"], "top": top[:25]}


# ------------------------------------------------------------------------------------------------
# aggregation and the table

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs, fmt):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    return (fmt + "-" + fmt) % (min(xs), max(xs))


class Table:
    def __init__(self):
        self.rows = []

    def section(self, title):
        self.rows.append({"section": title})

    def add(self, name, value, unit="", xptll=None, xnull=None, target="", ok=None, spread_="", key=None, raw=None):
        self.rows.append({"figure": name, "value": value, "unit": unit, "x_ptll": xptll, "x_ceiling": xnull,
                          "target": target, "ok": ok, "spread": spread_, "key": key, "raw": raw})

    @staticmethod
    def fmt_cells(r):
        def num(v):
            if v is None:
                return "-"
            if isinstance(v, str):
                return v
            return "%.3g" % v if abs(v) < 100 else "%.0f" % v

        def ratio(x):
            return "-" if x is None else "%.2fx" % x
        ok = "" if r["ok"] is None else ("ok" if r["ok"] else "FAIL")
        return [r["figure"], num(r["value"]) + (" " + r["unit"] if r["unit"] else ""), r["spread"],
                ratio(r["x_ptll"]), ratio(r["x_ceiling"]), r["target"], ok]

    HEAD = ["figure", "value (median)", "runs min-max", "x ptll", "x ceiling", "target", "ok"]

    def text(self):
        cells = [self.fmt_cells(r) for r in self.rows if "section" not in r]
        w = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(self.HEAD)]
        out = []

        def line(c):
            return "  ".join(s.ljust(w[i]) if i == 0 or i == 5 else s.rjust(w[i]) for i, s in enumerate(c)).rstrip()
        out.append(line(self.HEAD))
        out.append("  ".join("-" * x for x in w))
        for r in self.rows:
            if "section" in r:
                out.append("== %s" % r["section"])
            else:
                out.append(line(self.fmt_cells(r)))
        return "\n".join(out)

    def markdown(self):
        out = ["| " + " | ".join(self.HEAD) + " |", "|" + "---|" * len(self.HEAD)]
        for r in self.rows:
            if "section" in r:
                out.append("| **%s** |" % r["section"] + " |" * (len(self.HEAD) - 1))
            else:
                out.append("| " + " | ".join(c.replace("|", "/") for c in self.fmt_cells(r)) + " |")
        return "\n".join(out)


def mode_name(mode, t):
    return "%s %dT" % ("read()" if mode == "read" else "mmap", t)


def build_table(res, args):
    T = Table()
    runs = res["runs"]
    cache_bytes = res["cache_bytes"]

    def seq_list(server, recipe, mode, t, which):
        out = []
        for r in runs:
            for s in r["seq"]:
                if s["server"] == server and s["recipe"] == recipe and s["mode"] == mode and s["threads"] == t:
                    out.append(s[which]["gbps"])
        return out

    base = {}
    for srv in ("ptll", "nullfs"):
        for mode, t in MODES:
            for which in ("cold", "warm"):
                base[(srv, mode, t, which)] = med(seq_list(srv, None, mode, t, which))

    # -- mount
    T.section("mount (wall time of `blendfs mount` until it returns; fresh mount each time)")
    for rec in res["recipes"]:
        xs = [s["mount_s"] * 1e3 for r in runs for s in r["seq"] + r["rand"]
              if s["server"] == "blendfs" and s["recipe"] == rec and s.get("mount_s")]
        T.add("mount %s (%.2f GB sources)" % (rec, res["models"]["bytes_per_model"] / 1e9), med(xs), "ms",
              spread_=spread(xs, "%.0f"), key="mount." + rec)
    if res.get("m70"):
        xs = [m["mount_s"] * 1e3 for m in res["m70"]]
        T.add("mount 70B slerp, 2 sparse models, %d shards each" % (len(res["big_sources"]) // 2), med(xs), "ms",
              target="< 300 ms", ok=med(xs) < 300, spread_=spread(xs, "%.0f"), key="mount.70b")
        st = res.get("strace70b")
        if st:
            T.add("  70B mount: source bytes read (strace, %d calls, %d/%d files)" % (
                st["read_calls"], st["files_read"], st["files"]), st["bytes_read"] / 1e3, "kB",
                target="headers only (%.0f kB)" % (st["header_bytes"] / 1e3),
                ok=st["files_read_beyond_header"] == 0 and st["mmaps_of_sources"] == 0, key="mount.70b.strace")
        xs = [m["resident_bytes"] / 1e3 for m in res["m70"]]
        T.add("  70B mount: source pages cached after mount (mincore, first 64 MiB of each shard)", med(xs), "kB",
              target="info: headers + read-ahead", key="mount.70b.resident")
        xs = [m["daemon_io"].get("rchar", 0) / 1e3 for m in res["m70"]]
        T.add("  70B mount: daemon rchar after mount (/proc/pid/io)", med(xs), "kB", key="mount.70b.rchar")

    # -- sequential
    for which, title in (("cold", "sequential read, cold: fresh mount, sources warm in the page cache"),
                         ("warm", "second read, warm: the same read again on the same mount")):
        T.section(title)
        for srv, label in (("ptll", "passthrough_ll (plain file, page cache)"),
                           ("nullfs", "nullfs (transport ceiling)")):
            for mode, t in MODES:
                xs = seq_list(srv, None, mode, t, which)
                v = med(xs)
                T.add("%s %s" % (label, mode_name(mode, t)), v, "GB/s",
                      None if not v or not base[("ptll", mode, t, which)] else v / base[("ptll", mode, t, which)],
                      None if not v or not base[("nullfs", mode, t, which)] else v / base[("nullfs", mode, t, which)],
                      spread_=spread(xs, "%.2f"), key="seq.%s.%s.%s%d" % (which, srv, mode, t))
        if which == "cold":
            pc = [r["pagecache"] for r in runs]
            xs = [p["cat"]["gbps"] for p in pc]
            T.add("page cache: cat of a source file (warm)", med(xs), "GB/s", spread_=spread(xs, "%.2f"),
                  key="pagecache.cat")
            for mode, t in MODES:
                xs = [p["%s%d" % (mode, t)]["gbps"] for p in pc]
                T.add("page cache: source file %s (warm)" % mode_name(mode, t), med(xs), "GB/s",
                      spread_=spread(xs, "%.2f"), key="pagecache.%s%d" % (mode, t))
        for rec in res["recipes"]:
            for mode, t in MODES:
                xs = seq_list("blendfs", rec, mode, t, which)
                v = med(xs)
                bp, bn = base[("ptll", mode, t, which)], base[("nullfs", mode, t, which)]
                xp = v / bp if v and bp else None
                xn = v / bn if v and bn else None
                partial = any(s[which].get("partial") for r in runs for s in r["seq"]
                              if s["server"] == "blendfs" and s["recipe"] == rec and s["mode"] == mode
                              and s["threads"] == t)
                cpartial = any(s["cold"].get("partial") for r in runs for s in r["seq"]
                               if s["server"] == "blendfs" and s["recipe"] == rec and s["mode"] == mode
                               and s["threads"] == t)
                if which == "cold":
                    name = "%s %s%s" % (rec, mode_name(mode, t), " (cut at deadline)" if partial else "")
                else:
                    name = "%s %s%s" % (rec, mode_name(mode, t), " (not run: first read cut)" if cpartial else "")
                if which == "cold":
                    tgt = TARGET_SEQ.get(rec)
                    if partial and (v is None or v < 0.001):
                        # the deadline passed before the first MiB came back (whole-tensor statistics)
                        v, xp, xn = "< 0.001", 0.0, 0.0
                    T.add(name, v, "GB/s", xp, xn, ">= %.1fx ptll" % tgt if tgt else "",
                          None if xp is None or not tgt else xp >= tgt, spread(xs, "%.2f"),
                          key="seq.cold.%s.%s%d" % (rec, mode, t))
                else:
                    cold = med(seq_list("blendfs", rec, mode, t, "cold"))
                    sp = v / cold if v and cold else None
                    if cpartial:
                        v, xp, xn, sp = "-", None, None, None   # not measured: see fuse_seq_session
                    T.add(name, v, "GB/s", xp, xn, ">= 3x first (%.1fx)" % sp if sp else ">= 3x first",
                          None if sp is None else sp >= 3.0, spread(xs, "%.2f"),
                          key="seq.warm.%s.%s%d" % (rec, mode, t))

    # -- random
    T.section("random pread latency, fresh mount, %d reads or %g s per size (p50 / p99)" % (
        args.rand_count, args.rand_deadline))
    for srv, rec, label in ([("ptll", None, "passthrough_ll"), ("nullfs", None, "nullfs")] +
                            [("blendfs", r, r) for r in res["recipes"]]):
        for size in (4096, 131072):
            xs = [x for r in runs for x in r["rand"] if x["server"] == srv and x["recipe"] == rec and x["size"] == size]
            if not xs:
                continue
            p50, p99 = med([x["p50_us"] for x in xs]), med([x["p99_us"] for x in xs])
            n = sum(x["count"] for x in xs)
            cen = sum(x.get("censored", 0) for x in xs)
            T.add("%s %d KiB pread (n=%d%s)" % (label, size // 1024, n, ", %d cut at deadline" % cen if cen else ""), "%.0f / %.0f" % (p50, p99), "us",
                  key="rand.%s.%d" % (label, size), raw={"p50_us": p50, "p99_us": p99})

    # -- merge
    T.section("merge + sync + read back (1 MiB read(), page cache dropped) vs mount + read every byte")
    rb_all = [m["readback"]["gbps"] for r in runs for m in r["merge"] if m.get("readback")]
    rb_med = med(rb_all)
    for rec in res["recipes"]:
        ms = [m for r in runs for m in r["merge"] if m["recipe"] == rec]
        if not ms:
            continue
        est = any(m.get("estimated") for m in ms)
        mt = med([m.get("merge_s") for m in ms])
        lower = None
        if mt is None and est:
            lower = max(m["merge_elapsed_s"] for m in ms)
        rbs = [m["readback"]["gbps"] for m in ms if m.get("readback")]
        rb = med(rbs) or rb_med
        nbytes = med([m.get("bytes") for m in ms if m.get("bytes")]) or res["output_bytes"].get(rec)
        if est:
            m0 = ms[0]
            note = " (est.: killed at %.0f s, %.0f%% written)" % (m0["merge_elapsed_s"], 100 * m0["merge_progress"])
        else:
            note = ""
        T.add("%s merge + sync%s" % (rec, note), mt if lower is None else "> %.0f" % lower, "s",
              spread_=spread([m.get("merge_s") for m in ms], "%.2f"), key="merge.%s.merge_s" % rec,
              raw={"lower_bound_s": lower} if lower else None)
        T.add("%s read back from disk%s" % (rec, "" if rbs else " (other recipes' rate)"), rb, "GB/s",
              spread_=spread(rbs, "%.2f"), key="merge.%s.readback_gbps" % rec)
        rb_s = nbytes / (rb * 1e9) if rb and nbytes else None
        total_m = (mt or lower) + rb_s if (mt or lower) and rb_s else None
        mounts = [s["mount_s"] for r in runs for s in r["seq"] if s["server"] == "blendfs" and s["recipe"] == rec
                  and s.get("mount_s")]
        colds = seq_list("blendfs", rec, "read", 1, "cold")
        cold_bytes = res["output_bytes"].get(rec)
        total_f = (med(mounts) + cold_bytes / (med(colds) * 1e9)) if mounts and med(colds) and cold_bytes else None
        T.add("%s merge + sync + read back" % rec, total_m if lower is None or total_m is None else "> %.0f" % total_m,
              "s", key="merge.%s.total_s" % rec)
        partial = any(s["cold"].get("partial") for r in runs for s in r["seq"]
                      if s["server"] == "blendfs" and s["recipe"] == rec and s["mode"] == "read" and s["threads"] == 1)
        ratio = total_f / total_m if total_f and total_m else None
        if ratio is None:
            tgt, ok = "<= 0.5x merge path (-)", None
        elif lower is not None:
            tgt, ok = "<= 0.5x merge path (< %.2fx)" % ratio, (True if ratio <= 0.5 else None)
        else:
            tgt, ok = "<= 0.5x merge path (%.2fx)" % ratio, ratio <= 0.5
        T.add("%s mount + read every byte (read() 1T)%s" % (rec, " (est. from rate)" if partial else ""), total_f,
              "s", target=tgt, ok=ok, key="merge.%s.mount_read_s" % rec)

    # -- RSS and CPU
    T.section("daemon peak RSS (VmHWM) with --cache-size %s; daemon CPU per GB served cold" % args.cache_size)
    lim = cache_bytes + 64 * MIB
    for rec in res["recipes"]:
        xs = [s["vmhwm"] for r in runs for s in r["seq"] + r["rand"]
              if s["server"] == "blendfs" and s["recipe"] == rec and s.get("vmhwm")]
        if xs:
            T.add("%s peak RSS (max over mounts)" % rec, max(xs) / MIB, "MiB",
                  target="<= %d MiB" % (lim // MIB), ok=max(xs) <= lim, key="rss." + rec)
    for rec in res["recipes"]:
        cpu = []
        for r in runs:
            for s in r["seq"]:
                if s["server"] == "blendfs" and s["recipe"] == rec and s["mode"] == "read" and s["threads"] == 1 \
                        and s.get("daemon_cpu_cold_s") is not None:
                    cpu.append((s["daemon_cpu_cold_s"], s["cold"]["seconds"], s["cold"]["bytes"]))
        if cpu:
            per_gb = med([c / (b / 1e9) for c, _, b in cpu if b])
            util = med([c / w for c, w, _ in cpu if w])
            if per_gb is None:
                continue
            T.add("%s daemon CPU, cold read() 1T" % rec, "%.2f s/GB, %.2f cores" % (per_gb, util), "",
                  key="cpu." + rec, raw={"s_per_gb": per_gb, "cores": util})
    for srv in ("ptll", "nullfs"):
        cpu = [(s["daemon_cpu_cold_s"], s["cold"]["seconds"], s["cold"]["bytes"]) for r in runs for s in r["seq"]
               if s["server"] == srv and s["mode"] == "read" and s["threads"] == 1 and s.get("daemon_cpu_cold_s")
               is not None]
        if cpu:
            per_gb = med([c / (b / 1e9) for c, _, b in cpu])
            util = med([c / w for c, w, _ in cpu])
            T.add("%s daemon CPU, cold read() 1T" % srv, "%.2f s/GB, %.2f cores" % (per_gb, util), "",
                  key="cpu." + srv, raw={"s_per_gb": per_gb, "cores": util})

    # -- diagnostics
    T.section("diagnostics: read-ahead and READ sizes")
    ras = {}
    for r in runs:
        for s in r["seq"]:
            k = "blendfs" if s["server"] == "blendfs" else s["server"]
            ras.setdefault(k, set()).add((s["readahead"]["found_kb"], s["readahead"]["used_kb"]))
    for k, v in sorted(ras.items()):
        T.add("read_ahead_kb found after mount -> used: %s" % k,
              ", ".join("%d -> %d" % x for x in sorted(v)), "KiB", key="ra." + k)
    fl = [r.get("foreign_load", 0) for r in runs]
    T.add("CPU used by other processes during each run", " / ".join("%.2f" % x for x in fl), "cores",
          target="< 0.1 each (quiet machine)", ok=max(fl) < 0.1, key="foreign_load")
    T.add("source models in the page cache before each run", "%.0f%%" % (100 * min(res["source_residency"])), "",
          target="100% (warm sources)", ok=min(res["source_residency"]) > 0.99, key="sources.resident")
    rbr = [m["resident_before_readback"] / m["bytes"] for r in runs for m in r["merge"] if m.get("bytes")]
    if rbr:
        T.add("merge output in the page cache before read-back", "%.1f%%" % (100 * max(rbr)), "",
              target="~0% (cold read-back)", ok=max(rbr) < 0.02, key="merge.resident")
    asis = [s for r in runs for s in r.get("asis", [])]
    for mode, t in MODES:
        xs = [s["cold"]["gbps"] for s in asis if s["mode"] == mode and s["threads"] == t]
        if xs:
            ra = sorted({s["readahead"]["used_kb"] for s in asis})
            v = med(xs)
            bp, bn = base[("ptll", mode, t, "cold")], base[("nullfs", mode, t, "cold")]
            T.add("linear %s cold, read-ahead as blendfs leaves it (%s KiB)" % (mode_name(mode, t),
                                                                               "/".join(map(str, ra))),
                  v, "GB/s", v / bp if v and bp else None, v / bn if v and bn else None, spread_=spread(xs, "%.2f"),
                  key="asis.%s%d" % (mode, t))

    def hist(sizes):
        tot = sum(sizes.values()) or 1
        top = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join("%s %.0f%%" % ("%g KiB" % (int(k) / 1024) if int(k) >= 1024 else "%s B" % k,
                                        100.0 * n / tot) for k, n in top) + " (%d READs)" % tot
    for tr in res.get("traces", []):
        T.add("READ sizes blendfs -d %s %s (ra %d KiB)" % (tr["recipe"], mode_name(tr["mode"], tr["threads"]),
                                                          tr["readahead"]["used_kb"]), hist(tr["sizes"]), "",
              key="trace.blendfs.%s%d.ra%d" % (tr["mode"], tr["threads"], tr["readahead"]["used_kb"]))
    for mode, t in MODES:
        agg = {}
        for r in runs:
            for s in r["seq"]:
                if s["server"] == "nullfs" and s["mode"] == mode and s["threads"] == t and s.get("read_sizes"):
                    for k, n in s["read_sizes"]["sizes"].items():
                        agg[k] = agg.get(k, 0) + n
        if agg:
            T.add("READ sizes nullfs %s (cold+warm)" % mode_name(mode, t), hist(agg), "",
                  key="trace.nullfs.%s%d" % (mode, t))
    return T


# ------------------------------------------------------------------------------------------------

def cpu_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat (busy excludes idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    total = sum(v[:8])
    return total - v[3] - v[4], total


def own_cpu():
    """CPU seconds of the bench and of every descendant it has reaped (readers, servers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMeter:
    """CPU used by anything other than the bench and its reaped descendants, in cores."""

    def __init__(self):
        self.b0, _ = cpu_busy()
        self.o0 = own_cpu()
        self.t0 = time.monotonic()

    def foreign_cores(self):
        b1, _ = cpu_busy()
        dt = time.monotonic() - self.t0
        busy = (b1 - self.b0) / CLK
        return max(0.0, busy - (own_cpu() - self.o0)) / dt if dt > 0 else 0.0


def wait_idle(limit_s):
    """wait (up to limit_s) for a second in which other processes use < 0.1 core; returns the
    last measured foreign load in cores."""
    t_end = time.monotonic() + limit_s
    while True:
        m = LoadMeter()
        time.sleep(1.0)
        load = m.foreign_cores()
        if load < 0.1 or time.monotonic() >= t_end:
            return load
        log("machine busy (other processes use %.1f cores); waiting" % load)


def machine_info():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    fuse_ver = run(["pkg-config", "--modversion", "fuse3"], check=False).stdout.strip()
    try:
        with open("/proc/sys/fs/fuse/max_pages_limit") as f:
            max_pages = int(f.read())
    except OSError:
        max_pages = None
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_bytes": mem, "kernel": platform.release(),
            "libfuse": fuse_ver, "fuse_max_pages_limit": max_pages, "host": platform.node()}


def parse_size(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", s.strip().upper().rstrip("B").rstrip("I") if s else "")
    if not m:
        raise argparse.ArgumentTypeError("bad size %r (e.g. 256M)" % s)
    return int(float(m.group(1)) * (1 << (10 * " KMGT".index(m.group(2) or " "))))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small models (~0.125 GB), 1 run, short deadlines")
    ap.add_argument("--size", type=float, default=None, help="GB per source model (default 1; --quick 0.125)")
    ap.add_argument("--runs", type=int, default=None, help="repetitions, each figure is the median (default 3)")
    ap.add_argument("--models-dir", default="/var/tmp/blendfs-bench",
                    help="where generated models are cached and reused (default %(default)s)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"),
                    help="release build of blendfs + bench tools (default %(default)s)")
    ap.add_argument("--blendfs", default=None, help="use this blendfs binary instead of building one")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of bench/recipes")
    ap.add_argument("--cache-size", default="256M", help="blendfs --cache-size (default %(default)s)")
    ap.add_argument("--prefetch", type=int, default=None,
                    help="blendfs --prefetch N on every blendfs mount (default: blendfs's own, CPUs - 1 up to "
                         "4); e.g. 4 and 8 on a many-core machine to see how reads scale with threads")
    ap.add_argument("--readahead-kb", type=int, default=1024,
                    help="read_ahead_kb the bench sets on every FUSE mount once it is live (default 1024, "
                         "blendfs's own default); 0 = leave every mount as its server left it")
    ap.add_argument("--read-deadline", type=float, default=None,
                    help="cut a sequential read after S seconds and report its rate (default 6; --quick 1)")
    ap.add_argument("--rand-count", type=int, default=None, help="random preads per size (default 1000; quick 200)")
    ap.add_argument("--rand-deadline", type=float, default=None, help="seconds per random test (default 3; quick 0.5)")
    ap.add_argument("--merge-timeout", type=float, default=None,
                    help="kill a merge after S seconds and estimate its time from its progress (default 30; quick 2)")
    ap.add_argument("--m70-runs", type=int, default=None, help="70B mounts timed per run (default 3; quick 2)")
    ap.add_argument("--skip-70b", action="store_true")
    ap.add_argument("--skip-merge", action="store_true")
    ap.add_argument("--no-diagnostics", action="store_true",
                    help="skip the as-is read-ahead pass and the blendfs -d READ-size traces (full mode runs them)")
    ap.add_argument("--diagnostics", action="store_true", help="run them in --quick mode too")
    ap.add_argument("--profile", action="store_true",
                    help="also perf record (system-wide) one cold read() 1T of each recipe; needs linux-perf")
    ap.add_argument("--profile-only", action="store_true", help="only the perf profiles (implies --profile)")
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="before each run, wait up to S seconds for other processes to leave the CPUs "
                         "(default %(default)s); the load seen is reported either way")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every mount session")
    ap.add_argument("--out", default=None, help="JSON results path (default /tmp/blendfs-bench-results/<time>.json)")
    args = ap.parse_args(argv)
    q = args.quick
    args.size = args.size or (0.125 if q else 1.0)
    args.runs = args.runs or (1 if q else 3)
    args.read_deadline = args.read_deadline or (1.0 if q else 6.0)
    args.rand_count = args.rand_count or (200 if q else 1000)
    args.rand_deadline = args.rand_deadline or (0.5 if q else 3.0)
    args.merge_timeout = args.merge_timeout or (2.0 if q else 30.0)
    if q and not args.diagnostics:
        args.no_diagnostics = True
    args.m70_runs = args.m70_runs or (2 if q else 3)
    if args.readahead_kb == 0:
        args.readahead_kb = None
    args.models_dir = os.path.abspath(args.models_dir)
    args.build_dir = os.path.abspath(args.build_dir)
    recipes = [r for r in args.recipes.split(",") if r]
    for r in recipes:
        if not os.path.exists(os.path.join(BENCH, "recipes", r + ".yaml")):
            ap.error("no recipe bench/recipes/%s.yaml" % r)
    if os.geteuid() != 0:
        ap.error("run as root (FUSE mounts, read_ahead_kb, drop caches)")
    if not os.path.exists("/dev/fuse"):
        ap.error("/dev/fuse is missing")
    for tool in ("fusermount3", "cc", "meson", "ninja", "pkg-config") + (("strace",) if not args.skip_70b
                                                                                     else ()):
        if not shutil.which(tool):
            ap.error("%s is missing (apt-get install fuse3 gcc meson ninja-build pkg-config strace)" % tool)

    class Ctx:
        pass
    ctx = Ctx()
    ctx.args = args
    ctx.recipes_dir = os.path.join(BENCH, "recipes")
    ctx.work = "/tmp/blendfs-bench-%d" % os.getpid()
    os.makedirs(ctx.work, exist_ok=True)
    os.makedirs(args.models_dir, exist_ok=True)
    set_subreaper()
    ensure_fusectl()
    t_start = time.monotonic()
    ctx.blendfs, ctx.tools, build_info = build(args)
    TOOLS.update(ctx.tools)
    ctx.models, ctx.big_dir, ctx.big_sources = ensure_models(args)
    ctx.plain_dir = os.path.join(ctx.models["dir"], "base")
    ctx.plain_name = "model.safetensors"
    ctx.plain_file = os.path.join(ctx.plain_dir, ctx.plain_name)
    ctx.plain_size = os.path.getsize(ctx.plain_file)
    res_src, tot_src = warm_sources(ctx.models["sources"])
    log("sources warm: %.0f%% of %.2f GB in the page cache" % (100.0 * res_src / tot_src, tot_src / 1e9))

    res = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "args": vars(args),
           "machine": machine_info(), "build": build_info, "models": dict(ctx.models), "recipes": recipes,
           "cache_bytes": parse_size(args.cache_size), "big_sources": ctx.big_sources, "runs": [],
           "output_bytes": {}, "source_residency": [], "traces": [], "profiles": []}
    res["models"].pop("sources", None)
    try:
        if not args.skip_70b:
            res["strace70b"] = strace70b(ctx)
            log("70B mount under strace: %d bytes read from %d source files" % (
                res["strace70b"]["bytes_read"], res["strace70b"]["files_read"]))
        res["m70"] = []
        for run_i in range(0 if args.profile_only else args.runs):
            idle = wait_idle(args.wait_idle)
            log("run %d/%d%s" % (run_i + 1, args.runs, " (other load before it: %.1f cores)" % idle
                                 if idle >= 0.1 else ""))
            R = {"seq": [], "rand": [], "merge": [], "asis": [], "load_before": idle}
            meter = LoadMeter()
            res_src, _ = warm_sources(ctx.models["sources"])
            res["source_residency"].append(res_src / tot_src)
            if not args.skip_70b:
                for _ in range(args.m70_runs):
                    res["m70"].append(mount70b_session(ctx))
            R["pagecache"] = page_cache_session(ctx)
            for srv in ("ptll", "nullfs"):
                for mode, t in MODES:
                    R["seq"].append(fuse_seq_session(ctx, Server(ctx, srv), mode, t))
                for size in (4096, 131072):
                    R["rand"].append(fuse_rand_session(ctx, Server(ctx, srv), size, run_i))
            log("baselines: ptll read() 1T %.2f GB/s, nullfs read() 1T %.2f GB/s" % (
                R["seq"][0]["cold"]["gbps"], R["seq"][4]["cold"]["gbps"]))
            for rec in recipes:
                for mode, t in MODES:
                    s = fuse_seq_session(ctx, Server(ctx, "blendfs", rec), mode, t)
                    R["seq"].append(s)
                    res["output_bytes"][rec] = s["cold"]["total_bytes"]
                for size in (4096, 131072):
                    R["rand"].append(fuse_rand_session(ctx, Server(ctx, "blendfs", rec), size, run_i))
                if not args.skip_merge:
                    prev = [m for r in res["runs"] for m in r["merge"] if m["recipe"] == rec]
                    if prev and prev[0].get("merge_timeout"):
                        log("%s: merge timed out before; not repeated" % rec)
                    else:
                        R["merge"].append(merge_session(ctx, rec))
                cold = [s["cold"]["gbps"] for s in R["seq"] if s["recipe"] == rec]
                log("%s: cold %s GB/s" % (rec, " ".join("%.3f" % x for x in cold)))
            if not args.no_diagnostics and "linear" in recipes:
                for mode, t in MODES:
                    R["asis"].append(fuse_seq_session(ctx, Server(ctx, "blendfs", "linear", ra_kb=None), mode, t))
                if run_i == 0:
                    for ra in sorted({None, args.readahead_kb}, key=lambda x: x or 0):
                        for mode, t in (("read", 1), ("mmap", 1)):
                            res["traces"].append(trace_read_sizes(ctx, "linear", mode, t, ra))
            R["foreign_load"] = meter.foreign_cores()
            if R["foreign_load"] >= 0.1:
                log("WARNING: other processes used %.2f cores on average during run %d: figures are disturbed"
                    % (R["foreign_load"], run_i + 1))
            res["runs"].append(R)
        if args.profile or args.profile_only:
            wait_idle(args.wait_idle)
            for rec in recipes:
                log("perf: %s" % rec)
                res["profiles"].append(perf_profile(ctx, rec))
    finally:
        for d in glob.glob(os.path.join(ctx.work, "mnt-*")):
            if is_mounted(d):
                unmount(d, abort=True)
        if not any(is_mounted(d) for d in glob.glob(os.path.join(ctx.work, "mnt-*"))):
            shutil.rmtree(ctx.work, ignore_errors=True)
    res["elapsed_s"] = time.monotonic() - t_start
    if args.profile_only:
        for p in res["profiles"]:
            print("\nperf (system-wide, cpu-clock) during a cold read() 1T of %s (%.3f GB/s):" % (p["recipe"], p["gbps"]))
            for t in p["top"][:25]:
                print("  %5.1f%%  %-16s %-22s %s" % (t["pct"], t["comm"], t["dso"], t["sym"]))
        return 0
    T = build_table(res, args)
    res["table"] = [r for r in T.rows]
    res["table_markdown"] = T.markdown()
    out = args.out or os.path.join("/tmp/blendfs-bench-results",
                                   datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(T.markdown() + "\n")
    m = res["machine"]
    print("blendfs bench: %s, %d cores, %.0f GiB RAM, kernel %s, libfuse %s" % (
        m["cpu"], m["cores"], m["mem_bytes"] / 2 ** 30, m["kernel"], m["libfuse"]))
    print("blendfs %s (%s, buildtype %s), --cache-size %s%s, read_ahead_kb %s on every FUSE mount" % (
        build_info.get("version"), build_info.get("git"), build_info.get("buildtype"), args.cache_size,
        "" if args.prefetch is None else ", --prefetch %d" % args.prefetch,
        args.readahead_kb or "as each server leaves it"))
    d = ctx.models
    print("sources: 4 x %.2f GB bf16 Llama (hidden %d, intermediate %d, %d layers, %d/%d heads, vocab %d) in %s;"
          " %d run(s), medians" % (d["bytes_per_model"] / 1e9, d["hidden"], d["intermediate"], d["layers"],
                                   d["heads"], d["kv_heads"], d["vocab"], d["dir"], args.runs))
    print()
    print(T.text())
    for p in res["profiles"]:
        print("\nperf (system-wide, cpu-clock) during a cold read() 1T of %s (%.3f GB/s):" % (p["recipe"], p["gbps"]))
        for t in p["top"][:12]:
            print("  %5.1f%%  %-16s %-22s %s" % (t["pct"], t["comm"], t["dso"], t["sym"]))
    print("\nelapsed %.0f s; raw results: %s (table: %s)" % (res["elapsed_s"], out, os.path.splitext(out)[0] + ".md"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log("error: %s" % e)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
