"""Converters from plain TOML values to the typed values the records hold.

Each converter takes the value tomlkit produced and returns the typed value, or
raises Invalid with a message that says what is wrong and what was expected.
A converter of a list reports every bad element, each under its index.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable
from typing import TypeVar

from whalescale.config.positions import Path
from whalescale.config.schema import Network, Rule, TunnelAddress
from whalescale.identity import InvalidKey, decode_key, x25519_public_from_ed25519

T = TypeVar("T")
Converter = Callable[[object], T]

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Linux IFNAMSIZ is 16 with the terminating NUL; '/' and spaces never appear.
_INTERFACE = re.compile(r"[^/\s]{1,15}")


class Invalid(Exception):
    """A value that does not convert: (sub-path, message) for each bad part."""

    def __init__(self, *where: tuple[Path, str]) -> None:
        super().__init__(where)
        self.where = where


def invalid(message: str) -> Invalid:
    return Invalid(((), message))


def toml_type(value: object) -> str:
    """The TOML name of a value's type, for "expected X, got Y"."""
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a float"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "a table"
        case datetime.datetime() | datetime.date() | datetime.time():
            return "a date/time"
    return type(value).__name__


def _typed(value: object, kind: type[T], expected: str) -> T:
    # bool is an int in Python but not in TOML: `port = true` is a type error.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise invalid(f"expected {expected}, got {toml_type(value)}")
    return value


def integer(low: int, high: int) -> Converter[int]:
    def convert(value: object) -> int:
        number = _typed(value, int, f"an integer {low}..{high}")
        if not low <= number <= high:
            raise invalid(f"{number} is out of range, expected {low}..{high}")
        return number

    return convert


port = integer(1, 65535)


def boolean(value: object) -> bool:
    return _typed(value, bool, "true or false")


def name(value: object) -> str:
    text = _typed(value, str, "a name")
    if not _NAME.fullmatch(text):
        raise invalid(
            f"{text!r} is not a valid name, expected 1-63 lowercase letters, digits"
            " and '-', not starting with '-'"
        )
    return text


def interface(value: object) -> str:
    text = _typed(value, str, "a network interface name")
    if not _INTERFACE.fullmatch(text):
        raise invalid(f"{text!r} is not an interface name, expected 1-15 characters, no '/'")
    return text


def node_key(value: object) -> bytes:
    """A node's Ed25519 public key; it must be a curve point to derive the Noise key."""
    raw = wireguard_key(value)
    try:
        x25519_public_from_ed25519(raw)
    except InvalidKey as exc:
        raise invalid(f"{exc}, expected a node key from `whalescale keygen`") from exc
    return raw


def wireguard_key(value: object) -> bytes:
    text = _typed(value, str, "a base64 public key")
    try:
        return decode_key(text, "public key")
    except InvalidKey as exc:
        raise invalid(f"{exc}, expected base64 of 32 bytes") from exc


def tunnel_address(value: object) -> TunnelAddress:
    text = _typed(value, str, "an IP address")
    if "/" in text:
        host = text.split("/", 1)[0]
        raise invalid(f"{text!r} has a prefix length, expected a host address like {host!r}")
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise invalid(f"{text!r} is not an IPv4 or IPv6 address") from exc


def network(value: object) -> Network:
    text = _typed(value, str, "a network like '192.168.50.0/24'")
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        # strict parsing rejects host bits; suggest the network they probably meant
        try:
            suggestion = f", did you mean {str(ipaddress.ip_network(text, strict=False))!r}"
        except ValueError:
            suggestion = ""
        raise invalid(f"{text!r} is not a network ({exc}){suggestion}") from exc


_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def host_name(text: str) -> str | None:
    """`text` as a DNS host name (RFC 1123: letters, digits, hyphens; lower-cased, no
    trailing dot), or None if it is not one. An all-digit last label is not a name:
    '10.0.0.256' is a mistyped address, not a host."""
    name = text.lower().removesuffix(".")
    labels = name.split(".")
    if (not name or len(name) > 253 or labels[-1].isdigit()
            or not all(_LABEL.fullmatch(label) for label in labels)):
        return None
    return name


def endpoint(value: object) -> tuple[str, int | None]:
    """An endpoint as (host, port or None): the host an IP literal or a DNS name (the
    agent resolves it); the caller knows the default port."""
    text = _typed(value, str, "an endpoint 'host:port', 'IP:port' or '[IPv6]:port'")
    expected = "expected 'IP:port', '[IPv6]:port' or 'name.example.org:port' (the port is optional)"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise invalid(f"{text!r} is not an endpoint, {expected}")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise invalid(f"{text!r}: an IPv6 endpoint needs brackets, like '[2001:db8::1]:51820'")
    else:
        host, colon, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if colon else None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = None if text.startswith("[") else host_name(host)
        if name is None:
            raise invalid(f"{host!r} is neither an IP address nor a host name, {expected}") \
                from None
        host = name
    else:
        if text.startswith("[") != (ip.version == 6):
            raise invalid(f"{text!r} is not an endpoint, {expected}")
        host = str(ip)
    if port_text is None:
        return host, None
    if not port_text.isascii() or not port_text.isdigit():
        raise invalid(f"{text!r} has a bad port {port_text!r}, {expected}")
    number = int(port_text)
    if not 1 <= number <= 65535:
        raise invalid(f"{text!r} has port {number}, expected 1..65535")
    return host, number


def list_of(item: Converter[T], *, or_single: bool = False) -> Converter[tuple[T, ...]]:
    """An array of items; `or_single` also takes one bare item (`address = "..."`)."""

    def convert(value: object) -> tuple[T, ...]:
        if or_single and not isinstance(value, list):
            return (item(value),)
        items = _typed(value, list, "an array")
        out: list[T] = []
        errors: list[tuple[Path, str]] = []
        for index, element in enumerate(items):
            try:
                out.append(item(element))
            except Invalid as exc:
                errors.extend(((index, *sub), message) for sub, message in exc.where)
        if errors:
            raise Invalid(*errors)
        return tuple(out)

    return convert


def non_empty(convert: Converter[tuple[T, ...]]) -> Converter[tuple[T, ...]]:
    def checked(value: object) -> tuple[T, ...]:
        out = convert(value)
        if not out:
            raise invalid("is empty, expected at least one")
        return out

    return checked


def listen_address(value: object) -> tuple[str, int]:
    """An 'IP:port' to listen on; unlike a peer's endpoint, the port is required and
    the host an address (a socket binds to addresses, not names)."""
    host, port = endpoint(value)
    if host_name(host) is not None:
        raise invalid(f"{value!r}: listen on an IP address, such as '127.0.0.1:9586'")
    if port is None:
        raise invalid(f"{value!r} has no port, expected 'IP:port' such as '127.0.0.1:9586'")
    return host, port


def one_of(*choices: str) -> Converter[str]:
    def convert(value: object) -> str:
        text = _typed(value, str, " or ".join(repr(c) for c in choices))
        if text not in choices:
            raise invalid(f"{text!r} is not one of {', '.join(repr(c) for c in choices)}")
        return text

    return convert


def dns_suffix(value: object) -> str:
    text = _typed(value, str, "a DNS suffix like 'home.arpa'")
    suffix = host_name(text.removeprefix("."))
    if suffix is None:
        raise invalid(f"{text!r} is not a DNS name, expected labels of letters, digits and "
                      "'-' separated by dots, like 'home.arpa'")
    return suffix


def port_range(value: object) -> tuple[int, int]:
    """A port (22) or an inclusive range ("8000-8100")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (port(value),) * 2
    text = _typed(value, str, "a port (22) or a range (\"8000-8100\")")
    low, dash, high = text.partition("-")
    if not (dash and low.isdigit() and high.isdigit()):
        raise invalid(f"{text!r} is not a port range, expected \"LOW-HIGH\" like \"8000-8100\"")
    first, last = port(int(low)), port(int(high))
    if first > last:
        raise invalid(f"{text!r} runs backwards, expected the lower port first")
    return first, last


_RULE_KEYS = ("action", "from", "proto", "ports")
_action = one_of("allow", "deny")
_proto = one_of("any", "tcp", "udp", "icmp")
_sources = list_of(name, or_single=True)
_ports = list_of(port_range, or_single=True)


def rule(value: object) -> Rule:
    """A firewall rule table: action (required), from, proto, ports. Whether the names
    in `from` exist is checked across entries."""
    table = _typed(value, dict, "a rule table like { action = \"deny\", from = \"tablet\", "
                   "proto = \"tcp\", ports = [22] }")
    errors: list[tuple[Path, str]] = [
        ((key,), f"unknown key {key!r}, expected one of: {', '.join(_RULE_KEYS)}")
        for key in table if key not in _RULE_KEYS]
    if "action" not in table:
        errors.append(((), "missing required key 'action' (\"allow\" or \"deny\")"))
    converted: dict[str, object] = {}
    for key, convert, out in (("action", _action, "action"), ("from", _sources, "sources"),
                              ("proto", _proto, "proto"), ("ports", _ports, "ports")):
        if key in table:
            try:
                converted[out] = convert(table[key])
            except Invalid as exc:
                errors.extend(((key, *sub), message) for sub, message in exc.where)
    if converted.get("ports") and converted.get("proto", "any") not in ("tcp", "udp"):
        errors.append((("ports",), "ports need proto = \"tcp\" or \"udp\""))
    if errors:
        raise Invalid(*errors)
    return Rule(**converted)  # type: ignore[arg-type]
