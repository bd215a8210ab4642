# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Small libvirt helpers of the engine: look a domain up, tell where it is, read its completed statistics."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import libvirt
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import _flag
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import GIB, MIB


def _lookup(conn, name=None, uuid=None):
    """The domain by name or UUID, or None when the host has none; other errors propagate."""
    if conn is None:
        return None
    try:
        return conn.lookupByName(name) if name is not None else conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _presence(conn, uuid):
    """Whether the host behind conn has the domain: defined (persistent), running (active, paused included),
    persistent; all None with an "error" when it could not be asked (no connection is not an answer)."""
    if conn is None:
        return {"defined": None, "running": None, "persistent": None, "error": "no connection"}
    try:
        dom = _lookup(conn, uuid=uuid)
        if dom is None:
            return {"defined": False, "running": False, "persistent": False}
        return {"defined": bool(dom.isPersistent()), "running": bool(dom.isActive()),
                "persistent": bool(dom.isPersistent())}
    except (libvirt.libvirtError, AttributeError) as exc:
        return {"defined": None, "running": None, "persistent": None, "error": str(exc).strip() or "no connection"}


def _where_text(name, source, destination, where):
    def side(host, info):
        if info.get("error"):
            return "%s: unknown (%s)" % (host, info["error"])
        return "%s: %s" % (host, "running" if info["running"] else ("defined, shut off" if info["defined"]
                                                                    else "absent"))
    return "%s is now %s; %s" % (name, side(source, where["source"]), side(destination, where["destination"]))


def _completed_stats(dom):
    # libvirt keeps the statistics of a finished incoming migration on the destination domain (the source domain
    # is gone once UNDEFINE_SOURCE completes); KEEP_COMPLETED leaves them for `virsh domjobinfo --completed`.
    try:
        return dom.jobStats(_flag("VIR_DOMAIN_JOB_STATS_COMPLETED", 1) | _flag("VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED", 2))
    except libvirt.libvirtError:
        return {}


def _memory_bytes(root):
    element = root.find("memory")
    if element is None or not (element.text or "").strip():
        return 0
    units = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": MIB, "mib": MIB, "mb": 10 ** 6,
             "g": GIB, "gib": GIB, "gb": 10 ** 9, "t": GIB * 1024, "tib": GIB * 1024, "tb": 10 ** 12}
    return int(element.text.strip()) * units.get(element.get("unit", "KiB").lower(), 1024)


def _pool_type(pool):
    return ET.fromstring(pool.XMLDesc(0)).get("type")


def same_host_name(named, reported):
    """Whether the host a plan names is the host libvirt reports: the same name, or the same short name; an
    address names no host name to compare (the host UUID check covers the URIs)."""
    import ipaddress

    try:
        ipaddress.ip_address(named)
        return True
    except ValueError:
        pass
    return named == reported or named.split(".")[0] == (reported or "").split(".")[0]


def _host_uuid(conn):
    uuid = ET.fromstring(conn.getCapabilities()).findtext("./host/uuid")
    return (uuid or "").strip() or None


class HostUuidInBackground:
    """_host_uuid(conn) read in a thread of its own; result() waits for it and returns it, or raises its error.

    On a libvirtd just (re)started the first getCapabilities takes seconds (about 4 s per host on the lab, against
    milliseconds after): reading the source's while the destination is reached and read saves one of them before
    the first migration starts."""

    def __init__(self, conn):
        self._box = {}
        self._thread = threading.Thread(target=self._read, args=(conn,), name="host-uuid", daemon=True)
        self._thread.start()

    def _read(self, conn):
        try:
            self._box["uuid"] = _host_uuid(conn)
        except Exception as exc:  # noqa: BLE001 - handed to result()
            self._box["error"] = exc

    def result(self):
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["uuid"]
