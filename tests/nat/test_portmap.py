"""The port-mapping state machine with a fake clock: now starts at 0.0 and every
deadline is asserted exactly. A tiny scripted gateway answers (or stays silent)."""

from __future__ import annotations

import ast
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.nat import natpmp, pcp
from whalescale.nat.portmap import (
    AllProtocolsFailed,
    MappingAcquired,
    MappingLost,
    MappingRemoved,
    MappingRenewed,
    PortMapper,
    PortMapSettings,
    PortMapStateError,
    Protocol,
    ProtocolFailed,
    State,
    UpnpAdd,
    UpnpDelete,
)

NONCE = b"n" * 12
CLIENT = "10.0.3.2"
PORT = 40000
PUBLIC = "203.0.113.7"


def mapper(**overrides) -> PortMapper:
    settings = PortMapSettings(internal_port=PORT, lifetime_s=7200, **overrides)
    return PortMapper(settings, client_address=CLIENT, nonce=NONCE)


def pcp_answer(request: bytes, *, result: int = 0, lifetime_s: int | None = None,
               external: str = PUBLIC, port: int = PORT) -> bytes:  # fmt: skip
    """What a PCP server says to `request`: the lifetime asked for unless told otherwise."""
    asked = pcp.parse_map_request(request)
    return pcp.encode_response(
        pcp.MapResponse(
            result, asked.lifetime_s if lifetime_s is None else lifetime_s, 100, asked.nonce,
            asked.protocol, asked.internal_port, port, ipaddress.ip_address(external),
        )
    )  # fmt: skip


def natpmp_unsupported_version() -> bytes:
    """A NAT-PMP-only server's answer to a PCP (version 2) request (RFC 6887 section 9)."""
    return natpmp.encode_response(
        natpmp.ErrorResponse(natpmp.ResultCode.UNSUPPORTED_VERSION, 100, natpmp.OP_MAP_UDP)
    )


def test_pcp_maps_at_once_and_renews_at_half_the_lifetime():
    m = mapper()
    m.start(0.0)
    [request] = m.datagrams_to_send()
    assert pcp.parse_map_request(request).client_address == ipaddress.ip_address(CLIENT)
    m.receive_datagram(pcp_answer(request), 0.01)
    [event] = m.events()
    assert isinstance(event, MappingAcquired)
    assert event.mapping.protocol is Protocol.PCP
    assert event.mapping.external == (PUBLIC, PORT)
    assert m.next_deadline() == pytest.approx(0.01 + 3600)

    # Half-life: the same nonce, asking for the port we hold.
    m.handle_timer(3600.01)
    [renewal] = m.datagrams_to_send()
    asked = pcp.parse_map_request(renewal)
    assert (asked.nonce, asked.suggested_external_port) == (NONCE, PORT)
    m.receive_datagram(pcp_answer(renewal, lifetime_s=1800), 3600.02)
    [event] = m.events()
    assert isinstance(event, MappingRenewed)
    assert m.next_deadline() == pytest.approx(3600.02 + 900)


def test_a_silent_gateway_costs_capped_retries_then_the_next_protocol():
    m = mapper()
    m.start(0.0)
    sent: list[tuple[float, bytes]] = []
    now = 0.0
    # RFC 6886's 250 ms doubling, cut at 4 tries per protocol.
    expected_deadlines = [0.25, 0.75, 1.75, 3.75, 4.0, 4.5, 5.5, 7.5]
    for deadline in expected_deadlines:
        sent += [(now, d) for d in m.datagrams_to_send()]
        assert m.next_deadline() == pytest.approx(deadline)
        now = deadline
        m.handle_timer(now)
    assert [t for t, _ in sent] == [0.0, 0.25, 0.75, 1.75, 3.75, 4.0, 4.5, 5.5]
    assert [d[0] for _, d in sent] == [2] * 4 + [0] * 4  # PCP, then NAT-PMP
    assert m.upnp_requests() == [UpnpAdd(PORT, PORT, 7200)]
    assert m.state is State.UPNP_PENDING and m.next_deadline() is None
    m.upnp_failed("no UPnP device answered discovery", 9.0)
    events = m.events()
    assert [type(e) for e in events] == [ProtocolFailed] * 3 + [AllProtocolsFailed]
    assert [e.protocol for e in events[:3]] == [Protocol.PCP, Protocol.NATPMP, Protocol.UPNP]
    assert m.state is State.FAILED
    assert m.next_deadline() == pytest.approx(309.0)
    m.handle_timer(309.0)  # the whole round again
    assert m.state is State.REQUESTING and m.protocol is Protocol.PCP


def test_a_natpmp_only_gateway_gets_natpmp_without_waiting_for_pcp_retries():
    m = mapper()
    m.start(0.0)
    m.datagrams_to_send()
    m.receive_datagram(natpmp_unsupported_version(), 0.002)
    assert m.protocol is Protocol.NATPMP
    [address_request] = m.datagrams_to_send()
    assert address_request == natpmp.encode_external_address_request()
    m.receive_datagram(natpmp.encode_response(natpmp.ExternalAddressResponse(
        0, 100, ipaddress.IPv4Address(PUBLIC))), 0.004)  # fmt: skip
    [map_request] = m.datagrams_to_send()
    assert map_request == natpmp.encode_map_request(natpmp.OP_MAP_UDP, PORT, PORT, 7200)
    m.receive_datagram(natpmp.encode_response(natpmp.MapResponse(
        0, 100, natpmp.OP_MAP_UDP, PORT, 40001, 3600)), 0.006)  # fmt: skip
    failed, acquired = m.events()
    assert failed == ProtocolFailed(Protocol.PCP, "PCP refused: NAT-PMP server: "
                                                  "UNSUPPORTED_VERSION")  # fmt: skip
    assert acquired.mapping.external == (PUBLIC, 40001)
    assert m.next_deadline() == pytest.approx(0.006 + 1800)


def test_upnp_mapping_renews_by_adding_again_and_deletes_on_stop():
    m = mapper(protocols=(Protocol.UPNP,))
    m.start(0.0)
    assert m.upnp_requests() == [UpnpAdd(PORT, PORT, 7200)]
    m.upnp_mapped(PUBLIC, PORT, 7200, 1.5)
    assert isinstance(m.events()[0], MappingAcquired)
    m.handle_timer(3601.5)
    assert m.upnp_requests() == [UpnpAdd(PORT, PORT, 7200)]
    m.upnp_mapped(PUBLIC, PORT, 7200, 3602.0)
    assert isinstance(m.events()[0], MappingRenewed)
    m.stop(3700.0)
    assert m.upnp_requests() == [UpnpDelete(PORT)]
    m.upnp_removed(3700.2)
    assert m.events() == [MappingRemoved(Protocol.UPNP, confirmed=True)]
    assert m.done


@pytest.mark.parametrize("protocol", [Protocol.PCP, Protocol.NATPMP])
def test_stop_sends_lifetime_zero_and_waits_for_the_answer(protocol):
    m = mapper(protocols=(protocol,))
    m.start(0.0)
    if protocol is Protocol.NATPMP:
        m.datagrams_to_send()
        m.receive_datagram(natpmp.encode_response(natpmp.ExternalAddressResponse(
            0, 1, ipaddress.IPv4Address(PUBLIC))), 0.0)  # fmt: skip
    [request] = m.datagrams_to_send()
    if protocol is Protocol.PCP:
        m.receive_datagram(pcp_answer(request), 0.0)
    else:
        m.receive_datagram(natpmp.encode_response(natpmp.MapResponse(
            0, 1, natpmp.OP_MAP_UDP, PORT, PORT, 7200)), 0.0)  # fmt: skip
    m.events()
    m.stop(10.0)
    [delete] = m.datagrams_to_send()
    if protocol is Protocol.PCP:
        assert pcp.parse_map_request(delete).lifetime_s == 0
        m.receive_datagram(pcp_answer(delete), 10.01)
    else:
        assert delete == natpmp.encode_map_request(natpmp.OP_MAP_UDP, PORT, 0, 0)
        m.receive_datagram(natpmp.encode_response(natpmp.MapResponse(
            0, 1, natpmp.OP_MAP_UDP, PORT, 0, 0)), 10.01)  # fmt: skip
    assert m.events() == [MappingRemoved(protocol, confirmed=True)]
    assert m.done and m.next_deadline() is None


def test_removal_gives_up_after_the_capped_retries():
    m = mapper(protocols=(Protocol.PCP,))
    m.start(0.0)
    m.receive_datagram(pcp_answer(m.datagrams_to_send()[0]), 0.0)
    m.stop(1.0)
    for deadline in (1.25, 1.75, 2.75, 4.75):
        assert m.next_deadline() == pytest.approx(deadline)
        m.handle_timer(deadline)
    assert m.events()[-1] == MappingRemoved(Protocol.PCP, confirmed=False)
    assert m.done


def test_a_failed_renewal_loses_the_mapping_and_starts_over():
    m = mapper(protocols=(Protocol.PCP, Protocol.NATPMP))
    m.start(0.0)
    m.receive_datagram(pcp_answer(m.datagrams_to_send()[0]), 0.0)
    m.events()
    m.handle_timer(3600.0)
    renewal = m.datagrams_to_send()[0]
    m.receive_datagram(pcp_answer(renewal, result=pcp.ResultCode.NO_RESOURCES), 3600.1)
    assert m.events() == [MappingLost(Protocol.PCP, "PCP NO_RESOURCES")]
    assert m.state is State.REQUESTING and m.protocol is Protocol.PCP
    assert pcp.parse_map_request(m.datagrams_to_send()[0]).suggested_external_port == 0


def test_a_private_external_address_is_refused_unless_allowed():
    strict = mapper(protocols=(Protocol.PCP,))
    strict.start(0.0)
    strict.receive_datagram(pcp_answer(strict.datagrams_to_send()[0], external="10.0.2.2"), 0.0)
    failed = strict.events()[0]
    assert isinstance(failed, ProtocolFailed) and "private" in failed.reason
    lab = mapper(protocols=(Protocol.PCP,), accept_private_external=True)
    lab.start(0.0)
    lab.receive_datagram(pcp_answer(lab.datagrams_to_send()[0], external="10.0.2.2"), 0.0)
    assert isinstance(lab.events()[0], MappingAcquired)


def test_answers_for_someone_else_are_dropped_and_counted():
    m = mapper()
    m.start(0.0)
    request = m.datagrams_to_send()[0]
    other = pcp.encode_map_request(pcp.MapRequest(b"x" * 12, 17, PORT, 0, 7200,
                                                  ipaddress.ip_address(CLIENT)))  # fmt: skip
    m.receive_datagram(pcp_answer(other), 0.01)
    m.receive_datagram(b"\x07garbage", 0.01)
    m.receive_datagram(b"\x02short", 0.01)
    assert m.drops == {"unexpected": 1, "unknown version": 1, "malformed": 1}
    assert m.state is State.REQUESTING
    m.receive_datagram(pcp_answer(request), 0.02)
    assert m.state is State.MAPPED


@given(st.lists(st.binary(max_size=80), max_size=8))
def test_nothing_from_the_network_raises(datagrams):
    m = mapper()
    m.start(0.0)
    for data in datagrams:
        m.receive_datagram(data, 0.1)


def test_illegal_calls_name_the_state_and_the_event():
    m = mapper()
    with pytest.raises(PortMapStateError, match="'upnp_mapped' is not allowed in state idle"):
        m.upnp_mapped(PUBLIC, PORT, 60, 0.0)
    m.start(0.0)
    with pytest.raises(PortMapStateError, match="start"):
        m.start(0.0)


CORE_FILES = ["natpmp.py", "pcp.py", "portmap.py", "errors.py"]
FORBIDDEN = {"socket", "trio", "time", "os", "asyncio", "select", "subprocess", "random",
             "secrets", "miniupnpc", "threading"}  # fmt: skip


@pytest.mark.parametrize("name", CORE_FILES)
def test_the_core_imports_no_io(name):
    path = Path(__file__).resolve().parents[2] / "whalescale" / "nat" / name
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
