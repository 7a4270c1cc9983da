#!/usr/bin/python3
"""A file system that forgets what was not synced when the power goes.

    lazyfs.py BACKING MOUNTPOINT

A FUSE pass-through to BACKING (every operation reaches BACKING at once, so
programs see an ordinary file system) that keeps an undo record of every
change not yet made durable, the way a power cut finds a disk whose page
cache was never written back (the idea of Jepsen's LazyFS):

- a write or a truncate is durable once its file is fsynced (fsync or
  fdatasync);
- a new file's name is durable once the file or its directory is fsynced;
- a rename, an unlink, a mkdir or an rmdir is durable once the directory
  it changed is fsynced.

Writing a command to the file `.lazyfs` at the mount's root drives it:

- `powercut`: every change not durable is undone, newest first, and BACKING
  is left as the disk would be found after the power came back. Kill the
  programs using the mount first; unmount afterwards and mount again over
  the same BACKING to "boot".
- `sync`: everything so far becomes durable, as the kernel's writeback
  does within half a minute (set-up before a test's load, say).
- reading `.lazyfs` gives counts: `fsyncs=N fsyncdirs=N pending=N undone=N`.

Only for tests: one lock serialises every operation.
"""
import errno
import os
import shutil
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations

CONTROL = "/.lazyfs"


class LazyFS(Operations):
    def __call__(self, op, *args):
        try:
            return getattr(self, op)(*args)
        except OSError as e:
            if os.environ.get("LAZYFS_DEBUG"):
                print("lazyfs: %s%r: %s" % (op, args[:2], e), file=sys.stderr, flush=True)
            raise FuseOSError(e.errno) if not isinstance(e, FuseOSError) else e

    def __init__(self, backing):
        self.backing = os.path.realpath(backing)
        self.trash = self.backing + ".lazyfs-trash"
        shutil.rmtree(self.trash, ignore_errors=True)
        os.makedirs(self.trash)
        self.mutex = threading.RLock()
        # Changes not yet durable, oldest first: tuples whose first item is the kind.
        self.pending = []
        self.append_handles = set()
        self.trash_serial = 0
        self.counts = {"fsyncs": 0, "fsyncdirs": 0, "undone": 0}

    # -- helpers --------------------------------------------------------

    def real(self, path):
        return self.backing + path

    def inode(self, path):
        try:
            return os.lstat(self.real(path)).st_ino
        except FileNotFoundError:
            return None

    def parent_inode(self, path):
        return self.inode(os.path.dirname(path) or "/")

    def to_trash(self, real_path):
        self.trash_serial += 1
        target = "%s/%d" % (self.trash, self.trash_serial)
        os.rename(real_path, target)
        return target

    def status(self):
        return ("fsyncs=%(fsyncs)d fsyncdirs=%(fsyncdirs)d undone=%(undone)d " % self.counts
                + "pending=%d\n" % len(self.pending)).encode()

    # -- what makes a change durable ------------------------------------

    def commit_file(self, ino, path):
        kept = []
        for record in self.pending:
            kind = record[0]
            if kind in ("write", "truncate") and record[1] == ino:
                continue
            if kind == "create" and record[2] == ino:
                continue
            kept.append(record)
        self.pending = kept

    def commit_directory(self, dir_ino):
        kept = []
        for record in self.pending:
            kind = record[0]
            if kind in ("create", "unlink", "rename", "mkdir", "rmdir") and dir_ino in record[1]:
                if kind == "unlink" or (kind == "rename" and record[4]):
                    trashed = record[3] if kind == "unlink" else record[4]
                    ino = os.lstat(trashed).st_ino
                    os.unlink(trashed)
                    kept = [r for r in kept if not (r[0] in ("write", "truncate") and r[1] == ino)]
                continue
            kept.append(record)
        self.pending = kept

    # -- the power cut --------------------------------------------------

    def paths_by_inode(self):
        found = {}
        for root in (self.backing, self.trash):
            for directory, dirs, files in os.walk(root):
                for name in dirs + files:
                    full = os.path.join(directory, name)
                    found[os.lstat(full).st_ino] = full
        return found

    def power_cut(self):
        paths = None
        for record in reversed(self.pending):
            kind = record[0]
            if kind in ("write", "truncate"):
                paths = paths or self.paths_by_inode()
                path = paths.get(record[1])
                if path is None:
                    continue
                _, _, offset, old_bytes, old_size = record
                with open(path, "r+b") as f:
                    if old_bytes:
                        f.seek(offset)
                        f.write(old_bytes)
                    f.truncate(old_size)
            else:
                paths = None  # names move back
            if kind == "create":
                try:
                    os.unlink(self.real(record[3]))
                except FileNotFoundError:
                    pass
            elif kind == "unlink":
                os.rename(record[3], self.real(record[2]))
            elif kind == "rename":
                _, _, old, new, trashed = record
                os.rename(self.real(new), self.real(old))
                if trashed:
                    os.rename(trashed, self.real(new))
            elif kind == "mkdir":
                shutil.rmtree(self.real(record[2]), ignore_errors=True)
            elif kind == "rmdir":
                os.mkdir(self.real(record[2]))
            self.counts["undone"] += 1
        self.pending = []
        shutil.rmtree(self.trash, ignore_errors=True)
        os.makedirs(self.trash)

    # -- operations -----------------------------------------------------

    def getattr(self, path, fh=None):
        if path == CONTROL:
            return {"st_mode": 0o100666, "st_nlink": 1, "st_size": len(self.status())}
        try:
            st = os.lstat(self.real(path))
        except OSError as e:
            raise FuseOSError(e.errno)
        return {key: getattr(st, key) for key in
                ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")}

    def access(self, path, mode):
        if path != CONTROL and not os.access(self.real(path), mode):
            raise FuseOSError(errno.EACCES)

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self.real(path))

    def statfs(self, path):
        st = os.statvfs(self.backing)
        return {key: getattr(st, key) for key in
                ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize",
                 "f_namemax")}

    def chmod(self, path, mode):
        os.chmod(self.real(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self.real(path), uid, gid)

    def utimens(self, path, times=None):
        if path != CONTROL:
            os.utime(self.real(path), times)

    def readlink(self, path):
        return os.readlink(self.real(path))

    def mkdir(self, path, mode):
        with self.mutex:
            os.mkdir(self.real(path), mode)
            self.pending.append(("mkdir", (self.parent_inode(path),), path))

    def rmdir(self, path):
        with self.mutex:
            os.rmdir(self.real(path))
            self.pending.append(("rmdir", (self.parent_inode(path),), path))

    def unlink(self, path):
        with self.mutex:
            dir_ino = self.parent_inode(path)
            trashed = self.to_trash(self.real(path))
            self.pending.append(("unlink", (dir_ino,), path, trashed))

    def rename(self, old, new):
        with self.mutex:
            trashed = None
            if os.path.lexists(self.real(new)) and not os.path.isdir(self.real(new)):
                trashed = self.to_trash(self.real(new))
            os.rename(self.real(old), self.real(new))
            dirs = (self.parent_inode(old), self.parent_inode(new))
            self.pending.append(("rename", dirs, old, new, trashed))

    def create(self, path, mode, fi=None):
        with self.mutex:
            fd = os.open(self.real(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)
            self.pending.append(("create", (self.parent_inode(path),), os.fstat(fd).st_ino, path))
            return fd

    def open(self, path, flags):
        if path == CONTROL:
            return 0
        with self.mutex:
            if flags & os.O_TRUNC:
                self.truncate(path, 0)
            fd = os.open(self.real(path), flags & ~(os.O_APPEND | os.O_TRUNC | os.O_CREAT | os.O_EXCL))
            if flags & os.O_APPEND:
                self.append_handles.add(fd)
            return fd

    def read(self, path, size, offset, fh):
        if path == CONTROL:
            return self.status()[offset:offset + size]
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        with self.mutex:
            if path == CONTROL:
                if data.strip() == b"powercut":
                    self.power_cut()
                    return len(data)
                if data.strip() == b"sync":
                    self.pending = []
                    shutil.rmtree(self.trash, ignore_errors=True)
                    os.makedirs(self.trash)
                    return len(data)
                raise FuseOSError(errno.EINVAL)
            st = os.fstat(fh)
            if fh in self.append_handles:
                offset = st.st_size
            old = os.pread(fh, min(len(data), st.st_size - offset), offset) if offset < st.st_size else b""
            self.pending.append(("write", st.st_ino, offset, old, st.st_size))
            return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        if path == CONTROL:
            return
        with self.mutex:
            real = self.real(path)
            st = os.lstat(real)
            tail = b""
            if length < st.st_size:
                with open(real, "rb") as f:
                    f.seek(length)
                    tail = f.read()
            self.pending.append(("truncate", st.st_ino, length, tail, st.st_size))
            os.truncate(real, length)

    def flush(self, path, fh):
        pass

    def release(self, path, fh):
        if path != CONTROL:
            with self.mutex:
                self.append_handles.discard(fh)
                os.close(fh)

    def fsync(self, path, datasync, fh):
        with self.mutex:
            self.counts["fsyncs"] += 1
            self.commit_file(os.fstat(fh).st_ino, path)

    def opendir(self, path):
        return 0

    def releasedir(self, path, fh):
        pass

    def fsyncdir(self, path, datasync, fh):
        with self.mutex:
            self.counts["fsyncdirs"] += 1
            self.commit_directory(self.inode(path))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: lazyfs.py BACKING MOUNTPOINT")
    FUSE(LazyFS(sys.argv[1]), sys.argv[2], foreground=True, nothreads=False,
         attr_timeout=0, entry_timeout=0, negative_timeout=0, allow_other=True)


if __name__ == "__main__":
    main()
