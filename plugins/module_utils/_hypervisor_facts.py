# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Facts about one hypervisor, in the shape docs/facts.md describes.

The parse_* functions are pure (XML text in, dictionaries out) so they are tested with recorded XML; gather()
is the only part that talks to libvirt.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, explain
from ansible_collections.hvmaint.libvirt.plugins.module_utils._lease import read_lease
from ansible_collections.hvmaint.libvirt.plugins.module_utils._maintenance import read_mark
from ansible_collections.hvmaint.libvirt.plugins.module_utils._state_pool import is_state_pool, read_state
from ansible_collections.hvmaint.libvirt.plugins.module_utils._storage import (
    disk_source,
    local_filesystem_of,
    pool_type_is_shared,
    where_stored,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._vm_metadata import metadata_from_domain_xml

# libvirt's virDomainState numbers, in order.
DOMAIN_STATES = ("nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended")

VIRTUALIZATION_EXTENSIONS = {"vmx": "Intel VT-x", "svm": "AMD-V"}


def state_name(code):
    """The name of a libvirt virDomainState number ("nostate" for one this libvirt-python does not know)."""
    return DOMAIN_STATES[code] if 0 <= code < len(DOMAIN_STATES) else "nostate"


def _kib_to_mib(value):
    return int(value) // 1024 if value is not None else None


def _memory_mib(element):
    """Convert a libvirt <memory>/<currentMemory> element (with its unit) to MiB."""
    if element is None or not (element.text or "").strip():
        return None
    factors = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024 ** 2, "mib": 1024 ** 2,
               "mb": 1000 ** 2, "g": 1024 ** 3, "gib": 1024 ** 3, "gb": 1000 ** 3, "t": 1024 ** 4,
               "tib": 1024 ** 4, "tb": 1000 ** 4}
    unit = (element.get("unit") or "KiB").lower()
    return int(element.text.strip()) * factors.get(unit, 1024) // (1024 ** 2)


def parse_xml(text, what):
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise HvmaintError("%s is not valid XML: %s" % (what, exc)) from exc


def parse_cpu_element(cpu):
    """Describe a guest <cpu> element; None when the domain has none (QEMU's default CPU)."""
    if cpu is None:
        return {"mode": None, "match": None, "check": None, "model": None, "vendor": None, "features": [],
                "xml": None}
    model = cpu.find("model")
    vendor = cpu.find("vendor")
    return {
        "mode": cpu.get("mode") or "custom",
        "match": cpu.get("match") or (("exact") if model is not None else None),
        "check": cpu.get("check"),
        "model": (model.text or "").strip() if model is not None and model.text else None,
        "vendor": (vendor.text or "").strip() if vendor is not None and vendor.text else None,
        "features": [{"name": f.get("name"), "policy": f.get("policy") or "require"} for f in cpu.findall("feature")],
        "xml": ET.tostring(cpu, encoding="unicode").strip(),
    }


def _disk_path(disk):
    source = disk.find("source")
    if source is None:
        return None
    for attribute in ("file", "dev", "dir"):
        if source.get(attribute):
            return source.get(attribute)
    if source.get("protocol"):
        return "%s:%s" % (source.get("protocol"), source.get("name") or "")
    if source.get("pool"):
        return "%s/%s" % (source.get("pool"), source.get("volume") or "")
    return None


def _pool_for_path(path, pools):
    """The storage pool whose target directory holds `path` (longest match), or None."""
    if not path or not path.startswith("/"):
        return None
    best = None
    for pool in pools:
        target = pool.get("path")
        if target and (path == target or path.startswith(target.rstrip("/") + "/")):
            if best is None or len(target) > len(best["path"]):
                best = pool
    return best


def parse_disks(devices, pools, filesystem_of=None):
    disks = []
    for disk in devices.findall("disk") if devices is not None else []:
        device = disk.get("device") or "disk"
        target = disk.find("target")
        driver = disk.find("driver")
        source = disk.find("source")
        disk_type = disk.get("type") or "file"
        path = _disk_path(disk)
        pool = None
        if disk_type == "volume" and source is not None:
            pool = next((p for p in pools if p["name"] == source.get("pool")), None)
        elif path:
            pool = _pool_for_path(path, pools)
        # The engine's own classification (_storage.py), with the pools read here standing in for its look-ups.
        shared, _how = where_stored(disk_source(disk), pool_type_of_path=lambda _path, pool=pool: pool and pool["type"],
                                    pool_type_of_name=lambda _name, pool=pool: pool and pool["type"],
                                    fs_type_of_path=filesystem_of)
        readonly = disk.find("readonly") is not None
        disks.append({
            "target": target.get("dev") if target is not None else None,
            "bus": target.get("bus") if target is not None else None,
            "device": device,
            "type": disk_type,
            "path": path,
            "format": driver.get("type") if driver is not None else None,
            "pool": pool["name"] if pool else None,
            "shared": shared,
            "readonly": readonly,
            "size_bytes": None,
        })
    return disks


def parse_nics(devices):
    nics = []
    for interface in devices.findall("interface") if devices is not None else []:
        source = interface.find("source")
        mac = interface.find("mac")
        model = interface.find("model")
        nic_type = interface.get("type")
        nics.append({
            "type": nic_type,
            "network": source.get("network") if source is not None else None,
            "bridge": source.get("bridge") if source is not None else None,
            "device": source.get("dev") if source is not None and nic_type == "direct" else None,
            "mac": mac.get("address") if mac is not None else None,
            "model": model.get("type") if model is not None else None,
        })
    return nics


def parse_hostdevs(devices):
    hostdevs = []
    if devices is None:
        return hostdevs
    for hostdev in devices.findall("hostdev"):
        entry = {"type": hostdev.get("type"), "mode": hostdev.get("mode")}
        address = hostdev.find("source/address")
        if address is not None and hostdev.get("type") == "pci":
            entry["address"] = "%04x:%02x:%02x.%x" % tuple(
                int(address.get(k, "0"), 0) for k in ("domain", "bus", "slot", "function"))
        elif hostdev.get("type") == "usb":
            vendor, product = hostdev.find("source/vendor"), hostdev.find("source/product")
            entry["address"] = "%s:%s" % (vendor.get("id") if vendor is not None else "?",
                                          product.get("id") if product is not None else "?")
        hostdevs.append(entry)
    # An SR-IOV virtual function given as a NIC is a passed-through device too.
    for interface in devices.findall("interface"):
        if interface.get("type") == "hostdev":
            entry = {"type": "pci", "mode": "interface"}
            address = interface.find("source/address")
            if address is not None:
                entry["address"] = "%04x:%02x:%02x.%x" % tuple(
                    int(address.get(k, "0"), 0) for k in ("domain", "bus", "slot", "function"))
            hostdevs.append(entry)
    return hostdevs


def parse_domain(xml_text, pools=(), filesystem_of=None):
    """Describe a VM from its domain XML (state, autostart and sizes on disk are added by gather())."""
    root = parse_xml(xml_text, "domain XML")
    if root.tag != "domain":
        raise HvmaintError("expected a <domain> document, got <%s>" % root.tag)
    os_type = root.find("os/type")
    devices = root.find("devices")
    vcpu = root.find("vcpu")
    return {
        "name": root.findtext("name"),
        "uuid": root.findtext("uuid"),
        "state": None,
        "job": None,
        "persistent": None,
        "autostart": None,
        "domain_type": root.get("type"),
        "machine": os_type.get("machine") if os_type is not None else None,
        "arch": os_type.get("arch") if os_type is not None else None,
        "memory_mib": _memory_mib(root.find("memory")),
        "current_memory_mib": _memory_mib(root.find("currentMemory")) or _memory_mib(root.find("memory")),
        "vcpus": int(vcpu.text) if vcpu is not None and (vcpu.text or "").strip() else 1,
        "cpu": parse_cpu_element(root.find("cpu")),
        "disks": parse_disks(devices, list(pools), filesystem_of),
        "nics": parse_nics(devices),
        "hostdevs": parse_hostdevs(devices),
        "metadata": metadata_from_domain_xml(root),
    }


def parse_capabilities(xml_text):
    root = parse_xml(xml_text, "capabilities XML")
    host = root.find("host")
    cpu = host.find("cpu") if host is not None else None
    if cpu is None:
        raise HvmaintError("the capabilities XML has no host CPU")
    topology = cpu.find("topology")
    features = sorted(f.get("name") for f in cpu.findall("feature"))
    cells = []
    for cell in host.findall("topology/cells/cell"):
        cells.append({
            "id": int(cell.get("id")),
            "memory_mib": _memory_mib(cell.find("memory")),
            "cpus": sorted(int(c.get("id")) for c in cell.findall("cpus/cpu")),
        })
    domain_types, machines = set(), set()
    for guest in root.findall("guest"):
        arch = guest.find("arch")
        if arch is None or arch.get("name") != cpu.findtext("arch"):
            continue
        for machine in arch.findall("machine"):
            machines.add(machine.text.strip())
            if machine.get("canonical"):
                machines.add(machine.get("canonical"))
        for domain in arch.findall("domain"):
            domain_types.add(domain.get("type"))
            for machine in domain.findall("machine"):
                machines.add(machine.text.strip())
    return {
        "host_uuid": host.findtext("uuid"),
        "arch": cpu.findtext("arch"),
        "cpu": {
            "vendor": cpu.findtext("vendor"),
            "model": cpu.findtext("model"),
            "features": features,
            "sockets": int(topology.get("sockets")) if topology is not None else None,
            "cores": int(topology.get("cores")) if topology is not None else None,
            "threads": int(topology.get("threads")) if topology is not None else None,
            "capabilities_xml": ET.tostring(cpu, encoding="unicode").strip(),
        },
        "numa_cells": cells,
        "domain_types": sorted(domain_types),
        "machine_types": sorted(machines),
    }


def parse_domain_capabilities(xml_text):
    """The host-model CPU that libvirt would give a guest here, as a <cpu mode='custom'> string."""
    root = parse_xml(xml_text, "domain capabilities XML")
    mode = root.find("cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") != "yes" or mode.find("model") is None:
        return None
    cpu = ET.Element("cpu", {"mode": "custom", "match": "exact"})
    model = mode.find("model")
    ET.SubElement(cpu, "model", {"fallback": "forbid"}).text = model.text
    vendor = mode.find("vendor")
    if vendor is not None:
        ET.SubElement(cpu, "vendor").text = vendor.text
    for feature in mode.findall("feature"):
        ET.SubElement(cpu, "feature", {"policy": feature.get("policy") or "require", "name": feature.get("name")})
    return ET.tostring(cpu, encoding="unicode")


def virtualization_extension(cpu_features, host_model_xml):
    """vmx (Intel VT-x), svm (AMD-V) or None, as the host exposes it to libvirt."""
    names = set(cpu_features)
    if host_model_xml:
        root = ET.fromstring(host_model_xml)
        names |= {f.get("name") for f in root.findall("feature") if f.get("policy") in ("require", "force")}
    return next((ext for ext in ("vmx", "svm") if ext in names), None)


def parse_network(xml_text, active, autostart):
    root = parse_xml(xml_text, "network XML")
    bridge = root.find("bridge")
    forward = root.find("forward")
    return {
        "name": root.findtext("name"),
        "active": bool(active),
        "autostart": bool(autostart),
        "bridge": bridge.get("name") if bridge is not None else None,
        "forward_mode": (forward.get("mode") or "nat") if forward is not None else "isolated",
    }


def parse_pool(xml_text, active, info=None):
    root = parse_xml(xml_text, "storage pool XML")
    pool_type = root.get("type")
    capacity = available = None
    if info and active:
        capacity, available = info[1], info[3]
    return {
        "name": root.findtext("name"),
        "type": pool_type,
        "active": bool(active),
        "path": root.findtext("target/path"),
        "shared": pool_type_is_shared(pool_type),
        "capacity_bytes": capacity,
        "available_bytes": available,
    }


def is_local_uri(uri):
    """True when the URI names the hypervisor of the machine the module runs on."""
    if not uri:
        return True
    scheme, rest = uri.split("://", 1) if "://" in uri else (uri, "")
    return "+" not in scheme and (rest.startswith("/") or rest.startswith("localhost/"))


def local_bridges(sys_class_net="/sys/class/net"):
    try:
        names = os.listdir(sys_class_net)
    except OSError:
        return None
    return sorted(n for n in names if os.path.isdir(os.path.join(sys_class_net, n, "bridge")))


def _version(number):
    return "%d.%d.%d" % (number // 1000000, (number // 1000) % 1000, number % 1000)


def gather(conn, include_xml=False, names=None, state_over_libvirt=False):
    """Read every fact of docs/facts.md from an open libvirt connection.

    Over a remote connection the mark and the lease are read through libvirt when `state_over_libvirt`
    (_state_pool.py; HvmaintError when they cannot be), else reported as None (unknown)."""
    import libvirt

    uri = conn.getURI()
    local = is_local_uri(uri)
    try:
        caps = parse_capabilities(conn.getCapabilities())
        info = conn.getInfo()
        memory = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        facts = {
            "name": conn.getHostname(),
            "uri": uri,
            "host_uuid": caps["host_uuid"],
            "libvirt_version": _version(conn.getLibVersion()),
            "hypervisor_type": conn.getType(),
            "hypervisor_version": _version(conn.getVersion()),
            "arch": caps["arch"],
            "cpu": dict(caps["cpu"], count=info[2]),
            "domain_types": caps["domain_types"],
            "machine_types": caps["machine_types"],
            # Node memory statistics (/proc/meminfo) rather than getInfo(), which on some machines counts only
            # the memory of the NUMA nodes libvirt could read.
            "memory_total_mib": memory["total"] // 1024,
            "memory_free_mib": memory["free"] // 1024,
            "numa_cells": caps["numa_cells"],
        }
        host_model = None
        for virt_type in ("kvm", "qemu"):
            if virt_type not in caps["domain_types"]:
                continue
            try:
                host_model = parse_domain_capabilities(
                    conn.getDomainCapabilities(None, caps["arch"], None, virt_type, 0))
                break
            except libvirt.libvirtError:
                continue
        facts["cpu"]["host_model_xml"] = host_model
        facts["cpu"]["virtualization_extension"] = virtualization_extension(caps["cpu"]["features"], host_model)

        facts["networks"] = sorted(
            (parse_network(n.XMLDesc(0), n.isActive(), n.autostart()) for n in conn.listAllNetworks(0)),
            key=lambda n: n["name"])
        pools = []
        for pool in conn.listAllStoragePools(0):
            active = pool.isActive()
            facts_of_pool = parse_pool(pool.XMLDesc(0), active, pool.info() if active else None)
            if not is_state_pool(facts_of_pool):
                pools.append(facts_of_pool)
        facts["storage_pools"] = sorted(pools, key=lambda p: p["name"])
        facts["bridges"] = local_bridges() if local else _remote_bridges(conn)
        if local:
            facts["maintenance"] = read_mark()
            # Which job holds the host (a drain, a return, a rebalance), so planners can plan around it.
            facts["lease"] = read_lease()
        elif state_over_libvirt:
            facts["maintenance"], facts["lease"] = read_state(conn, facts["name"])
        else:
            facts["maintenance"] = facts["lease"] = None
        facts["vms"] = []
        for dom in conn.listAllDomains(0):
            vm = _gather_vm_if_still_there(dom, names, pools, local, include_xml)
            if vm is not None:
                facts["vms"].append(vm)
        facts["vms"].sort(key=lambda vm: vm["name"])
    except libvirt.libvirtError as exc:
        raise explain(exc, "cannot read the facts of %s" % uri) from exc
    return facts


def _gather_vm_if_still_there(dom, names, pools, local, include_xml):
    """A VM's facts, or None when it is not wanted or left the host while being read (a migration finished)."""
    import libvirt

    try:
        if names is not None and dom.name() not in names:
            return None
        return gather_vm(dom, pools, local, include_xml)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _remote_bridges(conn):
    """Bridges as libvirt's interface driver reports them (None when the driver is unavailable)."""
    import libvirt

    try:
        interfaces = conn.listAllInterfaces(0)
    except libvirt.libvirtError:
        return None
    bridges = []
    for interface in interfaces:
        try:
            root = ET.fromstring(interface.XMLDesc(0))
        except (libvirt.libvirtError, ET.ParseError):
            continue
        if root.get("type") == "bridge":
            bridges.append(root.get("name"))
    return sorted(bridges)


def active_job(dom):
    """The VM's running libvirt job (migration_out, migration_in, save, ...), or None when it has none.

    A migration an interrupted playbook started goes on in libvirt; planners must wait for it, not start another.
    """
    import libvirt

    if not dom.isActive():
        return None
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError as exc:
        # On the destination of a migration libvirt refuses job statistics ("available only on the source
        # host"): that refusal is how an incoming migration shows itself.
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_UNSUPPORTED and "source" in str(exc):
            return "migration_in"
        return None
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    operations = {
        libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT: "migration_out",
        libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN: "migration_in",
        libvirt.VIR_DOMAIN_JOB_OPERATION_SAVE: "save",
        libvirt.VIR_DOMAIN_JOB_OPERATION_RESTORE: "restore",
        libvirt.VIR_DOMAIN_JOB_OPERATION_DUMP: "dump",
        libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT: "snapshot",
    }
    return operations.get(stats.get("operation"), "other")


def gather_vm(dom, pools, local, include_xml=False):
    import libvirt

    xml_text = dom.XMLDesc(0)
    vm = parse_domain(xml_text, pools, local_filesystem_of if local else None)
    vm["state"] = state_name(dom.state()[0])
    vm["persistent"] = bool(dom.isPersistent())
    vm["autostart"] = bool(dom.autostart()) if vm["persistent"] else False
    # A shut-off VM suspended to disk (a drain's suspend policy parks VMs so): its memory is in a file here.
    vm["managed_save"] = bool(vm["persistent"] and not dom.isActive() and dom.hasManagedSaveImage(0))
    vm["job"] = active_job(dom)
    if dom.isActive():
        for disk in vm["disks"]:
            if disk["target"] and disk["device"] == "disk":
                try:
                    disk["size_bytes"] = dom.blockInfo(disk["target"])[0]
                except libvirt.libvirtError:
                    pass
    if include_xml:
        vm["xml"] = xml_text
    return vm
