# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""CPU profiles for cpu_compat: each distinct guest or host CPU definition parsed and expanded once through
libvirt's CPU map (the verdicts on them are in _cpu_verdicts.py; the method is described in _cpu_compat.py).
"""

from __future__ import annotations

import contextlib
import gc
import xml.etree.ElementTree as ET

from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_map import (
    without_vmx_subfeatures,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    HvmaintError,
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
