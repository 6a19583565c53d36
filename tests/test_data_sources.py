"""Sources against real inputs: a real HTTP server on 127.0.0.1, real folders, real .npy files."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from media import camera_pan, write_video
from vqvideo.data import sources as S


class _Handler(http.server.BaseHTTPRequestHandler):
    video: bytes = b""

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _send(self, body: bytes, code: int = 200, length: bool = True) -> None:
        self.send_response(code)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        p = self.path
        try:
            if p.startswith("/redirect-file"):
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.end_headers()
            elif p.startswith("/redirect-ok"):
                self.send_response(302)
                self.send_header("Location", "/clip.mp4")
                self.end_headers()
            elif p.startswith("/big-declared"):
                self.send_response(200)
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
            elif p.startswith("/big-undeclared"):
                self._send(b"\0" * 300_000, length=False)
            elif p.startswith("/trickle"):  # headers at once, then a byte every 0.1 s
                self.send_response(200)
                self.send_header("Content-Length", str(len(self.video)))
                self.end_headers()
                for b in self.video[:40]:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(0.1)
            elif p.startswith("/hang"):  # no answer at all within the timeout
                time.sleep(1.5)
                self._send(self.video)
            elif p.startswith("/page"):
                self._send(b"<html>not a video</html>" * 10)
            elif p.startswith("/flaky"):  # fails once with a 503, then works
                type(self).flaky_hits = getattr(type(self), "flaky_hits", 0) + 1
                if self.flaky_hits == 1:
                    self._send(b"busy", code=503)
                else:
                    self._send(self.video)
            elif p.endswith(".mp4") or p.endswith(".avi"):
                if "missing" in p:
                    self._send(b"nope", code=404)
                else:
                    self._send(self.video)
            else:
                self._send(b"nope", code=404)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    clip = write_video(tmp_path_factory.mktemp("srv") / "clip.mp4", camera_pan(frames=20, width=48, height=48))
    handler = type("H", (_Handler,), {"video": clip.read_bytes()})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler.video
    srv.shutdown()
    srv.server_close()


def _get(tmp_path, url_or_entry, **kw) -> S.ManifestRow:
    videos = tmp_path / "videos"
    videos.mkdir(exist_ok=True)
    opts = dict(timeout=1.0, max_bytes=200_000, retries=0) | kw
    return S.collect_url(0, url_or_entry, videos, tmp_path, **opts)


def test_url_ok_is_downloaded_verified_and_probed(tmp_path, server):
    base, body = server
    sha = hashlib.sha256(body).hexdigest()
    row = _get(tmp_path, {"url": f"{base}/videos/clip.mp4", "sha256": sha.upper()})
    assert row.status == "ok", row.reason
    assert row.sha256 == sha and row.frames == 20 and (row.width, row.height) == (48, 48)
    assert row.path == "videos/00000_clip.mp4" and (tmp_path / row.path).read_bytes() == body


@pytest.mark.parametrize("suffix,reason", [
    ("/missing.mp4", "HTTP 404"),
    ("/big-declared.mp4", "too large: 1000000000 bytes"),
    ("/big-undeclared.mp4", "too large: over collect.max_bytes"),
    ("/trickle.mp4", "too slow"),
    ("/redirect-file.mp4", "redirect to a file:// URL refused"),
    ("/page.mp4", "cannot open it as a video"),
])
def test_bad_urls_are_skipped_with_their_reason(tmp_path, server, suffix, reason):
    row = _get(tmp_path, server[0] + suffix)
    assert row.status == "skipped" and reason in row.reason, row.reason
    assert list((tmp_path / "videos").iterdir()) == []  # nothing half-written is left behind


def test_unreachable_host_is_retried_then_skipped(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    row = _get(tmp_path, f"http://127.0.0.1:{port}/a.mp4", retries=1)
    assert row.status == "skipped" and "after 2 tries" in row.reason and "refused" in row.reason.lower()
    assert time.monotonic() - t0 >= 0.5  # it waited before retrying


def test_a_server_that_never_answers_times_out(tmp_path, server):
    row = _get(tmp_path, server[0] + "/hang.mp4", timeout=0.5)
    assert row.status == "skipped" and "timed out" in row.reason


def test_a_5xx_is_retried(tmp_path, server):
    row = _get(tmp_path, server[0] + "/flaky.mp4", retries=1)
    assert row.status == "ok", row.reason


def test_redirect_to_http_is_followed(tmp_path, server):
    assert _get(tmp_path, server[0] + "/redirect-ok").status == "ok"


def test_checksum_mismatch_is_skipped_and_deleted(tmp_path, server):
    row = _get(tmp_path, {"url": server[0] + "/clip.mp4", "sha256": "0" * 64})
    assert row.status == "skipped" and "sha256 mismatch" in row.reason
    assert row.sha256 == hashlib.sha256(server[1]).hexdigest()  # what did arrive, for the report
    assert list((tmp_path / "videos").iterdir()) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.mp4", "/etc/passwd", "data:,x"])
def test_only_http_and_https(tmp_path, url):
    row = _get(tmp_path, url)
    assert row.status == "skipped" and "only http and https" in row.reason


def test_file_names_never_come_from_the_url_as_a_path(tmp_path, server):
    row = _get(tmp_path, server[0] + "/a/..%2F..%2F..%2Fevil%20name.mp4")
    assert row.status == "ok", row.reason
    assert row.path == "videos/00000_evil_name.mp4"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["00000_evil_name.mp4"]


@pytest.mark.parametrize("name,expected", [
    ("holiday clip 01.mp4", "00003_holiday_clip_01.mp4"),
    ("vidéo d'été.MOV", "00003_video_d_ete.mov"),
    ("動画 テスト.mkv", "00003_video.mkv"),
    ("../../etc/passwd", "00003_passwd.bin"),
])
def test_safe_name(name, expected):
    assert S.safe_name(3, name, Path(name).suffix) == expected


def test_folder_listing_takes_videos_recursively_and_skips_hidden(tmp_path):
    for rel in ["a.mp4", "sub/b.MKV", "sub/notes.txt", ".hidden.mp4", ".cache/c.mp4", "d.mov"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in S.list_folder(str(tmp_path))] == [
        "a.mp4", "d.mov", "sub/b.MKV"]
    # a glob takes whatever it matches, whatever the extension
    assert [p.name for p in S.list_folder(str(tmp_path / "sub" / "*"))] == ["b.MKV", "notes.txt"]


def test_moving_mnist_array_is_checked(tmp_path):
    good = tmp_path / "mm.npy"
    np.save(good, np.zeros((20, 3, 64, 64), np.uint8))
    assert S.load_moving_mnist(good).shape == (20, 3, 64, 64)
    for name, arr, msg in [
        ("flat.npy", np.zeros((20, 64, 64), np.uint8), "got a uint8 array of shape"),
        ("float.npy", np.zeros((20, 3, 64, 64), np.float32), "got a float32 array"),
        ("swapped.npy", np.zeros((20, 3, 1, 64), np.uint8), "axis order"),
    ]:
        np.save(tmp_path / name, arr)
        with pytest.raises(ValueError, match=msg):
            S.load_moving_mnist(tmp_path / name)
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ValueError, match="not a readable .npy"):
        S.load_moving_mnist(tmp_path / "text.npy")


def test_collect_stage_over_urls_keeps_the_good_ones(tmp_path, server, caplog):
    import logging

    from vqvideo.config import CollectConfig
    from vqvideo.stages.collect import collect

    base, body = server
    cfg = CollectConfig(source="urls", retries=0, timeout_s=2, urls=[
        f"{base}/one.mp4", f"{base}/missing.mp4",
        {"url": f"{base}/two.mp4", "sha256": "f" * 64}, f"{base}/redirect-ok",
    ])
    with caplog.at_level(logging.WARNING):
        m = collect(cfg, tmp_path / "raw", workers=2)
    assert m.status.tolist() == ["ok", "skipped", "skipped", "skipped"]
    assert "HTTP 404" in m.reason[1] and "sha256 mismatch" in m.reason[2]
    assert "duplicate of videos/00000_one.mp4" in m.reason[3]  # the redirect served the same bytes
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 3
