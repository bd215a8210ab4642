# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Can this guest's CPU run on that host? Offline, from XML and libvirt's CPU map, for whole fleets at once.

The verdicts follow libvirt's own comparison (virCPUCompare, x86 driver):

* the guest needs its model's features plus features with policy ``require``, minus those it marks
  ``disable``, ``forbid`` or ``optional``; ``force`` features are not needed from the host either, since QEMU
  claims them regardless (libvirt subtracts them the same way);
* ``forbid`` features must be absent from the host;
* ``identical`` when the host has nothing beyond what the guest lists, ``superset`` when it has more;
* ``match='strict'`` turns ``superset`` into ``incompatible``: libvirt documents strict as "the guest will not
  be created unless the host CPU exactly matches the specification", and its compare reports "Host CPU does
  not strictly match guest CPU: Extra features". ``minimum`` and ``exact`` both accept a host with more.

Where this check is deliberately stricter or looser than libvirt, the code says why.

Speed: a fleet has far fewer distinct CPU definitions than VMs, so each distinct guest CPU and host CPU is
parsed and expanded once ("profiles"), and each distinct pair of profiles is judged once. Messages are kept as
templates with the guest and host names filled in per pair.

The profiles are built in _cpu_profiles.py and judged in _cpu_verdicts.py; this file asks live libvirt
hosts and is the module's entry point (run).
"""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_profiles import (
    _COMPATIBLE,
    ERROR,
    IDENTICAL,
    INCOMPATIBLE,
    RESULTS,
    SUPERSET,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_verdicts import (
    _arch_mismatch,
    _baseline_of,
    _Session,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    Connection,
    HvmaintError,
    explain,
    libvirt,
)

# ---------------------------------------------------------------------------------------------------------------
# Live hosts and guests (the module's entry point)


def _libvirt_error_class():
    return libvirt.libvirtError if libvirt is not None else Exception


def _compare_code_names():
    if libvirt is None:  # pragma: no cover - only reached with a fake connection
        return {-1: ERROR, 0: INCOMPATIBLE, 1: IDENTICAL, 2: SUPERSET}
    return {
        libvirt.VIR_CPU_COMPARE_ERROR: ERROR,
        libvirt.VIR_CPU_COMPARE_INCOMPATIBLE: INCOMPATIBLE,
        libvirt.VIR_CPU_COMPARE_IDENTICAL: IDENTICAL,
        libvirt.VIR_CPU_COMPARE_SUPERSET: SUPERSET,
    }


def _ask_libvirt(conn, guest, host):
    """(result, message) from the destination's libvirt for one guest CPU."""
    if guest.cpu_xml is None:
        return None, "the guest has no <cpu> element, so there is nothing to ask libvirt"
    error_class = _libvirt_error_class()
    arch = guest.arch or host.arch or "x86_64"
    try:
        code = conn.compareHypervisorCPU(None, arch, None, guest.virttype, str(guest.cpu_xml), 0)
    except error_class as exc:
        # libvirt refuses to compare a guest of an architecture it has no emulator for: that host cannot run it.
        return (INCOMPATIBLE if _arch_mismatch(guest, host) else ERROR), str(exc).strip()
    result = _compare_code_names().get(code, ERROR)
    message = None
    if result == INCOMPATIBLE:
        # Ask again with FAIL_INCOMPATIBLE: only then does libvirt say which features are missing.
        flag = getattr(libvirt, "VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE", 1)
        try:
            conn.compareHypervisorCPU(None, arch, None, guest.virttype, str(guest.cpu_xml), flag)
        except error_class as exc:
            message = str(exc).strip()
    return result, message


def _read_live_guests(entry, cpu_map_dir, connect):
    uri = entry["uri"]
    names = entry.get("names")
    guests = []
    error_class = _libvirt_error_class()
    with connect(uri, read_only=True) as conn:
        try:
            source_xml = conn.getCapabilities()
            try:
                source_name = conn.getHostname()
            except error_class:
                source_name = uri
            if names:
                domains = []
                for name in names:
                    try:
                        domains.append(conn.lookupByName(name))
                    except error_class as exc:
                        raise explain(exc, "cannot find VM %s on %s" % (name, uri)) from exc
            else:
                domains = conn.listAllDomains(0)
            for dom in domains:
                guests.append({
                    "name": dom.name(),
                    "xml": dom.XMLDesc(0),  # the live definition: a running host-model guest's real CPU
                    "cpu_map_dir": entry.get("cpu_map_dir") or cpu_map_dir,
                    "source_host_xml": source_xml,
                    "source_host": source_name,
                })
        except error_class as exc:
            raise explain(exc, "cannot read VMs from %s" % uri) from exc
    return guests


def _disagreement_reason(pair, message):
    text = "the offline check says %s, libvirt on %s says %s" % (
        pair["result"], pair["host"], pair["libvirt_result"])
    if pair["compatible"] == (pair["libvirt_result"] in _COMPATIBLE):
        text += ": both allow the migration (libvirt compares with what its hypervisor can offer guests, the" \
                " offline check with the host CPU)"
    else:
        text += ": trust libvirt on the destination for this pair, and report the difference"
    if message:
        text += " (libvirt: %s)" % message
    return text


def summarize(matrix, guest_names, host_names):
    counts = {r: 0 for r in RESULTS}
    fits = dict.fromkeys(guest_names, False)
    disagreements = 0
    for pair in matrix:
        counts[pair["result"]] += 1
        if pair["compatible"]:
            fits[pair["guest"]] = True
        if pair.get("disagreement"):
            disagreements += 1
    summary = {
        "guests": len(guest_names),
        "hosts": len(host_names),
        "pairs": len(matrix),
        "compatible": counts[IDENTICAL] + counts[SUPERSET],
        "disagreements": disagreements,
        "guests_without_host": [name for name in guest_names if not fits[name]],
    }
    summary.update(counts)
    return summary


def _ask_libvirt_baseline(entry, hosts, connect):
    cpus = [str(cpu.cpu_xml) for _name, cpu in hosts if cpu.cpu_xml is not None]
    arch = next((cpu.arch for _name, cpu in hosts if cpu.arch), "x86_64")
    # MIGRATABLE drops features libvirt knows block migration (invtsc), as the offline baseline does.
    flags = getattr(libvirt, "VIR_CONNECT_BASELINE_CPU_MIGRATABLE", 2)
    with connect(entry["uri"]) as conn:
        try:
            xml = conn.baselineHypervisorCPU(None, arch, None, "kvm", cpus, flags)
        except _libvirt_error_class() as exc:
            return {"libvirt_host": entry["name"], "libvirt_xml": None, "libvirt_message": str(exc).strip()}
    return {"libvirt_host": entry["name"], "libvirt_xml": xml}


def _hypervisor_cpu_xml(conn, uri):
    """The CPU a live host's hypervisor can give guests: domain capabilities (KVM, else TCG), else capabilities."""
    for virt_type in ("kvm", "qemu"):
        try:
            return conn.getDomainCapabilities(None, None, None, virt_type, 0)
        except _libvirt_error_class():
            continue
    try:
        return conn.getCapabilities()
    except _libvirt_error_class() as exc:
        raise explain(exc, "cannot read the capabilities of %s" % uri) from exc


def compared_host_cpu(cpu):
    """Of a host's `cpu` facts, the one definition guests are compared with, as {key: xml} (or {})."""
    # What the hypervisor can give a guest (domain capabilities' host-model) rather than what the CPU has:
    # KVM may withhold features the CPU has (nested hosts often lack pni, for example). Without it, the host CPU
    # itself (capabilities), as for live_hosts.
    for key in ("host_model_xml", "capabilities_xml"):
        if (cpu or {}).get(key):
            return {key: cpu[key]}
    return {}


def from_facts(hypervisors):
    """(guests, hosts) entries from hvmaint.libvirt.hypervisor_info facts (see docs/facts.md)."""
    guests = []
    hosts = []
    for index, facts in enumerate(hypervisors or ()):
        if not isinstance(facts, dict) or not facts.get("name"):
            raise HvmaintError("hypervisors[%d] is not a hypervisor_info result (it has no name)" % index)
        caps = next(iter(compared_host_cpu(facts.get("cpu")).values()), None)
        if not caps:
            raise HvmaintError("hypervisors[%d] (%s) has no cpu.capabilities_xml" % (index, facts["name"]))
        hosts.append({"name": facts["name"], "xml": caps})
        for vm in facts.get("vms") or ():
            vm_cpu = (vm.get("cpu") or {}).get("xml")
            domain_type = vm.get("domain_type") or "kvm"
            guests.append({
                "name": vm.get("name"),
                # A VM without <cpu> gets the hypervisor's default CPU; an empty domain says just that.
                "xml": vm_cpu or "<domain type='%s'/>" % domain_type,
                "domain_type": domain_type,
                "source_host_xml": caps,
                "source_host": facts["name"],
            })
    return guests, hosts


def run(guests=(), hosts=(), cpu_map_dir=None, live_hosts=(), live_guests=(), want_baseline=False,
        hypervisors=(), connect=None):
    """Everything the cpu_compat module does: returns {matrix, summary[, baseline]}.

    `guests` and `hosts` are as for check_matrix; `hypervisors` are hypervisor_info facts (see from_facts).
    `live_guests` entries are {uri, names?, cpu_map_dir?}: their VMs' live XML is read and the host they run on
    becomes their source (for host-passthrough). `live_hosts` entries are {name, uri, cpu_map_dir?}: the host CPU
    comes from its capabilities, and its libvirt is asked about every guest too (compareHypervisorCPU).
    `connect(uri, read_only=False)` returns a context manager yielding a libvirt connection (default Connection).
    """
    connect = connect or Connection
    if not (hosts or live_hosts or hypervisors):
        raise HvmaintError("no hosts to compare with: give hosts, live_hosts or hypervisors")
    if not (guests or live_guests or hypervisors or want_baseline):
        raise HvmaintError("nothing to do: give guests, live_guests or hypervisors, or ask for a baseline")
    session = _Session(cpu_map_dir)
    fact_guests, fact_hosts = from_facts(hypervisors)
    guest_entries = [dict(g) for g in guests or ()] + fact_guests
    for entry in live_guests or ():
        guest_entries.extend(_read_live_guests(entry, session.cpu_map_dir, connect))
    host_entries = [dict(h) for h in hosts or ()] + fact_hosts
    names = {h.get("name") for h in host_entries}
    for entry in live_hosts or ():
        if entry["name"] in names:
            raise HvmaintError("host name %r appears more than once; names must be unique" % entry["name"])
        names.add(entry["name"])

    prepared_guests = session.guests(guest_entries)
    live_answers = {}  # (guest name, host name) -> (result, message)
    for entry in live_hosts or ():
        with connect(entry["uri"]) as conn:
            caps = _hypervisor_cpu_xml(conn, entry["uri"])
            host_entries.append({"name": entry["name"], "xml": caps, "cpu_map_dir": entry.get("cpu_map_dir")})
            host_cpu = session.host(entry["name"], caps, entry.get("cpu_map_dir"))
            asked = {}  # one question per distinct guest CPU
            for guest_name, guest_cpu in prepared_guests:
                answer = asked.get(id(guest_cpu))
                if answer is None:
                    answer = asked[id(guest_cpu)] = _ask_libvirt(conn, guest_cpu, host_cpu)
                live_answers[(guest_name, entry["name"])] = answer

    prepared_hosts = session.hosts(host_entries)
    matrix = session.matrix(prepared_guests, prepared_hosts)
    for pair in matrix:
        answer = live_answers.get((pair["guest"], pair["host"]))
        if answer is None:
            continue
        pair["libvirt_result"], message = answer
        if message:
            pair["libvirt_message"] = message
        pair["disagreement"] = pair["libvirt_result"] is not None and pair["libvirt_result"] != pair["result"]
        if pair["disagreement"]:
            pair["reasons"].append(_disagreement_reason(pair, message))

    out = {
        "matrix": matrix,
        "summary": summarize(matrix, [name for name, _cpu in prepared_guests],
                             [name for name, _cpu in prepared_hosts]),
    }
    if want_baseline:
        try:
            out["baseline"] = _baseline_of(prepared_hosts)
        except HvmaintError as exc:
            # Keep the matrix: a baseline that cannot be computed is reported, not fatal.
            out["baseline"] = {"vendor": None, "model": None, "features": [], "disabled_features": [], "xml": None,
                               "reasons": [str(exc)]}
        if live_hosts:
            out["baseline"].update(_ask_libvirt_baseline(live_hosts[0], prepared_hosts, connect))
    return out
