"""A throw-away lab for one test: two namespaces joined by a veth pair, the appliance on DPDK's
net_af_packet in one, the GWLB side (scapy, the kernel's ping) in the other.

Addresses come from 198.18.0.0/15 and no namespace has a route out. IPv6 is off on both ends so
the kernel sends no router or neighbour solicitations that would land in the counters.
"""
import json
import os
import pathlib
import select
import shutil
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
FLOWDOG = os.environ.get("FLOWDOG_BIN", str(ROOT / "target" / "debug" / "flowdog"))

APPLIANCE_IP = "198.18.0.2"
GWLB_IP = "198.18.0.1"       # used by the Geneve frames scapy sends; not on any interface
KERNEL_IP = "198.18.0.3"     # the GWLB-side kernel's own address, for ping and ARP


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


class Lab:
    def __init__(self, tag, config_extra="", workers=1):
        uid = f"{os.getpid() % 100000}{tag}"
        self.ns_gw = f"fdt-gw-{uid}"
        self.ns_app = f"fdt-app-{uid}"
        self.if_gw = f"fdg{uid}"[:15]
        self.if_app = f"fda{uid}"[:15]
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="flowdog-e2e-"))
        self.config_extra = config_extra
        self.workers = workers
        self.proc = None
        self.out_lines = []

    def __enter__(self):
        for ns in (self.ns_gw, self.ns_app):
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.if_gw, "netns", self.ns_gw, "type", "veth",
           "peer", "name", self.if_app, "netns", self.ns_app)
        sh("ip", "-n", self.ns_gw, "addr", "add", f"{KERNEL_IP}/24", "dev", self.if_gw)
        for ns, i in ((self.ns_gw, self.if_gw), (self.ns_app, self.if_app)):
            sh("ip", "-n", ns, "link", "set", i, "up")
        self.gw_mac = self._mac(self.ns_gw, self.if_gw)
        self.app_mac = self._mac(self.ns_app, self.if_app)
        return self

    def _mac(self, ns, iface):
        info = json.loads(sh("ip", "-j", "-n", ns, "link", "show", iface).stdout)
        return info[0]["address"]

    def start(self):
        n = self.workers
        cpus = ", ".join(["1"] * n)
        cfg = f"""
[eal]
args = ["--no-pci", "--log-level=lib.eal:warning", "--log-level=pmd.*:warning"]
vdevs = ["net_af_packet0,iface={self.if_app},qpairs={n}"]
file_prefix = "fdt-{self.if_app}"
hugepages = "off"

[port]
name = "net_af_packet0"
mbufs_per_worker = 4095

[appliance]
ip = "{APPLIANCE_IP}"

[workers]
cpus = [{cpus}]
control_cpu = 0

[control]
drain_seconds = 0

{self.config_extra}
"""
        (self.dir / "flowdog.toml").write_text(cfg)
        self.counters_path = self.dir / "counters.json"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_app, FLOWDOG, "run", "--config", str(self.dir / "flowdog.toml"),
             "--counters-out", str(self.counters_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.out_lines.append(line)
                if "flowdog: ready" in line:
                    time.sleep(0.3)
                    return
        self.stop()
        raise RuntimeError("flowdog did not start:\n" + "".join(self.out_lines))

    def stop(self):
        """Stops flowdog (SIGTERM) and returns its final counters."""
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            rest, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        self.out_lines.append(rest or "")
        rc = self.proc.returncode
        self.proc = None
        assert rc == 0, f"flowdog exited with {rc}:\n" + "".join(self.out_lines)
        return json.loads(self.counters_path.read_text())

    def exchange(self, frames, gap=0.002, settle=1.0):
        """Sends scapy frames from the GWLB side; returns the frames that came back."""
        from scapy.all import rdpcap, wrpcap
        send, recv = self.dir / "send.pcap", self.dir / "recv.pcap"
        wrpcap(str(send), frames)
        r = sh("ip", "netns", "exec", self.ns_gw, "python3", str(ROOT / "tests" / "e2e" / "peer.py"),
               "--iface", self.if_gw, "--send", str(send), "--recv", str(recv),
               "--gap", str(gap), "--settle", str(settle))
        return list(rdpcap(str(recv))) if recv.stat().st_size > 24 else []

    def in_gw(self, *args, check=False, timeout=20):
        return sh("ip", "netns", "exec", self.ns_gw, *args, check=check, timeout=timeout)

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        for ns in (self.ns_gw, self.ns_app):
            sh("ip", "netns", "del", ns, check=False)
        # DPDK's runtime files for this prefix.
        shutil.rmtree(f"/var/run/dpdk/fdt-{self.if_app}", ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return False
