"""Attacks on the proxy: each protection it promises, tried the way an attacker would."""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx2
import openai
import pytest

from streamtap import CallFinished, Fallback
from streamtap._proxy_config import ProxyConfig, load_config
from streamtap._proxy_http import authorized, upstream_url
from streamtap._proxy_server import ProxyServer, uvicorn_config
from streamtap._secrets import SecretMask
from streamtap.fake import FakeConfig, FakeUpstream

from . import loopback
from .conftest import TEST_POLICY
from .support import CHAT_MESSAGES, Recording, until

CLIENT_KEY = "sk-client-secret-7f3a9c"


@pytest.fixture
def proxied(fake: FakeUpstream) -> Iterator[tuple[ProxyServer, Recording]]:
    fake.clear()
    recording = Recording()
    config = ProxyConfig(
        upstream=fake.base_url, listen="127.0.0.1:0", policy=TEST_POLICY, max_body=2048, body_timeout=0.5
    )
    with ProxyServer(config, recorders=[recording]) as server:
        yield server, recording


def _raw(port: int, request: bytes, *, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../admin",
        "/v1/%2e%2e/admin",
        "/v1/models/..%2f..%2fadmin",
        "/v1/models%2F..%2F..%2Fadmin",
        "/v1//evil.example/models",
        "/v1/models\\..\\admin",
        "/v1/models/%00",
        # Tomcat and Spring drop a segment's ;parameters before resolving dot segments.
        "/v1/..;/admin",
        "/v1/models/..;/..;/admin",
        "/v1/.;x/..;jsessionid=1/admin",
        "/v1/..%3b/admin",
        # A stack that decodes twice reads %252e as ".".
        "/v1/%252e%252e/admin",
        "/v1/models/%252E%252e%252fadmin",
        "/admin",
        "/",
    ],
)
def test_paths_cannot_climb_out_of_the_upstream(
    path: str, proxied: tuple[ProxyServer, Recording], fake: FakeUpstream
) -> None:
    proxy, _ = proxied
    reply = _raw(proxy.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert reply.split(b" ")[1] in (b"400", b"404")
    assert fake.requests == []


def test_absolute_form_and_host_header_reach_only_the_configured_upstream(
    proxied: tuple[ProxyServer, Recording], fake: FakeUpstream
) -> None:
    proxy, _ = proxied
    absolute = (
        b"GET http://169.254.169.254/v1/models HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"
    )
    assert _raw(proxy.port, absolute).startswith(b"HTTP/1.1 404")  # refused: never forwarded elsewhere
    host = b"GET /v1/models HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n"
    assert _raw(proxy.port, host).startswith(b"HTTP/1.1 200")  # served by the configured upstream
    assert [r.path for r in fake.requests] == ["/v1/models"]
    assert all(dict(r.headers)["host"] == f"127.0.0.1:{fake.port}" for r in fake.requests)


def test_upstream_url_unit() -> None:
    base = "https://api.example/v1"
    assert upstream_url(base, b"/v1/chat/completions", b"") == "https://api.example/v1/chat/completions"
    assert (
        upstream_url(base, b"/v1/files/abc/content", b"limit=2")
        == "https://api.example/v1/files/abc/content?limit=2"
    )
    assert upstream_url(base, b"/v1/x", b"a=1#frag") is None
    assert upstream_url(base, b"/v1/x", b"a=1 b") is None
    # Parameters on a segment that is not a dot segment, and a percent that decodes to no
    # escape a second time, go on as they came.
    assert upstream_url(base, b"/v1/models;v=1/x..;", b"") == "https://api.example/v1/models;v=1/x..;"
    assert upstream_url(base, b"/v1/files/a%25zz", b"") == "https://api.example/v1/files/a%25zz"


def test_hop_by_hop_headers_are_stripped(proxied: tuple[ProxyServer, Recording], fake: FakeUpstream) -> None:
    proxy, _ = proxied
    headers = {
        "connection": "keep-alive, x-private",
        "x-private": "do-not-forward",
        "keep-alive": "timeout=5",
        "proxy-authorization": "Basic c2VjcmV0",
        "te": "trailers",
        "upgrade": "h2c",
        "x-kept": "yes",
    }
    httpx2.get(f"{proxy.base_url}/models", headers=headers)
    sent = dict(fake.requests[0].headers)
    for name in ("x-private", "keep-alive", "proxy-authorization", "te", "upgrade"):
        assert name not in sent
    assert sent["x-kept"] == "yes"


def test_a_content_length_beside_chunked_is_not_passed_on() -> None:
    """RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which a proxy must remove; the
    upstream's would claim 10 bytes of a longer body, and the client would get headers only."""
    body = b'{"object": "list", "data": []}'

    class Both(loopback.Handler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "10")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    with loopback.serve(Both) as url:
        config = ProxyConfig(upstream=f"{url}/v1", listen="127.0.0.1:0", policy=TEST_POLICY)
        with ProxyServer(config) as proxy:
            answer = httpx2.get(f"{proxy.base_url}/models")
    assert (answer.status_code, answer.content) == (200, body)
    assert answer.headers.get("content-length") in (None, str(len(body)))


@pytest.fixture
def uvicorn_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """uvicorn's log, which does not propagate to the root logger, captured."""
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


_SMUGGLED = b"GET /v1/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/files"], ids=["call", "pass-through"])
def test_an_upgrade_with_a_body_is_refused_before_it_is_served(
    path: str,
    proxied: tuple[ProxyServer, Recording],
    fake: FakeUpstream,
    uvicorn_log: pytest.LogCaptureFixture,
) -> None:
    """llhttp skips the body of a request asking for an upgrade and parses it as the next
    request: the upstream got the POST with no body, then the request the body held, with the
    proxy's key on it (or, passed through, the client's Content-Length and no body, holding
    its connection)."""
    proxy, _ = proxied
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(_SMUGGLED)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(head)
        time.sleep(0.2)  # the body in a read of its own, as the reviewer's smuggling sent it
        sock.sendall(_SMUGGLED)
        reply = _read_until_closed(sock)
    status, _, body = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
    assert b"\r\nconnection: close" in status
    assert json.loads(body)["error"] == {
        "message": "the proxy does not switch protocols, and a request with a body cannot ask it to: "
        "send it without Connection: upgrade",
        "type": "streamtap_error",
        "param": None,
        "code": "upgrade_not_supported",
    }
    assert fake.requests == []
    assert uvicorn_log.records == []  # no "Unsupported upgrade request", no WebSocket advice


def test_connect_is_refused(proxied: tuple[ProxyServer, Recording], fake: FakeUpstream) -> None:
    proxy, _ = proxied
    reply = _raw(proxy.port, b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]["message"] == (
        "the proxy does not tunnel: CONNECT is not supported"
    )
    assert fake.requests == []


def test_an_upgrade_without_a_body_is_ignored(
    proxied: tuple[ProxyServer, Recording], fake: FakeUpstream, uvicorn_log: pytest.LogCaptureFixture
) -> None:
    """RFC 9110 §7.8: a server may ignore Upgrade; `curl --http2` asks for h2c on every
    request. Served as HTTP/1.1, and the request behind it in the same write too (uvicorn
    dropped what followed an upgrade's head in its read)."""
    proxy, _ = proxied
    h2c = (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    )
    reply = _raw(proxy.port, h2c + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply[:200]
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert [r.path for r in fake.requests] == ["/v1/models", "/v1/models"]
    forwarded = dict(fake.requests[0].headers)
    assert not {"upgrade", "connection", "http2-settings"} & set(forwarded)
    assert uvicorn_log.records == []


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pass
    return received


def test_client_key_is_forwarded_but_never_logged_or_recorded(
    proxied: tuple[ProxyServer, Recording], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, recording = proxied
    caplog.set_level(logging.DEBUG)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0)
    fake.enqueue("status=503", "")
    with (
        client,
        client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=True) as stream,
    ):
        assert list(stream)
    assert len(fake.requests) == 2  # forwarded: the fake accepted the request
    assert CLIENT_KEY not in repr(recording.events)
    assert CLIENT_KEY not in caplog.text
    assert all(CLIENT_KEY not in repr(r) for r in fake.requests)


def test_token_mode_injects_the_upstream_key_and_requires_the_proxy_token() -> None:
    upstream_key, token = "sk-upstream-only-42", "proxy-token-9d2e"
    with FakeUpstream(FakeConfig(chunks=2, api_key=upstream_key)) as fake:
        config = ProxyConfig(
            upstream=fake.base_url, listen="127.0.0.1:0", upstream_api_key=upstream_key, client_token=token
        )
        with ProxyServer(config, recorders=[]) as proxy:
            for bad in (None, "sk-guess", upstream_key):
                client = openai.OpenAI(base_url=proxy.base_url, api_key=bad or "x", max_retries=0)
                with client, pytest.raises(openai.AuthenticationError):
                    client.models.list()
            assert fake.requests == []  # a rejected client never reaches the upstream
            # The client's identity beside the proxy's key is dropped: the key says who pays.
            client = openai.OpenAI(
                base_url=proxy.base_url,
                api_key=token,
                max_retries=0,
                organization="org-someone-else",
                project="proj_other",
                default_headers={"api-key": "tenant-own-azure-key"},
            )
            with client:
                assert client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES).choices
            assert fake.requests[0].status == 200  # the fake required, and got, the upstream key
            sent = {name for name, _ in fake.requests[0].headers}
            assert not sent & {"openai-organization", "openai-project", "api-key"}, sent
    with pytest.raises(ValueError, match="upstream_api_key needs client_token"):
        ProxyConfig(upstream_api_key="sk-x")


class _QuotesTheKey(loopback.Handler):
    """An upstream whose errors quote the key it was sent, as gateways do ("Incorrect API key
    provided: ..."): a 401 in two writes that split the key (gzip-encoded when the request
    path says so), or, for model "event", a stream whose error event quotes it after content."""

    def _key(self) -> str:
        return self.headers.get("authorization", "").removeprefix("Bearer ")

    codings: ClassVar[list[str | None]] = []  # the Accept-Encoding of each GET

    def do_HEAD(self) -> None:
        self.send_response(404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "75")
        self.end_headers()

    def do_GET(self) -> None:
        self.codings.append(self.headers.get("accept-encoding"))
        body = json.dumps(
            {"error": {"message": f"Incorrect API key provided: {self._key()}.", "code": "bad"}}
        )
        data = body.encode()
        if self.path.endswith("/not-gzip"):  # labelled gzip, sent plain
            self.send_response(401)
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        gzipped = self.path.endswith("/gzip")
        if gzipped:
            data = gzip.compress(data)
        self.send_response(401)
        self.send_header("content-type", "application/json")
        if gzipped:
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        cut = len(data) // 2 if gzipped else body.index(self._key()) + 5
        self.wfile.write(data[:cut])
        self.wfile.flush()
        time.sleep(0.05)  # two reads for the proxy
        self.wfile.write(data[cut:])

    def do_POST(self) -> None:
        model = json.loads(self.rfile.read(int(self.headers["content-length"])))["model"]
        if model != "event":
            self.do_GET()
            return
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": "hi "}, "finish_reason": None}]}  # fmt: skip
        error = {"error": {"message": f"quota exceeded for key {self._key()}", "code": "server_error"}}
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(error)}\n\n".encode())
        self.close_connection = True


def test_the_keys_the_proxy_holds_are_masked_in_the_errors_its_clients_get(fake: FakeUpstream) -> None:
    """Its own upstream key and a fallback's: clients were never given them, and an upstream's
    error text may quote them whole. Masked (`sk-...` and the last four characters) in a call's
    error answer, in the error event that ends a stream, in a passed-through answer, gzipped
    or split between two reads, as /readyz masks them."""
    own, spare, token = "sk-proxy-own-key-0000abcd", "sk-fallback-key-1111wxyz", "proxy-token-5e1"
    with loopback.serve(_QuotesTheKey) as echo:
        config = ProxyConfig(
            upstream=echo + "/v1", listen="127.0.0.1:0", upstream_api_key=own, client_token=token,
            policy=TEST_POLICY,
        )  # fmt: skip
        with ProxyServer(config, recorders=[]) as proxy:
            auth = {"authorization": f"Bearer {token}"}
            answers = [
                httpx2.post(
                    proxy.base_url + "/chat/completions", headers=auth, json={"model": m, "stream": True}
                )
                for m in ("gpt-4o", "event")
            ]
            answers += [
                httpx2.get(proxy.base_url + path, headers=auth) for path in ("/models", "/models/gzip")
            ]
            assert [a.status_code for a in answers] == [401, 200, 401, 401]
            for answer in answers:
                assert own not in answer.text and "sk-...abcd" in answer.text, answer.text
            client = openai.OpenAI(base_url=proxy.base_url, api_key=token, max_retries=0)
            with client, pytest.raises(openai.AuthenticationError, match=r"provided: sk-\.\.\.abcd\."):
                client.models.list()
        # A proxy that forwards its clients' keys holds a fallback's own. (A fallback's own 401
        # leaves the client the primary's error: its stream's error event is what reaches it.)
        fallback = Fallback.upstream(echo + "/v1", api_key=spare)
        config = ProxyConfig(
            upstream=fake.base_url, listen="127.0.0.1:0", policy=TEST_POLICY, fallbacks=(fallback,)
        )
        with ProxyServer(config, recorders=[]) as proxy:
            answer = httpx2.post(
                proxy.base_url + "/chat/completions",
                headers={"authorization": f"Bearer {CLIENT_KEY}", "x-fake-fault": "status=503"},
                json={"model": "event", "messages": CHAT_MESSAGES, "stream": True},
            )
            assert (answer.status_code, answer.headers["x-streamtap-fallback"]) == (200, "upstream")
            assert spare not in answer.text and "sk-...wxyz" in answer.text


def test_a_proxy_holding_keys_offers_upstream_only_codings_it_can_mask_in() -> None:
    """A client asking for br (or zstd) would get an error body the proxy cannot read, the key
    in it unmasked; a body not in the coding it claims, or none at all, still goes whole."""
    own, token = "sk-proxy-own-key-0000abcd", "proxy-token-5e1"
    auth = {"authorization": f"Bearer {token}"}
    with loopback.serve(_QuotesTheKey) as echo:
        config = ProxyConfig(
            upstream=echo + "/v1", listen="127.0.0.1:0", upstream_api_key=own, client_token=token
        )
        with ProxyServer(config, recorders=[]) as proxy:
            _QuotesTheKey.codings.clear()
            answer = httpx2.get(
                proxy.base_url + "/models", headers={**auth, "accept-encoding": "br, zstd, gzip"}
            )
            assert _QuotesTheKey.codings == ["gzip, deflate"]
            assert answer.status_code == 401 and own not in answer.text and "sk-...abcd" in answer.text
            with httpx2.stream("GET", proxy.base_url + "/models/not-gzip", headers=auth) as plain:
                raw = b"".join(plain.iter_raw())  # as it came, its false label kept: masked all the same
            assert (plain.status_code, plain.headers["content-encoding"]) == (401, "gzip")
            assert b"provided: sk-...abcd." in raw and own.encode() not in raw
            head = httpx2.head(proxy.base_url + "/models", headers=auth)
            assert (head.status_code, head.headers.get("content-length")) == (404, "75")


def test_a_secret_mask_masks_the_longest_first() -> None:
    mask = SecretMask(["sk-abcdefgh12345678", "sk-abcdefgh", "short", ""])  # under 8 characters: kept
    assert mask(b"x sk-abcdefgh12345678 short sk-abcdefgh") == b"x sk-...5678 short sk-..."
    assert not SecretMask(["", "tiny"])


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/v1/chat/completions", "wrong", b"401"),
        ("/v2/chat/completions", "t", b"404"),
        ("/metrics", "t", b"405"),
    ],
)
def test_a_refusal_before_the_body_closes_the_connection(path: str, token: str, status: bytes) -> None:
    """Refused before its body was read (a wrong token, a path it does not forward, a method
    /metrics does not answer), under `Expect: 100-continue` the client may send its body after
    all: on the same connection those bytes would be read as the next request's."""
    config = ProxyConfig(
        upstream="http://127.0.0.1:9/v1", listen="127.0.0.1:0", upstream_api_key="sk-u", client_token="t"
    )
    body = b'{"model": "gpt-4o"}'
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nexpect: 100-continue\r\n\r\n"
    ).encode()
    with ProxyServer(config, recorders=[]) as proxy:
        answer = _raw(proxy.port, head + body + b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert b"\r\nconnection: close\r\n" in answer.lower()
    assert answer.count(b"HTTP/1.1 ") == 1  # closed: neither the body nor what follows was served


def test_secrets_lose_the_line_break_a_file_gave_them() -> None:
    """A Kubernetes secret made from a file often ends in a newline: it made every request 502
    (the key) or 401 (the token)."""
    upstream_key, token = "sk-upstream-only-42", "proxy-token-9d2e"
    with FakeUpstream(FakeConfig(chunks=2, api_key=upstream_key)) as fake:
        config = ProxyConfig(
            upstream=fake.base_url,
            listen="127.0.0.1:0",
            upstream_api_key=f" {upstream_key}\n",
            client_token=f"{token}\r\n",
        )
        assert (config.upstream_api_key, config.client_token) == (upstream_key, token)
        with ProxyServer(config, recorders=[]) as proxy:
            client = openai.OpenAI(base_url=proxy.base_url, api_key=token, max_retries=0)
            with client:
                assert client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES).choices
        assert [r.status for r in fake.requests] == [200]  # the fake required, and got, the key


@pytest.mark.parametrize(
    ("name", "flag"), [("upstream_api_key", "--upstream-api-key-env"), ("client_token", "--client-token-env")]
)
@pytest.mark.parametrize("value", ["sk-in\nside-0042", "sk-\x00-0042", "sk-tab\t-0042", " \n "])
def test_a_secret_with_control_characters_is_refused_unseen(name: str, flag: str, value: str) -> None:
    secrets = {"upstream_api_key": "sk-x", "client_token": "tok", name: value}
    with pytest.raises(ValueError, match=rf"^{name} \({flag}\) must be ") as refused:
        ProxyConfig(**secrets)
    assert "0042" not in str(refused.value)  # the value is never echoed


def test_a_fallback_key_in_the_file_is_checked_as_the_proxys_own(tmp_path: Any) -> None:
    """It kept the newline of a multi-line TOML string, and every fallback attempt failed."""
    path = tmp_path / "proxy.toml"
    entry = '[[fallbacks]]\nkind = "upstream"\nbase_url = "http://127.0.0.1:9/v1"\napi_key = '
    path.write_text(entry + '"""  sk-backup-0042\n"""\n')
    assert load_config(str(path)).fallbacks[0].api_key == "sk-backup-0042"
    for value, why in (
        ('"sk-in\\nside-0042"', "a string without control characters"),
        ('" "', "a non-empty string, got only whitespace"),
        ('""', "a non-empty string, got an empty one"),  # it said "got only whitespace"
    ):
        path.write_text('[[fallbacks]]\nkind = "non_streaming"\n' + entry + value + "\n")
        with pytest.raises(
            ValueError, match=rf"^{re.escape(str(path))}: fallbacks\[1\]\.api_key must be {why}"
        ) as refused:
            load_config(str(path))
        assert "0042" not in str(refused.value)


def test_urls_with_credentials_are_refused_without_them(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"got 'http://127\.0\.0\.1:99999/v1': Port out of range") as refused:
        ProxyConfig(upstream="http://user:hunter2pw@127.0.0.1:99999/v1")
    assert "hunter2pw" not in str(refused.value)
    path = tmp_path / "proxy.toml"
    path.write_text('[[fallbacks]]\nkind = "upstream"\nbase_url = "https://user:hunter2pw@backup/v1"\n')
    with pytest.raises(
        ValueError,
        match=r"proxy\.toml: fallbacks\[0\]\.base_url must not carry credentials \(user:password@\), "
        r"got 'https://backup/v1': put the key in the entry's api_key$",
    ) as refused:
        load_config(str(path))
    assert "hunter2pw" not in str(refused.value)


def test_a_client_token_without_an_upstream_key_is_refused(tmp_path: Any) -> None:
    # Clients would send `Bearer <token>`, forwarded upstream unchanged: the token would leak.
    refused = r"client_token \(--client-token-env\) needs upstream_api_key \(--upstream-api-key-env\)"
    with pytest.raises(ValueError, match=refused):
        ProxyConfig(client_token="proxy-token")
    with pytest.raises(ValueError, match=refused):
        load_config(None, client_token="proxy-token")
    # Checked once everything is merged: a token in the file and a key from a flag go together.
    path = tmp_path / "proxy.toml"
    path.write_text('client_token = "proxy-token"\n')
    assert load_config(str(path), upstream_api_key="sk-x").client_token == "proxy-token"


def test_the_bearer_scheme_is_case_insensitive() -> None:
    token = "proxy-token-9d2e"
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert authorized([(b"authorization", f"{scheme} {token}".encode())], token), scheme
    for value in (f"Basic {token}", f"Bearer {token}x", "Bearer", token, f"Bearer{token}"):
        assert not authorized([(b"authorization", value.encode())], token), value
    assert not authorized([], token)


def test_request_body_limit(proxied: tuple[ProxyServer, Recording], fake: FakeUpstream) -> None:
    proxy, _ = proxied
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 4096}]}
    reply = httpx2.post(f"{proxy.base_url}/chat/completions", json=big)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "request_too_large"
    assert fake.requests == []


def test_a_body_declared_too_large_is_refused_before_it_is_sent(
    proxied: tuple[ProxyServer, Recording], fake: FakeUpstream
) -> None:
    proxy, _ = proxied
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: 50000000\r\n\r\n"
    )
    reply = _raw(proxy.port, head)  # no body byte sent: a `100 Continue` would wait for one
    assert reply.startswith(b"HTTP/1.1 413"), reply[:40]
    assert b"request_too_large" in reply
    assert fake.requests == []


def test_slow_client_body_times_out(proxied: tuple[ProxyServer, Recording], fake: FakeUpstream) -> None:
    proxy, _ = proxied
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    started = time.monotonic()
    reply = _raw(proxy.port, head, wait=5.0)
    assert reply.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 4.0
    assert fake.requests == []


def test_an_aborted_upload_ends_quietly(
    proxied: tuple[ProxyServer, Recording], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, _ = proxied
    state = proxy._server.server_state
    uvicorn_log = logging.getLogger("uvicorn.error")  # does not propagate to the root logger
    uvicorn_log.addHandler(caplog.handler)
    try:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(head)
            assert until(lambda: bool(state.tasks))  # the proxy is reading the body
        assert until(lambda: not state.tasks)  # and has stopped, the client gone
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert fake.requests == []


@pytest.mark.parametrize("seconds", [0, -1, float("nan")])
def test_body_timeout_must_be_positive(seconds: float) -> None:
    # With no time for it, a body larger than one read would always get a 408.
    with pytest.raises(ValueError, match=r"body_timeout must be a finite number of seconds > 0, got"):
        ProxyConfig(body_timeout=seconds)
    assert ProxyConfig(shutdown_grace=0, ready_cache=0).shutdown_grace == 0  # these may be 0


@pytest.mark.parametrize("name", ["shutdown_grace", "pass_through_timeout", "body_timeout", "ready_cache"])
def test_waits_must_be_finite(name: str) -> None:
    # uvicorn takes the grace as an int: infinity crashed the proxy at start (OverflowError). A
    # body_timeout of inf held a slow client for ever; the flags refuse inf for all four.
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number of seconds .*, got inf$"):
        ProxyConfig(**{name: float("inf")})


@pytest.mark.parametrize(("grace", "seconds"), [(0, 0), (2.5, 3), (0.1, 1), (30, 30)])
def test_the_shutdown_grace_reaches_uvicorn_whole(grace: float, seconds: int) -> None:
    """Rounded up, never down (2.5 was 2), and 0 stays 0 (it was 1): nothing is waited for."""
    config = ProxyConfig(listen="127.0.0.1:0", shutdown_grace=grace)
    assert uvicorn_config(object(), config).timeout_graceful_shutdown == seconds


@pytest.mark.parametrize(
    ("upstream", "why"),
    [
        ("http://127.0.0.1:abc/v1", "Port could not be cast to integer value as 'abc'"),
        ("http://127.0.0.1:99999/v1", "Port out of range 0-65535"),
        ("http://127.0.0.1:0/v1", None),
        ("http://[::1/v1", "Invalid IPv6 URL"),
        ("http://api.example/v1\n", None),
        ("http://api\x00.example/v1", None),
        ("ftp://api.example/v1", None),
        ("http:///v1", None),
    ],
)
def test_a_bad_upstream_is_refused_naming_the_field(upstream: str, why: str | None) -> None:
    # A bad port was accepted, then every request got a plain-text 500 (httpx2.InvalidURL).
    accepted = (
        "upstream must be an http:// or https:// base URL with a host, optionally a port in 1..65535, and no "
        "query or credentials"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(accepted)}") as refused:
        ProxyConfig(upstream=upstream)
    message = str(refused.value)
    assert f"got {upstream!r}" in message
    if why is not None:
        assert message.endswith(why)
    assert ProxyConfig(upstream="http://[::1]:8080/v1/").upstream == "http://[::1]:8080/v1"
    # An @ in the path is the path's, not credentials (a gateway's route by team or account).
    assert (
        ProxyConfig(upstream="http://gw.example/v1/@team/openai").upstream
        == "http://gw.example/v1/@team/openai"
    )


def test_listens_on_loopback_by_default() -> None:
    assert ProxyConfig().host_port == ("127.0.0.1", 8787)
    with pytest.raises(ValueError, match="listen must be host:port"):
        ProxyConfig(listen="8787")
    with pytest.raises(ValueError, match="upstream must be an http"):
        ProxyConfig(upstream="file:///etc/passwd")
    with pytest.raises(
        ValueError, match=r"got 'https://api.example/v1\?\.\.\.': it carries a query or fragment$"
    ):
        ProxyConfig(upstream="https://api.example/v1?redirect=evil")
    # Neither the query nor the password is shown, even one that ends the authority early.
    for upstream in ("https://u:ab?PASSWORD@api.example/v1", "https://u:ab/PASSWORD@api.example/v1"):
        with pytest.raises(ValueError, match=r"got 'https://\.\.\.@api\.example/v1': it") as refused:
            ProxyConfig(upstream=upstream)
        assert "PASSWORD" not in str(refused.value)


def test_config_file(tmp_path: Any) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        'upstream = "http://127.0.0.1:9/v1"\n[policy]\nmax_attempts = 2\n[policy.breaker]\nenabled = false\n'
        '[[fallbacks]]\nkind = "model"\nmodel = "gpt-4o-mini"\n[[fallbacks]]\nkind = "non_streaming"\n'
    )
    config = load_config(str(path), listen="127.0.0.1:9999")
    assert config.upstream == "http://127.0.0.1:9/v1"
    assert config.listen == "127.0.0.1:9999"
    assert config.policy.max_attempts == 2
    assert not config.policy.breaker.enabled
    assert [f.kind for f in config.fallbacks] == ["model", "non_streaming"]
    path.write_text('[[fallbacks]]\nkind = "teleport"\n')
    with pytest.raises(
        ValueError, match=r"fallbacks\[0\]\.kind must be one of model, upstream, non_streaming, cache"
    ):
        load_config(str(path))
    for kind in ('["model"]', "{ name = 'model' }"):  # unhashable values: the same clear error
        path.write_text(f"[[fallbacks]]\nkind = {kind}\n")
        with pytest.raises(ValueError, match=r"fallbacks\[0\]\.kind must be one of model, upstream"):
            load_config(str(path))
    path.write_text('upstreams = "x"\n')
    with pytest.raises(ValueError, match="unknown key 'upstreams'"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        # A fallback's values are never quoted: an entry may hold its api_key.
        pytest.param(
            '[fallbacks]\nkind = "upstream"\nbase_url = "https://backup/v1"\napi_key = "sk-LEAKCANARY-1234"\n',
            r"fallbacks must be an array of tables \(one \[\[fallbacks\]\] entry per fallback\), got a table "
            r"\(write \[\[fallbacks\]\], in double brackets\)$",
            id="fallbacks-as-a-table",
        ),
        pytest.param(
            'fallbacks = "model"\n',
            "fallbacks must be an array of tables .*, got a string$",
            id="fallbacks-as-a-string",
        ),
        pytest.param(
            "fallbacks = [1]\n",
            r"fallbacks\[0\] must be a table with a kind .*, got an integer$",
            id="fallback-not-a-table",
        ),
        pytest.param(
            'fallbacks = ["sk-LEAKCANARY-1234"]\n',
            r"fallbacks\[0\] must be a table with a kind \(a \[\[fallbacks\]\] entry\), got a string$",
            id="fallback-a-key",
        ),
        pytest.param(
            '[[fallbacks]]\nkind = "upstream"\nbase_url = "http://x/v1"\napi_key = 5\n',
            r"fallbacks\[0\]\.api_key must be a string, got int",
            id="fallback-key-not-a-string",
        ),
        pytest.param(
            '[[fallbacks]]\nkind = "model"\nmodel = "gpt-4o-mini"\nbase_url = "https://backup/v1"\n',
            r"fallbacks\[0\]: key 'base_url' does not apply to kind 'model'; kind 'model' takes: kind, model$",
            id="fallback-key-of-another-kind",
        ),
        pytest.param(
            '[[fallbacks]]\nkind = "non_streaming"\nmodel = "gpt-4o-mini"\n',
            r"fallbacks\[0\]: key 'model' does not apply to kind 'non_streaming'; kind 'non_streaming' takes: kind$",
            id="fallback-model-on-non-streaming",
        ),
        pytest.param(
            '[[fallbacks]]\nkind = "upstream"\nbase_url = "https://backup/v1"\nmodle = "x"\n',
            r"fallbacks\[0\]: key 'modle' is not a fallback key; kind 'upstream' takes: kind, base_url, api_key, model$",
            id="fallback-typo",
        ),
        pytest.param(
            '[[fallbacks]]\nkind = "non_streaming"\n[[fallbacks]]\nkind = "upstream"\nbase_url = "backup/v1"\n',
            r"proxy\.toml: fallbacks\[1\]: Fallback\.upstream base_url must start with http:// or https://",
            id="fallback-bad-url-names-its-entry",
        ),
        pytest.param(
            "[policy]\nmax_atempts = 3\n",
            r"proxy\.toml: policy: unknown key 'max_atempts'; accepted keys: ",
            id="policy-typo-names-the-file",
        ),
        pytest.param(
            "[policy.breaker]\nfailure_ratio = 2\n",
            r"proxy\.toml: policy\.breaker\.failure_ratio must be a number > 0 and <= 1, got 2$",
            id="nested-policy-value-names-its-key",
        ),
        pytest.param(
            "[policy]\nfirst_token_timeout = 0\n",
            r'proxy\.toml: policy\.first_token_timeout must be a number > 0 and finite, or "none" for off, got 0$',
            id="optional-timeout-offers-what-toml-can-write",
        ),
        pytest.param(
            "[policy]\nbackoff_base = 10\n",
            r"proxy\.toml: policy\.backoff_cap must be a number >= 10 \(backoff_base\) and finite, "
            r"got 8\.0 \(the default\)$",
            id="a-default-at-fault-says-so",
        ),
        pytest.param(
            'upstream = "http://x/v1\n',
            r"proxy\.toml: not valid TOML: .*line 1",
            id="toml-syntax-names-the-file",
        ),
        pytest.param(
            'max_body = "10MB"\n',
            r"proxy\.toml: max_body must be an integer >= 1, got '10MB'$",
            id="setting-names-the-file",
        ),
        pytest.param(
            "ready_cache = nan\n",
            r"proxy\.toml: ready_cache must be a finite number of seconds >= 0, got nan$",
            id="seconds-names-the-file",
        ),
        pytest.param(
            'client_token = "  "\nupstream_api_key = "sk-x"\n',
            r"proxy\.toml: client_token \(--client-token-env\) must be a non-empty string, got only whitespace$",
            id="secret-names-the-file",
        ),
        pytest.param(
            'client_token = "t"\n',
            r"proxy\.toml: client_token \(--client-token-env\) needs upstream_api_key ",
            id="pairing-names-the-file",
        ),
        pytest.param("listen = 8787\n", 'listen must be a "host:port" string, got 8787', id="listen-int"),
        pytest.param("ops_listen = 9464\n", 'ops_listen must be a "host:port" string', id="ops-listen-int"),
        pytest.param(
            "upstream = 5\n",
            "upstream must be an http:// or https:// base URL string, got 5",
            id="upstream-int",
        ),
        pytest.param(
            'client_token = 12345\nupstream_api_key = "sk-x"\n',
            r"client_token must be a string \(the token itself\), got int$",  # never the value
            id="token-not-a-string",
        ),
    ],
)
def test_config_file_type_mistakes_are_named(tmp_path: Any, text: str, refused: str) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=refused):
        load_config(str(path))


def test_a_config_file_that_is_not_utf8_is_named(tmp_path: Any) -> None:
    """Before: only the codec's "'utf-8' codec can't decode byte 0xff in position 0"."""
    path = tmp_path / "proxy.toml"
    path.write_bytes(b'listen = "127.0.0.1:8787"\n\xff\xfe\n')
    with pytest.raises(
        ValueError, match=r"proxy\.toml: not valid TOML: not UTF-8 text \(invalid start byte at byte 26\)$"
    ):
        load_config(str(path))


def test_a_flag_error_does_not_blame_the_file(tmp_path: Any) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text("max_body = 1024\n")
    with pytest.raises(ValueError, match=r"^max_body must be an integer >= 1, got 0$"):
        load_config(str(path), max_body=0)


def _refused_while(stream: threading.Thread, url: str) -> bool:
    """Whether a connection to `url` is refused while `stream` is still reading.

    Refused, or reset before any answer: a connection the kernel queued just as the server
    closed its listening socket is reset rather than refused.
    """
    while stream.is_alive():
        try:
            httpx2.get(url, timeout=1.0)
        except (httpx2.ConnectError, httpx2.ReadError, httpx2.RemoteProtocolError):
            return stream.is_alive()
        time.sleep(0.02)
    return False


def test_graceful_shutdown_lets_streams_finish(fake: FakeUpstream) -> None:
    fake.clear()
    recording = Recording()
    # A grace far longer than the 2 s stream: it finishes whole even on a machine that stalls.
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", shutdown_grace=30)
    proxy = ProxyServer(config, recorders=[recording]).start()
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-x", max_retries=0)
    received: list[str] = []
    first = threading.Event()

    def consume() -> None:
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=CHAT_MESSAGES,
            stream=True,
            extra_headers={"x-fake-gap": "0.05", "x-fake-chunks": "40"},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
                first.set()

    reader = threading.Thread(target=consume)
    stopper = threading.Thread(target=proxy.stop)
    reader.start()
    try:
        assert first.wait(30)
        stopper.start()
        assert _refused_while(reader, f"http://127.0.0.1:{proxy.port}/healthz")  # no longer accepting
    finally:  # on failure too: the stream must not outlive this test and fail in another
        reader.join(60)
        proxy.stop()  # waits for the server, whether or not the stopper ran
        client.close()
    assert len(received) == 40  # the stream in flight finished whole
    assert recording.of(CallFinished)[0].outcome == "ok"


class _SlowToFinish(Recording):
    """Records a call's end half a second late, as a loaded machine may."""

    def on_event(self, event: Any) -> None:
        if isinstance(event, CallFinished):
            time.sleep(0.5)
        super().on_event(event)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_stop_returns_after_the_calls_its_clients_finished_are_recorded(
    fake: FakeUpstream, stream: bool
) -> None:
    # The proxy records a call after its client has read the last event, so whoever reads the
    # totals once its callers return (the demo does) must first stop the proxy: stop waits.
    fake.clear()
    recording = _SlowToFinish()
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0")
    proxy = ProxyServer(config, recorders=[recording]).start()
    try:
        with openai.OpenAI(base_url=proxy.base_url, api_key="sk-x", max_retries=0) as client:
            answer = client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, stream=stream)
            if stream:
                assert len(list(answer)) > 1
    finally:
        proxy.stop()
    assert [e.outcome for e in recording.of(CallFinished)] == ["ok"]


def test_a_stream_past_the_grace_is_cut_and_its_call_ends(fake: FakeUpstream) -> None:
    # The server cancels what is still running at the deadline: the relay and the upstream
    # attempt under it must end there, the call be finished once, and the client's stream
    # end (as an error, never complete) instead of hanging.
    fake.clear()
    recording = Recording()
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", shutdown_grace=1)
    proxy = ProxyServer(config, recorders=[recording]).start()
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-x", max_retries=0, timeout=60)
    received: list[str] = []
    errors: list[BaseException] = []
    first = threading.Event()

    def consume() -> None:
        try:
            stream = client.chat.completions.create(
                model="gpt-4o",
                messages=CHAT_MESSAGES,
                stream=True,
                extra_headers={"x-fake-gap": "0.1", "x-fake-chunks": "400"},  # 40 s
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
                    first.set()
        except Exception as error:  # recorded and asserted below
            errors.append(error)

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        assert first.wait(30)
        started = time.monotonic()
        proxy.stop()
        reader.join(30)
        assert not reader.is_alive(), "the client's stream hung after the proxy stopped"
        assert time.monotonic() - started < 20
    finally:
        reader.join(60)
        proxy.stop()
        client.close()
    assert 0 < len(received) < 400
    # Not a cut connection: an error event of the stream's dialect, which the SDK raises.
    assert [type(e) for e in errors] == [openai.APIError], errors
    assert "the proxy shut down before the stream ended" in str(errors[0])
    finished = recording.of(CallFinished)
    assert len(finished) == 1
    # The client was still there: its call failed, as the error event says, and is no
    # cancellation (which is a client that left).
    assert (finished[0].outcome, finished[0].error_type) == ("error", "stream_interrupted")


def test_a_call_still_waiting_at_the_end_of_the_grace_gets_503(fake: FakeUpstream) -> None:
    # Before its first token a call has no stream to end: it gets an error the SDKs know
    # (503, so they may retry elsewhere), not the server's plain-text 500.
    fake.clear()
    recording = Recording()
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", shutdown_grace=1)
    proxy = ProxyServer(config, recorders=[recording]).start()
    answers: list[httpx2.Response] = []
    body = {"model": "gpt-4o", "messages": CHAT_MESSAGES, "stream": True}
    caller = threading.Thread(
        target=lambda: answers.append(
            httpx2.post(
                f"{proxy.base_url}/chat/completions", json=body, headers={"x-fake-ttft": "30"}, timeout=30
            )
        )
    )
    caller.start()
    try:
        assert until(lambda: len(fake.requests) == 1)  # the upstream has it, and stalls
        proxy.stop()
    finally:
        caller.join(30)
        proxy.stop()
    (answer,) = answers
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "shutting_down"
    # The client is still there and got an error: the call failed it (no upstream to blame).
    finished = recording.finished
    assert (finished.outcome, finished.error_type) == ("error", "other")


def test_ops_listener_serves_only_metrics_and_probes(fake: FakeUpstream) -> None:
    config = ProxyConfig(upstream=fake.base_url, listen="127.0.0.1:0", ops_listen="127.0.0.1:0")
    with ProxyServer(config, recorders=[]) as proxy:
        assert proxy.ops_port is not None
        ops = f"http://127.0.0.1:{proxy.ops_port}"
        assert httpx2.get(f"{ops}/healthz").status_code == 200
        assert httpx2.get(f"{ops}/metrics").status_code == 200
        assert httpx2.get(f"{ops}/v1/models").status_code == 404  # the API is not on this listener
        assert httpx2.get(f"{proxy.base_url}/models").status_code == 200


def test_a_client_that_stops_reading_is_dropped_and_its_call_cancelled(
    proxied: tuple[ProxyServer, Recording], caplog: pytest.LogCaptureFixture
) -> None:
    # It neither reads nor leaves: its socket fills, the proxy's send waits. Past body_timeout
    # (0.5 s here) it is dropped, and the call stops instead of holding its upstream.
    server, recording = proxied
    body = json.dumps({"model": "gpt-4o", "messages": CHAT_MESSAGES, "stream": True}).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"x-fake-chunks: 100000\r\nx-fake-gap: 0\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(head.encode() + body)
        assert until(lambda: bool(recording.of(CallFinished)), timeout=10)
        assert recording.finished.outcome == "cancelled"
        assert "dropping a client that let one send wait over 0.5 s" in caplog.text
        # The connection ends at once, unflushed: a close would wait for this client to read
        # what it never will, holding the socket and its buffers (megabytes) while it stays.
        assert until(lambda: _tcp_state(sock) != _ESTABLISHED, timeout=5)
        with pytest.raises(ConnectionResetError):
            _read_to_the_end(sock)
    assert "without completing response" not in caplog.text  # uvicorn saw the client gone


_ESTABLISHED = 1  # Linux's tcp_info.tcpi_state


def _read_to_the_end(sock: socket.socket) -> None:
    while sock.recv(1 << 20):
        pass


def _tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0]


def test_a_proxy_holding_its_key_warns_of_an_upstream_fallback_that_would_be_sent_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keyless = Fallback.upstream("https://backup.example/v1")
    keyed = Fallback.upstream("https://other.example/v1", api_key="sk-other-0000")
    config = ProxyConfig(
        upstream="http://127.0.0.1:9/v1",
        listen="127.0.0.1:0",
        upstream_api_key="sk-proxy-own-key-0000abcd",
        client_token="proxy-token-5e1",
        fallbacks=(keyless, keyed),
    )
    caplog.set_level(logging.WARNING, logger="streamtap.proxy")
    with ProxyServer(config, recorders=[]):
        pass
    warned = [r.getMessage() for r in caplog.records if "api_key" in r.getMessage()]
    assert warned == [
        "fallbacks[0] (upstream https://backup.example/v1) has no api_key: it is sent the proxy's own "
        "upstream key; give it an api_key of its own unless that upstream may see this key"
    ]
    assert "sk-proxy" not in caplog.text
