"""The lab of scripts/lab.sh, driven from Python: client and server namespaces, the GWLB
simulator (`flowdog gwlb`) in the gw namespace, appliances (`flowdog run` on DPDK's
net_af_packet) in their own namespaces. Each test module gets its own prefix, so labs never
collide, and everything is torn down afterwards (`lab.sh down`).
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
LAB = str(ROOT / "scripts" / "lab.sh")
# scripts/build-plugins.sh builds them here (scripts/test.sh runs it first).
PLUGINS = ROOT / "wasm-plugins" / "target" / "wasm32-wasip1" / "release"


def plugin(name, configuration=None, on_failure=None):
    """A [[plugin]] entry of the appliance's config for the plugin `name` of wasm-plugins/."""
    f = PLUGINS / f"{name}.wasm"
    assert f.exists(), f"{f} is missing: run scripts/build-plugins.sh"
    t = f'\n[[plugin]]\nname = "{name}"\nfile = "{f}"\n'
    if configuration is not None:
        t += f"configuration = '{configuration}'\n"
    if on_failure is not None:
        t += f'on_failure = "{on_failure}"\n'
    return t


def sh(*args, check=True, env=None, timeout=120, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, env=env, timeout=timeout, **kw)


class Proc:
    """A background process whose output is kept, started inside a namespace."""

    def __init__(self, ns, args, ready=None, timeout=30):
        self.lines = []
        self.p = subprocess.Popen(["ip", "netns", "exec", ns, *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if ready is None:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            r, _, _ = select.select([self.p.stdout], [], [], 0.5)
            if r:
                line = self.p.stdout.readline()
                if not line:
                    break
                self.lines.append(line)
                if ready in line:
                    return
        self.kill()
        raise RuntimeError(f"{args[0]} did not start:\n" + "".join(self.lines))

    def stop(self, timeout=30):
        """SIGTERM, wait, and return the exit status."""
        if self.p.poll() is None:
            self.p.terminate()
        try:
            rest, _ = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rest, _ = self.p.communicate()
        self.lines.append(rest or "")
        return self.p.returncode

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.communicate()

    def output(self):
        return "".join(self.lines)


class GwLab:
    def __init__(self, prefix, appliances=1):
        self.prefix = prefix
        self.n = appliances
        self.env = dict(os.environ, FDLAB=prefix)
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"flowdog-{prefix}-"))
        self.apps = {}
        self.gwlb = None
        self.vars = {}

    def __enter__(self):
        sh(LAB, "up", "--appliances", str(self.n), env=self.env, timeout=300)
        for line in sh(LAB, "env", env=self.env).stdout.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                self.vars[k] = v.strip().strip("'\"")
        return self

    def __exit__(self, *exc):
        for a in list(self.apps.values()):
            a.kill()
        if self.gwlb is not None:
            self.gwlb.kill()
        sh(LAB, "down", env=self.env, check=False, timeout=120)
        for i in range(1, self.n + 1):
            shutil.rmtree(f"/var/run/dpdk/{self.prefix}-a{i}", ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def ns(self, role):
        return {"client": self.vars["FDLAB_NS_CLIENT"], "server": self.vars["FDLAB_NS_SERVER"],
                "gw": self.vars["FDLAB_NS_GW"]}[role]

    def app_ns(self, i):
        return self.vars[f"FDLAB_APP{i}_NS"]

    def app_ip(self, i):
        return self.vars[f"FDLAB_APP{i}_IP"]

    def start_appliance(self, i, extra="", drain=0):
        """flowdog run in appliance i's namespace, on the config `lab.sh appliance-config` gives,
        with `extra` TOML appended."""
        cfg = sh(LAB, "appliance-config", str(i), str(drain), env=self.env).stdout + extra
        path = self.dir / f"app{i}.toml"
        path.write_text(cfg)
        counters = self.dir / f"app{i}.json"
        self.apps[i] = Proc(self.app_ns(i), [FLOWDOG, "run", "--config", str(path), "--counters-out", str(counters)],
                            ready="flowdog: ready")
        self.apps[i].counters_path = counters
        return self.apps[i]

    def stop_appliance(self, i):
        a = self.apps.pop(i)
        rc = a.stop()
        assert rc == 0, f"appliance {i} exited with {rc}:\n{a.output()}"
        return json.loads(a.counters_path.read_text())

    def start_gwlb(self, targets, extra="", pcap=False):
        t = "".join(f'[[targets]]\nip = "{ip}"\n' for ip in targets)
        cfg = f"""
ip = "{self.vars['FDLAB_GW_IP']}"
consumer = {{ tun = "{self.vars['FDLAB_GW_TUN_CLIENT']}", vpc_endpoint_id = "vpce-0c0c0c0c0c0c0c0c0" }}
provider = {{ tun = "{self.vars['FDLAB_GW_TUN_SERVER']}", vpc_endpoint_id = "vpce-05e5e5e5e5e5e5e5e" }}
{t}
{extra}
"""
        path = self.dir / "gwlb.toml"
        path.write_text(cfg)
        self.gwlb_json = self.dir / "gwlb.json"
        self.gwlb_pcap = self.dir / "gwlb.pcap"
        args = [FLOWDOG, "gwlb", "--config", str(path), "--counters-out", str(self.gwlb_json)]
        if pcap:
            args += ["--pcap", str(self.gwlb_pcap)]
        self.gwlb = Proc(self.ns("gw"), args, ready="flowdog gwlb:")
        time.sleep(0.3)
        return self.gwlb

    def gwlb_counters(self):
        """The simulator's live counters (it rewrites the file every second)."""
        return json.loads(self.gwlb_json.read_text())

    def stop_gwlb(self):
        rc = self.gwlb.stop()
        out = self.gwlb.output()
        self.gwlb = None
        assert rc == 0, f"gwlb exited with {rc}:\n{out}"
        return json.loads(self.gwlb_json.read_text())

    def run(self, role, *args, check=True, timeout=60, **kw):
        return sh("ip", "netns", "exec", self.ns(role), *args, check=check, timeout=timeout, **kw)
