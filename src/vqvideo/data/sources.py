"""Where videos come from: the user's folder or glob, http(s) URLs, or a Moving MNIST array.

Every input gets one manifest row; an input that cannot be used is kept as a `skipped` row with
its reason, and the good ones are still collected.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import re
import shutil
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vqvideo.data.video import LOSSLESS, VideoError, probe, write_video
from vqvideo.io import atomic_path, sha256_file

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {
    ".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".gif",
}


@dataclass
class ManifestRow:
    path: str  # relative to the raw folder for kept videos, else where it came from
    source: str
    origin: str
    sha256: str = ""
    frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    status: str = "ok"
    reason: str = ""
    split: str = ""  # a split the source insists on (synthetic held-out digits), else empty
    labels: dict = field(default_factory=dict, repr=False)

    def record(self) -> dict:
        d = asdict(self)
        d.pop("labels")
        return d


def safe_name(index: int, name: str, suffix: str) -> str:
    """A file name safe on any filesystem: index, an ASCII slug of the original stem, suffix."""
    stem = unicodedata.normalize("NFKD", Path(name).stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_")[:40] or "video"
    suffix = suffix.lower() if suffix.lower() in VIDEO_EXTENSIONS else ".bin"
    return f"{index:05d}_{stem}{suffix}"


def skip(row: ManifestRow, reason: str) -> ManifestRow:
    row.status, row.reason = "skipped", reason
    log.warning("skipping %s: %s", row.origin, reason)
    return row


def fill_probe(row: ManifestRow, file: Path) -> ManifestRow:
    try:
        info = probe(file)
    except VideoError as err:
        return skip(row, str(err))
    row.frames, row.fps, row.width, row.height = info.frames, info.fps, info.width, info.height
    return row


# ---------------------------------------------------------------- folder


def list_folder(pattern: str) -> list[Path]:
    p = Path(pattern).expanduser()
    if p.is_dir():
        files = [f for f in sorted(p.rglob("*")) if f.is_file()]
    else:
        files = [Path(f) for f in sorted(glob.glob(str(p), recursive=True)) if Path(f).is_file()]
    return [f for f in files if not f.name.startswith(".")]


def collect_file(index: int, src: Path, videos_dir: Path, rel_root: Path) -> ManifestRow:
    row = ManifestRow(path=str(src), source="folder", origin=str(src))
    row = fill_probe(row, src)
    if row.status != "ok":
        return row
    dest = videos_dir / safe_name(index, src.name, src.suffix)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    row.sha256 = sha256_file(dest)
    row.path = str(dest.relative_to(rel_root))
    return row


# ---------------------------------------------------------------- urls


class _SafeRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): a redirect to file:// or ftp:// is refused."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise urllib.error.URLError(f"redirect to a {scheme or 'relative'}:// URL refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_SafeRedirect)


class DownloadError(Exception):
    pass


def download(url: str, dest: Path, *, timeout: float, max_bytes: int) -> str:
    """Stream `url` into `dest` (atomically) and return its sha256; enforce scheme, size, time."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"only http and https URLs are allowed, not {scheme or 'a bare path'}")
    deadline = time.monotonic() + timeout
    req = urllib.request.Request(url, headers={"User-Agent": "vqvideo-collect"})
    h = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with _opener.open(req, timeout=timeout) as resp, open(tmp, "wb") as out:
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise DownloadError(f"too large: {int(length)} bytes > collect.max_bytes={max_bytes}")
            total = 0
            while block := resp.read(1 << 16):
                total += len(block)
                if total > max_bytes:
                    raise DownloadError(f"too large: over collect.max_bytes={max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise DownloadError(f"too slow: not finished within collect.timeout_s={timeout}s")
                h.update(block)
                out.write(block)
    return h.hexdigest()


def collect_url(
    index: int, entry: str | dict, videos_dir: Path, rel_root: Path, *, timeout: float,
    max_bytes: int, retries: int,
) -> ManifestRow:
    url = entry if isinstance(entry, str) else entry.get("url", "")
    expected = None if isinstance(entry, str) else entry.get("sha256")
    row = ManifestRow(path=url, source="urls", origin=url)
    name_hint = Path(urllib.parse.urlsplit(url).path).name or "download"
    dest = videos_dir / safe_name(index, name_hint, Path(name_hint).suffix)
    for attempt in range(retries + 1):
        try:
            digest = download(url, dest, timeout=timeout, max_bytes=max_bytes)
            break
        except DownloadError as err:  # final: retrying will not change it
            return skip(row, str(err))
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = getattr(err, "reason", None) or err
            if attempt == retries:
                return skip(row, f"download failed after {retries + 1} tries: {reason}")
            time.sleep(min(0.5 * 2**attempt, 5.0))
    if expected and digest.lower() != expected.lower():
        dest.unlink(missing_ok=True)
        return skip(row, f"sha256 mismatch: expected {expected}, got {digest}")
    row.sha256 = digest
    row = fill_probe(row, dest)
    if row.status != "ok":
        dest.unlink(missing_ok=True)
        row.sha256 = digest
        return row
    row.path = str(dest.relative_to(rel_root))
    return row


# ---------------------------------------------------------------- moving mnist


def load_moving_mnist(path: str | Path) -> np.ndarray:
    """The standard `mnist_test_seq.npy`: (T=20, N, 64, 64) uint8, memory-mapped."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise ValueError(f"expected a (T, N, H, W) uint8 array like mnist_test_seq.npy, got {arr.dtype} {arr.shape}")
    return arr


def collect_moving_mnist_sequence(
    index: int, seq: np.ndarray, videos_dir: Path, rel_root: Path, fps: float, origin: str
) -> ManifestRow:
    dest = write_video(videos_dir / f"{index:05d}_mmnist{LOSSLESS[1]}", np.ascontiguousarray(seq), fps)
    t, h, w = seq.shape
    return ManifestRow(
        path=str(dest.relative_to(rel_root)), source="moving_mnist", origin=f"{origin}[:, {index}]",
        sha256=sha256_file(dest), frames=t, fps=fps, width=w, height=h,
    )
