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
"""

from __future__ import annotations

import contextlib
import gc
import xml.etree.ElementTree as ET

from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_map import (
    DEFAULT_CPU_MAP_DIR,
    load as load_cpu_map,
    without_vmx_subfeatures,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    Connection,
    HvmaintError,
    explain,
    libvirt,
)

IDENTICAL = "identical"
SUPERSET = "superset"
INCOMPATIBLE = "incompatible"
ERROR = "error"
RESULTS = (IDENTICAL, SUPERSET, INCOMPATIBLE, ERROR)
_COMPATIBLE = frozenset((IDENTICAL, SUPERSET))

POLICIES = ("require", "optional", "disable", "forbid", "force")
PASSTHROUGH_MODES = ("host-passthrough", "maximum")  # libvirt: maximum is host-passthrough under KVM
X86_ARCHES = ("x86_64", "i686")

# Hardware virtualization extensions, as seen by nested guests.
EXTENSIONS = {"vmx": ("Intel VT-x", ("Intel",)), "svm": ("AMD-V", ("AMD", "Hygon"))}

_LIST_LIMIT = 12  # features named in one sentence; the full list is in missing_features

# Placeholders for names in message templates (a template is shared by every pair with the same CPUs).
_G = "\x00guest\x00"
_H = "\x00host\x00"


def _names(items, limit=_LIST_LIMIT, presorted=False):
    if not presorted:
        items = sorted(items)
    if len(items) <= limit:
        return ", ".join(items)
    return "%s and %d more" % (", ".join(items[:limit]), len(items) - limit)


def _a(word):
    return ("an " if word[:1].upper() in "AEIOU" else "a ") + word


def _them(items):
    return "it" if len(items) == 1 else "them"


def _join_evidence(items):
    if len(items) <= 1:
        return "".join(items)
    return "%s and %s" % (", ".join(items[:-1]), items[-1])


def _parse_xml(text, what):
    if not isinstance(text, str) or not text.strip():
        raise HvmaintError("%s: no XML given" % what)
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise HvmaintError("%s: malformed XML: %s" % (what, exc)) from exc


def _text(elem, path):
    found = elem.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip() or None


def _cpu_to_string(elem):
    copy = ET.Element("cpu", dict(elem.attrib))
    copy.text = elem.text
    copy.extend(list(elem))
    if elem.tag == "mode":
        # domain capabilities' <mode name='host-model'> is the CPU a guest would get there: libvirt reads it
        # as a custom CPU matched exactly.
        copy.attrib.pop("name", None)
        copy.attrib.pop("supported", None)
        copy.set("mode", "custom")
        copy.set("match", "exact")
    return ET.tostring(copy, encoding="unicode").strip()


# Children of <cpu> that decide compatibility; topology, cache, numa and the like do not.
_KEY_CHILDREN = frozenset(("model", "vendor", "feature", "arch", "signature"))


def _cpu_key(elem):
    """What makes two CPU elements equivalent here (cheaper than serializing them)."""
    if elem is None:
        return None
    return (elem.tag, elem.get("mode"), elem.get("match"), elem.get("name"), elem.get("supported"),
            tuple((c.tag, (c.text or "").strip(), c.get("name"), c.get("policy"), c.get("family"), c.get("model"),
                   c.get("stepping")) for c in elem if c.tag in _KEY_CHILDREN))


@contextlib.contextmanager
def _gc_paused():
    # Building a matrix creates hundreds of thousands of small acyclic dicts and lists; the cyclic garbage
    # collector would run many full passes over them for nothing (about half the run time).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _CpuXml:
    """The <cpu> text libvirt is given, serialized only when a live libvirt is asked."""

    __slots__ = ("_elem", "_text")

    def __init__(self, elem):
        self._elem = elem
        self._text = None

    def __str__(self):
        if self._text is None:
            self._text = _cpu_to_string(self._elem)
        return self._text


# ---------------------------------------------------------------------------------------------------------------
# Host CPUs


class _HostCpu:
    """A host CPU resolved through its CPU map; shared by every host with the same CPU XML."""

    __slots__ = ("error", "map", "model", "vendor", "arch", "features", "signature", "kind", "cpu_xml", "texts",
                 "masks")

    def __init__(self, cpu_map):
        self.error = None  # message template (host name as _H)
        self.map = cpu_map
        self.model = None
        self.vendor = None
        self.arch = None
        self.features = frozenset()
        self.signature = None
        self.kind = None  # "capabilities" (what the CPU has) or "host-model" (what QEMU can give a guest)
        self.cpu_xml = None
        self.texts = {}  # message templates that depend on this host CPU only
        self.masks = {}  # id(CPU map) -> features as that map's bit mask

    def mask(self, cpu_map):
        """The features as a bit mask of `cpu_map` (features that map does not know are left out)."""
        key = id(cpu_map)
        mask = self.masks.get(key)
        if mask is None:
            mask = self.masks[key] = cpu_map.mask(self.features)
        return mask

    def label(self, name):
        return "%s (%s%s)" % (name, self.model, ", " + self.vendor if self.vendor else "")


def _find_host_cpu(root, what):
    """(cpu element, kind, arch) from any of the host CPU shapes libvirt prints."""
    tag = root.tag
    if tag == "capabilities":
        return root.find("host/cpu"), "capabilities", None
    if tag == "host":
        return root.find("cpu"), "capabilities", None
    if tag == "domainCapabilities":
        arch = _text(root, "arch")
        for mode in root.findall("cpu/mode"):
            if mode.get("name") == "host-model":
                return mode, "host-model", arch
        return None, "host-model", arch
    if tag == "mode":
        if root.get("name") != "host-model":
            raise HvmaintError("%s: <mode name='%s'> is not a host CPU; give domain capabilities' host-model"
                               " mode" % (what, root.get("name")))
        return root, "host-model", None
    if tag == "cpu":
        return root, ("capabilities" if root.get("mode") is None else "host-model"), None
    raise HvmaintError("%s: expected host capabilities, domain capabilities or a <cpu> element, not <%s>"
                       % (what, tag))


def _host_cpu(cpu, cpu_xml, kind, arch, cpu_map):
    host = _HostCpu(cpu_map)
    host.kind = kind
    host.cpu_xml = cpu_xml
    if cpu is None:
        host.error = "%s: the XML has no host CPU (capabilities without host/cpu, or domain capabilities" \
                     " without a host-model mode)" % _H
        return host
    if cpu.tag == "mode" and cpu.get("supported") == "no":
        host.error = "%s: its hypervisor reports host-model as unsupported, so it offers no CPU to compare" % _H
        return host
    mode = cpu.get("mode")
    if mode in PASSTHROUGH_MODES or (mode == "host-model" and _text(cpu, "model") is None):
        host.error = "%s: <cpu mode='%s'> is a guest's CPU request, not a host CPU; give the host's capabilities" \
                     " or domain capabilities" % (_H, mode)
        return host
    host.arch = _text(cpu, "arch") or arch
    if host.arch and host.arch not in X86_ARCHES:
        host.error = "%s: its CPU architecture is %s; this check understands x86 CPUs only" % (_H, host.arch)
        return host
    host.model = _text(cpu, "model")
    if host.model is None:
        host.error = "%s: its CPU has no <model>, so libvirt could not name it and it cannot be compared" % _H
        return host
    try:
        model = cpu_map.model(host.model)
    except HvmaintError as exc:
        host.error = "%s: %s" % (_H, exc)
        return host
    present = set()
    absent = set()
    for feat in cpu.findall("feature"):
        fname = feat.get("name")
        if not fname:
            continue
        fname = cpu_map.canonical(fname) or fname
        # Capabilities list the features the CPU has beyond its model (no policy); host-model CPUs use
        # require/disable like a guest definition.
        if feat.get("policy") in ("disable", "forbid"):
            absent.add(fname)
        else:
            present.add(fname)
    host.features = without_vmx_subfeatures(frozenset((model.features | present) - absent))
    host.vendor = _text(cpu, "vendor") or model.vendor
    sig = cpu.find("signature")
    if sig is not None:
        host.signature = (sig.get("family"), sig.get("model"), sig.get("stepping"))
    return host


# ---------------------------------------------------------------------------------------------------------------
# Guest CPUs


class _GuestCpu:
    """A guest CPU definition resolved through its CPU map; shared by every guest with the same <cpu>."""

    __slots__ = (
        "error", "map", "kind", "mode", "match", "model", "vendor", "vendors", "vendor_evidence", "required",
        "explicit_required", "explicit_names", "forbidden", "forced", "disabled", "listed", "added", "arch",
        "virttype", "cpu_xml", "source", "source_name", "notes", "per_map", "required_mask", "explicit_mask",
        "forbidden_mask", "forced_mask", "listed_mask", "added_mask",
    )

    def __init__(self, cpu_map):
        self.error = None  # message template (guest name as _G)
        self.map = cpu_map
        self.kind = None  # custom | host-model | passthrough | default | foreign (not an x86 architecture)
        self.mode = None
        self.match = None
        self.model = None
        self.vendor = None  # the vendor its <vendor> element names
        self.vendors = None  # vendors the guest can run on, or None when it does not care
        self.vendor_evidence = []
        self.required = frozenset()
        self.explicit_required = frozenset()
        self.explicit_names = frozenset()
        self.forbidden = frozenset()
        self.forced = frozenset()
        self.disabled = frozenset()
        self.listed = frozenset()
        self.added = frozenset()
        self.arch = None
        self.virttype = None
        self.cpu_xml = None
        self.source = None  # _HostCpu of the host the guest runs on, for host-passthrough
        self.source_name = None
        self.notes = []
        self.per_map = {}
        # the same sets as bit masks of self.map, for the per-pair work
        self.required_mask = self.explicit_mask = self.forbidden_mask = 0
        self.forced_mask = self.listed_mask = self.added_mask = 0


def _vendor_requirement(guest, vendor_elem, model_vendor):
    """Which vendors the guest can run on, and the evidence, in words."""
    evidence = []
    primary = vendor_elem or model_vendor
    if vendor_elem:
        evidence.append("its <vendor> is %s" % vendor_elem)
    if model_vendor:
        evidence.append("its model %s is %s model" % (guest.model, _a(model_vendor)))
    allowed = (primary,) if primary else None
    for ext, (label, ext_vendors) in EXTENSIONS.items():
        if ext not in guest.required:
            continue
        if allowed is None:
            allowed = ext_vendors
        elif not set(allowed) & set(ext_vendors):
            continue  # contradicts the named vendor: reported as a missing feature instead
        evidence.append("its CPU exposes %s, %s" % (ext, label))
    return allowed, evidence


def _find_guest_cpu(root, what):
    if root.tag == "domain":
        os_type = root.find("os/type")
        arch = os_type.get("arch") if os_type is not None else None
        return root.find("cpu"), root.get("type"), arch
    if root.tag == "cpu":
        return root, None, None
    raise HvmaintError("%s: expected a <domain> or <cpu> element, not <%s>" % (what, root.tag))


def _guest_cpu(cpu, cpu_xml, virttype, arch, cpu_map):
    guest = _GuestCpu(cpu_map)
    guest.virttype = virttype or "kvm"
    guest.arch = arch
    guest.cpu_xml = cpu_xml
    if arch and arch not in X86_ARCHES:
        guest.kind = "foreign"  # _arch_mismatch judges it; this check reads x86 CPU definitions only
        return guest
    if cpu is None:
        guest.kind = "default"
        return guest
    guest.model = _text(cpu, "model")
    mode = cpu.get("mode") or "custom"
    guest.mode = mode
    guest.match = cpu.get("match") or ("exact" if mode == "custom" else None)
    if mode in PASSTHROUGH_MODES:
        guest.kind = "passthrough"
    elif mode == "host-model":
        # A running host-model guest's live XML names the model it was expanded to (newer libvirt keeps
        # mode='host-model'); that expansion is what must fit the destination.
        guest.kind = "custom" if guest.model else "host-model"
    elif mode == "custom":
        guest.kind = "custom" if guest.model else "default"
    else:
        guest.error = "%s: unknown CPU mode %r" % (_G, mode)
        return guest

    by_policy = {policy: set() for policy in POLICIES}
    unknown = []
    for feat in cpu.findall("feature"):
        fname = feat.get("name")
        policy = feat.get("policy") or "require"  # libvirt: a feature without policy is required
        if not fname:
            continue
        if policy not in by_policy:
            guest.error = "%s: feature %s has policy %r; libvirt knows %s" % (_G, fname, policy, ", ".join(POLICIES))
            return guest
        canonical = cpu_map.canonical(fname)
        if canonical is None:
            unknown.append(fname)
            continue
        by_policy[policy].add(canonical)
    if unknown:
        # libvirt refuses such a definition ("unknown CPU feature"), so it is not a guess either way.
        guest.error = "%s: CPU feature%s %s %s not in the CPU map at %s; pass the CPU map of the libvirt that" \
                      " produced this guest" % (_G, "s" if len(unknown) > 1 else "", _names(unknown),
                                                "are" if len(unknown) > 1 else "is", cpu_map.directory)
        return guest

    vendor_elem = guest.vendor = _text(cpu, "vendor")
    if vendor_elem and vendor_elem not in cpu_map.vendors:
        guest.error = "%s: CPU vendor %r is not one the CPU map at %s knows (%s)" % (
            _G, vendor_elem, cpu_map.directory, ", ".join(sorted(cpu_map.vendors)))
        return guest

    model_features = frozenset()
    model_vendor = None
    added = frozenset()
    if guest.kind == "custom":
        try:
            model = cpu_map.model(guest.model)
        except HvmaintError as exc:
            guest.error = "%s: %s" % (_G, exc)
            return guest
        model_features = model.features
        model_vendor = model.vendor
        added = model.added
        if vendor_elem and model_vendor and vendor_elem != model_vendor:
            guest.error = "%s: its <vendor> is %s but model %s is %s model; libvirt refuses this definition" % (
                _G, vendor_elem, guest.model, _a(model_vendor))
            return guest
    elif vendor_elem and guest.kind != "passthrough":
        guest.error = "%s: it names CPU vendor %s without a model" % (_G, vendor_elem)
        return guest

    not_needed = by_policy["disable"] | by_policy["forbid"] | by_policy["optional"] | by_policy["force"]
    required = without_vmx_subfeatures(frozenset((model_features | by_policy["require"]) - not_needed))
    guest.required = required
    guest.explicit_required = frozenset(by_policy["require"])
    guest.explicit_names = frozenset().union(*by_policy.values())
    guest.forbidden = frozenset(by_policy["forbid"])
    guest.forced = frozenset(by_policy["force"])
    guest.disabled = frozenset(by_policy["disable"])
    guest.listed = required | by_policy["optional"] | by_policy["disable"] | by_policy["force"]
    guest.added = added & required
    mask = cpu_map.mask
    guest.required_mask = mask(guest.required)
    guest.explicit_mask = mask(guest.explicit_required)
    guest.forbidden_mask = mask(guest.forbidden)
    guest.forced_mask = mask(guest.forced)
    guest.listed_mask = mask(guest.listed)
    guest.added_mask = mask(guest.added)
    if guest.kind != "passthrough":
        guest.vendors, guest.vendor_evidence = _vendor_requirement(guest, vendor_elem, model_vendor)
    if guest.virttype == "qemu":
        guest.notes.append("%s runs under TCG (domain type 'qemu'): QEMU emulates its CPU, so the host CPU does"
                           " not limit it" % _G)
    elif guest.match == "minimum" and guest.kind == "custom":
        guest.notes.append("%s uses match='minimum': libvirt may have given the running guest more features than"
                           " its definition lists; check its live XML (virsh dumpxml) to be sure" % _G)
    return guest


def _guest_for_map(guest, host_map):
    """(required features as a mask of the guest's map, blocking reasons, notes) as `host_map`'s libvirt sees it."""
    if host_map is guest.map:
        return guest.required_mask, (), ()
    key = id(host_map)
    cached = guest.per_map.get(key)
    if cached is not None:
        return cached
    required = guest.required
    problems = []
    notes = []
    if guest.kind in ("custom", "host-model"):
        if guest.kind == "custom" and not host_map.has_model(guest.model):
            problems.append("%s's CPU map (%s) does not know model %s, so its libvirt will refuse the guest"
                            % (_H, host_map.directory, guest.model))
        unknown = [f for f in guest.explicit_names if host_map.canonical(f) is None]
        if unknown:
            problems.append("%s's CPU map (%s) does not know feature%s %s that the guest names, so its libvirt"
                            " will refuse the guest" % (_H, host_map.directory, "s" if len(unknown) > 1 else "",
                                                        _names(unknown)))
        # Features the guest gets from its model but the host's libvirt has never heard of cannot appear in
        # that host's capabilities, so their absence proves nothing.
        unseen = frozenset(f for f in required if host_map.canonical(f) is None) - guest.explicit_names
        if unseen:
            required = required - unseen
            notes.append("not checked: %s (features of model %s that %s's CPU map does not know)"
                         % (_names(unseen), guest.model, _H))
    cached = (guest.map.mask(required), tuple(problems), tuple(notes))
    guest.per_map[key] = cached
    return cached


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


def from_facts(hypervisors):
    """(guests, hosts) entries from hvmaint.libvirt.hypervisor_info facts (see docs/facts.md)."""
    guests = []
    hosts = []
    for index, facts in enumerate(hypervisors or ()):
        if not isinstance(facts, dict) or not facts.get("name"):
            raise HvmaintError("hypervisors[%d] is not a hypervisor_info result (it has no name)" % index)
        cpu = facts.get("cpu") or {}
        # The host CPU itself (capabilities), as for live_hosts: host-passthrough guests compare like with like.
        # What the hypervisor can give a guest (domain capabilities' host-model) rather than what the CPU has:
        # KVM may withhold features the CPU has (nested hosts often lack pni, for example).
        caps = cpu.get("host_model_xml") or cpu.get("capabilities_xml")
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
