#!/usr/bin/env python3
"""The demo's last lines: the simulator's and the appliance's counters, a few readable lines.

usage: demo_summary.py GWLB_JSON APPLIANCE_JSON
"""
import json
import sys


def main():
    sim = json.load(open(sys.argv[1]))
    app = json.load(open(sys.argv[2]))
    print("== GWLB simulator")
    for t in sim["targets"]:
        print(f"  target {t['ip']}: {'healthy' if t['healthy'] else 'UNHEALTHY'}, "
              f"health checks {t['checks_passed']} passed / {t['checks_failed']} failed; "
              f"sent {t['tx_packets']} packets ({t['tx_bytes']} B), got back {t['rx_packets']} ({t['rx_bytes']} B); "
              f"{t['flows']} flows")
    drops = {k: v for k, v in sim["drops"].items() if v}
    print(f"  flows created {sim['flows_created']}; drops: "
          + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none")
          + "  (inner_not_routable: the namespaces' own IPv6 multicast chatter, not routed traffic)"
          * bool(drops.get("inner_not_routable")))
    bad = sum(v for k, v in drops.items() if k.startswith("return_"))
    print(f"  every packet the appliance returned matched its flow (options, cookie, target): "
          f"{'yes' if bad == 0 else f'NO, {bad} did not'}")
    c = app["total"]
    ctl = app.get("control", {})
    print("== appliance (flowdog on DPDK)")
    print(f"  received {c['rx_packets']} frames, returned {c['fast_path']} to the GWLB on the fast path, "
          f"{c['rst_sent']} TCP resets by policy; {c['flows_created']} flows")
    print(f"  intercepted: {c['tcp_pairs_created']} TCP connections terminated on both sides, "
          f"{c['http_requests']} HTTP requests proxied through the rewrite "
          f"({c['intercept']} packets into the TCP pairs, {c['tcp_tx_packets']} out)")
    print(f"  TLS: {c['tls_intercepted']} handshakes intercepted ({c['tls_h2']} HTTP/2 by ALPN), "
          f"{c['tls_excluded']} relayed untouched (excluded SNI); leaves minted {ctl.get('tls_leaf_minted', 0)}, "
          f"from the cache {ctl.get('tls_leaf_cache_hits', 0)}")
    print(f"  flow acceptor (plugin flow_acceptor): {c['acceptor_asked']} new flows asked, "
          f"{c['acceptor_accepted']} accepted, {c['acceptor_denied']} denied, {c['acceptor_timed_out']} by the timeout; "
          f"{c['acceptor_held']} packets held while it decided")
    print(f"  health checks answered: {ctl.get('control_http_ok', 0)} x 200, "
          f"{ctl.get('control_http_unavailable', 0)} x 503 (ARP replies {c['arp_replies']})")
    drops = {k[5:]: v for k, v in c.items() if k.startswith("drop_") and v}
    print("  drops: " + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"))


if __name__ == "__main__":
    main()
