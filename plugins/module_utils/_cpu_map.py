# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Reads libvirt's x86 CPU map (the directory behind /usr/share/libvirt/cpu_map) into plain Python sets.

A CPU map says which features each named CPU model has, which vendor it belongs to, and which feature names
exist. libvirt ships a different map with every release (libvirt 9.0 has no versioned ``-vN`` models, 11.x
has), so a CPU definition must be resolved through the map of the libvirt that produced it.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError

DEFAULT_CPU_MAP_DIR = "/usr/share/libvirt/cpu_map"

# Prefix of the VMX capability features (libvirt >= 9.10 lists them in Intel models); they only mean
# something when the CPU also has vmx itself.
VMX_SUBFEATURE_PREFIX = "vmx-"

# Parsed maps by real path: a module run resolving thousands of CPUs parses each map once.
_CACHE = {}

_WORD_CACHE_LIMIT = 200000  # (word index, 64-bit word) -> feature names, see CpuMap.names


class CpuModel:
    """One named model with its inheritance already applied."""

    __slots__ = ("name", "vendor", "features", "added", "decode_host", "decode_guest", "parent")

    def __init__(self, name, vendor, features, added, decode_host, decode_guest, parent):
        self.name = name
        self.vendor = vendor
        self.features = features
        self.added = added
        self.decode_host = decode_host
        self.decode_guest = decode_guest
        self.parent = parent

    @property
    def versioned(self):
        # QEMU's versioned aliases (Skylake-Server-v4); older libvirt does not know them.
        base, sep, version = self.name.rpartition("-v")
        return bool(sep and base and version.isdigit())


class CpuMap:
    """The x86 part of one CPU map directory."""

    def __init__(self, directory):
        self.directory = directory
        self.vendors = {}  # name -> CPUID vendor string
        self.features = set()  # canonical feature names
        self.non_migratable = set()  # features libvirt marks migratable='no' (invtsc, xsaves)
        self.aliases = {}  # alias -> canonical feature name
        self.models = {}  # name -> CpuModel
        self.model_aliases = {}  # alias -> model name
        self._raw_models = {}  # name -> (vendor, parent, features, added, decode_host, decode_guest)
        self._order = []  # model names in map order (libvirt's order: oldest first)
        self._bits = None  # feature -> bit, see mask()
        self._bit_names = []
        self._words = 1
        self._word_names = {}
        self._byte_names = {}

    # -- lookups ---------------------------------------------------------------------------------------------

    def has_model(self, name):
        return name in self.models or name in self.model_aliases

    def model(self, name):
        """The CpuModel called `name`, or HvmaintError naming the model and this map."""
        real = self.model_aliases.get(name, name)
        try:
            return self.models[real]
        except KeyError:
            raise HvmaintError(
                "CPU model %r is not in the CPU map at %s (%d x86 models known); pass the CPU map of the libvirt"
                " that produced this CPU definition" % (name, self.directory, len(self.models)),
                model=name, cpu_map_dir=self.directory,
            ) from None

    def canonical(self, feature):
        """The map's own name for `feature` (resolving aliases such as sse4_1), or None if the map lacks it."""
        if feature in self.features:
            return feature
        return self.aliases.get(feature)

    def expand(self, name):
        """Full feature set of model `name`."""
        return self.model(name).features

    def vendor_of(self, name):
        return self.model(name).vendor

    def model_names(self):
        return list(self._order)

    # -- feature sets as bit masks ---------------------------------------------------------------------------
    # A fleet-wide matrix does hundreds of thousands of set operations on sets of ~200 feature names; on
    # Python ints they cost a fraction of a microsecond. Bits are assigned in name order, so a mask turns back
    # into a sorted list without sorting.

    def _index(self):
        if self._bits is None:
            names = sorted(self.features)
            self._bit_names = names
            self._bits = {name: 1 << i for i, name in enumerate(names)}
            self._words = (len(names) + 63) // 64 or 1
        return self._bits

    def bit(self, name):
        """The bit of canonical feature `name`, 0 when the map does not know it."""
        return self._index().get(name, 0)

    def mask(self, names):
        """Bit mask of the canonical feature names in `names` that the map knows (others are left out)."""
        bits = self._index()
        mask = 0
        for name in names:
            mask |= bits.get(name, 0)
        return mask

    def names(self, mask):
        """The sorted feature names of a mask made by mask()."""
        if not mask:
            return []
        self._index()
        out = []
        words = self._word_names
        if len(words) > _WORD_CACHE_LIMIT:
            words.clear()  # bounded: an all-distinct fleet would otherwise grow it without end
        data = memoryview(mask.to_bytes(self._words * 8, sys.byteorder)).cast("Q")
        for index, word in enumerate(data):
            if not word:
                continue
            key = (index, word)
            chunk = words.get(key)
            if chunk is None:
                chunk = words[key] = self._word_to_names(index, word)
            out.extend(chunk)
        return out

    def _word_to_names(self, index, word):
        chunk = []
        for shift in range(0, 64, 8):
            byte = (word >> shift) & 0xFF
            if not byte:
                continue
            key = (index * 8 + shift // 8, byte)
            names = self._byte_names.get(key)
            if names is None:
                base = key[0] * 8
                names = self._byte_names[key] = tuple(
                    self._bit_names[base + bit] for bit in range(8) if byte >> bit & 1)
            chunk.extend(names)
        return tuple(chunk)

    # -- loading ---------------------------------------------------------------------------------------------

    def _add_vendor(self, elem):
        name = elem.get("name")
        if name:
            self.vendors[name] = elem.get("string")

    def _add_feature(self, elem):
        name = elem.get("name")
        if not name:
            return
        self.features.add(name)
        if elem.get("migratable") == "no":
            self.non_migratable.add(name)
        for alias in elem.findall("alias"):
            if alias.get("name"):
                self.aliases[alias.get("name")] = name

    def _add_model(self, elem, source):
        name = elem.get("name")
        if not name:
            raise HvmaintError("CPU map %s: a <model> in %s has no name" % (self.directory, source))
        vendor_elem = elem.find("vendor")
        parent_elem = elem.find("model")
        decode = elem.find("decode")
        features = set()
        added = set()
        for feat in elem.findall("feature"):
            fname = feat.get("name")
            if not fname:
                continue
            features.add(fname)
            if feat.get("added") == "yes":
                added.add(fname)
        self._raw_models[name] = (
            vendor_elem.get("name") if vendor_elem is not None else None,
            parent_elem.get("name") if parent_elem is not None else None,
            features,
            added,
            decode is None or decode.get("host") != "off",
            decode is None or decode.get("guest") != "off",
        )
        self._order.append(name)
        for alias in elem.findall("alias"):
            if alias.get("name"):
                self.model_aliases[alias.get("name")] = name

    def _resolve(self, name, trail=()):
        if name in self.models:
            return self.models[name]
        if name in trail:
            raise HvmaintError("CPU map %s: model %s inherits from itself (%s)"
                               % (self.directory, name, " -> ".join(trail + (name,))))
        try:
            vendor, parent, features, added, decode_host, decode_guest = self._raw_models[name]
        except KeyError:
            raise HvmaintError("CPU map %s: model %s inherits from %s, which the map does not define"
                               % (self.directory, trail[-1], name)) from None
        features = {self.canonical(f) or f for f in features}
        added = {self.canonical(f) or f for f in added}
        if parent:
            base = self._resolve(parent, trail + (name,))
            features |= base.features
            added |= base.added
            vendor = vendor or base.vendor
        model = CpuModel(name, vendor, frozenset(features), frozenset(added), decode_host, decode_guest, parent)
        self.models[name] = model
        return model

    def _finish(self):
        for name in self._order:
            self._resolve(name)
        self._raw_models = {}


def _parse_file(path):
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise HvmaintError("CPU map file %s is not valid XML: %s" % (path, exc)) from exc
    except OSError as exc:
        raise HvmaintError("cannot read CPU map file %s: %s" % (path, exc.strerror or exc)) from exc


def _walk(cpu_map, directory, container, source, seen):
    """Handle the children of an <arch> element, a <group>, or an included file's <cpus>."""
    for child in container:
        tag = child.tag
        if tag == "include":
            filename = child.get("filename")
            if not filename:
                continue
            path = os.path.join(directory, filename)
            if path in seen:
                continue
            seen.add(path)
            _walk(cpu_map, directory, _parse_file(path), filename, seen)
        elif tag == "group":
            _walk(cpu_map, directory, child, source, seen)
        elif tag == "vendor":
            cpu_map._add_vendor(child)
        elif tag == "feature":
            cpu_map._add_feature(child)
        elif tag == "model":
            cpu_map._add_model(child, source)


def _load_uncached(directory):
    index = os.path.join(directory, "index.xml")
    if not os.path.isdir(directory):
        raise HvmaintError("CPU map directory %s does not exist (libvirt installs it as %s; set cpu_map_dir)"
                           % (directory, DEFAULT_CPU_MAP_DIR), cpu_map_dir=directory)
    if not os.path.isfile(index):
        raise HvmaintError("%s is not a libvirt CPU map directory: it has no index.xml" % directory,
                           cpu_map_dir=directory)
    root = _parse_file(index)
    arch = None
    for elem in root.findall("arch"):
        if elem.get("name") == "x86":
            arch = elem
            break
    if arch is None:
        raise HvmaintError("CPU map %s has no x86 section in index.xml" % directory, cpu_map_dir=directory)
    cpu_map = CpuMap(directory)
    _walk(cpu_map, directory, arch, "index.xml", set())
    cpu_map._finish()
    if not cpu_map.models:
        raise HvmaintError("CPU map %s defines no x86 CPU models" % directory, cpu_map_dir=directory)
    return cpu_map


def load(directory=None):
    """The CpuMap for `directory` (default: the installed one), parsed once per process."""
    directory = directory or DEFAULT_CPU_MAP_DIR
    key = os.path.realpath(directory)
    cpu_map = _CACHE.get(key)
    if cpu_map is None:
        cpu_map = _load_uncached(directory)
        _CACHE[key] = cpu_map
    return cpu_map


def clear_cache():
    _CACHE.clear()


def without_vmx_subfeatures(features):
    """Drop vmx-* capability features unless vmx itself is present.

    libvirt >= 9.10 lists VMX capabilities (vmx-ept, vmx-vpid, ...) inside Intel models and even kvm64, but
    they describe what nested guests get and are meaningless (and never exposed) without vmx; counting them
    would make e.g. kvm64 look impossible on AMD hosts.
    """
    if "vmx" in features:
        return features
    if not any(f.startswith(VMX_SUBFEATURE_PREFIX) for f in features):
        return features
    return frozenset(f for f in features if not f.startswith(VMX_SUBFEATURE_PREFIX))
