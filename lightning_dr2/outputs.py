"""Where the framework writes: the one check of an output location, the one claim on it, and the one wording
of a failed write.

Every command that writes checks its output location first with `check_output_location` (a file where a
folder should be, a read-only or full file system, a folder where a file should be), so the user gets a
message naming the flag or key and what to do, before hours of work. `claim_output` makes a job the only
writer of its output folder: a second process on the same run or output folder stops with a message instead
of interleaving files with the first (DDP ranks of one job share it: only rank 0 claims). `os_error_message`
words any OS error (a disk that fills up mid-run, a folder that vanishes) for the command line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

# Below this much free space a job would fail at its first real write: say so before it starts.
MIN_FREE_BYTES = 1 << 20

LOCK_NAME = ".dr2.lock"  # hidden: `image_io.list_images` never lists it

# Environment variables that give a process's rank in a multi-process job (torchrun, SLURM, Lightning's launcher).
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


class OutputError(Exception):
    """An output location that cannot be used (a file, read-only, full, or in use by another process)."""


_RERUN = "; then rerun the same command: finished outputs are kept and reused"
_WHAT: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", f"free space there or choose another location{_RERUN}"),
    errno.EDQUOT: ("disk quota exceeded", f"free space there or choose another location{_RERUN}"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.EACCES: ("permission denied", "choose a location you can write to (or fix its permissions)"),
    errno.EPERM: ("operation not permitted", "choose a location you can write to (or fix its permissions)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a folder path, or move the file away"),
    errno.EEXIST: ("a file of that name is in the way", "choose another path, or move the file away"),
    errno.EISDIR: ("it is a folder, not a file", "give a file path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
    errno.EIO: ("input/output error from the device", "check the disk or network file system, then rerun"),
    errno.EINVAL: ("invalid argument (a truncated or unreadable file?)", "check the file"),
}


def os_error_message(err: OSError, flag: str | None = None) -> str:
    """One line for the user: which path (and flag), what went wrong, what to do; a rerun resumes."""
    what, todo = _WHAT.get(err.errno or -1, (err.strerror or str(err), "check the path and rerun"))
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    where = f"{flag} {paths}" if flag and paths else (flag or paths or "a file operation")
    return f"{where}: {what} ([Errno {err.errno}] {err.strerror or err}); {todo}"


def check_output_location(
    path: str | os.PathLike, flag: str, kind: Literal["folder", "file"] = "folder", min_free: int = MIN_FREE_BYTES
) -> Path:
    """`path` can receive the job's output (a folder, or a file to be written), else `OutputError` naming `flag`.

    Refused: a file where the folder (or a folder above it) should be; a folder where the file should be; a
    location the job cannot write (read-only, no permission: probed with a real write); less than `min_free`
    bytes free. The folder (the file's folder) is created. An existing file output is replaced, with a warning.
    """
    path = Path(path)
    folder = path if kind == "folder" else path.parent
    if kind == "file" and path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give the path of the file to write (e.g. {path / 'out'})")
    for part in (folder, *folder.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                where = "is a file" if part == folder else f"lies under {part}, which is a file"
                raise OutputError(f"{flag} {path} {where}, not a folder: choose another path or move the file away")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_write(folder)
        free = shutil.disk_usage(folder).free
    except OSError as err:
        raise OutputError(os_error_message(err, flag)) from None
    if free < min_free:
        raise OutputError(
            f"{flag} {folder}: no space left on its device ({free} bytes free); free space there or choose "
            "another location"
        )
    if kind == "file" and path.is_file():
        log.warning("%s %s exists: it will be replaced", flag, path)
    return path


def probe_write(folder: Path) -> None:
    """Write and delete one byte in `folder`: the only test of writability that holds for root, ACLs, read-only
    mounts and full disks alike (permission bits say nothing about them)."""
    probe = folder / f".write-test-{socket.gethostname()}-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"x")
    finally:
        probe.unlink(missing_ok=True)


def is_first_process() -> bool:
    """Whether this process is rank 0 of its job (or alone): the one that claims and announces outputs."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


_claimed: dict[str, int] = {}  # resolved folder -> open lock file descriptor, held until the process exits


def claim_output(folder: str | os.PathLike, flag: str) -> Path:
    """Make this process the only writer of `folder` until it exits (re-entrant within the process).

    An exclusive `flock` on `folder/.dr2.lock`, released by the kernel when the process ends however it ends
    (no stale locks after a kill or a node failure). Another process holding it: `OutputError` naming it
    (pid, host, start) and the flag. Ranks other than 0 of a multi-process job do not claim: they write into
    the folder their rank 0 holds. File systems without locks: a warning, and no claim.
    """
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _claimed or not is_first_process():
        return folder
    lock = folder / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OutputError(os_error_message(err, flag)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _read_holder(fd)
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise OutputError(
                f"{flag} {folder} is in use by another job ({holder}): two jobs writing one folder would overwrite "
                "each other's files. Wait for it to finish, or choose another folder (or run= name)"
            ) from None
        log.warning("cannot lock %s (%s): the file system has no locks; nothing stops a second job", lock, err)
        return folder
    os.ftruncate(fd, 0)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    os.write(fd, (json.dumps(holder) + "\n").encode())
    _claimed[key] = fd
    return folder


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said which"


def release_output(folder: str | os.PathLike) -> None:
    """Give up a claim before the process ends (a library caller running jobs one after the other)."""
    fd = _claimed.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)


def unique_run_name(parent: str | os.PathLike, stamp: str) -> str:
    """`stamp`, or `stamp-2`, `stamp-3`, ...: the first whose folder under `parent` this process creates itself.

    An exclusive `mkdir`, so two runs started in the same second never share a run directory."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        name = stamp if n == 1 else f"{stamp}-{n}"
        try:
            (parent / name).mkdir()
            return name
        except FileExistsError:
            continue
    raise OutputError(f"{parent}: 999 runs named {stamp}*; name the run with run=NAME")
