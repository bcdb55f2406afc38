#!/usr/bin/env python3
"""GWLB frames built and dissected by scapy, for cross-checking flowdog-wire.

Run as a script, it builds varied GWLB frames (outer Ethernet/IPv4/UDP 6081/Geneve with the
AWS options, inner IPv4 or IPv6) and prints one line per frame:

    name=... hex=... key=value key=value ...

The keys are the fields scapy sees, named as in tests/common/mod.rs; `tests/scapy.rs` parses
each frame with the Rust crate and compares every key.

`facts()` is also imported by scapy_check.py, which checks frames that Rust built.
"""

import logging
import sys

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.compat import raw as scapy_raw  # noqa: E402
from scapy.contrib.geneve import GENEVE, GeneveOptions  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, fragment, in4_chksum  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
    PseudoIPv6,
    fragment6,
    in6_chksum,
)
from scapy.layers.ipsec import AH  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import checksum  # noqa: E402

AWS_CLASS = 0x0108
AWS_LENGTHS = {1: 8, 2: 8, 3: 4}
EXTENSION_HEADERS = (IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, IPv6ExtHdrFragment, AH)


def bit(value):
    return 1 if value else 0


def facts(raw, depth="all"):
    """The fields of a GWLB frame as scapy dissects it.

    `depth` stops early ("gnv" after the Geneve base header, "aws" after the AWS options)
    for frames that are broken on purpose below that layer.
    """
    f = {}
    eth = Ether(raw)
    f["eth.dst"] = eth.dst
    f["eth.src"] = eth.src
    f["eth.type"] = eth.type

    ip = eth.payload
    assert isinstance(ip, IP), "outer packet is not IPv4"
    ihl = ip.ihl * 4
    f["ip.src"] = ip.src
    f["ip.dst"] = ip.dst
    f["ip.ttl"] = ip.ttl
    f["ip.len"] = ip.len
    f["ip.id"] = ip.id
    f["ip.df"] = bit(ip.flags.DF)
    f["ip.csum"] = bit(checksum(raw[14:14 + ihl]) == 0)

    udp = ip.payload
    assert isinstance(udp, UDP), "outer payload is not UDP"
    udp_raw = raw[14 + ihl:14 + ip.len][:udp.len]
    f["udp.sport"] = udp.sport
    f["udp.dport"] = udp.dport
    f["udp.len"] = udp.len
    f["udp.csum"] = bit(udp.chksum == 0 or in4_chksum(17, ip, udp_raw) == 0)

    gnv = udp.payload
    assert isinstance(gnv, GENEVE), "UDP payload is not Geneve"
    f["gnv.ver"] = gnv.version
    f["gnv.optlen"] = gnv.optionlen
    f["gnv.oam"] = gnv.oam
    f["gnv.crit"] = gnv.critical
    f["gnv.proto"] = gnv.proto
    f["gnv.vni"] = gnv.vni
    if depth == "gnv":
        return f

    f["gnv.nopts"] = len(gnv.options)
    seen = {}
    unknown = 0
    for option in gnv.options:
        type_ = option.type & 0x7F
        if option.classid == AWS_CLASS and type_ in AWS_LENGTHS:
            assert type_ not in seen and len(option.data) == AWS_LENGTHS[type_], "bad AWS option"
            seen[type_] = int.from_bytes(option.data, "big")
        else:
            unknown += 1
    f["aws.vpce"] = seen[1]
    f["aws.attach"] = seen[2]
    f["aws.cookie"] = seen[3]
    f["aws.unknown"] = unknown
    if depth == "aws":
        return f

    inner_raw = raw[14 + ihl + 8 + 8 + gnv.optionlen * 4:]
    inner = gnv.payload
    frag = "none"
    f["in.src"] = inner.src
    f["in.dst"] = inner.dst
    if isinstance(inner, IP):
        f["in.ver"] = 4
        protocol = inner.proto
        l4_offset = inner.ihl * 4
        total_len = inner.len
        upper = inner.payload
        if inner.frag:
            frag = "later"
        elif inner.flags.MF:
            frag = "first"
        f["in4.csum"] = bit(checksum(inner_raw[:l4_offset]) == 0)
        f["in4.id"] = inner.id
        f["in4.df"] = bit(inner.flags.DF)
        f["in4.mf"] = bit(inner.flags.MF)
        f["in4.fragoff"] = inner.frag * 8
        f["in4.ttl"] = inner.ttl
    else:
        assert isinstance(inner, IPv6), "inner packet is neither IPv4 nor IPv6"
        f["in.ver"] = 6
        f["in6.tc"] = inner.tc
        f["in6.flow"] = inner.fl
        f["in6.hlim"] = inner.hlim
        protocol = inner.nh
        l4_offset = 40
        total_len = 40 + inner.plen
        upper = inner.payload
        while isinstance(upper, EXTENSION_HEADERS):
            header_len = len(upper) - len(upper.payload)
            if isinstance(upper, IPv6ExtHdrFragment):
                f["in6.fragoff"] = upper.offset * 8
                f["in6.more"] = upper.m
                f["in6.ident"] = upper.id
                if upper.offset:
                    frag = "later"
                elif upper.m:
                    frag = "first"
            protocol = upper.nh
            l4_offset += header_len
            if frag == "later":
                break
            upper = upper.payload
    if isinstance(upper, Raw) and frag != "later" and protocol in (6, 17):
        # scapy does not dissect past AH; do it by hand.
        upper = (TCP if protocol == 6 else UDP)(upper.load)
    f["in.proto"] = protocol
    f["in.l4off"] = l4_offset
    f["in.len"] = total_len
    f["in.frag"] = frag
    ports = frag != "later" and protocol in (6, 17)
    f["in.sport"] = upper.sport if ports else 0
    f["in.dport"] = upper.dport if ports else 0
    f["in.flags"] = int(upper.flags) if ports and protocol == 6 else 0
    if frag != "none":
        return f

    l4 = inner_raw[l4_offset:total_len]

    def pseudo_ok():
        if f["in.ver"] == 4:
            return in4_chksum(protocol, inner, l4) == 0
        pseudo = PseudoIPv6(src=inner.src, dst=inner.dst, uplen=len(l4), nh=protocol)
        return checksum(scapy_raw(pseudo) + l4) == 0

    if protocol == 6:
        hlen = upper.dataofs * 4
        f["tcp.seq"] = upper.seq
        f["tcp.ack"] = upper.ack
        f["tcp.flags"] = int(upper.flags)
        f["tcp.win"] = upper.window
        f["tcp.hlen"] = hlen
        f["tcp.plen"] = len(l4) - hlen
        f["tcp.csum"] = bit(pseudo_ok())
        f["tcp.mss"] = f["tcp.ws"] = f["tcp.ts"] = f["tcp.sack"] = "none"
        f["tcp.sackok"] = 0
        for name, value in upper.options:
            if name == "MSS":
                f["tcp.mss"] = value
            elif name == "WScale":
                f["tcp.ws"] = value
            elif name == "SAckOK":
                f["tcp.sackok"] = 1
            elif name == "Timestamp":
                f["tcp.ts"] = "%d,%d" % value
            elif name == "SAck":
                f["tcp.sack"] = ";".join("%d-%d" % (value[i], value[i + 1]) for i in range(0, len(value), 2))
    elif protocol == 17:
        f["iudp.len"] = upper.len
        if f["in.ver"] == 4:
            f["iudp.csum"] = bit(upper.chksum == 0 or pseudo_ok())
        else:
            f["iudp.csum"] = bit(upper.chksum != 0 and pseudo_ok())
    elif protocol in (1, 58):
        f["icmp.type"] = upper.type
        f["icmp.code"] = upper.code
        f["icmp.id"] = int.from_bytes(l4[4:6], "big")
        f["icmp.seq"] = int.from_bytes(l4[6:8], "big")
        f["icmp.csum"] = bit(checksum(l4) == 0 if protocol == 1 else pseudo_ok())
    return f


def aws_options(vpce=0x0ABCDEF012345678, attach=0, cookie=0x7E57C00C, order=(1, 2, 3)):
    data = {1: vpce.to_bytes(8, "big"), 2: attach.to_bytes(8, "big"), 3: cookie.to_bytes(4, "big")}
    return [GeneveOptions(classid=AWS_CLASS, type=t, length=len(data[t]) // 4, data=data[t]) for t in order]


def gwlb(inner, options=None, vni=0, oam=0, critical=0, udp_chksum=None, sport=54321):
    """Wraps an inner IP packet the way GWLB does."""
    udp = UDP(sport=sport, dport=6081)
    if udp_chksum is not None:
        udp.chksum = udp_chksum
    gnv = GENEVE(proto=0x86DD if isinstance(inner, IPv6) else 0x0800, vni=vni, oam=oam, critical=critical,
                 options=aws_options() if options is None else options)
    outer = Ether(dst="02:aa:bb:cc:dd:01", src="02:aa:bb:cc:dd:02") / IP(src="10.0.1.10", dst="10.0.2.20", ttl=254,
                                                                         id=0x4D2)
    return scapy_raw(outer / udp / gnv / inner)


SYN_OPTIONS = [("MSS", 8961), ("SAckOK", b""), ("Timestamp", (42, 0)), ("NOP", None), ("WScale", 7)]
V4 = dict(src="192.168.1.10", dst="198.51.100.7")
V6 = dict(src="2001:db8:1::10", dst="2001:db8:2::7")


def frames():
    """(name, raw bytes, depth, expected keys that scapy cannot tell)."""
    syn = IP(**V4, id=0x1C46, flags="DF") / TCP(sport=40000, dport=443, seq=0x12345678, flags="S", window=62828,
                                                   options=SYN_OPTIONS)
    yield "v4_tcp_syn", gwlb(syn), "all", {}
    yield "v4_tcp_syn_options_3_1_2", gwlb(syn, options=aws_options(order=(3, 1, 2))), "all", {}
    yield "v4_tcp_syn_options_2_3_1", gwlb(syn, options=aws_options(cookie=0xFFFFFFFF, order=(2, 3, 1))), "all", {}
    yield "v4_tcp_synack", gwlb(IP(**V4) / TCP(sport=443, dport=40000, seq=7, ack=0x12345679, flags="SA",
                                               options=[("MSS", 1460), ("NOP", None), ("WScale", 14),
                                                        ("SAckOK", b"")])), "all", {}
    yield "v4_tcp_data_sack", gwlb(IP(**V4, ttl=3) / TCP(sport=40000, dport=443, seq=1000, ack=2000, flags="PA",
                                                         options=[("NOP", None), ("NOP", None),
                                                                  ("Timestamp", (123456, 654321)), ("NOP", None),
                                                                  ("NOP", None), ("SAck", (5000, 6000, 7000, 8000))])
                                   / Raw(b"GET / HTTP/1.1\r\n" * 8)), "all", {}
    yield "v4_tcp_rst", gwlb(IP(**V4) / TCP(sport=1, dport=2, seq=0xFFFFFFFF, flags="R")), "all", {}
    yield "v4_tcp_fin_ack_ece_cwr", gwlb(IP(**V4) / TCP(sport=80, dport=5555, flags="FAEC", window=0)), "all", {}
    yield "v4_tcp_ip_options", gwlb(IP(**V4, options=[IPOption_Router_Alert()]) / TCP(sport=3, dport=4, flags="S")), \
        "all", {}
    yield "v4_udp_dns", gwlb(IP(**V4) / UDP(sport=5353, dport=53) / Raw(b"\x12\x34\x01\x00" + b"\x00" * 8)), "all", {}
    yield "v4_udp_no_checksum", gwlb(IP(**V4) / UDP(sport=1000, dport=2000, chksum=0) / Raw(b"x" * 33)), "all", {}
    yield "v4_icmp_echo", gwlb(IP(**V4) / ICMP(type=8, id=0x1C46, seq=9) / Raw(b"ping" * 10)), "all", {}
    yield "v4_icmp_unreachable", gwlb(IP(**V4) / ICMP(type=3, code=4, nexthopmtu=1400) / IP(**V4) / UDP()), "all", {}

    first, later = fragment(IP(**V4, id=777) / UDP(sport=4000, dport=5000) / Raw(b"f" * 1200), fragsize=800)[:2]
    yield "v4_fragment_first_udp", gwlb(first), "all", {}
    yield "v4_fragment_later_udp", gwlb(later), "all", {}
    first, later = fragment(IP(**V4, id=778) / TCP(sport=40000, dport=443, flags="A") / Raw(b"t" * 1500),
                            fragsize=1000)[:2]
    yield "v4_fragment_first_tcp", gwlb(first), "all", {}
    yield "v4_fragment_later_tcp", gwlb(later), "all", {}

    yield "v6_tcp_syn", gwlb(IPv6(**V6, tc=0xB8, fl=0x12345, hlim=61) /
                             TCP(sport=40000, dport=443, seq=99, flags="S", options=SYN_OPTIONS)), "all", {}
    yield "v6_udp", gwlb(IPv6(**V6) / UDP(sport=123, dport=123) / Raw(b"\x23" + b"\x00" * 47)), "all", {}
    yield "v6_icmp_echo", gwlb(IPv6(**V6) / ICMPv6EchoRequest(id=0xBEEF, seq=3, data=b"hello")), "all", {}
    yield "v6_hop_by_hop_dstopts_tcp", gwlb(IPv6(**V6) / IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\x00" * 4)]) /
                                            IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 12)]) /
                                            TCP(sport=22, dport=50000, flags="PA") / Raw(b"ssh")), "all", {}
    yield "v6_routing_udp", gwlb(IPv6(**V6) / IPv6ExtHdrRouting(segleft=0) / UDP(sport=7, dport=7) / Raw(b"e")), \
        "all", {}
    # AH's length counts 4-byte words minus 2: (4 + 2) * 4 = 24 bytes, 12 of them ICV.
    ah = IPv6(**V6) / AH(nh=6, payloadlen=4, spi=0x100, seq=1, icv=b"\x00" * 12) / TCP(sport=500, dport=500, flags="S")
    # scapy fills a TCP checksum only right under IPv6 or an IPv6 extension header, not under AH.
    ah[TCP].chksum = in6_chksum(6, ah[TCP], scapy_raw(ah[TCP]))
    yield "v6_ah_tcp", gwlb(ah), "all", {}
    frags = fragment6(IPv6(**V6) / IPv6ExtHdrFragment(id=0xABCDEF) / UDP(sport=9, dport=10) / Raw(b"u" * 2000), 1280)
    yield "v6_fragment_first_udp", gwlb(frags[0]), "all", {}
    yield "v6_fragment_later_udp", gwlb(frags[1]), "all", {}
    frags = fragment6(IPv6(**V6) / IPv6ExtHdrFragment(id=0x1234) / TCP(sport=9, dport=10) / Raw(b"t" * 2000), 1280)
    yield "v6_fragment_later_tcp", gwlb(frags[1]), "all", {}

    unknown = GeneveOptions(classid=0xFFFF, type=0x85, length=1, data=b"\x01\x02\x03\x04")
    yield "unknown_critical_option", gwlb(syn, options=aws_options(order=(2,)) + [unknown] + aws_options(order=(3, 1)),
                                          critical=1), "all", {}
    aws_unknown_type = GeneveOptions(classid=AWS_CLASS, type=4, length=2, data=b"\x00" * 8)
    yield "aws_class_unknown_type", gwlb(syn, options=aws_options() + [aws_unknown_type]), "all", {}
    yield "vni_and_oam", gwlb(syn, vni=0x123456, oam=1), "all", {}
    yield "outer_udp_checksum_zero", gwlb(syn, udp_chksum=0, sport=1), "all", {}
    yield "inner_tcp_bad_checksum", gwlb(IP(**V4) / TCP(sport=1, dport=2, chksum=0x1234)), "all", {"tcp.csum": 0}

    broken = bytearray(gwlb(syn))
    broken[42 + 8 + 24 + 3] = 2  # The cookie's length now runs 4 bytes past the option area.
    yield "aws_option_past_end", bytes(broken), "gnv", {"aws.err": "malformed"}
    yield "aws_missing_cookie", gwlb(syn, options=aws_options(order=(1, 2))), "gnv", {"aws.err": "malformed"}
    yield "aws_duplicate_endpoint", gwlb(syn, options=aws_options(order=(1, 2, 1, 3))), "gnv", \
        {"aws.err": "malformed"}
    yield "inner_tcp_truncated", gwlb(IP(**V4, proto=6) / Raw(b"\x00" * 10)), "aws", {"in.err": "truncated"}
    yield "inner_udp_truncated", gwlb(IPv6(**V6, nh=17) / Raw(b"\x00" * 7)), "aws", {"in.err": "truncated"}


def main():
    for name, raw, depth, expected in frames():
        f = facts(raw, depth)
        for key, value in expected.items():
            if key in f and f[key] != value:
                sys.exit("%s: scapy says %s=%s, the case expects %s" % (name, key, f[key], value))
            f[key] = value
        print(" ".join(["name=" + name, "hex=" + raw.hex()] + ["%s=%s" % kv for kv in f.items()]))


if __name__ == "__main__":
    main()
