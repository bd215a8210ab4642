#!/usr/bin/env python3
"""The hvmaint.libvirt lab: several libvirt hypervisors on one machine.

Each hypervisor is a network namespace (its own address on a shared layer-2 segment) holding a private mount
and UTS namespace, in which per-host directories are bind-mounted over libvirt's own paths, and its own
libvirtd, virtlogd and sshd run. Hosts talk to each other over TLS with a CA the lab makes.

    lab up       build or repair the lab (safe to run again)
    lab down     remove everything `up` made (safe to run again, and after an `up` that died)
    lab status   print what runs where
    lab env      print shell variables (URIs, inventory path) for scripts

Standard library only: it runs before the project's virtual environment exists.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_PATH = os.environ.get("HVMAINT_LAB_CONFIG", os.path.join(HERE, "lab.json"))
# Every lab's namespaces start with this; a lab config names its own longer prefix (default hvlab-).
LAB_NETNS_FAMILY = "hvl"
LIBVIRT_DIRS = {
    # per-host directory name: path it is mounted over inside the host
    "etc-libvirt": "/etc/libvirt",
    "run-libvirt": "/run/libvirt",
    "var-lib-libvirt": "/var/lib/libvirt",
    "cache-libvirt": "/var/cache/libvirt",
    "log-libvirt": "/var/log/libvirt",
    "pki": "/etc/pki",
    "root-ssh": "/root/.ssh",
}
# Mount points that must exist in the real root file system; removed by `down` if the lab created them.
MOUNTPOINTS = sorted(LIBVIRT_DIRS.values()) + ["/run/sshd"]
# In dependency order (modinfo -F depends): insmod does not resolve dependencies.
VIRTIO_MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
                  "failover", "net_failover", "virtio_net", "virtio_blk"]


def log(message):
    print("lab: %s" % message, flush=True)


def run(cmd, check=True, capture=True, input_text=None, timeout=120, cwd=None):
    result = subprocess.run(cmd, check=False, text=True, input=input_text, timeout=timeout, cwd=cwd,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        raise LabError("command failed (%d): %s\n%s%s" % (result.returncode, " ".join(cmd),
                                                          result.stdout or "", result.stderr or ""))
    return result


class LabError(Exception):
    pass


def load_config():
    with open(CONFIG_PATH, encoding="utf-8") as handle:
        config = json.load(handle)
    config["state_dir"] = os.environ.get("HVMAINT_LAB_DIR", config["state_dir"])
    return config


class Lab:
    def __init__(self, config):
        self.config = config
        self.state_dir = config["state_dir"]
        self.hosts = {h["name"]: h for h in config["hosts"]}
        self.pki_dir = os.path.join(self.state_dir, "pki")
        self.ssh_dir = os.path.join(self.state_dir, "ssh")
        self.images_dir = os.path.join(self.state_dir, "images")
        self.state_file = os.path.join(self.state_dir, "state.json")
        self.netns_prefix = config.get("netns_prefix", "hvlab-")
        if not self.netns_prefix.startswith(LAB_NETNS_FAMILY):
            raise LabError("netns_prefix must start with %r" % LAB_NETNS_FAMILY)
        # Root-side veth names are limited to 15 characters: prefix + host name.
        self.veth_prefix = config.get("veth_prefix", "hvl-")

    # ---- paths and names -------------------------------------------------------------------------------
    def host_dir(self, name):
        return os.path.join(self.state_dir, "hosts", name)

    def netns(self, name):
        return self.netns_prefix + name

    def controller_pki(self):
        return os.path.join(self.pki_dir, "controller")

    def uri(self, name, transport="tls"):
        address = self.hosts[name]["address"]
        if transport == "tls":
            return "qemu+tls://%s/system?pkipath=%s" % (address, self.controller_pki())
        if transport == "tcp":
            return "qemu+tcp://%s/system" % address
        if transport == "ssh":
            return "qemu+ssh://root@%s/system?keyfile=%s&known_hosts=%s" % (
                address, os.path.join(self.ssh_dir, "id_ed25519"), os.path.join(self.ssh_dir, "known_hosts"))
        raise LabError("unknown transport %s" % transport)

    def read_state(self):
        try:
            with open(self.state_file, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def write_state(self, state):
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = self.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
        os.replace(tmp, self.state_file)

    def host_pid(self, name):
        try:
            with open(os.path.join(self.host_dir(name), "init.pid"), encoding="utf-8") as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        return pid if os.path.exists("/proc/%d" % pid) else None

    def in_host(self, name, cmd, **kwargs):
        """Run cmd inside host `name` (its network, mount and UTS namespaces)."""
        pid = self.host_pid(name)
        if pid is None:
            raise LabError("host %s is not running" % name)
        return run(["nsenter", "-t", str(pid), "-n", "-m", "-u", "--"] + cmd, **kwargs)

    def virsh(self, name, args, **kwargs):
        return run(["virsh", "-q", "-c", self.uri(name)] + args, **kwargs)

    # ---- up ----------------------------------------------------------------------------------------------
    def up(self):
        self.check_prerequisites()
        state = self.read_state()
        os.makedirs(self.state_dir, exist_ok=True)
        os.chmod(self.state_dir, 0o755)
        state.setdefault("created_mountpoints", [])
        for path in MOUNTPOINTS:
            if not os.path.exists(path):
                os.makedirs(path, mode=0o700 if path.endswith(".ssh") else 0o755)
                if path not in state["created_mountpoints"]:
                    state["created_mountpoints"].append(path)
        self.write_state(state)
        self.make_pki()
        self.make_ssh_keys()
        self.make_uplink()
        self.make_router()
        for name in self.hosts:
            self.start_host(name)
        for name in self.hosts:
            self.wait_for_libvirt(name)
        self.write_known_hosts()
        for name in self.hosts:
            self.define_host_resources(name)
        self.build_guest_images()
        state = self.read_state()
        if "domain_types" not in state:
            state["domain_types"] = self.probe_domain_types()
            self.write_state(state)
        domain_types = state["domain_types"]
        log("guests run as: idle guests %s, Linux guests %s (%s)" % (
            domain_types["idle"], domain_types["linux"], domain_types.get("why", "")))
        self.ensure_guests(domain_types)
        self.write_inventory()
        self.status()

    def check_prerequisites(self):
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, bridges, bind mounts)")
        missing = [tool for tool in ("ip", "nsenter", "unshare", "libvirtd", "virtlogd", "virsh", "openssl",
                                     "qemu-img", "qemu-system-x86_64", "cpio", "ssh-keygen")
                   if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool)]
        if not os.path.exists("/usr/sbin/sshd"):
            missing.append("sshd")
        if missing:
            raise LabError("missing tools: %s (run scripts/bootstrap)" % ", ".join(missing))

    # -- TLS: one CA, a server and client certificate per host, a client certificate for the controller --
    def make_pki(self):
        ca_dir = os.path.join(self.pki_dir, "ca")
        os.makedirs(ca_dir, exist_ok=True)
        ca_key, ca_cert = os.path.join(ca_dir, "cakey.pem"), os.path.join(ca_dir, "cacert.pem")
        if not os.path.exists(ca_cert):
            make_ca(ca_dir, "hvmaint lab CA")
        controller = self.controller_pki()
        if not os.path.exists(os.path.join(controller, "clientcert.pem")):
            os.makedirs(controller, exist_ok=True)
            issue_cert(ca_key, ca_cert, controller, "client", "controller", [], [])
            shutil.copy(ca_cert, os.path.join(controller, "cacert.pem"))
            os.rename(os.path.join(controller, "client-key.pem"), os.path.join(controller, "clientkey.pem"))
            os.rename(os.path.join(controller, "client-cert.pem"), os.path.join(controller, "clientcert.pem"))
        for name, host in self.hosts.items():
            pki = os.path.join(self.host_dir(name), "pki")
            if os.path.exists(os.path.join(pki, "libvirt", "servercert.pem")):
                continue
            work = os.path.join(self.pki_dir, name)
            os.makedirs(work, exist_ok=True)
            issue_cert(ca_key, ca_cert, work, "server", name, [name], [host["address"]])
            issue_cert(ca_key, ca_cert, work, "client", name, [name], [host["address"]])
            for sub in ("CA", "libvirt/private", "qemu"):
                os.makedirs(os.path.join(pki, sub), exist_ok=True)
            # libvirtd's file names ...
            shutil.copy(ca_cert, os.path.join(pki, "CA", "cacert.pem"))
            shutil.copy(os.path.join(work, "server-cert.pem"), os.path.join(pki, "libvirt", "servercert.pem"))
            shutil.copy(os.path.join(work, "server-key.pem"), os.path.join(pki, "libvirt", "private", "serverkey.pem"))
            shutil.copy(os.path.join(work, "client-cert.pem"), os.path.join(pki, "libvirt", "clientcert.pem"))
            shutil.copy(os.path.join(work, "client-key.pem"), os.path.join(pki, "libvirt", "private", "clientkey.pem"))
            # ... and QEMU's, for TLS-encrypted migration streams.
            shutil.copy(ca_cert, os.path.join(pki, "qemu", "ca-cert.pem"))
            for kind in ("server", "client"):
                for part in ("cert", "key"):
                    shutil.copy(os.path.join(work, "%s-%s.pem" % (kind, part)),
                                os.path.join(pki, "qemu", "%s-%s.pem" % (kind, part)))

    def make_ssh_keys(self):
        os.makedirs(self.ssh_dir, mode=0o700, exist_ok=True)
        key = os.path.join(self.ssh_dir, "id_ed25519")
        if not os.path.exists(key):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hvmaint-lab", "-f", key])
        with open(key + ".pub", encoding="utf-8") as handle:
            public = handle.read()
        for name in self.hosts:
            hdir = self.host_dir(name)
            root_ssh = os.path.join(hdir, "root-ssh")
            os.makedirs(root_ssh, mode=0o700, exist_ok=True)
            os.chmod(root_ssh, 0o700)
            host_key = os.path.join(hdir, "ssh_host_ed25519_key")
            if not os.path.exists(host_key):
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", host_key])
            # Hosts use the same key to reach each other (qemu+ssh:// migrations).
            write_file(os.path.join(root_ssh, "authorized_keys"), public, 0o600)
            shutil.copy(key, os.path.join(root_ssh, "id_ed25519"))
            os.chmod(os.path.join(root_ssh, "id_ed25519"), 0o600)

    def write_known_hosts(self):
        lines = []
        for name, host in self.hosts.items():
            with open(os.path.join(self.host_dir(name), "ssh_host_ed25519_key.pub"), encoding="utf-8") as handle:
                keytype, keydata = handle.read().split()[:2]
            lines.append("%s,%s %s %s\n" % (name, host["address"], keytype, keydata))
        text = "".join(lines)
        write_file(os.path.join(self.ssh_dir, "known_hosts"), text, 0o600)
        for name in self.hosts:
            write_file(os.path.join(self.host_dir(name), "root-ssh", "known_hosts"), text, 0o600)

    # -- network: a bridge in the root namespace is the shared layer-2 segment --
    # A lab with "sites" (lab-sites.json) has one segment per site, each its own bridge and subnet, joined by a
    # router namespace whose links are rate-limited (tbf) to stand for a WAN; the controller sits on the first
    # site's segment and reaches the others through the router. A "guest_segment" is a layer-2 segment that
    # every host's guest bridge joins (a guest VLAN stretched across the sites), so a guest keeps its address
    # when it moves to another site.
    def sites(self):
        """{site name: {uplink_bridge, subnet, router_address}}; a lab without sites is one site, ""."""
        sites = self.config.get("sites")
        if not sites:
            return {"": {"uplink_bridge": self.config["uplink_bridge"], "subnet": self.config["subnet"]}}
        return sites

    def site_of(self, name):
        return self.hosts[name].get("site", "")

    def bridges(self):
        """Every bridge of the root namespace that this lab makes."""
        names = [site["uplink_bridge"] for site in self.sites().values()]
        if self.config.get("guest_segment"):
            names.append(self.config["guest_segment"]["uplink_bridge"])
        return names

    def make_uplink(self):
        controller = {self.config["uplink_bridge"]: self.config["controller_address"]}
        if self.config.get("guest_segment"):
            segment = self.config["guest_segment"]
            controller[segment["uplink_bridge"]] = segment["controller_address"]
        for bridge in self.bridges():
            if run(["ip", "link", "show", bridge], check=False).returncode != 0:
                run(["ip", "link", "add", bridge, "type", "bridge"])
            if bridge in controller:
                addr = "%s/24" % controller[bridge]
                if addr not in run(["ip", "-o", "addr", "show", "dev", bridge]).stdout:
                    run(["ip", "addr", "add", addr, "dev", bridge])
            run(["ip", "link", "set", bridge, "up"])

    def router_netns(self):
        return self.netns(self.config["router"]["name"]) if self.config.get("router") else None

    def make_router(self):
        """The router between the sites: a namespace with a leg on each site's segment, forwarding, and tbf on
        each leg (egress shapes each direction once). The controller routes to the other sites through it."""
        router = self.config.get("router")
        if not router:
            return
        ns = self.router_netns()
        sites = self.sites()
        first = next(site for site in sites.values() if site["uplink_bridge"] == self.config["uplink_bridge"])
        if not os.path.exists(os.path.join("/run/netns", ns)):
            log("starting router %s between sites %s (%s)" % (router["name"], ", ".join(sorted(self.sites())),
                                                              router["rate"]))
            run(["ip", "netns", "add", ns])
            inside = ["ip", "netns", "exec", ns]
            run(inside + ["ip", "link", "set", "lo", "up"])
            run(inside + ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            for site_name, site in sorted(self.sites().items()):
                leg = "%s%s-%s" % (self.veth_prefix, router["name"], site_name[:1])
                run(["ip", "link", "add", leg, "type", "veth", "peer", "name", "leg-" + site_name, "netns", ns])
                run(["ip", "link", "set", leg, "master", site["uplink_bridge"], "up"])
                run(inside + ["ip", "addr", "add", "%s/24" % site["router_address"], "dev", "leg-" + site_name])
                run(inside + ["ip", "link", "set", "leg-" + site_name, "up"])
                run(inside + ["tc", "qdisc", "replace", "dev", "leg-" + site_name, "root", "tbf", "rate",
                              router["rate"], "burst", router.get("burst", "64kb"), "latency",
                              router.get("latency", "100ms")])
        for site_name, site in sites.items():
            if site["uplink_bridge"] == first["uplink_bridge"]:
                continue
            subnet = "%s.0/24" % site["subnet"]
            run(["ip", "route", "replace", subnet, "via", first["router_address"],
                 "dev", self.config["uplink_bridge"]])

    def start_host(self, name):
        host = self.hosts[name]
        if self.host_pid(name) is not None and os.path.exists(os.path.join(self.host_dir(name), "ready")):
            return
        # A half-made host (from an `up` that died) is removed before it is made again.
        self.stop_host(name)
        log("starting host %s at %s" % (name, host["address"]))
        hdir = self.host_dir(name)
        self.prepare_host_dirs(name)
        ns = self.netns(name)
        run(["ip", "netns", "add", ns])
        veth = self.veth_prefix + name
        sites = self.sites()
        site = sites[self.site_of(name)]
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", veth, "master", site["uplink_bridge"], "up"])
        inside = ["ip", "netns", "exec", ns]
        run(inside + ["ip", "link", "set", "lo", "up"])
        run(inside + ["ip", "link", "add", "br0", "type", "bridge"])
        run(inside + ["ip", "link", "set", "eth0", "master", "br0", "up"])
        run(inside + ["ip", "addr", "add", "%s/24" % host["address"], "dev", "br0"])
        run(inside + ["ip", "link", "set", "br0", "up"])
        for other_name, other in sites.items():
            if other_name != self.site_of(name):
                # The other sites are reached through the router (the WAN link).
                run(inside + ["ip", "route", "add", "%s.0/24" % other["subnet"], "via", site["router_address"]])
        for bridge in host.get("bridges", []):
            run(inside + ["ip", "link", "add", bridge, "type", "bridge"])
            run(inside + ["ip", "link", "set", bridge, "up"])
        if self.config.get("guest_segment"):
            # The guest bridge's uplink joins the stretched guest segment (a second link, eth1).
            guest_veth = "%sg-%s" % (self.veth_prefix, name)
            run(["ip", "link", "add", guest_veth, "type", "veth", "peer", "name", "eth1", "netns", ns])
            run(["ip", "link", "set", guest_veth, "master", self.config["guest_segment"]["uplink_bridge"], "up"])
            run(inside + ["ip", "link", "set", "eth1", "master", host["guest_bridge"], "up"])
        log_path = os.path.join(hdir, "init.log")
        with open(log_path, "ab") as out:
            init = subprocess.Popen(inside + ["unshare", "--mount", "--uts", "--propagation", "private", "--fork",
                                       "/bin/sh", os.path.join(hdir, "init.sh")],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(hdir, "ready")):
            if init.poll() is not None or time.time() > deadline:
                raise LabError("host %s did not start; see %s" % (name, log_path))
            time.sleep(0.2)

    def prepare_host_dirs(self, name):
        host = self.hosts[name]
        hdir = self.host_dir(name)
        for sub in LIBVIRT_DIRS:
            os.makedirs(os.path.join(hdir, sub), exist_ok=True)
        for path in ("init.pid", "ready"):
            if os.path.exists(os.path.join(hdir, path)):
                os.unlink(os.path.join(hdir, path))
        etc = os.path.join(hdir, "etc-libvirt")
        if not os.path.exists(os.path.join(etc, "libvirtd.conf.dist")):
            shutil.rmtree(etc)
            shutil.copytree("/etc/libvirt", etc, symlinks=True)
            os.rename(os.path.join(etc, "libvirtd.conf"), os.path.join(etc, "libvirtd.conf.dist"))
            # The package's NAT network would start a dnsmasq per host; the lab uses bridges only.
            for leftover in ("qemu/networks/autostart/default.xml", "qemu/networks/default.xml"):
                if os.path.lexists(os.path.join(etc, leftover)):
                    os.unlink(os.path.join(etc, leftover))
        host_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, "hvmaint-lab-%s" % name))
        write_file(os.path.join(etc, "libvirtd.conf"), LIBVIRTD_CONF % {
            "address": host["address"], "host_uuid": host_uuid})
        write_file(os.path.join(etc, "qemu.conf"), QEMU_CONF % {"address": host["address"]})
        for sub in ("images", "qemu", "hvmaint"):
            os.makedirs(os.path.join(hdir, "var-lib-libvirt", sub), exist_ok=True)
        os.makedirs(os.path.join(hdir, "log-libvirt", "qemu"), exist_ok=True)
        hosts_lines = ["127.0.0.1 localhost\n", "%s %s\n" % (host["address"], name)]
        hosts_lines += ["%s %s\n" % (h["address"], n) for n, h in self.hosts.items() if n != name]
        write_file(os.path.join(hdir, "hosts"), "".join(hosts_lines))
        write_file(os.path.join(hdir, "sshd_config"), SSHD_CONFIG % {
            "address": host["address"], "hdir": hdir})
        mounts = "".join("mount --bind %s %s\n" % (os.path.join(hdir, sub), target)
                         for sub, target in LIBVIRT_DIRS.items())
        write_file(os.path.join(hdir, "init.sh"), INIT_SH % {
            "hdir": hdir, "mounts": mounts, "name": name}, 0o755)

    def wait_for_libvirt(self, name):
        """Wait until libvirtd answers over TLS; restart the host's daemons if they died (a test may kill them)."""
        deadline = time.time() + 30
        restarted = False
        while True:
            result = self.virsh(name, ["uri"], check=False, timeout=15)
            if result.returncode == 0:
                return
            if time.time() > deadline:
                raise LabError("libvirtd on %s does not answer over TLS: %s" % (name, result.stderr.strip()))
            if not restarted and self.daemon_pid(name, "libvirtd") is None:
                log("restarting libvirtd on %s" % name)
                if self.daemon_pid(name, "virtlogd") is None:
                    self.in_host(name, ["virtlogd", "-d", "-p", "/run/libvirt/virtlogd.pid"], check=False)
                self.in_host(name, ["libvirtd", "-d", "-l", "-p", "/run/libvirt/libvirtd.pid"])
                restarted = True
            time.sleep(0.5)

    def daemon_pid(self, name, daemon):
        """The pid of `daemon` (libvirtd or virtlogd) in host `name`, or None when it is not running."""
        path = os.path.join(self.host_dir(name), "run-libvirt", "%s.pid" % daemon)
        try:
            with open(path, encoding="utf-8") as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        try:
            with open("/proc/%d/comm" % pid, encoding="utf-8") as handle:
                return pid if handle.read().strip() == daemon else None
        except OSError:
            return None

    def define_host_resources(self, name):
        host = self.hosts[name]
        networks = {"lan": "br0"}
        networks.update({bridge.replace("br-", ""): bridge for bridge in host.get("bridges", [])})
        # A host of another site names its networks its own way (lab-sites.json): the collection maps them.
        networks = host.get("networks", networks)
        existing = self.virsh(name, ["net-list", "--all", "--name"]).stdout.split()
        for net, bridge in sorted(networks.items()):
            if net not in existing:
                xml = ("<network><name>%s</name><forward mode='bridge'/><bridge name='%s'/></network>"
                       % (net, bridge))
                self.define_from_xml(name, "net-define", xml)
                self.virsh(name, ["net-autostart", net])
            if net not in self.virsh(name, ["net-list", "--name"]).stdout.split():
                self.virsh(name, ["net-start", net])
        pool = self.pool(name)
        pools = self.virsh(name, ["pool-list", "--all", "--name"]).stdout.split()
        if pool["name"] not in pools:
            os.makedirs(self.host_path(name, pool["path"]), exist_ok=True)
            self.define_from_xml(name, "pool-define", POOL_XML % pool)
            self.virsh(name, ["pool-autostart", pool["name"]])
        if pool["name"] not in self.virsh(name, ["pool-list", "--name"]).stdout.split():
            self.virsh(name, ["pool-start", pool["name"]])

    def pool(self, name):
        """The host's storage pool for guest disks: {name, path}; a host of another site has its own names."""
        return self.hosts[name].get("pool", {"name": "default", "path": "/var/lib/libvirt/images"})

    def host_path(self, name, path):
        """Where a path under /var/lib/libvirt inside host `name` is in the root file system."""
        prefix = "/var/lib/libvirt/"
        if not path.startswith(prefix):
            raise LabError("host %s: %s is not under %s" % (name, path, prefix))
        return os.path.join(self.host_dir(name), "var-lib-libvirt", path[len(prefix):])

    def define_from_xml(self, name, verb, xml):
        with tempfile.NamedTemporaryFile("w", suffix=".xml", dir=self.state_dir, delete=False) as handle:
            handle.write(xml)
        try:
            self.virsh(name, [verb, handle.name])
        finally:
            os.unlink(handle.name)

    # -- guests --
    def build_guest_images(self):
        os.makedirs(self.images_dir, exist_ok=True)
        kernel_target = os.path.join(self.images_dir, "vmlinuz")
        initrd_target = os.path.join(self.images_dir, "initrd.gz")
        if os.path.exists(kernel_target) and os.path.exists(initrd_target):
            return
        kernels = sorted(f for f in os.listdir("/boot") if f.startswith("vmlinuz-") and f.endswith("-cloud-amd64"))
        if not kernels:
            raise LabError("no cloud kernel in /boot: apt install linux-image-cloud-amd64 (scripts/bootstrap)")
        version = kernels[-1][len("vmlinuz-"):]
        busybox = "/bin/busybox"
        if not os.path.exists(busybox):
            raise LabError("busybox-static is missing (scripts/bootstrap)")
        log("building the Linux guest image from kernel %s and busybox" % version)
        root = tempfile.mkdtemp(dir=self.state_dir)
        try:
            for sub in ("bin", "proc", "sys", "dev", "lib/modules", "dirty", "tmp"):
                os.makedirs(os.path.join(root, sub))
            shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
            module_root = os.path.join("/lib/modules", version, "kernel")
            found = {}
            for dirpath, _dirs, files in os.walk(module_root):
                for file_name in files:
                    base = file_name.split(".ko")[0]
                    if base in VIRTIO_MODULES and file_name.endswith(".ko"):
                        found[base] = os.path.join(dirpath, file_name)
            missing = [m for m in VIRTIO_MODULES if m not in found]
            if missing:
                raise LabError("kernel %s lacks modules %s" % (version, missing))
            for module in VIRTIO_MODULES:
                shutil.copy(found[module], os.path.join(root, "lib", "modules", module + ".ko"))
            write_file(os.path.join(root, "init"), GUEST_INIT % {"modules": " ".join(VIRTIO_MODULES)}, 0o755)
            names = run(["find", "."], capture=True, timeout=60, cwd=root).stdout
            archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, check=True,
                                     input=names.encode(), stdout=subprocess.PIPE)
            with gzip.open(initrd_target + ".tmp", "wb") as out:
                out.write(archive.stdout)
            os.replace(initrd_target + ".tmp", initrd_target)
            shutil.copy(os.path.join("/boot", "vmlinuz-" + version), kernel_target)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def probe_domain_types(self):
        """Find out which virtualization type boots each kind of guest here."""
        probe_host = next(iter(self.hosts))
        kinds = {guest["kind"] for guest in self.config["guests"]}
        result = {"idle": "qemu", "linux": "qemu"}
        reasons = []
        if not os.path.exists("/dev/kvm"):
            reasons.append("/dev/kvm is missing")
        else:
            if "idle" in kinds:
                if self.probe_guest(probe_host, "idle", "kvm"):
                    result["idle"] = "kvm"
                else:
                    reasons.append("an idle KVM guest would not run")
            if "linux" in kinds:
                if self.probe_guest(probe_host, "linux", "kvm"):
                    result["linux"] = "kvm"
                else:
                    reasons.append("a Linux guest under KVM did not answer ping within 20 s (nested KVM)")
        result["why"] = "; ".join(reasons) or "KVM works for both"
        return result

    def probe_guest(self, host, kind, domain_type):
        subnet = (self.config.get("guest_segment") or self.config)["subnet"]
        probe = {"name": "hvlab-probe", "kind": kind, "memory_mib": 128, "ip": "%s.250" % subnet,
                 "dirty_mib_s": 0, "host": host}
        xml = self.guest_xml(probe, domain_type)
        self.virsh(host, ["destroy", "hvlab-probe"], check=False)
        with tempfile.NamedTemporaryFile("w", suffix=".xml", dir=self.state_dir, delete=False) as handle:
            handle.write(xml)
        try:
            if self.virsh(host, ["create", handle.name], check=False).returncode != 0:
                return False
            if kind == "idle":
                time.sleep(2)
                state = self.virsh(host, ["domstate", "hvlab-probe"], check=False).stdout.strip()
                return state == "running"
            return wait_for_ping(probe["ip"], 20)
        finally:
            os.unlink(handle.name)
            self.virsh(host, ["destroy", "hvlab-probe"], check=False)

    def guest_xml(self, guest, domain_type):
        name = guest["name"]
        guest_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, "hvmaint-lab-guest-%s" % name))
        mac = "52:54:00:%s" % ":".join(hashlib.sha256(name.encode()).hexdigest()[i:i + 2] for i in (0, 2, 4))
        if domain_type == "kvm":
            # The host CPU has no svm/vmx to give, and qemu64 asks for svm on AMD hosts.
            cpu = ("<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model>"
                   "<feature policy='disable' name='svm'/></cpu>")
        else:
            cpu = "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>"
        os_boot = "<bios rebootTimeout='-1'/>"
        if guest["kind"] == "linux":
            os_boot = ("<kernel>%s</kernel><initrd>%s</initrd><cmdline>console=ttyS0 quiet panic=-1 hvm.ip=%s/24 "
                       "hvm.dirty=%d</cmdline>" % (os.path.join(self.images_dir, "vmlinuz"),
                                                   os.path.join(self.images_dir, "initrd.gz"),
                                                   guest["ip"], guest.get("dirty_mib_s", 0)))
        disk = ""
        if guest.get("disk_mib"):
            disk = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                    "<source file='%s/%s.qcow2'/><target dev='vda' bus='virtio'/></disk>"
                    % (self.pool(guest["host"])["path"], name))
        return GUEST_XML % {
            "type": domain_type, "name": name, "uuid": guest_uuid, "memory": guest["memory_mib"], "cpu": cpu,
            "os": os_boot, "disk": disk, "mac": mac, "network": guest.get("network", "lan"),
            "serial": "/var/log/libvirt/qemu/%s-serial.log" % name}

    def locate_guest(self, name):
        """Return (defined_on, running_on) lists of host names for a guest."""
        defined, running = [], []
        for host in self.hosts:
            if self.host_pid(host) is None:
                continue
            result = self.virsh(host, ["domstate", name], check=False)
            if result.returncode == 0:
                defined.append(host)
                if result.stdout.strip() in ("running", "paused"):
                    running.append(host)
        return defined, running

    def repair_doubled_guest(self, guest):
        """A guest found on several hosts (a test that failed mid-migration can leave one so): abort its migration
        jobs, give libvirt time to drop an incoming copy, then keep one copy (a running one, on the guest's home
        host first) and destroy and undefine the others, saying so. The lab's guests hold nothing worth keeping;
        on real hosts which copy to keep is for a person to decide (vm_locate flags such a VM)."""
        name = guest["name"]
        defined, running = self.locate_guest(name)
        if len(defined) <= 1 and len(running) <= 1:
            return
        log("guest %s is on several hosts (defined on %s, running on %s): repairing" % (
            name, ", ".join(defined), ", ".join(running) or "none"))
        for host in defined:
            self.virsh(host, ["domjobabort", name], check=False)
        deadline = time.time() + 60
        while time.time() < deadline:
            defined, running = self.locate_guest(name)
            if len(defined) <= 1 and len(running) <= 1:
                log("guest %s: its migration was aborted; it is now only on %s" % (name, ", ".join(defined)))
                return
            time.sleep(2)
        states = {host: self.virsh(host, ["domstate", name], check=False).stdout.strip() for host in defined}
        active = [host for host in defined if states[host] == "running"]
        candidates = active or defined
        keep = guest["host"] if guest["host"] in candidates else candidates[0]
        for host in defined:
            if host != keep:
                log("guest %s: removing its copy on %s (%s); keeping the one on %s (%s)" % (
                    name, host, states[host], keep, states[keep]))
                self.virsh(host, ["destroy", name], check=False)
                self.virsh(host, ["undefine", name], check=False)
        defined, running = self.locate_guest(name)
        if len(defined) > 1 or len(running) > 1:
            raise LabError("guest %s is still on several hosts (defined on %s, running on %s): remove the extra"
                           " copies with virsh destroy and undefine (tests/lab/lab env gives the URIs)"
                           % (name, defined, running))

    def ensure_guests(self, domain_types):
        for guest in self.config["guests"]:
            self.repair_doubled_guest(guest)
        for guest in self.config["guests"]:
            name = guest["name"]
            defined, running = self.locate_guest(name)
            if running:
                continue
            host = defined[0] if defined else guest["host"]
            if not defined:
                log("defining %s on %s" % (name, host))
                if guest.get("disk_mib"):
                    self.make_guest_disk(guest)
                self.define_from_xml(host, "define", self.guest_xml(guest, domain_types[guest["kind"]]))
            self.virsh(host, ["start", name])
        for guest in self.config["guests"]:
            if guest["kind"] == "linux" and not wait_for_ping(guest["ip"], 90):
                raise LabError("guest %s does not answer ping at %s" % (guest["name"], guest["ip"]))

    def make_guest_disk(self, guest):
        pool = self.pool(guest["host"])
        target = os.path.join(self.host_path(guest["host"], pool["path"]), "%s.qcow2" % guest["name"])
        raw = target + ".raw"
        # Random content, so that a test can tell a faithfully copied disk from an empty one.
        with open(raw, "wb") as handle:
            for _ in range(guest["disk_mib"]):
                handle.write(os.urandom(1024 * 1024))
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, target])
        os.unlink(raw)
        self.virsh(guest["host"], ["pool-refresh", pool["name"]])

    # -- inventory --
    def write_inventory(self):
        ssh = self.ssh_dir
        lines = ["# Written by tests/lab/lab.py up: the lab's hypervisors, reached over SSH like real ones.",
                 "all:", "  vars:", "    ansible_user: root",
                 "    ansible_python_interpreter: /usr/bin/python3",
                 "    ansible_ssh_private_key_file: %s/id_ed25519" % ssh,
                 "    ansible_ssh_common_args: >-",
                 "      -o UserKnownHostsFile=%s/known_hosts -o StrictHostKeyChecking=yes" % ssh,
                 "    hvmaint_lab_controller_pki: %s" % self.controller_pki(),
                 "    # The lab's hosts are namespaces of this machine: rebooting one would reboot the machine.",
                 "    rolling_maintenance_reboot: false",
                 "    # Migration streams are encrypted too (QEMU's TLS, certificates in each host's /etc/pki/qemu).",
                 "    hvmaint_tls_stream: true",
                 "  children:", "    hypervisors:", "      hosts:"]
        for name, host in self.hosts.items():
            lines += ["        %s:" % name,
                      "          ansible_host: %s" % host["address"],
                      "          hvmaint_migration_uri: qemu+tls://%s/system" % name,
                      # For fleet_facts_read=from_controller: the controller reads each host over TLS.
                      "          hvmaint_libvirt_uri: %s" % self.uri(name),
                      "          hvmaint_memory_mib: %d" % host["memory_mib"],
                      "          hvmaint_vcpus: %d" % host["vcpus"]]
        if self.config.get("sites"):
            # A site is an inventory group (site_<name>) of the hypervisors there.
            lines += ["      children:"]
            for site_name in sorted(self.sites()):
                lines += ["        site_%s:" % site_name, "          hosts:"]
                lines += ["            %s:" % name for name in self.hosts if self.site_of(name) == site_name]
        write_file(os.path.join(self.state_dir, "inventory.yml"), "\n".join(lines) + "\n")

    # ---- status ------------------------------------------------------------------------------------------
    def status(self):
        state = self.read_state()
        if not os.path.exists(self.state_dir):
            print("lab: down")
            return 1
        dtypes = state.get("domain_types", {})
        print("lab: state in %s; inventory %s" % (self.state_dir, os.path.join(self.state_dir, "inventory.yml")))
        if dtypes:
            print("lab: idle guests run as %s, Linux guests as %s (%s)" % (
                dtypes.get("idle"), dtypes.get("linux"), dtypes.get("why")))
        healthy = True
        for name, host in self.hosts.items():
            if self.host_pid(name) is None:
                print("%-5s %-12s DOWN" % (name, host["address"]))
                healthy = False
                continue
            result = self.virsh(name, ["list", "--all"], check=False)
            vms = ", ".join("%s(%s)" % (line.split()[1], " ".join(line.split()[2:]))
                            for line in result.stdout.splitlines() if line.strip())
            print("%-5s %-12s up  %s" % (name, host["address"], vms or "no VMs"))
        return 0 if healthy else 1

    def env(self):
        print("HVMAINT_LAB_DIR=%s" % self.state_dir)
        print("HVMAINT_LAB_INVENTORY=%s" % os.path.join(self.state_dir, "inventory.yml"))
        print("HVMAINT_LAB_PKI=%s" % self.controller_pki())
        for name in self.hosts:
            print("HVMAINT_LAB_URI_%s='%s'" % (name.upper(), self.uri(name)))

    # ---- down --------------------------------------------------------------------------------------------
    def stop_host(self, name):
        ns = self.netns(name)
        if os.path.exists(os.path.join("/run/netns", ns)):
            for _attempt in range(50):
                pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).stdout.split()]
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
            else:
                raise LabError("processes in %s would not die" % ns)
            run(["ip", "netns", "del", ns], check=False)
        # The namespace's end of the veth pair dies with the namespace; the root end follows it.
        for veth in (self.veth_prefix + name, "%sg-%s" % (self.veth_prefix, name)):
            if run(["ip", "link", "show", veth], check=False).returncode == 0:
                run(["ip", "link", "del", veth], check=False)

    def down(self):
        if os.geteuid() != 0:
            raise LabError("the lab needs root")
        names = set(self.hosts)
        if self.config.get("router"):
            names.add(self.config["router"]["name"])
        if os.path.isdir("/run/netns"):
            names |= {n[len(self.netns_prefix):] for n in os.listdir("/run/netns")
                      if n.startswith(self.netns_prefix)}
        for name in sorted(names):
            self.stop_host(name)
        # Processes that escaped a namespace (none expected) but still use the lab's files.
        for _attempt in range(50):
            leftovers = lab_processes(self.state_dir)
            if not leftovers:
                break
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for bridge in self.bridges():
            # Deleting a bridge removes the routes through it (the controller's routes to other sites).
            if run(["ip", "link", "show", bridge], check=False).returncode == 0:
                run(["ip", "link", "del", bridge])
        state = self.read_state()
        other_labs = [n for n in os.listdir("/run/netns")
                      if n.startswith(LAB_NETNS_FAMILY)] if os.path.isdir("/run/netns") else []
        # Removing a directory that is a mount point in another lab's namespaces would detach those mounts.
        for path in ([] if other_labs else reversed(state.get("created_mountpoints", []))):
            try:
                os.rmdir(path)
            except OSError:
                pass
        if os.path.exists(self.state_dir):
            shutil.rmtree(self.state_dir)
        log("down: nothing of the lab is left")


def lab_processes(state_dir):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The directory with its slash: another lab's state directory may start with this one's name.
        if state_dir.rstrip("/") + "/" in cmdline and "lab.py" not in cmdline:
            found.append(int(entry))
    return found


def wait_for_ping(address, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def write_file(path, text, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def make_ca(ca_dir, common_name):
    key, cert = os.path.join(ca_dir, "cakey.pem"), os.path.join(ca_dir, "cacert.pem")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "3650", "-subj", "/O=hvmaint lab/CN=%s" % common_name,
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    os.chmod(key, 0o600)


def issue_cert(ca_key, ca_cert, out_dir, kind, common_name, dns_names, addresses):
    """Issue `<kind>-key.pem` and `<kind>-cert.pem` in out_dir; kind is server or client."""
    key = os.path.join(out_dir, "%s-key.pem" % kind)
    csr = os.path.join(out_dir, "%s.csr" % kind)
    cert = os.path.join(out_dir, "%s-cert.pem" % kind)
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
         "-out", csr, "-subj", "/O=hvmaint lab/CN=%s" % common_name])
    usage = "serverAuth" if kind == "server" else "clientAuth"
    ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
           "extendedKeyUsage=%s" % usage]
    sans = ["DNS:%s" % d for d in dns_names] + ["IP:%s" % a for a in addresses]
    if sans:
        ext.append("subjectAltName=%s" % ",".join(sans))
    ext_file = os.path.join(out_dir, "%s.ext" % kind)
    write_file(ext_file, "\n".join(ext) + "\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "825", "-extfile", ext_file])
    os.chmod(key, 0o600)
    os.unlink(csr)
    os.unlink(ext_file)


LIBVIRTD_CONF = """# Written by the hvmaint lab.
listen_tls = 1
listen_tcp = 1
listen_addr = "%(address)s"
# TLS is authenticated by the client certificate (any certificate of the lab CA).
auth_tls = "none"
# Plain TCP is offered for comparison only, inside the lab's private namespaces.
auth_tcp = "none"
host_uuid = "%(host_uuid)s"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

QEMU_CONF = """# Written by the hvmaint lab.
migration_host = "%(address)s"
migration_address = "%(address)s"
stdio_handler = "file"
security_driver = "none"
user = "root"
group = "root"
remember_owner = 0
# All lab hosts share one cgroup tree and one /dev: keep libvirt out of both.
cgroup_controllers = [ ]
namespaces = [ ]
default_tls_x509_cert_dir = "/etc/pki/qemu"
default_tls_x509_verify = 1
"""

SSHD_CONFIG = """# Written by the hvmaint lab.
ListenAddress %(address)s
HostKey %(hdir)s/ssh_host_ed25519_key
PidFile %(hdir)s/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp /usr/lib/openssh/sftp-server
"""

INIT_SH = """# Written by the hvmaint lab: becomes host %(name)s inside its own namespaces.
set -e
%(mounts)smount --bind %(hdir)s/hosts /etc/hosts
hostname %(name)s
echo $$ > %(hdir)s/init.pid
virtlogd -d -p /run/libvirt/virtlogd.pid
libvirtd -d -l -p /run/libvirt/libvirtd.pid
/usr/sbin/sshd -f %(hdir)s/sshd_config
touch %(hdir)s/ready
exec sleep infinity
"""

POOL_XML = """<pool type='dir'><name>%(name)s</name><target><path>%(path)s</path></target></pool>"""

GUEST_XML = """<domain type='%(type)s'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <memory unit='MiB'>%(memory)d</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>%(os)s</os>
  %(cpu)s
  <on_reboot>restart</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    %(disk)s
    <interface type='network'>
      <source network='%(network)s'/>
      <mac address='%(mac)s'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='file'><source path='%(serial)s' append='on'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""

GUEST_INIT = """#!/bin/busybox sh
# The lab's Linux workload guest: takes its address from hvm.ip=, dirties hvm.dirty= MiB of memory per second.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in %(modules)s; do insmod /lib/modules/$m.ko; done
ip=$(sed -n 's/.*hvm\\.ip=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
dirty=$(sed -n 's/.*hvm\\.dirty=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
ip link set lo up
ip addr add "$ip" dev eth0
ip link set eth0 up
echo "hvm: up at $ip, dirtying ${dirty:-0} MiB/s"
if [ "${dirty:-0}" -gt 0 ]; then
  mount -t tmpfs -o size=$((dirty * 2 + 4))m tmpfs /dirty
  dd if=/dev/urandom of=/dirty/src bs=1M count="$dirty" 2>/dev/null
  (while true; do cp /dirty/src /dirty/dst; sleep 1; done) &
fi
while true; do echo "hvm: alive $(cut -d' ' -f1 /proc/uptime)"; sleep 10; done
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    lab = Lab(load_config())
    try:
        if args.command == "up":
            lab.up()
        elif args.command == "down":
            lab.down()
        elif args.command == "status":
            return lab.status()
        else:
            lab.env()
    except LabError as exc:
        print("lab: error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
