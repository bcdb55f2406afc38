"""Compares what the demo sent with what came back and prints a short report."""
import collections
import sys

from scapy.all import IP, TCP, UDP, raw, rdpcap
from scapy.contrib.geneve import GENEVE  # noqa: F401  (binds UDP 6081, so inner packets dissect)

sent = rdpcap(sys.argv[1])
back = rdpcap(sys.argv[2])
by_body = collections.Counter(raw(p[UDP].payload) for p in back if p.haslayer(UDP))
intact = 0
for p in sent:
    body = raw(p[UDP].payload)
    if by_body[body] > 0:
        by_body[body] -= 1
        intact += 1
rsts = [p for p in back if p.haslayer(TCP) and p[TCP].flags.R]
print(f"sent {len(sent)} GWLB frames, {len(back)} came back")
print(f"  returned on the fast path, Geneve header and inner packet byte for byte: {intact}")
print(f"  TCP resets sent inside the flow's Geneve header (policy 'no-telnet'): {len(rsts)}")
if back:
    b = back[0]
    print(f"  example: outer {b[IP].src} -> {b[IP].dst} ttl {b[IP].ttl}, UDP {b[UDP].sport} -> {b[UDP].dport}, "
          f"checksum {b[UDP].chksum:#06x}")
