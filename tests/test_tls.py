"""``rediss://``: redkit over TLS, end to end.

The embedded Valkey is built without TLS, so the server side is a TLS terminator in the test's
own event loop that forwards bytes to the plain test server, as stunnel or a cloud load
balancer would in front of Redis. The certificate authority and the server certificate come
from trustme; nothing is installed by hand.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

import redkit
from redkit.embedded import ValkeyProcess
from redkit.scripts import ScriptSet

INCR = ScriptSet("luapkg")["incr_by"]


@dataclass
class TLSFront:
    port: int
    ca_file: Path
    connections: int = 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def tls_front(standalone_server: ValkeyProcess, tmp_path: Path) -> AsyncIterator[TLSFront]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    front = TLSFront(port=0, ca_file=ca_file)

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        front.connections += 1
        up_reader, up_writer = await asyncio.open_connection(
            standalone_server.host, standalone_server.port
        )
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", 0, ssl=server_ctx)
    front.port = server.sockets[0].getsockname()[1]
    async with server:
        yield front
        server.close()


async def test_every_kind_of_call_works_over_tls(tls_front: TLSFront) -> None:
    url = f"rediss://127.0.0.1:{tls_front.port}/0?ssl_ca_certs={tls_front.ca_file}"
    async with redkit.connect(url, "tls") as rk:
        assert rk.mode == "standalone"
        assert await rk.ping() > 0
        key = rk.keys.group("test", "tls").key("n")
        assert await rk.run(INCR, [key], [1]) == 1  # a lone script call
        # Concurrent calls share pipelined round trips on the TLS connections.
        results = await asyncio.gather(*(rk.run(INCR, [key], [1]) for _ in range(200)))
        assert sorted(results) == list(range(2, 202))
        async with rk.lock("tls-lock", ttl=5) as lock:
            assert lock.held
        decision = await rk.rate_limiter(5, 60, algorithm="gcra").hit("tls-user")
        assert decision.allowed
        assert decision.remaining == 4
        await rk.redis.delete(key)
    assert tls_front.connections >= 1  # the calls really went through the TLS front


async def test_a_server_certificate_the_client_does_not_trust_is_refused(
    tls_front: TLSFront,
) -> None:
    # No ssl_ca_certs: the system's authorities do not know the test CA.
    url = f"rediss://127.0.0.1:{tls_front.port}/0"
    with pytest.raises(redkit.ConnectionLost, match=r"(?i)certificate"):
        async with redkit.connect(url, "tls-untrusted"):
            pass


async def test_plain_redis_to_a_tls_port_fails_clearly(tls_front: TLSFront) -> None:
    url = f"redis://127.0.0.1:{tls_front.port}/0"
    with pytest.raises(redkit.ConnectionLost):
        async with redkit.connect(url, "tls-plain", command_timeout=1.0):
            pass
