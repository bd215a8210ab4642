# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Park a VM that cannot move (shut it down or suspend it to disk) and start it again afterwards.

The VM's own metadata says how it was parked, so the return finds it wherever the playbook runs from.
"""

from __future__ import annotations

import time

from ansible_collections.hvmaint.libvirt.plugins.module_utils._hypervisor_facts import state_name
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    HvmaintError,
    explain,
    unknown_vms,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._vm_metadata import (
    read_domain_metadata,
    write_domain_metadata,
)

ACTIVE = ("running", "paused", "blocked", "pmsuspended")


def describe(dom):
    state = state_name(dom.state()[0])
    if state == "shutoff" and dom.hasManagedSaveImage(0):
        return "suspended"
    return "running" if state in ACTIVE else state


def find_domain(conn, name):
    """The libvirt domain `name`, or an HvmaintError that lists the VMs the host has."""
    import libvirt

    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise unknown_vms([name], conn.getHostname(), [d.name() for d in conn.listAllDomains(0)]) from exc
        raise explain(exc, "cannot look up %s" % name) from exc


def set_state(dom, wanted, shutdown_timeout=300, force=True, check_mode=False, poll=0.5):
    """Bring a VM to `wanted` (shutdown, suspended or running); returns {name, changed, before, after, action}."""
    import libvirt

    name = dom.name()
    before = describe(dom)
    target = {"shutdown": "shutoff", "suspended": "suspended", "running": "running"}[wanted]
    result = {"name": name, "changed": False, "before": before, "after": before, "action": None}
    if before == target:
        if wanted == "running" and not check_mode:
            _clear_parked(dom)
        return result
    if wanted in ("shutdown", "suspended") and before != "running":
        raise HvmaintError("%s is %s: only a running VM can be %s" % (name, before, wanted))
    result.update(changed=True, after=target)
    if check_mode:
        result["action"] = "would " + wanted
        return result
    try:
        if wanted == "shutdown":
            _remember_parked(dom, "shutdown")
            result["action"] = _shut_down(dom, shutdown_timeout, force, poll)
        elif wanted == "suspended":
            if not dom.isPersistent():
                raise HvmaintError("%s is transient: libvirt can only suspend persistent VMs to disk" % name)
            _remember_parked(dom, "suspend")
            dom.managedSave(0)
            result["action"] = "saved to disk"
        else:
            restoring = dom.hasManagedSaveImage(0)
            dom.create()
            result["action"] = "restored from disk" if restoring else "started"
            _clear_parked(dom)
    except libvirt.libvirtError as exc:
        raise explain(exc, "cannot bring %s to %s" % (name, wanted)) from exc
    result["after"] = describe(dom)
    return result


def _shut_down(dom, timeout, force, poll):
    import libvirt

    dom.shutdown()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not dom.isActive():
            return "shut down by the guest"
        time.sleep(poll)
    if not force:
        raise HvmaintError("%s did not shut down within %d s (its guest OS ignored the request); set force to"
                           " power it off" % (dom.name(), timeout))
    try:
        dom.destroy()
    except libvirt.libvirtError:
        if dom.isActive():
            raise
    return "powered off after %d s without a guest shutdown" % timeout


def _remember_parked(dom, how):
    metadata = read_domain_metadata(dom)
    metadata["parked"] = how
    write_domain_metadata(dom, metadata)


def _clear_parked(dom):
    metadata = read_domain_metadata(dom)
    if metadata.pop("parked", None) is not None:
        write_domain_metadata(dom, metadata)
