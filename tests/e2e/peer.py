"""The GWLB side of an end-to-end test, run inside the test's namespace.

Reads frames from --send (a pcap), sends them one by one on --iface with a small gap while
sniffing, and writes every frame that arrived from another MAC to --recv (a pcap).
"""
import argparse
import time

from scapy.all import AsyncSniffer, conf, get_if_hwaddr, rdpcap, wrpcap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--send", required=True)
    ap.add_argument("--recv", required=True)
    ap.add_argument("--gap", type=float, default=0.002)
    ap.add_argument("--settle", type=float, default=1.0)
    a = ap.parse_args()
    own = get_if_hwaddr(a.iface).lower()
    frames = rdpcap(a.send)
    sniffer = AsyncSniffer(iface=a.iface, store=True, lfilter=lambda p: p.src.lower() != own)
    sniffer.start()
    time.sleep(0.3)
    sock = conf.L2socket(iface=a.iface)
    for f in frames:
        sock.send(f)
        time.sleep(a.gap)
    time.sleep(a.settle)
    got = sniffer.stop()
    sock.close()
    wrpcap(a.recv, got)
    print(f"sent {len(frames)} received {len(got)}")


if __name__ == "__main__":
    main()
