"""RTMP handshake cores: client/server pairs (digest and plain), fragmentation, leftovers, errors, fuzz."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.rtmp.errors import LocalProtocolError
from appliance.media.rtmp.handshake import (
    FMS_KEY,
    FP_KEY,
    HANDSHAKE_SIZE,
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
)
from tests.fuzz import examples

# -- the digest scheme, written out again from the description (not imported from the module) ----------


def offset(packet: bytes, scheme: int) -> int:
    base = 8 if scheme == 0 else 772
    return sum(packet[base : base + 4]) % 728 + base + 4


def digest_at(packet: bytes, key: bytes, scheme: int) -> tuple[bytes, bytes]:
    """(digest found in the packet, digest it should have)."""
    at = offset(packet, scheme)
    expected = hmac.new(key, packet[:at] + packet[at + 32 :], hashlib.sha256).digest()
    return packet[at : at + 32], expected


def sign(packet: bytes, key: bytes, scheme: int) -> bytes:
    at = offset(packet, scheme)
    digest = hmac.new(key, packet[:at] + packet[at + 32 :], hashlib.sha256).digest()
    return packet[:at] + digest + packet[at + 32 :]


def reply_valid(reply: bytes, peer_digest: bytes, full_key: bytes) -> bool:
    key = hmac.new(full_key, peer_digest, hashlib.sha256).digest()
    return hmac.new(key, reply[:-32], hashlib.sha256).digest() == reply[-32:]


def rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def pair(*, digest: bool = True, seed: int = 1) -> tuple[ClientHandshake, ServerHandshake]:
    return (
        ClientHandshake(rng=rng(seed), epoch_ms=1000, digest=digest),
        ServerHandshake(rng=rng(seed + 1), epoch_ms=2000),
    )


def run(client: ClientHandshake, server: ServerHandshake, *, step: int | None = None) -> dict[str, bytes]:
    """Drive a pair to completion, delivering `step` bytes at a time (None: whole writes)."""
    wire: dict[str, bytes] = {}

    def deliver(data: bytes, to: ClientHandshake | ServerHandshake) -> None:
        n = step or len(data)
        for i in range(0, len(data), n):
            to.receive_data(data[i : i + n])

    client.initiate()
    wire["c0c1"] = client.data_to_send()
    deliver(wire["c0c1"], server)
    wire["s0s1s2"] = server.data_to_send()
    deliver(wire["s0s1s2"], client)
    wire["c2"] = client.data_to_send()
    deliver(wire["c2"], server)
    assert client.complete and server.complete
    assert client.data_to_send() == b"" and server.data_to_send() == b""
    return wire


# -- pairs --------------------------------------------------------------------------------------------


def test_digest_pair() -> None:
    client, server = pair()
    wire = run(client, server)
    assert client.digest_used and server.digest_used
    assert server.peer_version == (0x80, 0x00, 0x07, 0x02)
    assert client.peer_version == (4, 5, 0, 1)
    c1 = wire["c0c1"][1:]
    s1 = wire["s0s1s2"][1 : 1 + HANDSHAKE_SIZE]
    s2 = wire["s0s1s2"][1 + HANDSHAKE_SIZE :]
    c2 = wire["c2"]
    assert (wire["c0c1"][0], wire["s0s1s2"][0]) == (3, 3)
    assert (len(c1), len(s1), len(s2), len(c2)) == (HANDSHAKE_SIZE,) * 4
    # C1 is signed with scheme 0 and the 30-byte Flash Player key; S1 answers with the same scheme.
    c1_digest, want = digest_at(c1, FP_KEY[:30], 0)
    assert c1_digest == want
    s1_digest, want = digest_at(s1, FMS_KEY[:36], 0)
    assert s1_digest == want
    assert reply_valid(s2, c1_digest, FMS_KEY)
    assert reply_valid(c2, s1_digest, FP_KEY)
    # Time fields.
    assert c1[:4] == (1000).to_bytes(4, "big") and s1[:4] == (2000).to_bytes(4, "big")


def test_plain_pair() -> None:
    client, server = pair(digest=False)
    wire = run(client, server)
    assert not client.digest_used and not server.digest_used
    assert server.peer_version == client.peer_version == (0, 0, 0, 0)
    c1 = wire["c0c1"][1:]
    s1 = wire["s0s1s2"][1 : 1 + HANDSHAKE_SIZE]
    assert c1[4:8] == s1[4:8] == bytes(4)  # RTMP spec 5.2.3: the zero field
    assert wire["s0s1s2"][1 + HANDSHAKE_SIZE :] == c1  # S2 echoes C1
    assert wire["c2"] == s1  # C2 echoes S1


@pytest.mark.parametrize("digest", [True, False])
@pytest.mark.parametrize("step", [1, 7, 1536, 1537])
def test_fragmented_delivery_equals_whole(digest: bool, step: int) -> None:
    whole = run(*pair(digest=digest, seed=5))
    pieces = run(*pair(digest=digest, seed=5), step=step)
    assert pieces == whole


def test_server_answers_as_soon_as_c0c1_arrive() -> None:
    client, server = pair()
    client.initiate()
    c0c1 = client.data_to_send()
    server.receive_data(c0c1[:-1])
    assert server.data_to_send() == b""
    server.receive_data(c0c1[-1:])
    assert len(server.data_to_send()) == 1 + 2 * HANDSHAKE_SIZE
    assert not server.complete


def test_server_finds_scheme_1_digests() -> None:
    # Flash Player (and librtmp for some versions) put the digest in the second half.
    base = bytes(4) + bytes((10, 0, 32, 18)) + random.Random(3).randbytes(HANDSHAKE_SIZE - 8)
    c1 = sign(base, FP_KEY[:30], 1)
    server = ServerHandshake(rng=rng(4))
    server.receive_data(b"\x03" + c1)
    out = server.data_to_send()
    assert server.digest_used and server.peer_version == (10, 0, 32, 18)
    s1, s2 = out[1 : 1 + HANDSHAKE_SIZE], out[1 + HANDSHAKE_SIZE :]
    found, want = digest_at(s1, FMS_KEY[:36], 1)
    assert found == want
    assert reply_valid(s2, digest_at(c1, FP_KEY[:30], 1)[0], FMS_KEY)


@pytest.mark.parametrize("version", [bytes(4), bytes((9, 0, 124, 2))])
def test_server_answers_plain_without_a_valid_digest(version: bytes) -> None:
    # A zero version never uses the digest; a non-zero one with a wrong digest falls back to plain.
    c1 = bytes(4) + version + random.Random(8).randbytes(HANDSHAKE_SIZE - 8)
    server = ServerHandshake(rng=rng(9), epoch_ms=2**32 + 5)
    server.receive_data(b"\x03" + c1)
    out = server.data_to_send()
    assert not server.digest_used
    assert out[1:5] == (5).to_bytes(4, "big")  # epoch_ms wraps at 32 bits
    assert out[5:9] == bytes(4)
    assert out[1 + HANDSHAKE_SIZE :] == c1


def test_client_checks_the_server_digest() -> None:
    client, server = pair()
    client.initiate()
    server.receive_data(client.data_to_send())
    answer = bytearray(server.data_to_send())
    s1 = bytes(answer[1 : 1 + HANDSHAKE_SIZE])
    at = offset(s1, 0)
    answer[1 + at] ^= 0xFF  # break S1's digest
    client.receive_data(bytes(answer))
    assert client.complete and not client.digest_used
    assert client.data_to_send() == bytes(answer[1 : 1 + HANDSHAKE_SIZE])  # plain: C2 echoes S1


def test_client_accepts_a_plain_server() -> None:
    # nginx-rtmp and others may answer a digest C1 with a plain S1 (zero version field).
    client = ClientHandshake(rng=rng(1))
    client.initiate()
    c1 = client.data_to_send()[1:]
    s1 = bytes(8) + random.Random(2).randbytes(HANDSHAKE_SIZE - 8)
    client.receive_data(b"\x03" + s1 + c1)
    assert client.complete and not client.digest_used
    assert client.data_to_send() == s1


def test_plain_client_ignores_a_digest_server() -> None:
    client = ClientHandshake(rng=rng(1), digest=False)
    server_packet = sign(bytes(4) + bytes((4, 5, 0, 1)) + random.Random(6).randbytes(1528), FMS_KEY[:36], 0)
    client.initiate()
    client.data_to_send()
    client.receive_data(b"\x03" + server_packet)
    assert not client.digest_used and client.data_to_send() == server_packet


# -- leftovers ----------------------------------------------------------------------------------------


def test_server_leftover_is_the_start_of_the_chunk_stream() -> None:
    client, server = pair()
    client.initiate()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    chunks = b"\x03\x00\x00\x00\x00\x00\x19\x14\x00\x00\x00\x00connect..."
    assert server.leftover() == b""
    server.receive_data(client.data_to_send() + chunks)
    assert server.complete and server.leftover() == chunks
    assert server.leftover() == chunks  # reading it does not consume it


def test_everything_in_one_write() -> None:
    client, _ = pair(digest=False)
    client.initiate()
    c0c1 = client.data_to_send()
    server = ServerHandshake(rng=rng(3))
    c2 = bytes(HANDSHAKE_SIZE)
    server.receive_data(c0c1 + c2 + b"tail")
    assert server.complete and server.leftover() == b"tail"
    assert len(server.data_to_send()) == 1 + 2 * HANDSHAKE_SIZE


def test_client_leftover_after_s2() -> None:
    client, server = pair()
    client.initiate()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send() + b"early")
    assert client.complete and client.leftover() == b"early"


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "match"), [(6, "version 6 \\(RTMPE"), (0, "version 0;"), (0xFF, "version 255;")]
)
def test_server_rejects_other_versions_at_once(version: int, match: str) -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError, match=f"client sent RTMP {match}") as info:
        server.receive_data(bytes([version]))
    assert "only 3 is supported" in str(info.value)
    assert server.data_to_send() == b"" and not server.complete
    with pytest.raises(LocalProtocolError, match="FAILED"):
        server.receive_data(b"\x03")


def test_client_rejects_other_server_versions() -> None:
    client = ClientHandshake()
    client.initiate()
    client.data_to_send()
    with pytest.raises(HandshakeError, match="server sent RTMP version 4"):
        client.receive_data(b"\x04" + bytes(100))
    assert client.data_to_send() == b""


def test_eof_during_the_handshake() -> None:
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(99))
    with pytest.raises(HandshakeError, match="closed the connection after 100 handshake bytes"):
        server.receive_data(b"")


def test_misuse() -> None:
    client = ClientHandshake()
    with pytest.raises(LocalProtocolError, match="IDLE"):
        client.receive_data(b"\x03")
    client.initiate()
    with pytest.raises(LocalProtocolError, match="initiate\\(\\) called twice"):
        client.initiate()
    c, s = pair()
    run(c, s)
    with pytest.raises(LocalProtocolError, match="DONE"):
        s.receive_data(b"more")
    with pytest.raises(LocalProtocolError, match="DONE"):
        c.receive_data(b"more")


def test_short_rng_is_our_bug() -> None:
    server = ServerHandshake(rng=lambda n: b"\x00" * (n - 1))
    with pytest.raises(LocalProtocolError, match="rng\\(1528\\) returned 1527 bytes"):
        server.receive_data(b"\x03" + bytes(HANDSHAKE_SIZE))


def test_keys_are_the_published_constants() -> None:
    assert len(FP_KEY) == 62 and len(FMS_KEY) == 68
    assert FP_KEY.startswith(b"Genuine Adobe Flash Player 001\xf0\xee\xc2\x4a\x80\x68")
    assert FMS_KEY.startswith(b"Genuine Adobe Flash Media Server 001\xf0\xee\xc2\x4a\x80\x68")
    assert FP_KEY[30:] == FMS_KEY[36:] and FMS_KEY.endswith(b"\xcf\xeb\x31\xae")


# -- fuzz ---------------------------------------------------------------------------------------------


def feed(core: ClientHandshake | ServerHandshake, data: bytes, cuts: list[int]) -> None:
    """Deliver `data` in pieces split at `cuts`; it must complete or raise HandshakeError, nothing else."""
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    pieces = [p for p in pieces if p]  # b"" means EOF
    done = 1 + 2 * HANDSHAKE_SIZE  # C0+C1+C2, or S0+S1+S2
    try:
        for i, piece in enumerate(pieces):
            core.receive_data(piece)
            if core.complete:
                # The driver hands the leftover and every later read to the chunk reader.
                assert core.leftover() + b"".join(pieces[i + 1 :]) == data[done:]
                break
    except HandshakeError:
        assert data[0] != 3
        assert not core.complete
        return
    assert core.complete == (len(data) >= done)
    assert len(core.data_to_send()) in (0, 1 + 2 * HANDSHAKE_SIZE, HANDSHAKE_SIZE)


@settings(max_examples=examples(200))
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=6), st.booleans())
def test_server_fuzz(data: bytes, cuts: list[int], force_version: bool) -> None:
    if force_version or not data:
        data = b"\x03" + data
    cuts = sorted(c for c in cuts if c <= len(data))
    feed(ServerHandshake(rng=rng(0)), data, cuts)


@settings(max_examples=examples(200))
@given(st.binary(max_size=3200), st.lists(st.integers(0, 3200), max_size=6), st.booleans(), st.booleans())
def test_client_fuzz(data: bytes, cuts: list[int], digest: bool, force_version: bool) -> None:
    if force_version or not data:
        data = b"\x03" + data
    cuts = sorted(c for c in cuts if c <= len(data))
    client = ClientHandshake(rng=rng(0), digest=digest)
    client.initiate()
    assert len(client.data_to_send()) == 1 + HANDSHAKE_SIZE
    feed(client, data, cuts)


def test_fuzz_helper_sees_leftovers() -> None:
    c0c1 = b"\x03" + bytes(HANDSHAKE_SIZE)
    feed(ServerHandshake(rng=rng(0)), c0c1 + bytes(HANDSHAKE_SIZE) + b"abcdef", [5, 3073, 3075])
