"""Crash states: the disk contents a power cut could leave, ALICE (OSDI 2014) / LazyFS style.

A workload runs for real on a directory tree (the *root*, e.g. ``tmp/world`` holding
``bus/``) while :class:`Recorder` watches every call of the engine's I/O seam
(``filelog_bus.fs``: open, close, write, pwrite, write_zeros, ftruncate,
fallocate, fsync, fdatasync, link, replace, unlink, mkdir). It keeps a model of the root
in step with the real one, and after each call a *checkpoint* of what is durable and what is not. :func:`crash_states`
turns a checkpoint into the set of disk contents a power cut at that moment may leave,
and :func:`materialize` writes one into a fresh directory for the engine to recover.

The model (the pessimistic POSIX one that ALICE and LazyFS use; deliberately simple):

* **Files** are inodes with a *durable* content and a *current* content (bytes; the size
  is the length). ``fsync`` or ``fdatasync`` of a file makes its durable content equal
  its current content (both calls persist data and size here). Nothing else does.
* Until then, the file is split into 4 KiB **pages**; each page whose current bytes
  differ from the durable ones is an *unsynced item*, independently kept (current bytes)
  or lost (durable bytes; zeros where the durable file is shorter: a hole). The **size**
  is one more item when it changed: durable size or current size. So a crash can keep
  a later page and lose an earlier one, and keep a larger size with its pages lost.
  (Pages wholly beyond the current size, i.e. cut off by a truncation, have no item of
  their own: with the old size they read as their durable bytes.)
* **Directories** map names to inodes. Every directory operation (a file created by
  ``open(O_CREAT)``, ``link``, ``replace`` (one item: the new name and the removal of the
  old one), ``unlink``, ``mkdir``) is an unsynced item of its directory until that
  directory is fsync'd (``fs.fsync_directory`` opens it and fsyncs it); fsync of a *file*
  does not persist its name. Each unsynced directory operation is independently kept or
  lost, in ANY order: a state applies the kept ones, in call order, to the directory's
  durable entries. Operations name inodes, not paths, so a kept ``link`` of a file
  whose creation was lost still shows that file (with its durable content). An inode's
  content does not depend on its names: an unlinked file that is still written and
  synced keeps changing, which matters when its unlink is lost.
* ``O_TRUNC`` on an existing file is a truncation to 0 (a data change, as ftruncate);
  ``fallocate`` that extends a file appends zeros (a size change, as ftruncate).
* Page writes are atomic (no torn page); ordering between items is not assumed at all.

Crash points: one after each seam call that changed the model; a run of calls that change
nothing (a close, an open without O_CREAT, an fsync of a durable file) gives one point, the
last of the run. The workload calls ``Recorder.mark(value)`` after an append returned (or
any step it wants to check promises about); each checkpoint knows how many marks came
before it. Not modelled: torn pages, file modes, symlinks, renames across directories as one
item (the engine makes none), and anything done outside the seam.

Choosing states from a checkpoint with ``n`` unsynced items: every subset when
``n <= budget.exhaustive_up_to``; else "all kept", "all lost", each single item lost
(the others kept), each single item kept (the others lost), and ``budget.samples``
seeded random subsets more. States with identical contents are built once.

Calls outside the seam (a Python ``open()``, an ``mmap``) are invisible to the model;
:meth:`Recorder.unseen_changes` compares the model with the real tree after the workload
so that a test can refuse to draw conclusions from an incomplete recording.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from filelog_bus import fs

PAGE = 4096


# -- the model -----------------------------------------------------------------------


@dataclass(frozen=True)
class DirOp:
    """One directory operation: ``kind`` is create, link, mkdir, rename or unlink."""

    kind: str
    name: str
    #: The inode the name now refers to (None for unlink).
    inode: int | None = None
    #: For rename: the name that disappears.
    old_name: str | None = None

    def apply(self, entries: dict[str, int]) -> None:
        if self.kind == "unlink":
            entries.pop(self.name, None)
            return
        if self.kind == "rename":
            assert self.old_name is not None
            entries.pop(self.old_name, None)
        assert self.inode is not None
        entries[self.name] = self.inode


@dataclass(frozen=True)
class FileNode:
    durable: bytes
    current: bytes


@dataclass(frozen=True)
class DirNode:
    #: name -> inode, as a sorted tuple of pairs (hashable, immutable).
    durable: tuple[tuple[str, int], ...]
    current: tuple[tuple[str, int], ...]
    pending: tuple[DirOp, ...] = ()


Node = FileNode | DirNode


@dataclass(frozen=True)
class Checkpoint:
    """What is on disk and in flight right after one seam call."""

    #: inode -> node; nodes are immutable, a changed node is a new object.
    nodes: dict[int, Node]
    #: inode -> a path it had (relative to the root), to describe items.
    names: dict[int, str]
    #: Number of Recorder.mark() calls made before this point.
    marks: int
    #: Index of the seam call after which this is (-1: before the first call).
    call_index: int
    #: That call, for messages, e.g. "fdatasync(bus/00000000000000000000.log)".
    call: str

    def same_disk_as(self, other: Checkpoint) -> bool:
        return self.nodes.keys() == other.nodes.keys() and all(
            self.nodes[key] is other.nodes[key] for key in self.nodes
        )


ROOT = 0


def _entries(pairs: tuple[tuple[str, int], ...]) -> dict[str, int]:
    return dict(pairs)


def _pairs(entries: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(entries.items()))


class Model:
    """The root tree as the recorder sees it: current contents, durable contents, pending ops."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {ROOT: DirNode((), ())}
        self.names: dict[int, str] = {ROOT: "."}
        self._next = 1

    # snapshot ---------------------------------------------------------------------

    @classmethod
    def from_tree(cls, root: str) -> Model:
        """A model of the tree at ``root`` with everything in it durable."""
        model = cls()

        def load(path: str, relative: str) -> int:
            inode = model._new_inode(relative)
            if os.path.isdir(path):
                entries = {
                    name: load(os.path.join(path, name), os.path.join(relative, name))
                    for name in sorted(os.listdir(path))
                }
                model.nodes[inode] = DirNode(_pairs(entries), _pairs(entries))
            else:
                with open(path, "rb") as file:
                    data = file.read()
                model.nodes[inode] = FileNode(data, data)
            return inode

        entries = {name: load(os.path.join(root, name), name) for name in sorted(os.listdir(root))}
        model.nodes[ROOT] = DirNode(_pairs(entries), _pairs(entries))
        return model

    def _new_inode(self, name: str) -> int:
        inode = self._next
        self._next += 1
        self.names[inode] = name
        return inode

    # lookups ----------------------------------------------------------------------

    def lookup(self, relative: str) -> int | None:
        inode = ROOT
        for part in _parts(relative):
            node = self.nodes[inode]
            if not isinstance(node, DirNode):
                return None
            found = _entries(node.current).get(part)
            if found is None:
                return None
            inode = found
        return inode

    def _parent(self, relative: str) -> tuple[int, str]:
        parts = _parts(relative)
        assert parts, "the root itself has no parent in the model"
        parent = self.lookup(os.path.join(*parts[:-1])) if len(parts) > 1 else ROOT
        if parent is None or not isinstance(self.nodes[parent], DirNode):
            raise LookupError(f"the recorder does not know the directory of {relative}")
        return parent, parts[-1]

    # directory operations -----------------------------------------------------------

    def _dir_op(self, directory: int, op: DirOp) -> None:
        node = self.nodes[directory]
        assert isinstance(node, DirNode)
        entries = _entries(node.current)
        op.apply(entries)
        self.nodes[directory] = replace(node, current=_pairs(entries), pending=(*node.pending, op))

    def create(self, relative: str, content: bytes = b"", directory: bool = False) -> int:
        parent, name = self._parent(relative)
        inode = self._new_inode(relative)
        self.nodes[inode] = DirNode((), ()) if directory else FileNode(b"", content)
        self._dir_op(parent, DirOp("mkdir" if directory else "create", name, inode))
        return inode

    def link(self, source: str, target: str) -> None:
        inode = self.lookup(source)
        if inode is None:
            raise LookupError(f"the recorder does not know {source}")
        parent, name = self._parent(target)
        self._dir_op(parent, DirOp("link", name, inode))
        self.names[inode] = target

    def rename(self, source: str, target: str) -> None:
        inode = self.lookup(source)
        if inode is None:
            raise LookupError(f"the recorder does not know {source}")
        source_parent, source_name = self._parent(source)
        target_parent, target_name = self._parent(target)
        if source_parent == target_parent:
            self._dir_op(target_parent, DirOp("rename", target_name, inode, source_name))
        else:  # two directories: two items (the engine never does this)
            self._dir_op(target_parent, DirOp("link", target_name, inode))
            self._dir_op(source_parent, DirOp("unlink", source_name))
        self.names[inode] = target

    def unlink(self, relative: str) -> None:
        parent, name = self._parent(relative)
        self._dir_op(parent, DirOp("unlink", name))

    # file data ---------------------------------------------------------------------

    def write(self, inode: int, position: int, data: bytes) -> None:
        node = self.nodes[inode]
        assert isinstance(node, FileNode)
        current = node.current
        if len(current) < position:
            current += bytes(position - len(current))
        current = current[:position] + data + current[position + len(data) :]
        self.nodes[inode] = replace(node, current=current)

    def allocate(self, inode: int, position: int, length: int) -> None:
        """posix_fallocate: the file is at least position + length bytes long (zeros added)."""
        node = self.nodes[inode]
        assert isinstance(node, FileNode)
        if position + length > len(node.current):
            self.nodes[inode] = replace(
                node, current=node.current + bytes(position + length - len(node.current))
            )

    def truncate(self, inode: int, size: int) -> None:
        node = self.nodes[inode]
        assert isinstance(node, FileNode)
        current = node.current[:size] + bytes(max(0, size - len(node.current)))
        if current != node.current:
            self.nodes[inode] = replace(node, current=current)

    def sync(self, inode: int) -> None:
        node = self.nodes[inode]
        if isinstance(node, FileNode):
            if node.durable != node.current:
                self.nodes[inode] = FileNode(node.current, node.current)
        elif node.pending or node.durable != node.current:
            self.nodes[inode] = DirNode(node.current, node.current)

    def checkpoint(self, marks: int, call_index: int, call: str) -> Checkpoint:
        return Checkpoint(dict(self.nodes), dict(self.names), marks, call_index, call)

    def current_tree(self) -> dict[str, bytes | None]:
        """relative path -> current content (None for a directory)."""
        tree: dict[str, bytes | None] = {}

        def walk(inode: int, relative: str) -> None:
            node = self.nodes[inode]
            assert isinstance(node, DirNode)
            for name, child in node.current:
                path = os.path.join(relative, name) if relative else name
                child_node = self.nodes[child]
                if isinstance(child_node, DirNode):
                    tree[path] = None
                    walk(child, path)
                else:
                    tree[path] = child_node.current

        walk(ROOT, "")
        return tree


def _parts(relative: str) -> list[str]:
    return [part for part in os.path.normpath(relative).split(os.sep) if part not in ("", ".")]


# -- recording -------------------------------------------------------------------------


@dataclass
class Recording:
    """What a workload did: its checkpoints (crash points) and its marks."""

    root: str
    checkpoints: list[Checkpoint] = field(default_factory=list)
    #: Whatever the workload passed to Recorder.mark, in order.
    marks: list[Any] = field(default_factory=list)
    #: Differences between the model and the real tree after the workload (see unseen_changes).
    unseen: list[str] = field(default_factory=list)

    def crash_points(self) -> list[Checkpoint]:
        """One checkpoint per distinct disk state, the LAST of each run of identical ones.

        A seam call that changes nothing (an open without O_CREAT, a close, an fsync of a
        file already durable) leaves the same possible states; checking them with the most
        marks (e.g. appends returned) checks the strongest promise.
        """
        points: list[Checkpoint] = []
        for checkpoint in self.checkpoints:
            if points and points[-1].same_disk_as(checkpoint):
                points[-1] = checkpoint
            else:
                points.append(checkpoint)
        return points


class Recorder:
    """Wraps the seam (as tests/helpers/faults.py does) and keeps a Model of ``root`` in step.

    Use::

        with Recorder(root) as recorder:
            ...workload...; recorder.mark(something)   # e.g. after an append returned
        recording = recorder.recording
    """

    #: Files the engine may create outside the seam and that a crash state may omit.
    IGNORED = ("writer.lock",)

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.model = Model.from_tree(self.root)
        self.recording = Recording(self.root)
        #: fd -> (inode, flags); None for an fd outside the root.
        self._fds: dict[int, tuple[int, int] | None] = {}
        self._calls = 0
        self._originals: dict[str, Callable[..., Any]] = {}
        self._checkpoint(-1, "start")

    def mark(self, value: Any) -> None:
        self.recording.marks.append(value)
        # The disk did not change, but the last crash point now stands after the mark.
        last = self.recording.checkpoints[-1]
        self.recording.checkpoints[-1] = replace(last, marks=len(self.recording.marks))

    def _checkpoint(self, index: int, call: str) -> None:
        self.recording.checkpoints.append(self.model.checkpoint(len(self.recording.marks), index, call))

    def _relative(self, path: Any) -> str | None:
        absolute = os.path.abspath(os.fsdecode(path))
        if absolute == self.root:
            return "."
        if not absolute.startswith(self.root + os.sep):
            return None
        return os.path.relpath(absolute, self.root)

    def _adopt(self, relative: str) -> int:
        """A file made outside the seam: model it as an unsynced creation of its current bytes."""
        absolute = os.path.join(self.root, relative)
        if os.path.isdir(absolute):
            return self.model.create(relative, directory=True)
        with open(absolute, "rb") as file:
            return self.model.create(relative, file.read())

    def _inode(self, relative: str) -> int:
        inode = self.model.lookup(relative)
        return inode if inode is not None else self._adopt(relative)

    # the wrapped calls ------------------------------------------------------------------

    def _open(self, path: Any, flags: int, mode: int = 0o666) -> int:
        relative = self._relative(path)
        existed = relative is not None and os.path.lexists(os.path.join(self.root, relative))
        fd = self._originals["open"](path, flags, mode)
        if relative is None:
            self._fds[fd] = None
            return fd
        if not existed and flags & os.O_CREAT:
            inode = self.model.create(relative)
        else:
            inode = self._inode(relative)
            if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
                self.model.truncate(inode, 0)
        self._fds[fd] = (inode, flags)
        self._after("open", relative)
        return fd

    def _fd(self, fd: int) -> tuple[int, int] | None:
        if fd not in self._fds:
            # Not an error in the engine's eyes: note it, so the test refuses the recording.
            self.recording.unseen.append(f"fd {fd} used through the seam but not opened through it")
            self._fds[fd] = None
        return self._fds[fd]

    def _describe_fd(self, fd: int) -> str:
        known = self._fds.get(fd)
        return self.model.names.get(known[0], "?") if known else f"fd {fd}"

    def _write(self, fd: int, data: Any) -> int:
        known = self._fd(fd)
        if known is not None and known[1] & os.O_APPEND:
            position = os.fstat(fd).st_size
        else:
            position = os.lseek(fd, 0, os.SEEK_CUR)
        written = self._originals["write"](fd, data)
        if known is not None:
            self.model.write(known[0], position, bytes(memoryview(data)[:written]))
            self._after("write", self._describe_fd(fd), f"{written} bytes at {position}")
        return written

    def _pwrite(self, fd: int, data: Any, position: int) -> int:
        known = self._fd(fd)
        written = self._originals["pwrite"](fd, data, position)
        if known is not None:
            self.model.write(known[0], position, bytes(memoryview(data)[:written]))
            self._after("pwrite", self._describe_fd(fd), f"{written} bytes at {position}")
        return written

    def _write_zeros(self, fd: int, length: int, position: int) -> int:
        known = self._fd(fd)
        written = self._originals["write_zeros"](fd, length, position)
        if known is not None:
            self.model.write(known[0], position, bytes(written))
            self._after("write_zeros", self._describe_fd(fd), f"{written} bytes at {position}")
        return written

    def _ftruncate(self, fd: int, size: int) -> None:
        known = self._fd(fd)
        self._originals["ftruncate"](fd, size)
        if known is not None:
            self.model.truncate(known[0], size)
            self._after("ftruncate", self._describe_fd(fd), str(size))

    def _fallocate(self, fd: int, position: int, length: int) -> None:
        known = self._fd(fd)
        self._originals["fallocate"](fd, position, length)
        if known is not None:
            self.model.allocate(known[0], position, length)
            self._after("fallocate", self._describe_fd(fd), f"{length} bytes at {position}")

    def _sync(self, name: str) -> Callable[[int], None]:
        def call(fd: int) -> None:
            known = self._fd(fd)
            self._originals[name](fd)
            if known is not None:
                self.model.sync(known[0])
                self._after(name, self._describe_fd(fd))

        return call

    def _close(self, fd: int) -> None:
        self._originals["close"](fd)
        known = self._fds.pop(fd, None)
        if known is not None:
            self._after("close", self.model.names.get(known[0], "?"))

    def _link(self, source: Any, target: Any, **kwargs: Any) -> None:
        assert not kwargs, f"link with {kwargs} is not modelled"
        self._originals["link"](source, target)
        relative_source, relative_target = self._relative(source), self._relative(target)
        if relative_target is not None:
            assert relative_source is not None, "a link into the root from outside is not modelled"
            self._inode(relative_source)
            self.model.link(relative_source, relative_target)
            self._after("link", relative_source, relative_target)

    def _replace(self, source: Any, target: Any, **kwargs: Any) -> None:
        assert not kwargs, f"replace with {kwargs} is not modelled"
        self._originals["replace"](source, target)
        relative_source, relative_target = self._relative(source), self._relative(target)
        if relative_target is not None:
            assert relative_source is not None, "a rename into the root from outside is not modelled"
            if self.model.lookup(relative_source) is None:
                # Made outside the seam: adopt it under its new name, then the rename.
                absolute = os.path.join(self.root, relative_target)
                with open(absolute, "rb") as file:
                    self.model.create(relative_source, file.read())
            self.model.rename(relative_source, relative_target)
            self._after("replace", relative_source, relative_target)

    def _unlink(self, path: Any, **kwargs: Any) -> None:
        assert not kwargs, f"unlink with {kwargs} is not modelled"
        self._originals["unlink"](path)
        relative = self._relative(path)
        if relative is not None:
            self._inode_or_none(relative)
            self.model.unlink(relative)
            self._after("unlink", relative)

    def _inode_or_none(self, relative: str) -> None:
        # unlink of a name the model does not know: model its (unsynced) creation first.
        if self.model.lookup(relative) is None:
            self.model.create(relative)

    def _mkdir(self, path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        assert not kwargs, f"mkdir with {kwargs} is not modelled"
        self._originals["mkdir"](path, mode)
        relative = self._relative(path)
        if relative is not None:
            self.model.create(relative, directory=True)
            self._after("mkdir", relative)

    def _after(self, name: str, *arguments: str) -> None:
        self._checkpoint(self._calls, f"{name}({', '.join(arguments)})")
        self._calls += 1

    # context manager ---------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        wrappers = {
            "open": self._open,
            "close": self._close,
            "write": self._write,
            "pwrite": self._pwrite,
            "ftruncate": self._ftruncate,
            "fsync": self._sync("fsync"),
            "fdatasync": self._sync("fdatasync"),
            "link": self._link,
            "replace": self._replace,
            "unlink": self._unlink,
            "mkdir": self._mkdir,
            "fallocate": self._fallocate,
            "write_zeros": self._write_zeros,
        }
        unknown = set(fs.SEAM) - set(wrappers)
        assert not unknown, f"the seam has calls the recorder does not model: {sorted(unknown)}; update it"
        self._originals = {name: getattr(fs, name) for name in wrappers if hasattr(fs, name)}
        for name in self._originals:
            setattr(fs, name, wrappers[name])
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name, original in self._originals.items():
            setattr(fs, name, original)
        self.recording.unseen += self.unseen_changes()

    def unseen_changes(self) -> list[str]:
        """Where the model's current tree differs from the real one (changes made outside the seam)."""
        model = self.model.current_tree()
        real: dict[str, bytes | None] = {}
        for directory, subdirectories, files in os.walk(self.root):
            relative = os.path.relpath(directory, self.root)
            for name in subdirectories:
                real[os.path.normpath(os.path.join(relative, name))] = None
            for name in files:
                with open(os.path.join(directory, name), "rb") as file:
                    real[os.path.normpath(os.path.join(relative, name))] = file.read()
        problems = []
        for path in sorted(model.keys() | real.keys()):
            if os.path.basename(path) in self.IGNORED:
                continue
            if path not in real:
                problems.append(f"{path}: in the model, not on disk")
            elif path not in model:
                problems.append(f"{path}: on disk, never seen through the seam")
            elif model[path] != real[path]:
                problems.append(
                    f"{path}: changed outside the seam (e.g. through mmap or a Python file object)"
                )
        return problems


# -- crash states -------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One unsynced item of a checkpoint."""

    kind: str  # "dir", "page" or "size"
    inode: int
    #: dir: index in the directory's pending ops; page: page number; size: 0.
    index: int
    text: str


@dataclass(frozen=True)
class CrashState:
    checkpoint: Checkpoint
    #: relative path -> content, None for a directory.
    tree: dict[str, bytes | None]
    #: Hard links: relative path -> the first path of the same inode.
    links: dict[str, str]
    kept: tuple[Item, ...]
    lost: tuple[Item, ...]

    def describe(self) -> str:
        kept = "; ".join(item.text for item in self.kept) or "-"
        lost = "; ".join(item.text for item in self.lost) or "-"
        return (
            f"crash after call #{self.checkpoint.call_index} {self.checkpoint.call} "
            f"({self.checkpoint.marks} marks); kept: {kept}; lost: {lost}"
        )


@dataclass(frozen=True)
class Budget:
    #: Every subset when there are at most this many unsynced items.
    exhaustive_up_to: int = 8
    #: Else the extremes, every single-item flip, and this many random subsets.
    samples: int = 40
    seed: int = 1


def _page(data: bytes, number: int) -> bytes:
    chunk = data[number * PAGE : (number + 1) * PAGE]
    return chunk + bytes(PAGE - len(chunk))


def unsynced_items(checkpoint: Checkpoint) -> list[Item]:
    nodes = checkpoint.nodes
    referenced: set[int] = set()
    items: list[Item] = []
    for inode, node in sorted(nodes.items()):
        if isinstance(node, DirNode):
            referenced.update(child for _, child in node.durable)
            directory = checkpoint.names.get(inode, "?")
            for index, op in enumerate(node.pending):
                if op.inode is not None:
                    referenced.add(op.inode)
                what = f"{op.old_name} -> {op.name}" if op.kind == "rename" else op.name
                items.append(Item("dir", inode, index, f"{op.kind} {os.path.join(directory, what)}"))
    for inode in sorted(referenced):
        node = nodes[inode]
        if not isinstance(node, FileNode) or node.durable == node.current:
            continue
        name = checkpoint.names.get(inode, "?")
        pages = (len(node.current) + PAGE - 1) // PAGE
        for number in range(pages):
            if _page(node.current, number) != _page(node.durable, number):
                items.append(Item("page", inode, number, f"{name} page {number}"))
        if len(node.current) != len(node.durable):
            items.append(Item("size", inode, 0, f"{name} size {len(node.durable)} -> {len(node.current)}"))
    return items


def build_state(checkpoint: Checkpoint, items: list[Item], kept: set[int]) -> CrashState:
    """The disk contents when the items whose positions are in ``kept`` reached the disk."""
    kept_items = [item for position, item in enumerate(items) if position in kept]
    kept_ops = {(item.inode, item.index) for item in kept_items if item.kind == "dir"}
    kept_pages = {(item.inode, item.index) for item in kept_items if item.kind == "page"}
    kept_sizes = {item.inode for item in kept_items if item.kind == "size"}
    tree: dict[str, bytes | None] = {}
    links: dict[str, str] = {}
    first_path: dict[int, str] = {}

    def content(inode: int, node: FileNode) -> bytes:
        size = len(node.current) if inode in kept_sizes else len(node.durable)
        pages = []
        for number in range((size + PAGE - 1) // PAGE):
            source = node.current if (inode, number) in kept_pages else node.durable
            pages.append(_page(source, number))
        return b"".join(pages)[:size]

    def walk(inode: int, relative: str, seen: frozenset[int]) -> None:
        node = checkpoint.nodes[inode]
        assert isinstance(node, DirNode)
        entries = _entries(node.durable)
        for index, op in enumerate(node.pending):
            if (inode, index) in kept_ops:
                op.apply(entries)
        for name, child in sorted(entries.items()):
            path = os.path.join(relative, name) if relative else name
            child_node = checkpoint.nodes[child]
            if isinstance(child_node, DirNode):
                if child in seen:
                    continue
                tree[path] = None
                walk(child, path, seen | {child})
            elif child in first_path:
                links[path] = first_path[child]
                tree[path] = tree[first_path[child]]
            else:
                first_path[child] = path
                tree[path] = content(child, child_node)

    walk(ROOT, "", frozenset({ROOT}))
    lost_items = [item for position, item in enumerate(items) if position not in kept]
    return CrashState(checkpoint, tree, links, tuple(kept_items), tuple(lost_items))


def _subsets(count: int, budget: Budget, seed: int) -> list[set[int]]:
    everything = set(range(count))
    if count <= budget.exhaustive_up_to:
        return [{i for i in range(count) if mask >> i & 1} for mask in range(1 << count)]
    chosen: list[set[int]] = [set(everything), set()]
    chosen += [everything - {i} for i in range(count)] + [{i} for i in range(count)]
    rng = random.Random(seed)
    seen = {frozenset(subset) for subset in chosen}
    wanted = len(chosen) + budget.samples
    attempts = 0
    while len(chosen) < wanted and attempts < budget.samples * 20:
        attempts += 1
        subset = {i for i in range(count) if rng.random() < 0.5}
        if frozenset(subset) not in seen:
            seen.add(frozenset(subset))
            chosen.append(subset)
    return chosen


def crash_states(checkpoint: Checkpoint, budget: Budget = Budget()) -> list[CrashState]:
    """The distinct disk states a power cut right after ``checkpoint``'s call may leave."""
    items = unsynced_items(checkpoint)
    states: list[CrashState] = []
    seen: set[bytes] = set()
    for subset in _subsets(len(items), budget, budget.seed * 1_000_003 + checkpoint.call_index):
        state = build_state(checkpoint, items, subset)
        digest = state_digest(state)
        if digest not in seen:
            seen.add(digest)
            states.append(state)
    return states


def state_digest(state: CrashState) -> bytes:
    digest = hashlib.sha256()
    for path, data in sorted(state.tree.items()):
        digest.update(path.encode() + b"\0")
        digest.update(b"D" if data is None else b"F" + hashlib.sha256(data).digest())
        digest.update(state.links.get(path, "").encode() + b"\0")
    return digest.digest()


def materialize(state: CrashState, target: str) -> str:
    """Write ``state`` into the directory ``target`` (created, must not exist); return it."""
    os.mkdir(target)
    for path, data in sorted(state.tree.items()):  # a directory sorts before its entries
        absolute = os.path.join(target, path)
        if data is None:
            os.mkdir(absolute)
        elif path not in state.links:
            with open(absolute, "wb") as file:
                file.write(data)
    for path, first in sorted(state.links.items()):  # hard links once their first names exist
        os.link(os.path.join(target, first), os.path.join(target, path))
    return target


def durable_tree(checkpoint: Checkpoint) -> dict[str, bytes | None]:
    """The "all unsynced items lost" state: only what was made durable."""
    return build_state(checkpoint, unsynced_items(checkpoint), set()).tree


def copy_tree(source: str, target: str) -> None:
    """Copy a directory tree (a snapshot to record from), files and directories only."""
    os.mkdir(target)
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        if os.path.isdir(path):
            copy_tree(path, os.path.join(target, name))
        else:
            with open(path, "rb") as file, open(os.path.join(target, name), "wb") as out:
                out.write(file.read())
