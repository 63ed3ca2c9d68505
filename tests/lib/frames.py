"""Ethernet/IP frames for BPF_PROG_RUN and traffic tests, built with struct (no scapy)."""

from __future__ import annotations

import struct

from netaddr import IPAddress

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


def eth(proto: int, payload: bytes, src: bytes = SRC_MAC, dst: bytes = DST_MAC, vlan: int | None = None) -> bytes:
    if vlan is not None:
        return dst + src + struct.pack("!HHH", 0x8100, vlan, proto) + payload
    return dst + src + struct.pack("!H", proto) + payload


def ipv4_udp(src: str, dst: str, payload: bytes = b"x" * 18, **kw) -> bytes:
    udp = struct.pack("!HHHH", 9, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     IPAddress(src).packed, IPAddress(dst).packed)
    return eth(0x0800, ip + udp, **kw)


def ipv6_udp(src: str, dst: str, payload: bytes = b"x" * 18, **kw) -> bytes:
    udp = struct.pack("!HHHH", 9, 9, 8 + len(payload), 0) + payload
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, IPAddress(src).packed, IPAddress(dst).packed)
    return eth(0x86DD, ip6 + udp, **kw)
