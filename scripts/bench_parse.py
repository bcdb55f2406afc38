#!/usr/bin/env python3
"""Helpers for scripts/bench-fastpath.sh: parse testpmd and flowdog output, render the table.

Sub-commands (each prints shell-friendly `key=value` words or Markdown; no third-party modules):

  window LOG --port P --pcap-port Q --warmup W --measure M
      Parse a testpmd `--stats-period 1` log (one "Port statistics" block per second). The link is
      taken to be up at the first block where port P (the memif port) has TX-packets > 0; the W
      blocks after it are the warm-up, the next M blocks the measurement. Prints
      `state=ok back_pps=... offered_pps=... read_pps=... back_min=... back_max=... samples=N`, or
      `state=wait` (not enough blocks yet), or `state=nolink` (no block shows the link up).
        back_pps     port P Rx-pps: what came back from the device under test
        offered_pps  port P Tx-pps: what the device under test accepted from the generator
        read_pps     port Q Rx-pps: what the generator read from the pcap (its own ceiling)
  testpmd-final LOG
      Totals of a testpmd run from its final "Accumulated forward statistics" block:
      `rx=... tx=... tx_dropped=...` (zeros if the block is missing).
  flowdog-sanity JSON --flows N
      One line about flowdog's final counters; exit 0 if fast_path ~ rx, no drops (but for under
      1 % tx_refused: backpressure from the generator) and the flow table holds N flows, 1
      otherwise (2 if the file is missing or unreadable).
  frame-len PCAP
      Length of the first frame of a classic pcap file.
  table TSV
      Markdown table from the results file that bench-fastpath.sh writes.
  cpu-snap PID...
      `tid:ticks,...` of every thread of the processes (user + system CPU time, clock ticks).
  cpu-share A B --seconds S
      The share of S seconds of wall time that the busiest thread got between snapshots A and B
      (a busy-polling lcore alone on its CPU gets ~1.0; less means something else ran there).
  cpu-busy --seconds S
      The busiest CPU's non-idle share over the next S seconds (before a run: is anything else
      running on the machine?), and which CPU it is: `busy=0.03 cpu=1`.
"""

import argparse
import json
import os
import re
import sys
import time

BLOCK = "Port statistics ===="
PORT_RE = re.compile(r"NIC statistics for port (\d+)")
NUM = r"\s*(\d+)"


def parse_blocks(text):
    """A list of {port: {rx_packets, tx_packets, rx_pps, tx_pps}}, one per stats block."""
    blocks = []
    for chunk in text.split(BLOCK)[1:]:
        ports = {}
        parts = PORT_RE.split(chunk)
        # parts = [before, port, body, port, body, ...]
        for i in range(1, len(parts) - 1, 2):
            body = parts[i + 1]
            vals = {}
            for key, pat in (
                ("rx_packets", r"RX-packets:" + NUM),
                ("tx_packets", r"TX-packets:" + NUM),
                ("rx_pps", r"Rx-pps:" + NUM),
                ("tx_pps", r"Tx-pps:" + NUM),
            ):
                m = re.search(pat, body)
                if m:
                    vals[key] = int(m.group(1))
            if len(vals) == 4:
                ports[int(parts[i])] = vals
        if ports:
            blocks.append(ports)
    # The last block may be cut off mid-write: keep only complete ones (same ports as the first).
    if blocks and len(blocks[-1]) < len(blocks[0]):
        blocks.pop()
    return blocks


def cmd_window(a):
    with open(a.log, errors="replace") as f:
        blocks = parse_blocks(f.read())
    link = next((i for i, b in enumerate(blocks) if b.get(a.port, {}).get("tx_packets", 0) > 0), None)
    if link is None:
        print("state=nolink samples=0")
        return 0
    first = link + 1 + a.warmup
    win = blocks[first : first + a.measure]
    if len(win) < a.measure:
        print(f"state=wait samples={max(0, len(blocks) - link - 1)}")
        return 0

    def avg(port, key):
        return sum(b.get(port, {}).get(key, 0) for b in win) / len(win)

    back = [b.get(a.port, {}).get("rx_pps", 0) for b in win]
    print(
        "state=ok back_pps=%d offered_pps=%d read_pps=%d back_min=%d back_max=%d samples=%d"
        % (avg(a.port, "rx_pps"), avg(a.port, "tx_pps"), avg(a.pcap_port, "rx_pps"), min(back), max(back), len(win))
    )
    return 0


def cmd_testpmd_final(a):
    try:
        with open(a.log, errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    i = text.rfind("Accumulated forward statistics")
    out = {"rx": 0, "tx": 0, "tx_dropped": 0}
    if i >= 0:
        tail = text[i:]
        for key, pat in (("rx", r"RX-packets:" + NUM), ("tx", r"TX-packets:" + NUM), ("tx_dropped", r"TX-dropped:" + NUM)):
            m = re.search(pat, tail)
            if m:
                out[key] = int(m.group(1))
    print(" ".join(f"{k}={v}" for k, v in out.items()))
    return 0


def cmd_flowdog_sanity(a):
    try:
        with open(a.json) as f:
            doc = json.load(f)
        t = doc["total"]
    except (OSError, ValueError, KeyError) as e:
        print(f"flowdog counters: UNREADABLE ({a.json}: {e})")
        return 2
    rx, tx, fast = t.get("rx_packets", 0), t.get("tx_packets", 0), t.get("fast_path", 0)
    drops = {k[5:]: v for k, v in t.items() if k.startswith("drop_") and v}
    ndrop = sum(drops.values())
    flows = t.get("flows_active", 0)
    problems = []
    # tx_refused: the memif ring back to the generator was full (the generator fell behind);
    # testpmd's TX-dropped counts the same thing. A little of it is backpressure, not a fault.
    refused = drops.pop("tx_refused", 0)
    if rx == 0:
        problems.append("received nothing")
    else:
        if fast < 0.999 * rx:
            problems.append(f"fast_path is {100.0 * fast / rx:.2f}% of rx")
        if drops:
            problems.append(f"{sum(drops.values())} drops ({', '.join(f'{k} {v}' for k, v in sorted(drops.items()))})")
        if refused > 0.01 * rx:
            problems.append(f"tx_refused is {100.0 * refused / rx:.2f}% of rx")
        if tx + refused < 0.999 * rx:
            problems.append(f"tx is {100.0 * tx / rx:.2f}% of rx")
    if a.flows and flows != a.flows:
        problems.append(f"{flows} flows in the table, {a.flows} expected")
    verdict = "OK" if not problems else "SUSPECT: " + "; ".join(problems)
    print(
        f"flowdog counters: rx {rx} tx {tx} fast_path {fast} drops {ndrop} (tx_refused {refused}) flows {flows} "
        f"(created {t.get('flows_created', 0)}, evicted {t.get('flows_evicted', 0)}): {verdict}"
    )
    return 0 if not problems else 1


def cmd_frame_len(a):
    with open(a.pcap, "rb") as f:
        head = f.read(24 + 16)
    if len(head) < 40:
        print(0)
        return 1
    order = "little" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else "big"
    print(int.from_bytes(head[24 + 12 : 24 + 16], order))
    return 0


def cmd_cpu_snap(a):
    out = []
    for pid in a.pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # after the comm: state is field 3, utime 14 and stime 15 (1-based, whole line)
            out.append(f"{tid}:{int(fields[11]) + int(fields[12])}")
    print(",".join(out) or "-")
    return 0


def cmd_cpu_share(a):
    def parse(s):
        return {k: int(v) for k, v in (x.split(":") for x in s.split(",") if ":" in x)}

    before, after = parse(a.a), parse(a.b)
    best = max((after[t] - before.get(t, 0) for t in after), default=0)
    hz = os.sysconf("SC_CLK_TCK")
    print(f"{best / hz / a.seconds:.2f}" if a.seconds > 0 else "0.00")
    return 0


def cmd_cpu_busy(a):
    def read():
        cpus = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    v = [int(x) for x in line.split()[1:]]
                    cpus[line.split()[0][3:]] = (sum(v), v[3] + v[4])  # total, idle + iowait
        return cpus

    x = read()
    time.sleep(a.seconds)
    y = read()
    busy = {c: 1.0 - (y[c][1] - x[c][1]) / max(1, y[c][0] - x[c][0]) for c in y if c in x}
    cpu = max(busy, key=busy.get)
    print(f"busy={busy[cpu]:.2f} cpu={cpu}")
    return 0


def mpps(x):
    return "-" if x in ("", "-", None) else f"{float(x) / 1e6:.2f}"


FLAG_TEXT = {
    "c": "c: contended, a busy-polling thread got < 90 % of its CPU (other processes ran there)",
    "s": "s: flowdog's counters look wrong (drops, fast_path or tx short of rx, or a wrong flow count)",
    "x": "x: a process exited abnormally (see the run lines)",
}


def cmd_table(a):
    rows = []
    with open(a.tsv) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                rows.append(line.rstrip("\n").split("\t"))
    print(
        "| flows | inner size (B) | frame size (B) | testpmd macswap (Mpps) | flowdog (Mpps) "
        "| flowdog / testpmd | generator offered / tried (Mpps): macswap; flowdog |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    used = set()

    def cell(back, flag):
        if back in ("", "-") or flag == "failed":
            return "FAILED"
        used.update(flag)
        return mpps(back) + (f" ({flag})" if flag else "")

    for r in rows:
        flows, size, frame, tp_back, tp_off, fd_back, fd_off, tp_flag, fd_flag, tp_read, fd_read = (r + [""] * 11)[:11]
        ok = tp_back not in ("", "-") and fd_back not in ("", "-") and float(tp_back) > 0
        ratio = f"{float(fd_back) / float(tp_back):.2f}" if ok else "-"
        flows = f"{int(flows):,}".replace(",", " ")
        print(
            f"| {flows} | {size} | {frame} | {cell(tp_back, tp_flag)} | {cell(fd_back, fd_flag)} | {ratio} "
            f"| {mpps(tp_off)} / {mpps(tp_read)}; {mpps(fd_off)} / {mpps(fd_read)} |"
        )
    print()
    print(
        "offered: what the DUT accepted from the generator; tried: what the generator read from the pcap and "
        "tried to send. Offered well below tried: the DUT is the bottleneck; close to it: the generator is."
    )
    for k in sorted(used):
        print(FLAG_TEXT.get(k, k))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("window")
    w.add_argument("log")
    w.add_argument("--port", type=int, default=1)
    w.add_argument("--pcap-port", type=int, default=0)
    w.add_argument("--warmup", type=int, default=2)
    w.add_argument("--measure", type=int, default=8)
    w.set_defaults(f=cmd_window)
    t = sub.add_parser("testpmd-final")
    t.add_argument("log")
    t.set_defaults(f=cmd_testpmd_final)
    s = sub.add_parser("flowdog-sanity")
    s.add_argument("json")
    s.add_argument("--flows", type=int, default=0)
    s.set_defaults(f=cmd_flowdog_sanity)
    fl = sub.add_parser("frame-len")
    fl.add_argument("pcap")
    fl.set_defaults(f=cmd_frame_len)
    tb = sub.add_parser("table")
    tb.add_argument("tsv")
    tb.set_defaults(f=cmd_table)
    cs = sub.add_parser("cpu-snap")
    cs.add_argument("pids", nargs="*")
    cs.set_defaults(f=cmd_cpu_snap)
    ch = sub.add_parser("cpu-share")
    ch.add_argument("a")
    ch.add_argument("b")
    ch.add_argument("--seconds", type=float, required=True)
    ch.set_defaults(f=cmd_cpu_share)
    cb = sub.add_parser("cpu-busy")
    cb.add_argument("--seconds", type=float, default=1.0)
    cb.set_defaults(f=cmd_cpu_busy)
    a = p.parse_args()
    return a.f(a)


if __name__ == "__main__":
    sys.exit(main())
