"""Ethernet/IPv4/IPv6 UDP frames for the generators, BPF_PROG_RUN and tests, built with struct."""

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


def udp_frame(size: int, src_mac: bytes, dst_mac: bytes, src_ip: str = "198.18.0.1", dst_ip: str = "198.18.0.2",
              sport: int = 9, dport: int = 9) -> bytes:
    """An IPv4 UDP frame of exactly `size` bytes (without FCS; 60 is Ethernet's minimum)."""
    payload = b"\x00" * (size - 14 - 20 - 8)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                      IPAddress(src_ip).packed, IPAddress(dst_ip).packed)
    csum = _checksum(hdr)
    hdr = hdr[:10] + struct.pack("!H", csum) + hdr[12:]
    return dst_mac + src_mac + struct.pack("!H", 0x0800) + hdr + udp


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
