"""Files that are either the old version or the new one, never torn.

Everything a stage writes goes through a temporary name in the same folder and `os.replace`,
which is atomic on POSIX; a stage killed mid-write leaves the previous output in place. A folder
is filled under a temporary name and swapped in whole (an atomic exchange on Linux), so its files
always belong to one run. Temporary names carry the writer's process id: the next writer of the
same output removes what a killed one left behind. Outputs get the user's umask like any file
(0644 and 0755 under the usual 022), not the private 0600 / 0700 of the temporaries.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vqvideo.errors import VQVideoError

log = logging.getLogger(__name__)


# Which machine wrote a temporary: on a shared filesystem another host's process ids mean
# nothing here, so its temporaries are never taken for a dead writer's.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}.{_HOST}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


# `.<output name>.<pid>.<host>.<8 random chars from mkstemp><suffix>`: every temporary made here
_TEMP = re.compile(r"^\.(.+?)\.(\d+)\.([0-9a-f]{8})\.[a-z0-9_]{8}")
_PARKED = re.compile(r"^\.(.+)\.old$")
_CLEANED: set[tuple[int, str]] = set()  # (pid, folder) already cleaned by this process


def clean_stale(path: str | Path) -> list[Path]:
    """Remove the temporaries killed writers left in `path`'s folder; return them.

    A temporary of a live process (another writer, or this one) or of another machine is kept.
    A folder swap killed between its two renames is finished here: the previous version, parked
    as `.<name>.old`, goes back into place.
    """
    parent = Path(path).parent
    if not parent.is_dir():
        return []
    removed = []
    for entry in parent.iterdir():
        m = _TEMP.match(entry.name)
        if m and m.group(3) == _HOST and not _pid_alive(int(m.group(2))):
            _remove(entry)
            removed.append(entry)
            continue
        m = _PARKED.match(entry.name)
        if m and not (parent / m.group(1)).exists():
            os.replace(entry, parent / m.group(1))
            log.warning("restored %s: the previous writer was killed while swapping it", parent / m.group(1))
    if removed:
        log.info("removed %d temporary file(s) that killed writers left in %s", len(removed), parent)
    return removed


def _clean_once(path: Path) -> None:
    """`clean_stale` for the first write into a folder: a later one would find nothing new (a
    writer killed meanwhile is another process's to clean), and collect writes thousands of
    files into one folder, where a scan per file would cost O(n^2)."""
    key = (os.getpid(), str(path.parent.resolve()))
    if key not in _CLEANED:
        _CLEANED.add(key)
        clean_stale(path)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask can only set it: swapping it
    back and forth would give a file another thread creates meanwhile the wrong mode)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS) or a kernel before 4.7
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable across a power cut, not just a killed process."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_once(path)
    fd, tmp = tempfile.mkstemp(
        prefix=_tmp_prefix(path), suffix=suffix if suffix is not None else path.suffix + ".tmp",
        dir=path.parent,
    )
    tmp_path = Path(tmp)
    try:
        try:  # mkstemp makes it 0600; the output gets the user's umask, like any file
            os.fchmod(fd, 0o666 & ~_umask())
        finally:
            os.close(fd)
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: str | Path, df) -> None:  # noqa: ANN001 - a pandas DataFrame
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_history(path: str | Path, rows: list[dict]) -> None:
    """history.csv (both splits) plus train.csv and val.csv beside it, for `dvc plots`."""
    import pandas as pd

    path = Path(path)
    df = pd.DataFrame(rows)
    write_csv(path, df)
    for split in ("train", "val"):
        write_csv(path.with_name(f"{split}.csv"), df[df.split == split].dropna(axis=1, how="all"))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".tmp.npy") as tmp:
        np.save(tmp, array)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_json(path: str | Path, what: str | None = None) -> Any:
    """Parse a JSON file; a torn or hand-edited one is a clear error, not a traceback."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VQVideoError(f"{what or path.name} not found at {path}; run the stage that writes it first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VQVideoError(
            f"{what or path.name} at {path} is not valid JSON ({err}); delete it and re-run the stage "
            "that writes it"
        ) from None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save through a temporary file; `state` must hold only tensors and plain types."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, what: str = "checkpoint", hint: str = "re-run the stage that writes it") -> dict[str, Any]:
    """Load with weights_only=True: a file carrying pickled code is refused, not run.

    `hint` says what to do, e.g. "run `dvc repro train`"; every failure is one line.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        raise VQVideoError(f"{what} at {path} is a folder, not a model file; {hint}")
    if not path.exists():
        raise VQVideoError(f"{what} not found at {path}; {hint}")
    if path.stat().st_size == 0:
        raise VQVideoError(f"{what} at {path} is empty (0 bytes); delete it and {hint}")
    if _truncated_zip(path):
        raise VQVideoError(
            f"{what} at {path} is truncated (an interrupted copy or download?); delete it and {hint}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message suggests weights_only=False: the one thing never to do here.
        found = re.search(r"unsupported global ([\w.]+)", str(err), re.IGNORECASE)
        detail = f" (it calls for {found.group(1)})" if found else ""
        raise VQVideoError(
            f"{what} at {path} holds Python objects, not only tensors{detail}, and was refused "
            f"without running them; vqvideo never writes such files: do not use it, {hint}"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        if "central directory" in first or "zip archive" in first or isinstance(err, EOFError):
            reason = "it is truncated (an interrupted copy or download?)"
        else:
            reason = f"it is corrupt or not a PyTorch file: {type(err).__name__}: {first[:160]}"
        raise VQVideoError(f"{what} at {path} cannot be loaded: {reason}; delete it and {hint}") from None


def _truncated_zip(path: Path) -> bool:
    """torch.save writes a zip: one that starts like a zip but has no end record was cut short."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return False
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - (1 << 16) - 22))  # the end record: 22 bytes + a comment of < 64 KiB
        return b"PK\x05\x06" not in f.read()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:  # glibc < 2.28, musl, macOS
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # the filesystem cannot exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Swap a fully written folder into place; the old one is removed only after the swap.

    On Linux the swap is one atomic exchange, so `final_dir` always holds a whole version.
    Elsewhere it takes two renames; a kill between them leaves the old version parked as
    `.<name>.old`, which the next writer (see `clean_stale`) moves back.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if final_dir.is_dir() and not final_dir.is_symlink() and _exchange(tmp_dir, final_dir):
        _fsync_dir(final_dir.parent)
        shutil.rmtree(tmp_dir)  # now the previous version
        return
    old = final_dir.with_name(f".{final_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    _fsync_dir(final_dir.parent)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def staging_dir(final_dir: str | Path) -> Iterator[Path]:
    """A temporary sibling folder to fill; swapped onto `final_dir` when the block succeeds."""
    with scratch_dir(final_dir) as tmp:
        yield tmp
        replace_dir(tmp, final_dir)  # tmp is gone after this; scratch_dir has nothing left to remove


@contextlib.contextmanager
def scratch_dir(beside: str | Path) -> Iterator[Path]:
    """A temporary folder next to `beside`, always removed on exit; the caller moves finished
    files out of it with `os.replace` (same filesystem: atomic). Named like `staging_dir`'s, so a
    killed writer's scratch folder is removed by the next writer of `beside`."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    _clean_once(beside)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(beside), suffix=".tmp", dir=beside.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; staging_dir swaps it into place
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
