#!/usr/bin/env python3
"""A FUSE file system that forgets, on a power cut, everything that was not synced.

    lazyfs.py BACKING MOUNTPOINT     serve BACKING at MOUNTPOINT (in the foreground)
    lazyfs.py --check                exit 0 if fusepy and libfuse can be loaded

BACKING holds the durable state only: what a power cut leaves. Every change goes to a copy
held in this process's memory (the volatile state), and reaches BACKING only when it is
synced. A power cut is SIGKILL to this process, then `umount -l MOUNTPOINT`: the memory is
gone, and a new mount over BACKING shows what survived.

What becomes durable, and when (stricter than ext4, which commits metadata in order):
- fsync or fdatasync of a file makes its data and size durable (both calls do the same),
  under every name the file durably has. A file with no durable name yet keeps that synced
  content in memory: it survives only once a directory fsync gives it a name.
- fsync of a directory makes its entries durable as they are at that moment: new names
  (pointing at the file's synced content, empty if it was never synced), removed names, and
  both halves of a rename within it. A rename between directories needs both fsync'd: until
  the old one is, the file has both names, as a hard link. A directory that has no durable
  name yet keeps its synced entries in memory, like a file.
- Nothing else is ever durable: writes, truncations, creates, unlinks and renames that were
  not followed by the fsyncs above are lost, in whole. A sync that is cut half way may leave
  its file torn, as a real disk may.
- chmod, chown and times are kept in memory only (hookbridge relies on none of them).
"""

import errno
import os
import shutil
import stat
import sys
import threading
import time


def load_fuse():
    """fusepy's module: `fuse` from PyPI, `fusepy` from Debian's python3-fusepy."""
    try:
        import fuse

        if hasattr(fuse, "Operations"):
            return fuse
    except (ImportError, OSError, EnvironmentError):
        pass
    import fusepy

    return fusepy


class Node:
    """A file or directory of the volatile state, and what of it is durable."""

    def __init__(self, is_dir, mode):
        self.is_dir = is_dir
        self.mode = mode
        self.uid, self.gid = os.getuid(), os.getgid()
        now = time.time_ns()
        self.atime = self.mtime = self.ctime = now
        # Files: the live bytes, the ranges written since the last sync, and (while the file
        # has no durable name) the content as of its last sync.
        self.data = bytearray()
        self.dirty = []
        self.synced = b""
        # Directories: live entries, and the entries as of the last fsync of the directory.
        self.children = {}
        self.durable_children = {}
        # Where the durable copy lives in BACKING (relative paths); empty: nowhere yet.
        self.paths = set()

    def touch(self):
        self.mtime = self.ctime = time.time_ns()


class LazyFS:
    """The fusepy operations over one BACKING directory."""

    use_ns = True

    def __init__(self, fuse, backing):
        self.fuse = fuse
        self.backing = os.path.abspath(backing)
        self.lock = threading.RLock()
        self.handles = {}
        self.next_fh = 1
        self.root = self._load("", {})

    # --- the durable state, read at mount ---------------------------------------------------

    def _load(self, rel, seen):
        full = os.path.join(self.backing, rel)
        st = os.lstat(full)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            seen[key].paths.add(rel)
            return seen[key]
        node = Node(stat.S_ISDIR(st.st_mode), stat.S_IMODE(st.st_mode))
        node.paths.add(rel)
        seen[key] = node
        if node.is_dir:
            for name in sorted(os.listdir(full)):
                child = self._load(os.path.join(rel, name), seen)
                node.children[name] = child
                node.durable_children[name] = child
        else:
            with open(full, "rb") as f:
                node.data = bytearray(f.read())
        return node

    # --- lookups ---------------------------------------------------------------------------

    def _err(self, code):
        return self.fuse.FuseOSError(code)

    def _resolve(self, path):
        node = self.root
        for part in [p for p in path.split("/") if p]:
            if not node.is_dir or part not in node.children:
                raise self._err(errno.ENOENT)
            node = node.children[part]
        return node

    def _parent(self, path):
        head, name = path.rstrip("/").rsplit("/", 1)
        parent = self._resolve(head or "/")
        if not parent.is_dir:
            raise self._err(errno.ENOTDIR)
        return parent, name

    def _node(self, path, fh=None):
        if fh and fh in self.handles:
            return self.handles[fh]
        return self._resolve(path)

    # --- syncing -----------------------------------------------------------------------------

    def _sync_file(self, node):
        if not node.paths:
            node.synced = bytes(node.data)
            node.dirty = []
            return
        full = os.path.join(self.backing, next(iter(node.paths)))
        size = len(node.data)
        with open(full, "r+b") as f:
            for start, end in sorted(node.dirty):
                end = min(end, size)
                if start < end:
                    f.seek(start)
                    f.write(node.data[start:end])
            f.truncate(size)
        node.dirty = []

    def _materialize(self, node, rel):
        """Gives `node` the durable name `rel` (which does not exist in BACKING yet)."""
        full = os.path.join(self.backing, rel)
        if node.is_dir:
            if node.paths:
                old = next(iter(node.paths))
                os.rename(os.path.join(self.backing, old), full)
                self._rebase(node, old, rel)
                return
            os.mkdir(full, 0o755)
            node.paths.add(rel)
            for name, child in node.durable_children.items():
                self._materialize(child, os.path.join(rel, name))
            return
        if node.paths:
            os.link(os.path.join(self.backing, next(iter(node.paths))), full)
        else:
            with open(full, "wb") as f:
                f.write(node.synced)
            node.synced = b""
        node.paths.add(rel)

    def _rebase(self, node, old, new):
        node.paths = {new + p[len(old):] if p == old or p.startswith(old + "/") else p for p in node.paths}
        if node.is_dir:
            for child in node.durable_children.values():
                self._rebase(child, old, new)

    def _forget(self, node, rel):
        """Drops the durable name `rel` of `node` (and, for a directory, all under it)."""
        if node.is_dir:
            for name, child in node.durable_children.items():
                self._forget(child, os.path.join(rel, name))
        elif not node.paths - {rel}:
            # Its last durable name goes: what was synced of it survives only in memory.
            self._keep_synced(node, rel)
        node.paths.discard(rel)

    def _keep_synced(self, node, rel):
        try:
            with open(os.path.join(self.backing, rel), "rb") as f:
                node.synced = f.read()
        except OSError:
            node.synced = b""

    def _sync_dir(self, node):
        old, new = node.durable_children, dict(node.children)
        if not node.paths:
            node.durable_children = new
            return
        base = next(iter(node.paths))
        # Additions first (a renamed file is linked under its new name before the old one
        # goes); a name that changes what it points to is replaced atomically.
        for name, child in new.items():
            if old.get(name) is child:
                continue
            rel = os.path.join(base, name)
            if name in old and old[name].is_dir:
                self._forget(old[name], rel)
                shutil.rmtree(os.path.join(self.backing, rel))
                self._materialize(child, rel)
            elif name in old:
                tmp = os.path.join(base, ".lazyfs-replace")
                self._materialize(child, tmp)
                self._forget(old[name], rel)
                os.rename(os.path.join(self.backing, tmp), os.path.join(self.backing, rel))
                self._rebase(child, tmp, rel)
            else:
                self._materialize(child, rel)
        for name, child in old.items():
            if name in new:
                continue
            rel = os.path.join(base, name)
            if rel not in child.paths:
                continue  # a directory moved away by the loop above
            self._forget(child, rel)
            full = os.path.join(self.backing, rel)
            if child.is_dir:
                shutil.rmtree(full)
            else:
                os.unlink(full)
        node.durable_children = new

    # --- the operations ---------------------------------------------------------------------

    def __call__(self, op, *args):
        if not hasattr(self, op):
            raise self._err(errno.ENOSYS)
        with self.lock:
            return getattr(self, op)(*args)

    def init(self, path):
        return None

    def destroy(self, path):
        return None

    def statfs(self, path):
        st = os.statvfs(self.backing)
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail", "f_flag", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def getattr(self, path, fh=None):
        node = self._node(path, fh)
        size = len(node.data)
        return {
            "st_mode": (stat.S_IFDIR if node.is_dir else stat.S_IFREG) | node.mode,
            "st_nlink": 2 if node.is_dir else 1,
            "st_size": 4096 if node.is_dir else size,
            "st_blocks": (size + 511) // 512,
            "st_blksize": 4096,
            "st_uid": node.uid,
            "st_gid": node.gid,
            "st_atime": node.atime,
            "st_mtime": node.mtime,
            "st_ctime": node.ctime,
        }

    def access(self, path, amode):
        self._resolve(path)
        return 0

    def chmod(self, path, mode):
        self._resolve(path).mode = stat.S_IMODE(mode)
        return 0

    def chown(self, path, uid, gid):
        node = self._resolve(path)
        node.uid = uid if uid != -1 else node.uid
        node.gid = gid if gid != -1 else node.gid
        return 0

    def utimens(self, path, times=None):
        node = self._resolve(path)
        now = time.time_ns()
        node.atime, node.mtime = times if times else (now, now)
        return 0

    def readdir(self, path, fh):
        node = self._resolve(path)
        if not node.is_dir:
            raise self._err(errno.ENOTDIR)
        return [".", ".."] + list(node.children)

    def opendir(self, path):
        if not self._resolve(path).is_dir:
            raise self._err(errno.ENOTDIR)
        return 0

    def releasedir(self, path, fh):
        return 0

    def fsyncdir(self, path, datasync, fh):
        node = self._resolve(path)
        self._sync_dir(node)
        return 0

    def mkdir(self, path, mode):
        parent, name = self._parent(path)
        if name in parent.children:
            raise self._err(errno.EEXIST)
        parent.children[name] = Node(True, stat.S_IMODE(mode))
        parent.touch()
        return 0

    def rmdir(self, path):
        parent, name = self._parent(path)
        node = parent.children.get(name)
        if node is None:
            raise self._err(errno.ENOENT)
        if not node.is_dir:
            raise self._err(errno.ENOTDIR)
        if node.children:
            raise self._err(errno.ENOTEMPTY)
        del parent.children[name]
        parent.touch()
        return 0

    def _handle(self, node):
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node
        return fh

    def create(self, path, mode, fi=None):
        parent, name = self._parent(path)
        node = parent.children.get(name)
        if node is None:
            node = Node(False, stat.S_IMODE(mode))
            parent.children[name] = node
            parent.touch()
        elif node.is_dir:
            raise self._err(errno.EISDIR)
        return self._handle(node)

    def open(self, path, flags):
        node = self._resolve(path)
        if flags & os.O_TRUNC and not node.is_dir:
            self._truncate(node, 0)
        return self._handle(node)

    def release(self, path, fh):
        self.handles.pop(fh, None)
        return 0

    def flush(self, path, fh):
        return 0

    def read(self, path, size, offset, fh):
        node = self._node(path, fh)
        node.atime = time.time_ns()
        return bytes(node.data[offset : offset + size])

    def write(self, path, data, offset, fh):
        node = self._node(path, fh)
        size = len(node.data)
        if offset > size:
            node.data.extend(b"\0" * (offset - size))
            node.dirty.append((size, offset))
        node.data[offset : offset + len(data)] = data
        node.dirty.append((offset, offset + len(data)))
        node.touch()
        return len(data)

    def _truncate(self, node, length):
        size = len(node.data)
        if length < size:
            del node.data[length:]
            node.dirty.append((length, size))
        elif length > size:
            node.data.extend(b"\0" * (length - size))
            node.dirty.append((size, length))
        node.touch()

    def truncate(self, path, length, fh=None):
        node = self._node(path, fh)
        if node.is_dir:
            raise self._err(errno.EISDIR)
        self._truncate(node, length)
        return 0

    def fsync(self, path, datasync, fh):
        node = self._node(path, fh)
        if node.is_dir:
            self._sync_dir(node)
        else:
            self._sync_file(node)
        return 0

    def unlink(self, path):
        parent, name = self._parent(path)
        node = parent.children.get(name)
        if node is None:
            raise self._err(errno.ENOENT)
        if node.is_dir:
            raise self._err(errno.EISDIR)
        del parent.children[name]
        parent.touch()
        return 0

    def rename(self, old, new):
        src_parent, src_name = self._parent(old)
        dst_parent, dst_name = self._parent(new)
        node = src_parent.children.get(src_name)
        if node is None:
            raise self._err(errno.ENOENT)
        target = dst_parent.children.get(dst_name)
        if target is node:
            return 0
        if target is not None:
            if target.is_dir != node.is_dir:
                raise self._err(errno.EISDIR if target.is_dir else errno.ENOTDIR)
            if target.is_dir and target.children:
                raise self._err(errno.ENOTEMPTY)
        del src_parent.children[src_name]
        dst_parent.children[dst_name] = node
        src_parent.touch()
        dst_parent.touch()
        return 0

    def link(self, target, source):
        # Hard links are not needed by hookbridge; refusing them keeps the model simple.
        raise self._err(errno.EPERM)


def main():
    if sys.argv[1:] == ["--check"]:
        load_fuse()
        return 0
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    fuse = load_fuse()
    backing, mountpoint = sys.argv[1:]
    fs = LazyFS(fuse, backing)
    fuse.FUSE(fs, mountpoint, foreground=True, nothreads=False, big_writes=True, hard_remove=True, default_permissions=True, fsname="lazyfs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
