# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The collection's own metadata in a VM's libvirt domain XML: home host, tier, group and recent moves.

Kept in the domain itself (libvirt <metadata>, under the collection's namespace), so it travels with the VM when
it migrates and any controller, a laptop or a fresh AWX container, reads the same history.

    <hvmaint:vm xmlns:hvmaint="urn:x-hvmaint:libvirt:vm:1">
      <hvmaint:home>hv1</hvmaint:home>
      <hvmaint:tier>critical</hvmaint:tier>
      <hvmaint:group>db</hvmaint:group>
      <hvmaint:parked>suspend</hvmaint:parked>
      <hvmaint:moves>
        <hvmaint:move at="2026-11-25T12:00:00Z" from="hv1" to="hv2" outcome="completed" seconds="1.25"
                      downtime_ms="48" data_bytes="96468992"/>
        <hvmaint:move at="2026-11-26T08:00:00Z" from="hv2" to="hv1" outcome="migrated" seconds="21.5"
                      downtime_ms="812" data_bytes="1468006400" downtime_limit_ms="1000" escalated="true"/>
        <hvmaint:move at="2026-11-27T09:00:00Z" from="hv1" to="hv2" outcome="migrated" seconds="130.2"
                      data_bytes="272629760" bandwidth_limit_mib_s="2" faulted="true"/>
      </hvmaint:moves>
    </hvmaint:vm>
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

NAMESPACE = "urn:x-hvmaint:libvirt:vm:1"
PREFIX = "hvmaint"
ROOT_TAG = "vm"
# A VM's history is bounded so the domain XML stays small; the audit ledger keeps everything.
MAX_MOVES = 20
# home: where the VM belongs; tier and group: planning hints; parked: how a drain left a VM that could not move
# (shutdown or suspend), so that the return starts it again.
SIMPLE_FIELDS = ("home", "tier", "group", "parked")
# downtime_limit_ms, escalated and postcopy: the policy a migration finally needed (when it needed escalation),
# where live_migrate starts the VM's next migration. bandwidth_limit_mib_s and faulted: why the move's time is not
# learned from (a throttled or faulted move; _migration_model.not_representative).
# switchover_s: when the VM ran on the destination, for the next plans' slot times (_migration_model).
_MOVE_ATTRIBUTES = ("at", "from", "to", "outcome", "seconds", "downtime_ms", "data_bytes", "by", "downtime_limit_ms",
                    "escalated", "postcopy", "bandwidth_limit_mib_s", "faulted", "switchover_s")


def _true(text):
    return text.strip().lower() in ("true", "1", "yes")


_NUMERIC = {"seconds": float, "downtime_ms": int, "data_bytes": int, "downtime_limit_ms": int, "escalated": _true,
            "postcopy": _true, "bandwidth_limit_mib_s": int, "faulted": _true, "switchover_s": float}


def _q(tag):
    return "{%s}%s" % (NAMESPACE, tag)


def parse_metadata(element):
    """Return the metadata dict from the collection's element (namespaced or not), or {} for None."""
    if element is None:
        return {}

    def local(tag):
        return tag.split("}", 1)[-1]

    result = {}
    for child in element:
        name = local(child.tag)
        if name in SIMPLE_FIELDS and (child.text or "").strip():
            result[name] = child.text.strip()
        elif name == "moves":
            moves = []
            for move in child:
                if local(move.tag) != "move":
                    continue
                entry = {}
                for key in _MOVE_ATTRIBUTES:
                    value = move.get(key)
                    if value is None:
                        continue
                    convert = _NUMERIC.get(key)
                    try:
                        entry[key] = convert(value) if convert else value
                    except ValueError:
                        entry[key] = value
                moves.append(entry)
            result["moves"] = moves
    return result


def find_in_domain(domain_root):
    """Find the collection's metadata element in a parsed <domain> element."""
    metadata = domain_root.find("metadata")
    if metadata is None:
        return None
    return metadata.find(_q(ROOT_TAG))


def metadata_from_domain_xml(domain_root):
    return parse_metadata(find_in_domain(domain_root))


def render_metadata(data):
    """Render a metadata dict as the XML string libvirt's setMetadata takes (without the namespace prefix:
    libvirt adds it from the key)."""
    root = ET.Element(ROOT_TAG)
    for name in SIMPLE_FIELDS:
        if data.get(name):
            ET.SubElement(root, name).text = str(data[name])
    moves = data.get("moves") or []
    if moves:
        moves_element = ET.SubElement(root, "moves")
        for move in moves[-MAX_MOVES:]:
            attributes = {key: str(move[key]) for key in _MOVE_ATTRIBUTES if move.get(key) is not None}
            ET.SubElement(moves_element, "move", attributes)
    return ET.tostring(root, encoding="unicode")


def with_move(data, move, home_if_unset=None):
    """Return a copy of `data` with `move` appended and home set the first time the VM leaves it."""
    updated = dict(data)
    if home_if_unset and not updated.get("home"):
        updated["home"] = home_if_unset
    updated["moves"] = (list(updated.get("moves") or []) + [move])[-MAX_MOVES:]
    return updated


def read_domain_metadata(domain):
    """Read the metadata of a live libvirt domain object ({} when it has none)."""
    import libvirt  # imported here so the pure functions above need no libvirt

    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, libvirt.VIR_DOMAIN_AFFECT_CURRENT)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return {}
        raise
    return parse_metadata(ET.fromstring(text))


def write_domain_metadata(domain, data):
    """Write metadata to a libvirt domain: to the running instance and to the persistent definition, so that
    it survives both a migration (which carries the live XML) and a restart (which reads the definition)."""
    import libvirt

    flags = 0
    if domain.isPersistent():
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if domain.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    domain.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, render_metadata(data), PREFIX, NAMESPACE, flags)
