"""Loading libvirt CPU maps: the 11.3.0 map from the fixtures, the installed 9.0 map, and small hand-made maps."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _cpu_map
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "cpu")
MAP_11 = os.path.join(FIXTURES, "cpu_map-11.3.0")
MAP_9 = _cpu_map.DEFAULT_CPU_MAP_DIR

needs_installed_map = pytest.mark.skipif(not os.path.isfile(os.path.join(MAP_9, "index.xml")),
                                         reason="no libvirt CPU map installed at %s" % MAP_9)


def _model_file(directory, name):
    """What a model file itself says: (features, vendor, parent)."""
    model = ET.parse(os.path.join(directory, "x86_%s.xml" % name)).getroot().find("model")
    vendor = model.find("vendor")
    parent = model.find("model")
    return ({f.get("name") for f in model.findall("feature")}, vendor.get("name") if vendor is not None else None,
            parent.get("name") if parent is not None else None)


def _index_models(directory):
    index = ET.parse(os.path.join(directory, "index.xml")).getroot()
    x86 = next(a for a in index.findall("arch") if a.get("name") == "x86")
    names = []
    for include in x86.iter("include"):
        filename = include.get("filename")
        if filename not in ("x86_vendors.xml", "x86_features.xml"):
            names.append(ET.parse(os.path.join(directory, filename)).getroot().find("model").get("name"))
    return names


@pytest.fixture(autouse=True)
def _fresh_cache():
    _cpu_map.clear_cache()
    yield
    _cpu_map.clear_cache()


def _write_map(directory, index_body, files):
    directory.mkdir(exist_ok=True)
    (directory / "index.xml").write_text("<cpus><arch name='x86'>%s</arch></cpus>" % index_body)
    for name, text in files.items():
        (directory / name).write_text(text)
    return str(directory)


def test_11_3_map_has_every_model_of_its_index():
    cpu_map = _cpu_map.load(MAP_11)
    names = _index_models(MAP_11)
    assert sorted(cpu_map.model_names()) == sorted(names)
    assert {"Intel", "AMD", "Hygon"} <= set(cpu_map.vendors)


@pytest.mark.parametrize("versioned, base", [
    ("Skylake-Server-v1", "Skylake-Server"),
    ("Skylake-Server-v2", "Skylake-Server-IBRS"),
    ("Haswell-v2", "Haswell-noTSX"),
    ("qemu64-v1", "qemu64"),
])
def test_versioned_model_inherits_its_base(versioned, base):
    _own, _vendor, parent = _model_file(MAP_11, versioned)
    assert parent == base  # the map file says so; the loader must follow it
    cpu_map = _cpu_map.load(MAP_11)
    model = cpu_map.model(versioned)
    assert model.features == cpu_map.model(base).features
    assert model.vendor == cpu_map.model(base).vendor
    assert model.versioned and not cpu_map.model(base).versioned


def test_versioned_model_with_its_own_features():
    own, vendor, parent = _model_file(MAP_11, "EPYC-Rome-v3")
    model = _cpu_map.load(MAP_11).model("EPYC-Rome-v3")
    assert parent is None
    assert model.features == own
    assert model.vendor == vendor == "AMD"
    assert "svm" in model.features


def test_vendor_neutral_models_have_no_vendor():
    cpu_map = _cpu_map.load(MAP_11)
    for name in ("qemu64", "kvm64", "486"):
        assert _model_file(MAP_11, name)[1] is None
        assert cpu_map.vendor_of(name) is None
    assert cpu_map.vendor_of("Conroe") == "Intel"


def test_feature_aliases_resolve_to_libvirt_names():
    cpu_map = _cpu_map.load(MAP_11)
    assert cpu_map.canonical("sse4_1") == "sse4.1"
    assert cpu_map.canonical("sse4.1") == "sse4.1"
    assert cpu_map.canonical("tsc-adjust") == "tsc_adjust"
    assert cpu_map.canonical("no-such-feature") is None


def test_non_migratable_features_are_known():
    cpu_map = _cpu_map.load(MAP_11)
    assert {"invtsc", "xsaves"} <= cpu_map.non_migratable


def test_features_added_to_a_model_later_are_marked():
    root = ET.parse(os.path.join(MAP_11, "x86_Haswell-noTSX.xml")).getroot()
    marked = {f.get("name") for f in root.iter("feature") if f.get("added") == "yes"}
    model = _cpu_map.load(MAP_11).model("Haswell-noTSX")
    assert marked and model.added == marked
    assert all(name.startswith("vmx-") for name in marked)
    # a versioned model inherits the marks of its base
    assert _cpu_map.load(MAP_11).model("Haswell-v2").added == marked


def test_unknown_model_names_model_and_map():
    with pytest.raises(HvmaintError) as exc:
        _cpu_map.load(MAP_11).model("Skylake-Server-v99")
    assert "Skylake-Server-v99" in str(exc.value)
    assert MAP_11 in str(exc.value)
    assert exc.value.details["model"] == "Skylake-Server-v99"


def test_maps_are_parsed_once_per_directory():
    first = _cpu_map.load(MAP_11)
    assert _cpu_map.load(MAP_11) is first
    assert _cpu_map.load(MAP_11 + os.sep) is first  # same directory, other spelling
    _cpu_map.clear_cache()
    assert _cpu_map.load(MAP_11) is not first


@needs_installed_map
def test_installed_9_0_map_has_no_versioned_models():
    cpu_map = _cpu_map.load()
    assert cpu_map.directory == MAP_9
    assert sorted(cpu_map.model_names()) == sorted(_index_models(MAP_9))
    assert cpu_map.has_model("Skylake-Server")
    assert not any(cpu_map.model(name).versioned for name in cpu_map.model_names())
    with pytest.raises(HvmaintError, match="'Skylake-Server-v1' is not in the CPU map at %s" % MAP_9):
        cpu_map.model("Skylake-Server-v1")
    own, vendor, _parent = _model_file(MAP_9, "Skylake-Server")
    assert cpu_map.model("Skylake-Server").features == own
    assert cpu_map.vendor_of("Skylake-Server") == vendor == "Intel"


def test_missing_directory(tmp_path):
    with pytest.raises(HvmaintError, match="does not exist"):
        _cpu_map.load(str(tmp_path / "nowhere"))


def test_directory_without_index(tmp_path):
    with pytest.raises(HvmaintError, match="has no index.xml"):
        _cpu_map.load(str(tmp_path))


def test_malformed_map_file_is_named(tmp_path):
    directory = _write_map(tmp_path / "map", "<include filename='x86_Broken.xml'/>",
                           {"x86_Broken.xml": "<cpus><model name='Broken'>"})
    with pytest.raises(HvmaintError, match="x86_Broken.xml is not valid XML"):
        _cpu_map.load(directory)


def test_inheritance_chain_groups_and_inline_definitions(tmp_path):
    directory = _write_map(
        tmp_path / "map",
        "<vendor name='Intel' string='GenuineIntel'/>"
        "<feature name='a'><alias name='a-alias' source='qemu'/></feature><feature name='b'/><feature name='c'/>"
        "<group name='g'><include filename='x86_B.xml'/></group>"
        "<model name='A'><vendor name='Intel'/><feature name='a-alias'/></model>",
        {"x86_B.xml": "<cpus><model name='B'><model name='A'/><feature name='b'/></model>"
                      "<model name='C'><model name='B'/><feature name='c' added='yes'/></model></cpus>"},
    )
    cpu_map = _cpu_map.load(directory)
    assert cpu_map.model("A").features == {"a"}  # aliases in models resolve too
    assert cpu_map.model("C").features == {"a", "b", "c"}
    assert cpu_map.model("C").vendor == "Intel"
    assert cpu_map.model("C").added == {"c"}
    assert cpu_map.model("C").parent == "B"


def test_inheritance_cycle_is_reported(tmp_path):
    directory = _write_map(tmp_path / "map",
                           "<model name='A'><model name='B'/></model><model name='B'><model name='A'/></model>", {})
    with pytest.raises(HvmaintError, match="inherits from itself"):
        _cpu_map.load(directory)


def test_missing_parent_is_reported(tmp_path):
    directory = _write_map(tmp_path / "map", "<model name='A'><model name='Gone'/></model>", {})
    with pytest.raises(HvmaintError, match="A inherits from Gone, which the map does not define"):
        _cpu_map.load(directory)


def test_map_without_x86(tmp_path):
    (tmp_path / "index.xml").write_text("<cpus><arch name='ppc64'/></cpus>")
    with pytest.raises(HvmaintError, match="no x86 section"):
        _cpu_map.load(str(tmp_path))


def test_without_vmx_subfeatures():
    assert _cpu_map.without_vmx_subfeatures(frozenset({"vmx", "vmx-ept"})) == {"vmx", "vmx-ept"}
    assert _cpu_map.without_vmx_subfeatures(frozenset({"sse2", "vmx-ept"})) == {"sse2"}
    # kvm64 in libvirt 11.3 lists VMX capabilities but not vmx itself: they must not count without it
    kvm64 = _cpu_map.load(MAP_11).model("kvm64").features
    assert any(f.startswith("vmx-") for f in kvm64)
    assert not any(f.startswith("vmx-") for f in _cpu_map.without_vmx_subfeatures(kvm64))


def test_masks_turn_back_into_sorted_names():
    cpu_map = _cpu_map.load(MAP_11)
    everything = sorted(cpu_map.features)
    assert len(everything) > 64 * 5  # several 64-bit words
    assert cpu_map.names(cpu_map.mask(everything)) == everything
    some = everything[::7] + everything[63:66] + [everything[-1]]
    assert cpu_map.names(cpu_map.mask(some)) == sorted(set(some))
    assert cpu_map.mask(["no-such-feature"]) == 0 and cpu_map.names(0) == []
    assert cpu_map.bit("sse2") and cpu_map.mask(["sse2", "sse"]) == cpu_map.bit("sse2") | cpu_map.bit("sse")


def test_mask_name_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(_cpu_map, "_WORD_CACHE_LIMIT", 3)
    cpu_map = _cpu_map.load(MAP_11)
    names = sorted(cpu_map.features)
    for start in range(0, 64):
        assert cpu_map.names(cpu_map.mask(names[start:start + 5])) == names[start:start + 5]
    assert len(cpu_map._word_names) <= 4
