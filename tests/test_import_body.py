"""Batch bodies: sent in pieces with their length, the same bytes on every retry, gzip or not."""

from __future__ import annotations

import gc
import gzip
import http.server
import json
import threading
import types
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from sqreen_mw.importer._delivery import Batch, Sender, Tally, _gzip_pieces
from sqreen_mw.importer._events import encode_items, encode_pieces
from sqreen_mw.importer._session import Session


def _items(n: int, width: int = 300) -> list[bytes]:
    return [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 37 % width)) for i in range(n)]


@pytest.mark.parametrize("size", [1, 64, 1000, 32 * 1024])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 500])
def test_pieces_are_the_body_cut_small(n: int, size: int) -> None:
    items = _items(n)
    pieces = encode_pieces(items, size)
    assert b"".join(pieces) == encode_items(items)
    assert max(map(len, pieces[1:-1]), default=0) <= 2 * (size + max(map(len, items), default=0))
    assert gzip.decompress(b"".join(_gzip_pieces(pieces))) == encode_items(items)


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answers: ClassVar[list[int]] = []
    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        body = self.rfile.read(int(length)) if length is not None else b""
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.path.endswith("/login"):
            status, answer = 200, {"session_id": "s"}
        else:
            status = self.answers.pop(0) if self.answers else 200
            answer = {"accepted": 0, "duplicates": 0} if status == 200 else {"error": "later"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("compress", ["never", "always"])
def test_a_retried_batch_is_the_same_bytes_with_its_length(recorder: str, compress: str) -> None:
    _Recorder.answers = [503, 503, 413]
    session = Session(recorder, "key", None, timeout=10, gzip=compress)
    assert session.login().kind == "ok"
    items = _items(600)
    sender = Sender(session, Tally(), lambda line, reason: None, in_flight=1)
    sender.put(Batch(items, list(range(1, 601))))
    sender.close()
    session.close()
    sent = [(headers, body) for path, headers, body in _Recorder.seen if path.endswith("/batch")]
    assert len(sent) == 5  # twice refused, once too large, then in two halves
    for headers, body in sent:
        assert "transfer-encoding" not in headers
        assert headers["content-length"] == str(len(body))
        assert ("content-encoding" in headers) == (compress == "always")
    plain = [gzip.decompress(body) if compress == "always" else body for _, body in sent]
    assert plain[0] == plain[1] == plain[2] == encode_items(items)
    assert plain[3:] == [encode_items(items[:300]), encode_items(items[300:])]


def test_a_sent_body_is_not_kept_by_httpx_s_reference_cycles(recorder: str) -> None:
    # httpx's request and response objects are garbage only for the cycle collector: they must not hold the body.
    session = Session(recorder, "key", None, timeout=10, gzip="never")
    pieces = encode_pieces(_items(100))
    gc.collect()
    gc.disable()
    try:
        outcome, _ = session.send(pieces)
        holders = [type(o).__qualname__ for o in gc.get_referrers(pieces) if not isinstance(o, types.FrameType)]
    finally:
        gc.enable()
        session.close()
    assert outcome.kind == "ok"
    assert holders == []
