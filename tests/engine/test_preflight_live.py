"""`preflight` and `streamtap check` over real loopback sockets: the fake upstream and a local TLS server."""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import openai
import pytest
from click.testing import CliRunner, Result

from streamtap._cli import main
from streamtap._preflight import apreflight, preflight
from streamtap._preflight_net import check_tls
from streamtap._preflight_report import Check, PreflightReport, skipped
from streamtap.fake import FakeConfig, FakeUpstream

from . import loopback
from .support import write_self_signed

KEY = "sk-test-streamtap-preflight-0123456789abcdefQ7z9"
WRONG = "sk-test-streamtap-preflight-wrong-wrong-wrongW0N9"  # 49 characters
UNRESOLVABLE = "http://streamtap-preflight.invalid/v1"
REJECTED_HINT = "the key was rejected: create a new key at https://platform.openai.com/api-keys or check {}"
_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "STREAMTAP_CHECK_BASE_URL",
    "STREAMTAP_CHECK_API_KEY_ENV",
    "STREAMTAP_CHECK_TIMEOUT",
    "STREAMTAP_CHECK_JSON",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy, key or base URL from the machine running the tests."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def keyed() -> Iterator[FakeUpstream]:
    with FakeUpstream(FakeConfig(api_key=KEY)) as upstream:
        yield upstream


def _statuses(report: PreflightReport) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


def _check(args: list[str], **env: str) -> Result:
    return CliRunner().invoke(main, ["check", *args], env=env)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_preflight_passes_against_the_fake(keyed: FakeUpstream) -> None:
    report = preflight(api_key=KEY, base_url=keyed.base_url, timeout=2)
    assert report.ok is True
    assert [(c.name, c.ok, c.detail, c.hint) for c in report.checks] == [
        ("api_key", True, "sk-...Q7z9 (48 chars, from the given api_key)", None),
        ("base_url", True, f"{keyed.base_url} (from the given base URL)", None),
        ("dns", True, "127.0.0.1 → 127.0.0.1", None),
        ("tcp", True, f"connected to 127.0.0.1:{keyed.port}", None),
        ("tls", True, "skipped: http:// has no TLS", None),
        ("models", True, "GET /models: 200 OK, 7 models", None),
    ]
    assert KEY not in str(report)
    assert KEY not in report.to_json()
    last = keyed.requests[-1]
    assert (last.method, last.path, last.status) == ("GET", "/v1/models", 200)


@pytest.mark.parametrize("cls", [openai.OpenAI, openai.AsyncOpenAI], ids=["sync-client", "async-client"])
def test_preflight_reads_the_clients_key_and_base_url(keyed: FakeUpstream, cls: type[openai.OpenAI]) -> None:
    report = preflight(cls(api_key=KEY, base_url=keyed.base_url), timeout=2)
    assert report.ok is True
    assert report.check("api_key").detail == "sk-...Q7z9 (48 chars, from the client's api_key)"
    assert report.check("base_url").detail == f"{keyed.base_url}/ (from the client's base_url)"


@pytest.mark.anyio
async def test_apreflight(keyed: FakeUpstream) -> None:
    report = await apreflight(openai.AsyncOpenAI(api_key=WRONG, base_url=keyed.base_url), timeout=2)
    assert _statuses(report)["models"] == "fail"
    assert report.check("models").hint == REJECTED_HINT.format("the client's api_key")


def test_wrong_key_is_rejected_with_a_hint_and_never_shown(
    keyed: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    report = preflight(api_key=WRONG, base_url=keyed.base_url, timeout=2)
    assert report.ok is False
    assert report.checks[-1] == Check(
        "models",
        False,
        "GET /models: 401 Unauthorized: Incorrect API key provided. "
        "You can find your API key at https://platform.openai.com/account/api-keys.",
        REJECTED_HINT.format("the given api_key"),
        seconds=report.checks[-1].seconds,
    )
    result = _check(["--base-url", keyed.base_url, "--timeout", "2"], OPENAI_API_KEY=WRONG)
    assert result.exit_code == 1
    assert "✗ models    GET /models: 401 Unauthorized" in result.output
    assert f"hint: {REJECTED_HINT.format('OPENAI_API_KEY')}" in result.output
    assert "sk-...W0N9 (49 chars, from OPENAI_API_KEY)" in result.output
    assert result.output.rstrip().endswith("preflight FAILED: models")
    for text in (str(report), report.to_json(), result.output):
        assert WRONG not in text
    assert caplog.records, "the preflight logs each check at debug"
    for record in caplog.records:
        assert WRONG not in record.getMessage()


def test_cli_passes_with_json_and_streamtap_env(
    keyed: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"MY_KEY": KEY, "STREAMTAP_CHECK_BASE_URL": keyed.base_url, "STREAMTAP_CHECK_API_KEY_ENV": "MY_KEY"}
    result = _check(["--json"], **env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True
    assert [(c["name"], c["status"]) for c in data["checks"]] == [
        ("api_key", "ok"),
        ("base_url", "ok"),
        ("dns", "ok"),
        ("tcp", "ok"),
        ("tls", "skip"),
        ("models", "ok"),
    ]
    assert data["checks"][0]["detail"] == "sk-...Q7z9 (48 chars, from MY_KEY)"
    assert KEY not in result.output
    assert all(KEY not in record.getMessage() for record in caplog.records)


def test_cli_reads_openai_base_url_like_the_sdk(keyed: FakeUpstream) -> None:
    result = _check([], OPENAI_API_KEY=KEY, OPENAI_BASE_URL=keyed.base_url)
    assert result.exit_code == 0, result.output
    assert f"✓ base_url  {keyed.base_url} (from OPENAI_BASE_URL)" in result.output
    assert result.output.rstrip().endswith("preflight passed")


def test_missing_key_fails_and_skips_the_request(keyed: FakeUpstream) -> None:
    result = _check(["--base-url", keyed.base_url])
    assert result.exit_code == 1
    assert "✗ api_key   no API key (OPENAI_API_KEY is not set)" in result.output
    assert "- models    skipped: needs api_key" in result.output


def test_unresolvable_host() -> None:
    report = preflight(api_key=KEY, base_url=UNRESOLVABLE, timeout=2)
    dns = report.check("dns")
    assert (dns.ok, dns.detail.startswith("cannot resolve 'streamtap-preflight.invalid': ")) == (False, True)
    assert dns.hint == (
        "check 'streamtap-preflight.invalid' for typos (the given base URL), "
        "then this machine's DNS and network"
    )
    assert report.checks[3:] == (
        skipped("tcp", "needs dns"),
        skipped("tls", "http:// has no TLS", ok=True),
        skipped("models", "needs dns"),
    )
    result = _check(["--base-url", UNRESOLVABLE], OPENAI_API_KEY=KEY)
    assert result.exit_code == 1
    assert "✗ dns       cannot resolve 'streamtap-preflight.invalid'" in result.output


def test_connection_refused() -> None:
    port = _closed_port()
    report = preflight(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", timeout=2)
    assert _statuses(report) == {
        "api_key": "ok",
        "base_url": "ok",
        "dns": "ok",
        "tcp": "fail",
        "tls": "skip",
        "models": "skip",
    }
    tcp = report.check("tcp")
    assert (tcp.detail, tcp.hint) == (
        f"connection to 127.0.0.1:{port} refused",
        f"nothing listens on 127.0.0.1:{port}: is the server running and the port right (the given base URL)?",
    )
    assert report.check("models").detail == "skipped: needs tcp"


def test_hints_name_where_the_key_and_the_url_came_from(keyed: FakeUpstream) -> None:
    """Before: a key from `--api-key-env MY_KEY` was rejected with "check OPENAI_API_KEY", and a
    URL from --base-url was blamed on OPENAI_BASE_URL, neither of which the user had set."""
    result = _check(["--base-url", keyed.base_url, "--api-key-env", "MY_KEY"], MY_KEY=WRONG)
    assert result.exit_code == 1
    assert f"hint: {REJECTED_HINT.format('MY_KEY')}" in result.output
    root = keyed.base_url.removesuffix("/v1")
    result = _check(["--base-url", root], MY_KEY=KEY, OPENAI_API_KEY=KEY)
    assert "base URL likely lacks /v1 or has a typo (the given base URL)" in result.output
    port = _closed_port()
    result = _check([], OPENAI_API_KEY=KEY, OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
    assert "is the server running and the port right (OPENAI_BASE_URL)?" in result.output
    result = _check(["--base-url", f"http://127.0.0.1:{port}/v1"], OPENAI_API_KEY=KEY)
    assert "is the server running and the port right (the given base URL)?" in result.output
    assert "OPENAI_BASE_URL" not in result.output  # not set, so never blamed


def test_https_to_a_plain_http_port(keyed: FakeUpstream) -> None:
    report = preflight(api_key=KEY, base_url=keyed.base_url.replace("http://", "https://"), timeout=2)
    tls = report.check("tls")
    assert (tls.ok, tls.hint) == (
        False,
        "the server does not speak TLS on this port: use http:// if it is a plain-HTTP server",
    )
    assert report.check("models") == skipped("models", "needs tls")


def test_cli_usage_errors_exit_2() -> None:
    assert _check(["--timeout", "soon"]).exit_code == 2
    assert _check(["--timeout", "0"]).exit_code == 2
    for name in ("", "sk-proj-LEAKCANARY-1234", "A=B"):
        result = _check(["--api-key-env", name])
        assert result.exit_code == 2
        assert (
            "Invalid value for '--api-key-env': must be the name of an environment variable" in result.output
        )
        assert "LEAKCANARY" not in result.output


# A local TLS server with a self-signed certificate for "localhost", made at test time.


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    # Only the name, no IP address: connecting as 127.0.0.1 must fail the host check.
    return write_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_port(self_signed: tuple[Path, Path]) -> Iterator[int]:
    """A TLS server on 127.0.0.1 that completes handshakes (when the client trusts it) and closes."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # until the client closes
            except OSError:  # the client rejected the certificate: expected
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    listener.close()


def test_self_signed_certificate_fails_verification_with_a_hint(tls_port: int) -> None:
    report = preflight(api_key=KEY, base_url=f"https://localhost:{tls_port}/v1", timeout=2)
    assert report.check("tcp").ok is True
    tls = report.check("tls")
    assert (tls.ok, tls.detail) == (False, "certificate verify failed: self-signed certificate")
    assert tls.hint == (
        "the certificate is not signed by a CA this machine trusts (self-signed, or a TLS-inspecting "
        "proxy): set SSL_CERT_FILE to a bundle with your organization's CA"
    )
    assert report.check("models") == skipped("models", "needs tls")


def test_tls_verifies_with_a_trusted_ca_and_checks_the_host(
    tls_port: int, self_signed: tuple[Path, Path]
) -> None:
    trusting = ssl.create_default_context(cafile=str(self_signed[0]))
    with socket.create_connection(("127.0.0.1", tls_port), timeout=2) as sock:
        good = check_tls(sock, "localhost", 2, trusting)
    assert good.ok is True
    assert re.fullmatch(r"TLSv1\.[23], certificate verified for localhost, valid until .+ GMT", good.detail)
    with socket.create_connection(("127.0.0.1", tls_port), timeout=2) as sock:
        wrong_host = check_tls(sock, "127.0.0.1", 2, trusting)
    assert wrong_host == Check(
        "tls",
        False,
        "certificate verify failed: IP address mismatch, certificate is not valid for '127.0.0.1'.",
        "the certificate is for another host: check the host in the base URL",
    )


def test_behind_a_proxy_the_network_steps_check_the_proxy() -> None:
    port = _closed_port()
    environ = {"OPENAI_API_KEY": KEY, "HTTPS_PROXY": f"http://user:pw@127.0.0.1:{port}"}
    report = preflight(base_url="https://api.openai.com/v1", environ=environ, timeout=2)
    assert report.checks[2:] == (
        Check(
            "dns", True, f"proxy 127.0.0.1:{port}: 127.0.0.1 → 127.0.0.1", seconds=report.checks[2].seconds
        ),
        Check(
            "tcp",
            False,
            f"proxy 127.0.0.1:{port}: connection to 127.0.0.1:{port} refused",
            f"nothing listens on 127.0.0.1:{port}: check the proxy in HTTPS_PROXY / HTTP_PROXY / ALL_PROXY",
            seconds=report.checks[3].seconds,
        ),
        skipped("tls", "tunnelled through the proxy: the models request verifies it", ok=True),
        skipped("models", "needs tcp"),
    )
    assert "pw" not in str(report)


@pytest.mark.parametrize("no_proxy", ["127.0.0.1:{port}", "127.0.0.0/8", "localhost,127.0.0.1"])
def test_check_goes_the_way_the_sdk_goes_past_a_proxy(
    keyed: FakeUpstream, monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    """A NO_PROXY entry with a port or a CIDR network sends the SDK straight to the upstream;
    check took the (dead) proxy instead, failed, and hinted at the proxy."""
    port = int(keyed.base_url.rsplit(":", 1)[1].split("/")[0])
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=port))
    with openai.OpenAI(base_url=keyed.base_url, api_key=KEY, max_retries=0) as sdk:
        assert sdk.models.list().data  # the SDK, read from the same environment, goes direct
    report = preflight(api_key=KEY, base_url=keyed.base_url, timeout=2)
    assert report.ok, str(report)
    assert report.check("tcp").detail == f"connected to 127.0.0.1:{port}"  # not "proxy ...: "
    # The same environment given as a mapping decides the same.
    environ = {"HTTP_PROXY": f"http://127.0.0.1:{_closed_port()}", "NO_PROXY": no_proxy.format(port=port)}
    assert preflight(api_key=KEY, base_url=keyed.base_url, timeout=2, environ=environ).ok


def test_a_no_proxy_port_that_is_not_the_upstreams_leaves_the_proxy_in_every_step(
    keyed: FakeUpstream,
) -> None:
    proxy_port, port = _closed_port(), int(keyed.base_url.rsplit(":", 1)[1].split("/")[0])
    environ = {"HTTP_PROXY": f"http://127.0.0.1:{proxy_port}", "NO_PROXY": f"127.0.0.1:{port + 1}"}
    report = preflight(api_key=KEY, base_url=keyed.base_url, timeout=2, environ=environ)
    assert report.check("tcp").detail == (
        f"proxy 127.0.0.1:{proxy_port}: connection to 127.0.0.1:{proxy_port} refused"
    )
    assert report.check("models") == skipped("models", "needs tcp")


def test_a_key_the_server_echoes_in_its_reason_phrase_is_never_shown() -> None:
    """The reason phrase is the server's own text, as free as a body: some echo what they got."""

    class Echo(loopback.Handler):
        def do_GET(self) -> None:
            body = b'{"error": {"message": "no", "code": "invalid_api_key"}}'
            self.send_response(401, f"Bad {self.headers['authorization'].removeprefix('Bearer ')}")
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with loopback.serve(Echo) as url:
        report = preflight(api_key=KEY, base_url=f"{url}/v1", timeout=2)
    assert not report.ok
    assert "401 Bad sk-...Q7z9" in str(report)
    assert KEY not in str(report)
    assert KEY not in report.to_json()


# A server that answers too slowly, a byte at a time: each read within any per-read timeout.


class _Drip(loopback.Handler):
    """Sends its answer a byte every 0.2 s, for at most 4 s: the head (``/v1/models``), or the
    head at once and then the body (``/body/v1/models``)."""

    def do_GET(self) -> None:
        body = b'{"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]}'
        if self.path.startswith("/body"):
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            slow = body
        else:
            slow = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"x-pad: " + b"x" * 40
        for byte in slow[:20]:
            time.sleep(0.2)
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return


@pytest.mark.parametrize("path", ["", "/body"], ids=["head", "body"])
def test_the_timeout_bounds_the_whole_models_request(path: str) -> None:
    """Before: httpx2's timeout is per read, so a server dripping its head or body a byte at a
    time held the check (and /readyz) for as long as it dripped, and the hint said "no answer"."""
    with loopback.serve(_Drip) as url:
        start = time.monotonic()
        report = preflight(api_key=KEY, base_url=f"{url}{path}/v1", timeout=1)
        elapsed = time.monotonic() - start
    models = report.check("models")
    assert elapsed < 2.5, f"took {elapsed:.1f} s with a 1 s timeout"
    assert (models.ok, models.detail) == (False, f"GET {url}{path}/v1/models took more than 1 s")
    assert models.hint is not None
    assert models.hint.startswith("answered too slowly (")
    assert models.hint.endswith(
        " bytes in 1 s, not the whole answer): check a proxy or gateway in the way, or raise --timeout"
    )


def test_the_models_request_is_bounded_as_a_whole_on_this_httpx2() -> None:
    """The bound rests on httpx2's pool taking a network backend (no public option): a release
    that changes it leaves only the per-operation timeouts, and this fails."""
    from streamtap._preflight_net import deadline_transport, has_deadline

    transport, _ = deadline_transport(None, ssl.create_default_context(), 1.0)
    with transport:
        assert has_deadline(transport)


def test_a_server_that_never_answers_gets_no_answer_within_the_timeout() -> None:
    class Silent(loopback.Handler):
        def do_GET(self) -> None:
            time.sleep(3)

    with loopback.serve(Silent) as url:
        start = time.monotonic()
        report = preflight(api_key=KEY, base_url=f"{url}/v1", timeout=1)
        assert time.monotonic() - start < 2.5
    assert report.check("models").hint == (
        "no answer in 1 s: raise --timeout, or check a firewall or proxy (HTTPS_PROXY)"
    )


def test_the_timeout_bounds_the_whole_tls_handshake(tls_port: int, self_signed: tuple[Path, Path]) -> None:
    """A server that drips its handshake a byte at a time fails the TLS step at the timeout
    (CPython turns the socket's timeout into one deadline for the whole handshake)."""
    relay = socket.create_server(("127.0.0.1", 0))
    relay.settimeout(3)

    def drip() -> None:
        with relay, relay.accept()[0] as client, socket.create_connection(("127.0.0.1", tls_port)) as server:
            client.settimeout(3)
            server.sendall(client.recv(65536))  # the ClientHello
            for _ in range(20):
                time.sleep(0.2)
                try:
                    client.sendall(server.recv(1))
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    trusting = ssl.create_default_context(cafile=str(self_signed[0]))
    with socket.create_connection(relay.getsockname(), timeout=2) as sock:
        start = time.monotonic()
        tls = check_tls(sock, "localhost", 1, trusting)
        elapsed = time.monotonic() - start
    thread.join(5)
    assert elapsed < 1.5, f"took {elapsed:.1f} s with a 1 s timeout"
    assert (tls.ok, tls.detail) == (False, "TLS handshake timed out after 1 s")


# The CA certificates the SDK's HTTP client loads: SSL_CERT_FILE.


@pytest.mark.parametrize(
    ("content", "problem", "hint"),
    [
        pytest.param(
            None,
            "does not exist",
            "point SSL_CERT_FILE at a PEM file of CA certificates (with your organization's CA), or unset it",
            id="missing",
        ),
        pytest.param(
            "not a certificate\n",
            "has no PEM certificate in it",
            "point SSL_CERT_FILE at a PEM file of CA certificates (with your organization's CA), or unset it",
            id="no-certificates",
        ),
        pytest.param(
            "dir",
            "is a directory",
            "a directory of CA certificates goes in SSL_CERT_DIR; SSL_CERT_FILE takes a PEM file",
            id="directory",
        ),
    ],
)
def test_a_bad_ssl_cert_file_fails_the_tls_step_with_a_report(
    keyed: FakeUpstream, tmp_path: Path, content: str | None, problem: str, hint: str
) -> None:
    """Before: loading the CA certificates raised outside any step: a traceback, no report, no JSON."""
    path = tmp_path / "ca.pem"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    result = _check(["--base-url", keyed.base_url, "--json"], OPENAI_API_KEY=KEY, SSL_CERT_FILE=str(path))
    assert result.exit_code == 1, result.output
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert (checks["tls"]["status"], checks["tls"]["detail"], checks["tls"]["hint"]) == (
        "fail",
        f"SSL_CERT_FILE={str(path)!r} {problem}",
        hint,
    )
    assert (checks["models"]["status"], checks["models"]["detail"]) == ("skip", "skipped: needs tls")


# A key from a callable: the SDK's api_key= provider.


@pytest.mark.anyio
async def test_an_api_key_provider_is_called_and_its_key_checked(keyed: FakeUpstream) -> None:
    """Before: a client whose api_key is a callable was reported as having an empty key."""
    detail = "sk-...Q7z9 (48 chars, from the client's api_key provider)"
    with openai.OpenAI(api_key=lambda: KEY, base_url=keyed.base_url) as sync_client:
        report = preflight(sync_client, timeout=2)
        assert report.ok, str(report)
        assert report.check("api_key").detail == detail
        report = await apreflight(sync_client, timeout=2)
        assert report.check("api_key").detail == detail

    async def provide() -> str:
        return KEY

    async def stuck() -> str:
        await anyio.sleep(10)
        return KEY

    async_client = openai.AsyncOpenAI(api_key=provide, base_url=keyed.base_url)
    report = await apreflight(async_client, timeout=2)
    assert report.ok, str(report)
    assert report.check("api_key").detail == detail
    report = await anyio.to_thread.run_sync(lambda: preflight(async_client, timeout=2))  # no loop there
    assert report.ok, str(report)
    report = await apreflight(openai.AsyncOpenAI(api_key=stuck, base_url=keyed.base_url), timeout=0.5)
    assert report.check("api_key").detail == "the client's api_key provider did not return in 0.5 s"


@pytest.mark.anyio
async def test_an_api_key_provider_that_fails_fails_the_key_step_without_the_key(keyed: FakeUpstream) -> None:
    def refuse() -> str:
        raise RuntimeError(f"the vault refused to give {KEY}")

    async def refuse_async() -> str:
        refuse()
        return KEY

    hint = "fix the provider: the SDK calls it for the key before every request, and fails as it does"
    expected = (
        "fail",
        "the client's api_key provider raised RuntimeError: the vault refused to give sk-...Q7z9",
        hint,
    )
    sync_report = preflight(openai.OpenAI(api_key=refuse, base_url=keyed.base_url), timeout=2)
    async_report = await apreflight(
        openai.AsyncOpenAI(api_key=refuse_async, base_url=keyed.base_url), timeout=2
    )
    for report in (sync_report, async_report):
        key = report.check("api_key")
        assert (key.status, key.detail, key.hint) == expected
        assert report.check("models") == skipped("models", "needs api_key")
        assert KEY not in str(report)
        assert KEY not in report.to_json()


# The organization and project headers.


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        pytest.param("OPENAI_ORG_ID", "org-abc123\n", "has a newline at its start or end", id="org-newline"),
        pytest.param(
            "OPENAI_PROJECT_ID",
            "proj_ab\u00e7",
            "has a non-ASCII or control character at position 7",
            id="project-non-ascii",
        ),
        pytest.param(
            "OPENAI_PROJECT_ID",
            "proj_a\x7fb",
            "has a non-ASCII or control character at position 6",
            id="project-control",
        ),
    ],
)
def test_an_organization_or_project_no_header_can_carry_is_named(
    keyed: FakeUpstream, variable: str, value: str, problem: str
) -> None:
    """Before: a newline failed the request as "Illegal header value" with a network hint, and a
    non-ASCII character raised UnicodeEncodeError out of the check."""
    report = preflight(api_key=KEY, base_url=keyed.base_url, timeout=2, environ={variable: value})
    models = report.check("models")
    assert models.status == "fail"
    assert models.detail.startswith(f"{variable} (")
    assert models.detail.endswith(f") {problem}: no request can send it")
    assert [c.status for c in report.checks[:4]] == ["ok", "ok", "ok", "ok"]  # the network still checked


# An HTTP proxy that wants credentials.


def test_a_proxy_that_wants_credentials_gets_the_407_hint() -> None:
    class Wants(loopback.Handler):
        def do_GET(self) -> None:
            self.send_response(407)
            self.send_header("proxy-authenticate", 'Basic realm="corp"')
            self.send_header("content-length", "0")
            self.end_headers()

    with loopback.serve(Wants) as proxy:
        environ = {"HTTP_PROXY": proxy}
        report = preflight(api_key=KEY, base_url="http://upstream.test/v1", timeout=2, environ=environ)
    assert report.check("tls") == skipped("tls", "http:// has no TLS (the proxy forwards it)", ok=True)
    assert report.check("models").hint == (
        "the proxy wants credentials: put them in the proxy URL, like http://user:password@proxy:port "
        "(HTTPS_PROXY / HTTP_PROXY / ALL_PROXY)"
    )
