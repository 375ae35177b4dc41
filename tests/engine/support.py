"""Test helpers: a recorder that keeps every event, readers for both APIs and modes, and a
watch on the logs that would tell of a fault."""

from __future__ import annotations

import datetime
import gc
import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamtap import CallFinished, CallStarted
from streamtap._background import WORKER
from streamtap._events import AttemptFinished, BreakerTransition, CallEvent

CHAT_MESSAGES = [{"role": "user", "content": "hello"}]
RESPONSES_INPUT = "hello"


class Recording:
    """A Recorder that keeps every event of every call, in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def start_call(self, event: CallStarted) -> Recording:
        self.events.append(event)
        return self

    def on_event(self, event: CallEvent) -> None:
        self.events.append(event)

    def breaker_changed(self, event: BreakerTransition) -> None:
        self.events.append(event)

    def telemetry_failed(self, error: BaseException) -> None:
        raise AssertionError(f"a recorder failed: {error!r}")

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def attempts(self) -> str:
        """What each attempt did, for an assertion's message: a failure on a loaded CI machine
        must say which attempt failed, how, and after how long."""
        return (
            "; ".join(
                f"attempt {e.attempt}: status {e.status_code}, {e.error_type or 'served'}"
                f"{f' ({e.phase})' if e.phase else ''} after {e.duration * 1000:.0f} ms"
                for e in self.of(AttemptFinished)
            )
            or "no attempt finished"
        )

    @property
    def finished(self) -> CallFinished:
        (finished,) = self.of(CallFinished)
        return finished


class Problems(logging.Handler):
    """Every record at WARNING or above from the loggers that would tell of a fault of ours
    (uvicorn's own logger does not propagate, so it is watched by name); a context manager."""

    LOGGERS = ("streamtap", "opentelemetry", "asyncio", "uvicorn.error")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(f"{record.name}: {record.getMessage()[:300]}")

    def __enter__(self) -> Problems:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


def create(client: Any, api: str, **kwargs: Any) -> Any:
    if api == "chat":
        return client.chat.completions.create(model="gpt-4o", messages=CHAT_MESSAGES, **kwargs)
    return client.responses.create(model="gpt-4o", input=RESPONSES_INPUT, **kwargs)


def expected(fake: Any, api: str) -> list[str]:
    if api == "chat":
        return list(fake.expected_pieces(model="gpt-4o", messages=CHAT_MESSAGES))
    return list(fake.expected_pieces(model="gpt-4o", input=RESPONSES_INPUT))


def piece(api: str, item: Any) -> str:
    if api == "chat":
        return "".join(choice.delta.content or "" for choice in item.choices)
    return str(item.delta) if item.type == "response.output_text.delta" else ""


def read_sync(client: Any, api: str, received: list[str], **kwargs: Any) -> None:
    """Stream one call, appending each text piece to `received` as it arrives."""
    stream = create(client, api, stream=True, **kwargs)
    with stream:
        for item in stream:
            text = piece(api, item)
            if text:
                received.append(text)


async def read_async(client: Any, api: str, received: list[str], **kwargs: Any) -> None:
    """As read_sync; then closes the client, whose connections belong to this event loop."""
    try:
        stream = await create(client, api, stream=True, **kwargs)
        async with stream:
            async for item in stream:
                text = piece(api, item)
                if text:
                    received.append(text)
    finally:
        await client.close()


def write_self_signed(folder: Path, *, ip: str | None = None) -> tuple[Path, Path]:
    """A self-signed certificate for "localhost" (and `ip`, when given), valid for an hour.

    Returns the PEM paths of the certificate and its key. Made at test time with `cryptography`.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if ip is not None:
        names.append(x509.IPAddress(ipaddress.ip_address(ip)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def collect() -> None:
    """Run the collector, then wait for the recording its finalizers handed to streamtap's
    background thread (they never record where the collector runs)."""
    gc.collect()
    assert WORKER.settle(), "streamtap's background thread did not settle in 5 s"
