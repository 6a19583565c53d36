"""Where videos come from: the user's folder or glob, http(s) URLs, or a Moving MNIST array.

Every input gets one manifest row; an input that cannot be used is kept as a `skipped` row with
its reason, and the good ones are still collected. Functions here only fill rows; the collect
stage logs one warning line per skipped row (from the main process, so workers stay quiet).
"""

from __future__ import annotations

import glob
import hashlib
import http.client
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

# What a folder source picks up (case-insensitive). A glob takes whatever it matches, so a user
# with an unusual extension can still point at it.
VIDEO_EXTENSIONS = {
    ".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv",
    ".ogg", ".gif", ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".mxf", ".nut", ".y4m", ".vob",
    ".asf", ".dv", ".mjpeg", ".mjpg", ".ivf", ".h264", ".264", ".hevc", ".h265",
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
    """A file name safe on any filesystem: index, an ASCII slug of the original stem, suffix.

    Never a path: separators, dots and anything non-ASCII become `_` or vanish, so neither a
    folder's odd names nor a hostile URL can place a file outside data/raw/videos.
    """
    stem = unicodedata.normalize("NFKD", Path(name).stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_")[:40] or "video"
    suffix = suffix.lower() if suffix.lower() in VIDEO_EXTENSIONS else ".bin"
    return f"{index:05d}_{stem}{suffix}"


def skip(row: ManifestRow, reason: str) -> ManifestRow:
    row.status, row.reason = "skipped", reason
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
    """Video files under a folder (recursively, by extension), or every file a glob matches.

    Hidden files and folders (a leading dot) are left out; the order is sorted, so the manifest
    and everything downstream are reproducible.
    """
    p = Path(pattern).expanduser()
    if p.is_dir():
        files = [
            f for f in sorted(p.rglob("*"))
            if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        ]
    else:
        files = [
            Path(f) for f in sorted(glob.glob(str(p), recursive=True))
            if Path(f).is_file() and not Path(f).name.startswith(".")
        ]
    return files


def collect_file(index: int, src: Path, videos_dir: Path, rel_root: Path) -> ManifestRow:
    """Probe a local video and copy it under a safe name; a bad one becomes a skipped row."""
    src = Path(src)
    row = ManifestRow(path=str(src), source="folder", origin=str(src))
    row = fill_probe(row, src)
    if row.status != "ok":
        return row
    dest = videos_dir / safe_name(index, src.name, src.suffix)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    row.sha256 = sha256_file(dest)
    row.path = dest.relative_to(rel_root).as_posix()
    return row


# ---------------------------------------------------------------- urls


class DownloadError(Exception):
    """A download that retrying cannot fix (wrong scheme, too large, too slow, 4xx)."""


class _SafeRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): a redirect to file:// or ftp:// is refused outright."""

    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001
        target = headers.get("location") or headers.get("uri") or ""
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, target)).scheme.lower()
        if scheme not in ("http", "https"):
            raise DownloadError(f"redirect to a {scheme or 'non-http'}:// URL refused")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


# Only http(s) handlers plus the safe redirect: no file://, ftp:// or data: handler at all.
_opener = urllib.request.OpenerDirector()
for _h in (urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(), _SafeRedirect(),
           urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
    _opener.add_handler(_h)


def download(url: str, dest: Path, *, timeout: float, max_bytes: int) -> str:
    """Stream `url` into `dest` (atomically) and return its sha256.

    `timeout` bounds both each network wait and the whole transfer; `max_bytes` is checked
    against Content-Length before reading and against the bytes actually received.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"only http and https URLs are allowed, not {scheme or 'a bare path'}")
    deadline = time.monotonic() + timeout
    req = urllib.request.Request(url, headers={"User-Agent": "vqvideo-collect"})
    h = hashlib.sha256()
    with atomic_path(dest) as tmp:
        try:
            resp = _opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 429):
                raise DownloadError(f"HTTP {err.code} {err.reason}") from None
            raise
        with resp, open(tmp, "wb") as out:
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise DownloadError(f"too large: {int(length)} bytes > collect.max_bytes={max_bytes}")
            total = 0
            # read1 returns what has arrived instead of waiting for a full block, so a server
            # that trickles bytes meets the deadline instead of the per-read socket timeout.
            while block := resp.read1(1 << 16):
                total += len(block)
                if total > max_bytes:
                    raise DownloadError(f"too large: over collect.max_bytes={max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise DownloadError(f"too slow: not finished within collect.timeout_s={timeout}s")
                h.update(block)
                out.write(block)
            if length is not None and length.isdigit() and total < int(length):
                raise http.client.IncompleteRead(b"", int(length) - total)
    return h.hexdigest()


def url_entry(entry: str | dict) -> tuple[str, str | None]:
    """(url, expected sha256 or None) from a `collect.urls` item."""
    if isinstance(entry, str):
        return entry.strip(), None
    url = str(entry.get("url", "")).strip()
    sha = entry.get("sha256")
    return url, (str(sha).strip().lower() if sha else None)


def collect_url(
    index: int, entry: str | dict, videos_dir: Path, rel_root: Path, *, timeout: float,
    max_bytes: int, retries: int,
) -> ManifestRow:
    """Download one URL under a safe name, verify it, probe it; a failure is a skipped row."""
    url, expected = url_entry(entry)
    row = ManifestRow(path=url, source="urls", origin=url)
    if not url:
        return skip(row, "no url in this collect.urls entry")
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        return skip(row, f"sha256 {expected!r} is not 64 hex digits")
    # Only a hint for the readable part of the name: safe_name keeps no path from it.
    name_hint = urllib.parse.unquote(Path(urllib.parse.urlsplit(url).path).name) or "download"
    dest = videos_dir / safe_name(index, name_hint, Path(name_hint).suffix)
    digest = ""
    for attempt in range(retries + 1):
        try:
            digest = download(url, dest, timeout=timeout, max_bytes=max_bytes)
            break
        except DownloadError as err:  # final: retrying will not change it
            return skip(row, str(err))
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as err:
            reason = getattr(err, "reason", None) or err or type(err).__name__
            if attempt == retries:
                return skip(row, f"download failed after {retries + 1} tries: {reason}")
            time.sleep(min(0.5 * 2**attempt, 5.0))
    row.sha256 = digest
    if expected and digest != expected:
        dest.unlink(missing_ok=True)
        return skip(row, f"sha256 mismatch: expected {expected}, got {digest}")
    row = fill_probe(row, dest)
    if row.status != "ok":
        dest.unlink(missing_ok=True)
        return row
    row.path = dest.relative_to(rel_root).as_posix()
    return row


# ---------------------------------------------------------------- moving mnist


def load_moving_mnist(path: str | Path) -> np.ndarray:
    """The standard `mnist_test_seq.npy`: (T=20, N, 64, 64) uint8, memory-mapped.

    Raises ValueError with what was found when the file is not such an array.
    """
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"not a readable .npy array ({err})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 4 or arr.dtype != np.uint8:
        what = f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(
            f"expected a (T, N, H, W) uint8 array like mnist_test_seq.npy (20, 10000, 64, 64), got a {what}"
        )
    t, n, h, w = arr.shape
    if t < 2 or n < 1 or h < 8 or w < 8:
        raise ValueError(
            f"expected (T, N, H, W) = (frames, sequences, height, width) like (20, 10000, 64, 64), "
            f"got {arr.shape}; is the axis order different?"
        )
    return arr


def collect_moving_mnist_sequence(
    index: int, seq: np.ndarray, videos_dir: Path, rel_root: Path, fps: float, origin: str
) -> ManifestRow:
    """One (T, H, W) sequence written as a lossless video."""
    dest = write_video(videos_dir / f"{index:05d}_mmnist{LOSSLESS[1]}", np.ascontiguousarray(seq), fps)
    t, h, w = seq.shape
    return ManifestRow(
        path=dest.relative_to(rel_root).as_posix(), source="moving_mnist",
        origin=f"{origin}[:, {index}]", sha256=sha256_file(dest), frames=t, fps=fps, width=w, height=h,
    )
