# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""CPU verdicts for cpu_compat: one per distinct pair of CPU profiles (_cpu_profiles.py), a session that
judges a whole fleet, the offline compare/check_matrix API, and the baseline CPU of a set of hosts.
"""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_map import (
    DEFAULT_CPU_MAP_DIR,
    without_vmx_subfeatures,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_map import (
    load as load_cpu_map,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_profiles import (
    _COMPATIBLE,
    _G,
    _H,
    ERROR,
    EXTENSIONS,
    IDENTICAL,
    INCOMPATIBLE,
    PASSTHROUGH_MODES,
    SUPERSET,
    X86_ARCHES,
    _cpu_key,
    _CpuXml,
    _find_guest_cpu,
    _find_host_cpu,
    _gc_paused,
    _guest_cpu,
    _guest_for_map,
    _host_cpu,
    _join_evidence,
    _names,
    _parse_xml,
    _them,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    HvmaintError,
)

# ---------------------------------------------------------------------------------------------------------------
# Verdicts: one per distinct (guest CPU, host CPU), names filled in per pair

# A verdict is (result, missing_features, reasons, guest_model, host_model, extra_features, unverified_features).


def _verdict(guest, host, result, missing=(), reasons=(), extra=None, unverified=None):
    """The shared part of a pair's result; feature lists come sorted."""
    return (result, tuple(missing), tuple(reasons), guest.model, host.model, tuple(extra) if extra else None,
            tuple(unverified) if unverified else None)


def _pair(guest_name, host_name, verdict):
    result, missing, reasons, guest_model, host_model, extra, unverified = verdict
    out = {
        "guest": guest_name,
        "host": host_name,
        "result": result,
        "compatible": result in _COMPATIBLE,
        "missing_features": list(missing),
        "reasons": [r.replace(_G, guest_name).replace(_H, host_name) for r in reasons],
        "guest_model": guest_model,
        "host_model": host_model,
    }
    if extra is not None:
        out["extra_features"] = list(extra)
    if unverified is not None:
        out["unverified_features"] = list(unverified)
    return out


def _judge_passthrough(guest, host):
    source = guest.source
    if source is None:
        return _verdict(guest, host, ERROR, reasons=[
            "host-passthrough needs an identical host CPU, so %s can only be judged against the host it runs on:"
            " give its source host's capabilities (source_host_xml), read it through live_guests, or ask"
            " libvirt on %s (live_hosts)" % (_G, _H)])
    if source.error:
        return _verdict(guest, host, ERROR, reasons=[source.error.replace(_H, guest.source_name)])
    src = source.features - guest.disabled
    dst = host.features - guest.disabled
    missing = src - dst
    extra = dst - src
    same_signature = not (source.signature and host.signature) or source.signature[:2] == host.signature[:2]
    if missing or extra or source.vendor != host.vendor or not same_signature:
        reasons = ["host-passthrough needs an identical host CPU: %s is %s, the guest was started on %s"
                   % (_H, host.model + (" (%s)" % host.vendor if host.vendor else ""),
                      source.label(guest.source_name))]
        if missing:
            reasons.append("%s lacks %s, which the guest sees on %s" % (_H, _names(missing), guest.source_name))
        if extra:
            reasons.append("%s has %s, which %s does not; the guest's CPU would change under it"
                           % (_H, _names(extra), guest.source_name))
        if not missing and not extra and not same_signature:
            reasons.append("the feature sets match but the CPU family/model differs (%s vs %s)"
                           % ("/".join(source.signature[:2]), "/".join(host.signature[:2])))
        return _verdict(guest, host, INCOMPATIBLE, sorted(missing), reasons, extra=sorted(extra))
    reasons = []
    if source.signature and host.signature and source.signature[2] != host.signature[2]:
        reasons.append("%s and %s differ only in CPU stepping (%s vs %s)" % (
            guest.source_name, _H, source.signature[2], host.signature[2]))
    return _verdict(guest, host, IDENTICAL, reasons=reasons)


def _extension_reason(ext, host):
    cached = host.texts.get(ext)
    if cached is None:
        cached = host.texts[ext] = _make_extension_reason(ext, host)
    return cached


def _make_extension_reason(ext, host):
    label, ext_vendors = EXTENSIONS[ext]
    text = "nested virtualization: the guest exposes %s (%s) to its own guests and %s does not have it" % (
        ext, label, _H)
    if host.vendor and host.vendor not in ext_vendors:
        others = [e for e, (_label, vendors) in EXTENSIONS.items() if host.vendor in vendors]
        if others:
            other = others[0]
            text += "; %s is %s, whose extension is %s (%s), so nested guests cannot move across vendors" % (
                _H, host.vendor, other, EXTENSIONS[other][0])
    else:
        text += "; enable %s in %s's firmware, or check that %s is not itself a VM without nested" \
                " virtualization" % (label, _H, _H)
    return text


def _vendor_reason(guest, host_vendor):
    key = ("vendor", host_vendor)
    cached = guest.per_map.get(key)
    if cached is None:
        cached = guest.per_map[key] = "vendor mismatch: the guest requires %s (%s); %s is %s" % (
            " or ".join(guest.vendors), _join_evidence(guest.vendor_evidence), _H, host_vendor)
    return cached


def _arch_mismatch(guest, host):
    """Why `host` cannot run `guest`'s architecture, or None (same architecture, or not known).

    libvirt agrees: its compareHypervisorCPU on an x86_64 host answers a guest of another architecture with
    "unable to find any emulator to serve 'aarch64' architecture", which _ask_libvirt reads as incompatible.
    """
    # A CPU without an architecture was resolved through an x86 CPU map; a host that could not be read says none.
    host_arch = host.arch or (None if host.error else "x86_64")
    guest_arch = guest.arch or "x86_64"
    if host_arch is None or guest_arch == host_arch:
        return None
    if (guest_arch in X86_ARCHES) != (host_arch in X86_ARCHES) or guest_arch not in X86_ARCHES:
        return "%s's architecture is %s and %s's is %s: a hypervisor runs guests of its own architecture only" % (
            _G, guest_arch, _H, host_arch)
    if host_arch == "i686":
        return "%s is a 64-bit x86_64 guest and %s is a 32-bit i686 host" % (_G, _H)
    return None  # an i686 guest on an x86_64 host


def _judge(guest, host):
    if guest.error:
        return _verdict(guest, host, ERROR, reasons=[guest.error])
    arch_reason = _arch_mismatch(guest, host)
    if arch_reason:
        return _verdict(guest, host, INCOMPATIBLE, reasons=[arch_reason])
    if host.error:
        return _verdict(guest, host, ERROR, reasons=[host.error])
    if guest.kind == "foreign":  # pragma: no cover - every host this check reads is x86, so the arch differs
        return _verdict(guest, host, ERROR, reasons=[
            "%s: its architecture is %s; this check understands x86 guests only" % (_G, guest.arch)])
    if guest.virttype == "qemu":
        return _verdict(guest, host, SUPERSET, reasons=guest.notes)
    if guest.kind == "default":
        return _verdict(guest, host, SUPERSET, reasons=[
            "%s has no CPU model, so it gets the hypervisor's default CPU (qemu64 on x86), which %s runs"
            % (_G, _H)])
    if guest.kind == "passthrough":
        return _judge_passthrough(guest, host)

    cpu_map = guest.map
    required, problems, notes = _guest_for_map(guest, host.map)
    reasons = list(problems)
    if guest.vendors and host.vendor and host.vendor not in guest.vendors:
        reasons.append(_vendor_reason(guest, host.vendor))
    elif guest.vendor and not host.vendor:
        # libvirt (x86Compute) answers "host CPU vendor does not match required CPU vendor" here too: a host that
        # names no vendor cannot prove it is the one the guest's <vendor> demands.
        reasons.append("vendor unknown: the guest's <vendor> requires %s and %s's CPU names no vendor, so it"
                       " cannot be shown to be %s" % (guest.vendor, _H, guest.vendor))
    host_mask = host.mask(cpu_map)
    missing = required & ~host_mask
    soft = missing & guest.added_mask
    hard = missing & ~soft
    hard_names = ()
    if hard:
        plain = hard
        for ext in EXTENSIONS:
            bit = cpu_map.bit(ext)
            if hard & bit:
                reasons.append(_extension_reason(ext, host))
                plain &= ~bit
        from_model = plain & ~guest.explicit_mask
        explicit = plain & guest.explicit_mask
        if from_model:
            reasons.append("%s lacks %s required by %s" % (
                _H, _names(cpu_map.names(from_model), presorted=True), guest.model))
        if explicit:
            reasons.append("%s lacks %s, which the guest requires explicitly (<feature policy='require'>)"
                           % (_H, _names(cpu_map.names(explicit), presorted=True)))
        hard_names = cpu_map.names(hard)
    forbidden = guest.forbidden_mask & host_mask
    if forbidden:
        for feat in cpu_map.names(forbidden):
            reasons.append("feature %s is forbidden by the guest but %s has it" % (feat, _H))
    if reasons:
        return _verdict(guest, host, INCOMPATIBLE, hard_names, reasons)

    # Host features the guest's CPU map does not know are not in host_mask: with a newer destination map (say
    # vmx-* in 11.x), its libvirt expands the guest's model with them, so they are not extras.
    extra = host_mask & ~guest.listed_mask
    if guest.match == "strict" and extra:
        extra_names = cpu_map.names(extra)
        return _verdict(guest, host, INCOMPATIBLE, reasons=[
            "match='strict' and %s has features the guest does not list: %s" % (
                _H, _names(extra_names, presorted=True))], extra=extra_names)
    reasons.extend(guest.notes)
    reasons.extend(notes)
    if guest.kind == "host-model":
        reasons.append("%s uses host-model and this XML does not say which CPU it was given, so libvirt computes"
                       " it from %s's own CPU when the guest starts there: fine for a shut-off guest, but a"
                       " running guest keeps the CPU it started with; pass its live XML (virsh dumpxml, or"
                       " live_guests) to check that" % (_G, _H))
    soft_names = cpu_map.names(soft) if soft else ()
    if soft:
        # libvirt added these VMX capabilities to existing models later (added='yes'); host CPU data often
        # lacks them, so treating them as blocking would reject hosts that run such guests fine.
        reasons.append("%s does not report %s, VMX capabilities that libvirt added to model %s after it was"
                       " published (added='yes' in the CPU map); they do not block, but nested guests relying on"
                       " %s may notice" % (_H, _names(soft_names, presorted=True), guest.model, _them(soft_names)))
    absent_forced = guest.forced_mask & ~host_mask
    if absent_forced:
        forced = cpu_map.names(absent_forced)
        reasons.append("the guest forces %s although %s lacks %s: QEMU advertises %s anyway and software using"
                       " %s will fault" % (_names(forced, presorted=True), _H, _them(forced), _them(forced),
                                           _them(forced)))
    has_extra = bool(extra)
    # A host-model guest without a resolved model gets exactly the destination's host-model CPU.
    result = SUPERSET if has_extra and guest.kind != "host-model" else IDENTICAL
    return _verdict(guest, host, result, reasons=reasons, unverified=soft_names)


# ---------------------------------------------------------------------------------------------------------------
# A session: the CPU profiles and verdicts of one call


class _Session:
    def __init__(self, cpu_map_dir=None):
        self.cpu_map_dir = cpu_map_dir or DEFAULT_CPU_MAP_DIR
        self._guests = {}
        self._hosts = {}
        self._verdicts = {}

    def host(self, name, xml, cpu_map_dir=None, what=None):
        what = what or "host %s" % name
        root = _parse_xml(xml, what)
        cpu, kind, arch = _find_host_cpu(root, what)
        cpu_xml = _CpuXml(cpu) if cpu is not None else None
        map_dir = cpu_map_dir or self.cpu_map_dir
        key = (_cpu_key(cpu), kind, arch, map_dir)
        profile = self._hosts.get(key)
        if profile is None:
            profile = _host_cpu(cpu, cpu_xml, kind, arch, load_cpu_map(map_dir))
            self._hosts[key] = profile
        return profile

    def guest(self, name, xml, cpu_map_dir=None, source_host_xml=None, source_host_name=None, domain_type=None):
        what = "guest %s" % name
        root = _parse_xml(xml, what)
        cpu, virttype, arch = _find_guest_cpu(root, what)
        virttype = virttype or domain_type  # a bare <cpu> does not say whether the guest uses KVM or TCG
        cpu_xml = _CpuXml(cpu) if cpu is not None else None
        map_dir = cpu_map_dir or self.cpu_map_dir
        passthrough = cpu is not None and cpu.get("mode") in PASSTHROUGH_MODES
        source = None
        if passthrough and source_host_xml:
            # Only host-passthrough guests care where they run now; others share profiles across sources.
            source = self.host(source_host_name, source_host_xml, map_dir, what="%s: source host" % what)
        else:
            source_host_name = None
        key = (_cpu_key(cpu), virttype, arch, map_dir, id(source), source_host_name)
        profile = self._guests.get(key)
        if profile is None:
            profile = _guest_cpu(cpu, cpu_xml, virttype, arch, load_cpu_map(map_dir))
            profile.source = source
            profile.source_name = source_host_name or "the source host"
            self._guests[key] = profile
        return profile

    def verdict(self, guest, host):
        key = (id(guest), id(host))
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = _judge(guest, host)
            self._verdicts[key] = verdict
        return verdict

    def guests(self, entries):
        _check_entries(entries, "guest")
        return [(g["name"], self.guest(g["name"], g.get("xml"), g.get("cpu_map_dir"), g.get("source_host_xml"),
                                       g.get("source_host"), g.get("domain_type"))) for g in entries]

    def hosts(self, entries):
        _check_entries(entries, "host")
        return [(h["name"], self.host(h["name"], h.get("xml"), h.get("cpu_map_dir"))) for h in entries]

    def matrix(self, guests, hosts):
        verdict = self.verdict
        with _gc_paused():
            return [_pair(gname, hname, verdict(gcpu, hcpu)) for gname, gcpu in guests for hname, hcpu in hosts]


def _check_entries(entries, kind):
    if not isinstance(entries, (list, tuple)):
        raise HvmaintError("%ss must be a list of {name, xml} dictionaries" % kind)
    seen = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise HvmaintError("%ss[%d] must be a dictionary with name and xml" % (kind, index))
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise HvmaintError("%ss[%d] has no name" % (kind, index))
        if name in seen:
            raise HvmaintError("%s name %r appears more than once; names must be unique" % (kind, name))
        seen.add(name)


# ---------------------------------------------------------------------------------------------------------------
# Public API


def compare(guest_xml, host_xml, cpu_map_dir=None, guest_name="guest", host_name="host", guest_cpu_map_dir=None,
            host_cpu_map_dir=None, source_host_xml=None, source_host_name=None):
    """Verdict for one guest CPU on one host CPU.

    `guest_xml` is a domain XML or a <cpu> element; `host_xml` host capabilities, domain capabilities, their
    host CPU element, or a host-model CPU. Each side is resolved through its own CPU map when given
    (`guest_cpu_map_dir`, `host_cpu_map_dir`), else through `cpu_map_dir` (default: the installed map).
    `source_host_xml` is the CPU of the host the guest runs on, needed to judge host-passthrough guests.
    """
    session = _Session(cpu_map_dir)
    guest = session.guest(guest_name, guest_xml, guest_cpu_map_dir, source_host_xml, source_host_name)
    host = session.host(host_name, host_xml, host_cpu_map_dir)
    return _pair(guest_name, host_name, session.verdict(guest, host))


def check_matrix(guests, hosts, cpu_map_dir=None):
    """Verdicts for every guest on every host, guests-major.

    Each guest is {name, xml, cpu_map_dir?, domain_type?, source_host_xml?, source_host?}, each host
    {name, xml, cpu_map_dir?}.
    Every distinct CPU is parsed and expanded once; each distinct pair of CPUs is judged once.
    """
    session = _Session(cpu_map_dir)
    return session.matrix(session.guests(guests), session.hosts(hosts))


# ---------------------------------------------------------------------------------------------------------------
# Baseline


def _baseline_xml(model, vendor, required, disabled):
    lines = ["<cpu mode='custom' match='exact'>", "  <model fallback='forbid'>%s</model>" % model]
    if vendor:
        lines.append("  <vendor>%s</vendor>" % vendor)
    lines.extend("  <feature policy='require' name='%s'/>" % f for f in sorted(required))
    lines.extend("  <feature policy='disable' name='%s'/>" % f for f in sorted(disabled))
    lines.append("</cpu>")
    return "\n".join(lines)


def _best_model(maps, hosts, common, mixed, vendor):
    """(name, hard features, soft features, model) of the most capable model every host fully supports."""
    best = None
    for name in maps[0].model_names():
        if not all(m.has_model(name) for m in maps):
            continue  # some host's libvirt would refuse it
        models = [m.model(name) for m in maps]
        first = models[0]
        if not first.decode_host and not first.decode_guest:
            continue  # distribution-only models (cpu64-rhel*) that upstream QEMU lacks
        if any(m.vendor and (mixed or m.vendor != vendor) for m in models):
            continue
        hard = set()
        soft = set()
        fits = True
        for cpu_map, model in zip(maps, models):
            feats = model.features if "vmx" in common else without_vmx_subfeatures(model.features)
            # Late-added VMX capabilities do not disqualify a model: they are disabled in the result, as
            # libvirt's own host-model does.
            needed = feats - model.added
            if any(host.map is cpu_map and not needed <= host.features for _name, host in hosts):
                fits = False
                break
            hard |= needed
            soft |= (feats & model.added) - common
        if not fits:
            continue
        # Most features first; then a name older libvirt also knows (not -vN); then fewer disabled features.
        rank = (len(hard), not first.versioned, -len(soft), name)
        if best is None or rank > best[0]:
            best = (rank, name, hard, soft, first)
    return best


def _baseline_of(hosts):
    """Baseline over [(name, _HostCpu)]."""
    if not hosts:
        raise HvmaintError("cannot compute a baseline without hosts")
    broken = [cpu.error.replace(_H, name) for name, cpu in hosts if cpu.error]
    if broken:
        raise HvmaintError("cannot compute a baseline: " + "; ".join(broken))
    common = frozenset.intersection(*[cpu.features for _name, cpu in hosts])
    vendors = sorted({cpu.vendor for _name, cpu in hosts if cpu.vendor})
    mixed = len(vendors) != 1 or any(not cpu.vendor for _name, cpu in hosts)
    vendor = None if mixed else vendors[0]
    maps = []
    for _name, cpu in hosts:
        if all(cpu.map is not m for m in maps):
            maps.append(cpu.map)
    best = _best_model(maps, hosts, common, mixed, vendor)
    if best is None:
        raise HvmaintError("no named CPU model in the CPU map%s fits every host (%s)" % (
            "s" if len(maps) > 1 else "", ", ".join(name for name, _cpu in hosts)))
    _rank, model_name, _hard, soft, first = best

    model_all = frozenset().union(*[m.model(model_name).features for m in maps])
    non_migratable = frozenset().union(*[m.non_migratable for m in maps])
    extras = common - model_all
    dropped = extras & non_migratable
    extras = extras - non_migratable

    reasons = []
    if not mixed:
        reasons.append("all hosts are %s; %s is the most capable %s model that every host fully supports"
                       % (vendor, model_name, vendor if first.vendor else "vendor-neutral"))
    else:
        groups = {}
        for name, cpu in hosts:
            groups.setdefault(cpu.vendor or "unknown vendor", []).append(name)
        reasons.append(
            "the hosts mix CPU vendors (%s): no vendor's named model runs on all of them, so the baseline uses %s,"
            " the most capable vendor-neutral model that every host supports, plus the features all hosts share"
            % ("; ".join("%s: %s" % (v, ", ".join(n)) for v, n in sorted(groups.items())), model_name))
        reasons.append("even then, live migration between Intel and AMD hosts is unreliable (vendor string,"
                       " SYSCALL/SYSENTER and nested virtualization differ); keep guests within one vendor's hosts"
                       " where you can")
    if extras:
        reasons.append("%d features beyond %s are common to all hosts and are required explicitly"
                       % (len(extras), model_name))
    if dropped:
        reasons.append("left out %s: libvirt marks %s non-migratable" % (_names(dropped), _them(dropped)))
    if soft:
        reasons.append("disabled %s: VMX capabilities libvirt added to %s later that not every host reports"
                       % (_names(soft), model_name))
    if len(maps) > 1:
        reasons.append("the hosts use %d different CPU maps; only models all of them know were considered"
                       % len(maps))
    from_caps = [name for name, cpu in hosts if cpu.kind == "capabilities"]
    if from_caps:
        reasons.append("%s %s given as host capabilities, which list what the CPU has, including features KVM"
                       " cannot give guests; domain capabilities' host-model CPU (virsh domcapabilities) gives a"
                       " baseline guests can always start with" % (_names(from_caps),
                                                                   "was" if len(from_caps) == 1 else "were"))
    return {
        "vendor": vendor,
        "model": model_name,
        "features": sorted(extras),
        "disabled_features": sorted(soft),
        "xml": _baseline_xml(model_name, vendor if first.vendor else None, extras, soft),
        "reasons": reasons,
    }


def baseline(hosts, cpu_map_dir=None):
    """The most capable CPU definition every host in `hosts` ({name, xml, cpu_map_dir?}) can run."""
    return _baseline_of(_Session(cpu_map_dir).hosts(hosts))
