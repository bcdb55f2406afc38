"""End to end on real DPDK: flowdog on net_af_packet, GWLB frames from scapy, a real kernel
pinging it. Every returned frame must equal what was sent but for the outer addresses, the TTL
and the checksums; malformed frames are dropped and counted by cause while the flows around
them come back intact.
"""
import struct

import pytest
from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, IPv6, IPv6ExtHdrDestOpt, Raw, ICMPv6EchoRequest, raw
from scapy.contrib.geneve import GENEVE, GeneveOptions

from lab import APPLIANCE_IP, GWLB_IP, KERNEL_IP, Lab

VPCE = 0x0123456789ABCDEF
OUTER_TTL = 64


def aws_options(cookie, order=(1, 2, 3), vpce=VPCE, extra=()):
    data = {1: struct.pack(">Q", vpce), 2: struct.pack(">Q", 0), 3: struct.pack(">I", cookie)}
    opts = [GeneveOptions(classid=0x0108, type=t, data=data[t]) for t in order]
    return opts + list(extra)


def gwlb(lab, inner, cookie, sport=None, order=(1, 2, 3), extra=(), ttl=63):
    proto = 0x86DD if inner.haslayer(IPv6) and not inner.haslayer(IP) else 0x0800
    return (Ether(src=lab.gw_mac, dst=lab.app_mac)
            / IP(src=GWLB_IP, dst=APPLIANCE_IP, ttl=ttl, id=cookie & 0xFFFF)
            / UDP(sport=sport or (10000 + cookie % 50000), dport=6081)
            / GENEVE(proto=proto, options=aws_options(cookie, order, extra=extra))
            / inner)


def good_frames(lab, base):
    """Inner TCP, UDP and ICMP over IPv4 and IPv6, both directions, options in several orders."""
    c4, s4 = "198.18.10.1", "198.19.20.2"
    c6, s6 = "2001:db8:c::1", "2001:db8:5::2"
    frames = []
    k = base
    for order in ((1, 2, 3), (3, 1, 2), (2, 3, 1)):
        frames += [
            gwlb(lab, IP(src=c4, dst=s4) / TCP(sport=40000 + k, dport=80, flags="S",
                                             options=[("MSS", 1460), ("WScale", 7), ("SAckOK", b""),
                                                      ("Timestamp", (1, 0))]), k, order=order),
            gwlb(lab, IP(src=s4, dst=c4) / TCP(sport=80, dport=40000 + k, flags="SA"), k, order=order),
            gwlb(lab, IP(src=c4, dst=s4) / UDP(sport=50000 + k, dport=53) / Raw(b"q" * 40), k + 1, order=order),
            gwlb(lab, IP(src=s4, dst=c4) / UDP(sport=53, dport=50000 + k) / Raw(b"a" * 300), k + 1, order=order),
            gwlb(lab, IP(src=c4, dst=s4) / ICMP(id=k, seq=1) / Raw(b"ping"), k + 2, order=order),
            gwlb(lab, IPv6(src=c6, dst=s6) / TCP(sport=41000 + k, dport=443, flags="PA") / Raw(b"x" * 1000),
                 k + 3, order=order),
            gwlb(lab, IPv6(src=s6, dst=c6) / TCP(sport=443, dport=41000 + k, flags="A"), k + 3, order=order),
            gwlb(lab, IPv6(src=c6, dst=s6) / IPv6ExtHdrDestOpt() / UDP(sport=5353, dport=5353) / Raw(b"m" * 20),
                 k + 4, order=order),
            gwlb(lab, IPv6(src=c6, dst=s6) / ICMPv6EchoRequest(id=k, seq=2), k + 5, order=order),
        ]
        k += 10
    # An unknown option kept and returned byte for byte.
    frames.append(gwlb(lab, IP(src=c4, dst=s4) / UDP(sport=7, dport=7) / Raw(b"u"), k,
                       extra=[GeneveOptions(classid=0x0ABC, type=0x42, data=b"keepme!!")]))
    return frames


def check_returned(sent, got, lab):
    """`got` holds exactly one frame per sent frame, each the sent frame turned around."""
    assert len(got) == len(sent), f"sent {len(sent)}, got {len(got)} back"
    sent = [Ether(raw(s)) for s in sent]  # as built on the wire, every field filled in
    by_payload = {}
    for g in got:
        by_payload.setdefault(raw(g[UDP].payload), []).append(g)
    for s in sent:
        body = raw(s[UDP].payload)  # Geneve header + inner packet, byte for byte
        assert body in by_payload and by_payload[body], f"no intact return for {s.summary()}"
        g = by_payload[body].pop()
        assert g[Ether].src == lab.app_mac and g[Ether].dst == lab.gw_mac
        assert g[IP].src == APPLIANCE_IP and g[IP].dst == GWLB_IP
        assert g[IP].ttl == OUTER_TTL
        assert g[IP].id == s[IP].id and g[IP].flags == s[IP].flags
        assert g[UDP].sport == s[UDP].sport and g[UDP].dport == 6081
        assert g[UDP].chksum == 0
        assert g[UDP].len == s[UDP].len
        # The outer IPv4 checksum is valid.
        ip = g[IP].copy()
        ck = ip.chksum
        del ip.chksum
        assert IP(raw(ip)).chksum == ck


@pytest.fixture
def lab():
    with Lab("a") as l:
        l.start()
        yield l


def test_fast_path_returns_every_flow_intact(lab):
    sent = good_frames(lab, 1)
    got = lab.exchange(sent)
    check_returned(sent, got, lab)
    c = lab.stop()["total"]
    assert c["rx_packets"] == len(sent)
    assert c["fast_path"] == len(sent)
    assert c["tx_packets"] == len(sent)
    # TCP v4 + UDP v4 + ICMP v4 + TCP v6 + UDP v6 + ICMPv6 per order, 3 orders; + 1 unknown-option flow.
    # Per option order: TCP v4, UDP v4 and TCP v6 flows of their own; ICMP v4, ICMPv6 and the
    # UDP v6 flow reuse one 5-tuple across the orders (ICMP has no ports); plus the unknown-option flow.
    assert c["flows_created"] == 3 * 3 + 3 + 1
    assert c["cookie_changes"] == 3 * 2
    assert sum(v for k, v in c.items() if k.startswith("drop_")) == 0


def test_arp_and_ping_from_a_real_kernel(lab):
    r = lab.in_gw("ping", "-c", "3", "-i", "0.2", "-W", "2", APPLIANCE_IP)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 received" in r.stdout
    neigh = lab.in_gw("ip", "neigh", "show", APPLIANCE_IP).stdout
    assert lab.app_mac in neigh.lower(), neigh
    got = lab.exchange([Ether(src=lab.gw_mac, dst="ff:ff:ff:ff:ff:ff")
                        / ARP(op=1, hwsrc=lab.gw_mac, psrc=KERNEL_IP, pdst=APPLIANCE_IP),
                        Ether(src=lab.gw_mac, dst="ff:ff:ff:ff:ff:ff")
                        / ARP(op=1, hwsrc=lab.gw_mac, psrc=KERNEL_IP, pdst="198.18.0.99")])
    arps = [g for g in got if g.haslayer(ARP)]
    assert len(arps) == 1 and arps[0][ARP].op == 2 and arps[0][ARP].hwsrc == lab.app_mac
    assert arps[0][ARP].psrc == APPLIANCE_IP and arps[0][ARP].pdst == KERNEL_IP
    c = lab.stop()["total"]
    assert c["icmp_replies"] == 3
    assert c["arp_replies"] >= 2  # the kernel's own request(s) and ours
    assert c["drop_arp_not_for_us"] == 1


def truncated(frame, length):
    """The frame cut to `length` bytes with the outer IPv4 and UDP lengths (and the IPv4 checksum)
    made to match, so that the truncation shows at the layer the cut falls in."""
    b = bytearray(frame[:length])
    ip_len = length - 14
    if ip_len >= 20:
        b[16:18] = ip_len.to_bytes(2, "big")
        ip = IP(bytes(b[14:]))
        del ip.chksum
        b[24:26] = raw(ip)[10:12]
    if ip_len >= 28:
        b[38:40] = (ip_len - 20).to_bytes(2, "big")
    return bytes(b)


def malformed(lab):
    """(cause, frame) pairs: one bad frame per check, at every layer."""
    inner = IP(src="198.18.10.1", dst="198.19.20.2") / UDP(sport=1, dport=2) / Raw(b"z" * 20)
    good = raw(gwlb(lab, inner, 999))
    eth_ip = 14
    udp_at = 14 + 20
    gen_at = udp_at + 8
    bad_version = bytearray(good)
    bad_version[gen_at] |= 0x40  # Ver = 1
    past_end = bytearray(good)
    past_end[gen_at + 8 + 3] = 0x1F  # first option claims 124 bytes
    long_optlen = bytearray(good)
    long_optlen[gen_at] = 0x3F  # 252 bytes of options, more than the packet holds
    bad_csum = bytearray(good)
    bad_csum[eth_ip + 10] ^= 0xFF
    oam = bytearray(good)
    oam[gen_at + 1] |= 0x80
    e = Ether(src=lab.gw_mac, dst=lab.app_mac)
    return [
        ("ipv4_truncated", good[:eth_ip + 12]),
        ("ipv4_truncated", good[:-5]),  # total length past the end of the frame
        ("udp_truncated", truncated(good, udp_at + 5)),
        ("geneve_truncated", truncated(good, gen_at + 6)),
        ("geneve_truncated", bytes(long_optlen)),
        ("geneve_bad_options", bytes(past_end)),
        ("geneve_bad_version", bytes(bad_version)),
        ("geneve_oam", bytes(oam)),
        ("inner_truncated", truncated(good, gen_at + 40 + 12)),
        ("ipv4_bad_checksum", bytes(bad_csum)),
        ("udp_not_geneve", raw(e / IP(src=GWLB_IP, dst=APPLIANCE_IP) / UDP(sport=5, dport=6080) / Raw(good[gen_at:]))),
        ("outer_ipv6", raw(Ether(src=lab.gw_mac, dst=lab.app_mac) / IPv6(src="2001:db8::1", dst="2001:db8::2")
                           / UDP(sport=5, dport=6081) / Raw(good[gen_at:]))),
        ("geneve_bad_options", raw(e / IP(src=GWLB_IP, dst=APPLIANCE_IP) / UDP(sport=5, dport=6081)
                                   / GENEVE(proto=0x0800, options=aws_options(5, order=(1, 3))) / inner)),
        ("geneve_bad_protocol", raw(e / IP(src=GWLB_IP, dst=APPLIANCE_IP) / UDP(sport=5, dport=6081)
                                    / GENEVE(proto=0x6558, options=aws_options(5)) / inner)),
        ("ipv4_not_for_us", raw(e / IP(src=GWLB_IP, dst="198.18.0.77") / UDP(sport=5, dport=6081) / Raw(good[gen_at:]))),
        ("local_protocol", raw(e / IP(src=GWLB_IP, dst=APPLIANCE_IP, proto=47) / Raw(b"gre" * 8))),
        ("eth_not_for_us", raw(Ether(src=lab.gw_mac, dst="02:11:22:33:44:55") / IP(src=GWLB_IP, dst=APPLIANCE_IP)
                               / UDP(sport=5, dport=6081) / Raw(good[gen_at:]))),
        ("eth_unsupported", raw(Ether(src=lab.gw_mac, dst=lab.app_mac, type=0x88B5) / Raw(b"x" * 46))),
    ]


# Outer IPv4 fragments are not tested here: net_af_packet's fanout socket asks the kernel to
# reassemble fragments before DPDK sees them. The fast path's fragment check has unit tests.
def test_malformed_frames_are_dropped_by_cause_and_flows_around_them_survive(lab):
    from scapy.all import Ether as E
    bad = malformed(lab)
    good = good_frames(lab, 100)
    frames = []
    for i, g in enumerate(good):
        frames.append(g)
        if i < len(bad):
            frames.append(E(bad[i][1]))
    frames += [E(b) for _, b in bad[len(good):]]
    got = lab.exchange(frames)
    check_returned(good, got, lab)
    c = lab.stop()["total"]
    want = {}
    for cause, _ in bad:
        want[cause] = want.get(cause, 0) + 1
    for cause, n in want.items():
        assert c[f"drop_{cause}"] == n, f"drop_{cause}: {c[f'drop_{cause}']} != {n}"
    assert sum(v for k, v in c.items() if k.startswith("drop_")) == len(bad)
    assert c["fast_path"] == len(good)


POLICY = """
[policy]
default = "allow"

[[policy.rules]]
name = "no-ssh"
dst = "198.19.0.0/16"
protocol = "tcp"
dst_ports = "22"
action = "reset"

[[policy.rules]]
name = "no-ssh-v6"
dst = "2001:db8:5::/64"
protocol = "tcp"
dst_ports = "22"
action = "reset"

[[policy.rules]]
name = "no-telnet"
protocol = "tcp"
dst_ports = "23"
action = "drop"

[[policy.rules]]
name = "inspect-web"
protocol = "tcp"
dst_ports = "8080"
action = "intercept"
"""


def test_policy_drop_reset_intercept():
    with Lab("p", config_extra=POLICY) as lab:
        lab.start()
        c4, s4 = "198.18.10.1", "198.19.20.2"
        c6, s6 = "2001:db8:c::1", "2001:db8:5::2"
        syn22 = gwlb(lab, IP(src=c4, dst=s4) / TCP(sport=33333, dport=22, flags="S", seq=1000), 7)
        syn22_v6 = gwlb(lab, IPv6(src=c6, dst=s6) / TCP(sport=33334, dport=22, flags="S", seq=5), 8)
        data22 = gwlb(lab, IP(src=c4, dst=s4) / TCP(sport=33335, dport=22, flags="PA", seq=10, ack=77)
                      / Raw(b"ssh"), 9)
        syn23 = gwlb(lab, IP(src=c4, dst=s4) / TCP(sport=33336, dport=23, flags="S"), 10)
        web = gwlb(lab, IP(src=c4, dst=s4) / TCP(sport=33337, dport=8080, flags="S"), 11)
        other = gwlb(lab, IP(src=c4, dst=s4) / TCP(sport=33338, dport=443, flags="S"), 12)
        got = lab.exchange([syn22, syn22_v6, data22, syn23, web, other])
        rsts = [g for g in got if g.haslayer(TCP) and g[TCP].flags.R]
        assert len(rsts) == 3, [g.summary() for g in got]
        by_port = {g[TCP].dport: g for g in rsts}
        r = by_port[33333]
        assert r[IP:2].src == s4 and r[IP:2].dst == c4 and r[TCP].sport == 22
        assert r[TCP].flags == "RA" and r[TCP].ack == 1001 and r[TCP].seq == 0
        assert r[IP].dst == GWLB_IP and r[UDP].dport == 6081 and r[UDP].sport == syn22[UDP].sport
        assert raw(r[GENEVE])[:40] == raw(syn22[GENEVE])[:40], "the RST carries the flow's Geneve header"
        # The inner checksums are right (scapy recomputes them when deleted).
        t = r[TCP].copy()
        ck = t.chksum
        del t.chksum
        assert TCP(raw(IP(src=s4, dst=c4) / t)[20:]).chksum == ck
        r6 = by_port[33334]
        assert r6[IPv6].src == s6 and r6[TCP].flags == "RA" and r6[TCP].ack == 6
        r = by_port[33335]
        assert r[TCP].flags == "R" and r[TCP].seq == 77
        returned = [g for g in got if not (g.haslayer(TCP) and g[TCP].flags.R)]
        assert [g[TCP].dport for g in returned if g[TCP].dport == 443] == [443], "443 on the fast path"
        # The intercepted SYN is held; the appliance's upstream leg sends its own SYN for the
        # client (same addresses and ports, its own sequence number) inside the flow's Geneve
        # header, retransmitted while the server (absent here) does not answer.
        upstream = [g for g in returned if g[TCP].dport == 8080]
        assert upstream, [g.summary() for g in got]
        for u in upstream:
            assert (u[IP:2].src, u[IP:2].dst, u[TCP].sport, u[TCP].flags) == (c4, s4, 33337, "S")
            assert u[IP].dst == GWLB_IP and raw(u[GENEVE])[:40] == raw(web[GENEVE])[:40]
        c = lab.stop()["total"]
        assert c["rst_sent"] == 3
        assert c["drop_policy_drop"] == 1
        assert c["intercept"] == 1
        assert c["tcp_pairs_created"] == 1
        assert c["fast_path"] == 1


def test_two_workers_steer_both_directions_to_the_owner():
    """Two workers on two af_packet queues (the kernel's fanout spreads frames by their outer
    headers, as ENA's RSS does): both directions of every flow meet on the worker that owns it."""
    with Lab("w", workers=2) as lab:
        lab.start()
        sent = []
        for i in range(40):
            c, s = f"198.18.30.{i + 1}", "198.19.0.80"
            # Each direction gets its own outer source port, so RSS may split a flow's directions.
            sent.append(gwlb(lab, IP(src=c, dst=s) / TCP(sport=20000 + i, dport=443, flags="S"), i,
                             sport=30000 + i))
            sent.append(gwlb(lab, IP(src=s, dst=c) / TCP(sport=443, dport=20000 + i, flags="SA"), i,
                             sport=40000 + 7 * i))
        got = lab.exchange(sent, gap=0.003)
        check_returned(sent, got, lab)
        counters = lab.stop()
        c = counters["total"]
        w0, w1 = counters["workers"]
        assert c["flows_created"] == 40, "one flow per 5-tuple, whichever worker saw it first"
        assert w0["flows_created"] > 0 and w1["flows_created"] > 0, "both workers own flows"
        assert w0["rx_packets"] > 0 and w1["rx_packets"] > 0, "the fanout spread the frames"
        assert c["steered_out"] == c["steered_in"] > 0
        assert c["fast_path"] == len(sent)
