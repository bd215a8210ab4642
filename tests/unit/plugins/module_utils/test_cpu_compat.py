"""Offline CPU compatibility, on real CPUs (libvirt's cputestdata) resolved through real CPU maps."""

from __future__ import annotations

import contextlib
import os
import time
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _cpu_compat as cc
from ansible_collections.hvmaint.libvirt.plugins.module_utils import _cpu_verdicts as verdicts
from ansible_collections.hvmaint.libvirt.plugins.module_utils import _cpu_map
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, libvirt

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "cpu")
MAP_11 = os.path.join(FIXTURES, "cpu_map-11.3.0")
MAP_9 = _cpu_map.DEFAULT_CPU_MAP_DIR
INTEL = ["Core2-E6850", "Xeon-E5-2650-v3", "Xeon-Gold-6148", "Xeon-Platinum-8268", "Ice-Lake-Server"]
AMD = ["Opteron-6282", "Ryzen-7-1800X-Eight-Core", "EPYC-7601-32-Core", "EPYC-7502-32-Core", "FX-8150"]

needs_installed_map = pytest.mark.skipif(not os.path.isfile(os.path.join(MAP_9, "index.xml")),
                                         reason="no libvirt CPU map installed at %s" % MAP_9)


def fixture(cpu, kind):
    with open(os.path.join(FIXTURES, "x86_64-cpuid-%s-%s.xml" % (cpu, kind))) as handle:
        return handle.read()


def cpu_xml(model=None, require=(), mode="custom", match="exact", vendor=None, **policies):
    """A guest <cpu>; policies maps a policy name to feature names, e.g. disable=['svm']."""
    attrs = "mode='%s'" % mode + (" match='%s'" % match if match else "")
    body = "<model fallback='forbid'>%s</model>" % model if model else ""
    body += "<vendor>%s</vendor>" % vendor if vendor else ""
    body += "".join("<feature policy='require' name='%s'/>" % f for f in require)
    for policy, names in policies.items():
        body += "".join("<feature policy='%s' name='%s'/>" % (policy, f) for f in names)
    return "<cpu %s>%s</cpu>" % (attrs, body)


def with_features(xml, policy, names):
    extra = "".join("<feature policy='%s' name='%s'/>" % (policy, n) for n in names)
    return xml.replace("</cpu>", extra + "</cpu>")


def domain(cpu, domain_type="kvm", name="vm1"):
    return ("<domain type='%s'><name>%s</name><memory unit='KiB'>1048576</memory>"
            "<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>%s<devices/></domain>"
            % (domain_type, name, cpu))


def compare(guest, host, **kwargs):
    kwargs.setdefault("cpu_map_dir", MAP_11)
    return verdicts.compare(guest, host, **kwargs)


def model(name, directory=MAP_11):
    return _cpu_map.load(directory).model(name)


def host_features(cpu):
    """The features a capabilities fixture claims, the plain way: its model's plus those it lists."""
    host = fixture(cpu, "host")
    listed = {line.split("'")[1] for line in host.splitlines() if "<feature " in line}
    name = host.split("<model>")[1].split("</model>")[0]
    return model(name).features | listed


# -- same vendor, old and new ----------------------------------------------------------------------------------


def test_older_guest_on_newer_host_is_compatible():
    result = compare(fixture("Xeon-E5-2650-v3", "guest"), fixture("Xeon-Platinum-8268", "host"),
                     guest_name="vm1", host_name="hv2")
    assert result["guest"] == "vm1" and result["host"] == "hv2"
    assert result["compatible"] is True
    assert result["result"] == "superset"  # the Cascade Lake has features the Haswell guest does not list
    assert result["missing_features"] == []
    assert result["guest_model"] == "Haswell-noTSX" and result["host_model"] == "Cascadelake-Server-v1"
    # The one feature the host does not report is a VMX capability libvirt added to Haswell-noTSX later:
    late = model("Haswell-noTSX").added - host_features("Xeon-Platinum-8268")
    assert result["unverified_features"] == sorted(late) == ["vmx-eptp-switching"]
    assert "added='yes'" in result["reasons"][0]


def test_newer_guest_on_older_host_names_missing_features():
    result = compare(fixture("Ice-Lake-Server", "guest"), fixture("Core2-E6850", "host"), host_name="hv9")
    assert result["result"] == "incompatible" and result["compatible"] is False
    missing = set(result["missing_features"])
    assert result["missing_features"] == sorted(missing)
    # every missing feature is one the guest needs (model or explicit) and the Core2 host lacks
    needed = model("Icelake-Server").features | {"sgx", "avx512ifma", "fsrm"}
    assert {"avx512f", "avx512bw", "avx2", "aes", "sgx"} <= missing
    assert missing <= needed | set(fixture("Ice-Lake-Server", "guest").split("'"))
    assert not missing & host_features("Core2-E6850")
    from_model = next(r for r in result["reasons"] if r.endswith("required by Icelake-Server"))
    assert from_model.startswith("hv9 lacks 3dnowprefetch, abm, adx")
    assert any("which the guest requires explicitly" in r and "avx512ifma" in r for r in result["reasons"])


def test_each_fixture_guest_is_identical_on_its_own_host():
    guests = [{"name": c, "xml": fixture(c, "guest")} for c in INTEL + AMD]
    hosts = [{"name": c, "xml": fixture(c, "host")} for c in INTEL + AMD]
    matrix = verdicts.check_matrix(guests, hosts, MAP_11)
    assert len(matrix) == 100
    assert [(p["guest"], p["host"]) for p in matrix[:3]] == [(INTEL[0], INTEL[0]), (INTEL[0], INTEL[1]),
                                                             (INTEL[0], INTEL[2])]
    for pair in matrix:
        if pair["guest"] == pair["host"]:
            assert pair["result"] == "identical", pair
        same_vendor = (pair["guest"] in INTEL) == (pair["host"] in INTEL)
        if not same_vendor:
            assert pair["result"] == "incompatible"
            assert pair["reasons"][0].startswith("vendor mismatch: the guest requires ")


# -- vendors and nested virtualization -------------------------------------------------------------------------


def test_intel_guest_on_amd_host_is_a_vendor_mismatch():
    result = compare(fixture("Xeon-Gold-6148", "guest"), fixture("EPYC-7502-32-Core", "host"), host_name="hv3")
    assert result["result"] == "incompatible"
    assert result["reasons"][0] == (
        "vendor mismatch: the guest requires Intel (its <vendor> is Intel, its model Skylake-Server is an Intel"
        " model and its CPU exposes vmx, Intel VT-x); hv3 is AMD")
    assert "vmx" in result["missing_features"]


def test_vmx_guest_on_amd_host():
    # kvm64 has no vendor in the map: only vmx ties this guest to Intel
    assert model("kvm64").vendor is None
    result = compare(cpu_xml("kvm64", require=["vmx"]), fixture("EPYC-7502-32-Core", "host"), host_name="hv3")
    assert result["result"] == "incompatible"
    assert result["missing_features"] == ["vmx"]
    assert result["reasons"][0] == \
        "vendor mismatch: the guest requires Intel (its CPU exposes vmx, Intel VT-x); hv3 is AMD"
    assert result["reasons"][1].startswith("nested virtualization: the guest exposes vmx (Intel VT-x) to its own"
                                           " guests and hv3 does not have it; hv3 is AMD, whose extension is svm"
                                           " (AMD-V)")


def test_svm_guest_on_intel_host():
    result = compare(cpu_xml("kvm64", require=["svm"]), fixture("Xeon-Gold-6148", "host"), host_name="hv1")
    assert result["result"] == "incompatible"
    assert result["missing_features"] == ["svm"]
    assert result["reasons"][0] == \
        "vendor mismatch: the guest requires AMD or Hygon (its CPU exposes svm, AMD-V); hv1 is Intel"
    assert "whose extension is vmx (Intel VT-x)" in result["reasons"][1]


def test_amd_model_guest_exposes_svm_on_intel_host():
    assert "svm" in model("EPYC-Rome").features
    result = compare(fixture("EPYC-7502-32-Core", "guest"), fixture("Ice-Lake-Server", "host"), host_name="hv4")
    assert "svm" in result["missing_features"]
    assert "its model EPYC-Rome is an AMD model and its CPU exposes svm, AMD-V); hv4 is Intel" in result["reasons"][0]


def test_intel_host_without_vmx_suggests_enabling_vt_x():
    host = fixture("Core2-E6850", "host").replace("<feature name='vmx'/>", "")
    result = compare(cpu_xml("kvm64", require=["vmx"]), host, host_name="hv5")
    assert result["result"] == "incompatible" and result["missing_features"] == ["vmx"]
    assert len(result["reasons"]) == 1  # same vendor: no vendor mismatch
    assert "enable Intel VT-x in hv5's firmware" in result["reasons"][0]


def test_guest_without_vmx_ignores_vmx_capabilities():
    # Conroe in libvirt 11.3 lists vmx-* capabilities; without vmx they must not matter on an AMD host.
    assert any(f.startswith("vmx-") for f in model("kvm64").features)
    result = compare(cpu_xml("kvm64"), fixture("EPYC-7502-32-Core", "host"))
    assert result["compatible"] is True


def test_vendor_element_contradicting_model_is_an_error():
    result = compare(cpu_xml("EPYC-Rome", vendor="Intel"), fixture("EPYC-7502-32-Core", "host"), guest_name="vm7")
    assert result["result"] == "error"
    assert result["reasons"] == ["vm7: its <vendor> is Intel but model EPYC-Rome is an AMD model; libvirt refuses"
                                 " this definition"]


# -- match modes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("match, on_own_host, on_newer_host", [
    ("exact", "identical", "superset"),
    ("minimum", "identical", "superset"),
    ("strict", "identical", "incompatible"),
])
def test_match_modes(match, on_own_host, on_newer_host):
    guest = fixture("Xeon-Gold-6148", "guest").replace("match='exact'", "match='%s'" % match)
    own = compare(guest, fixture("Xeon-Gold-6148", "host"))
    newer = compare(guest, fixture("Xeon-Platinum-8268", "host"), host_name="hv2")
    assert own["result"] == on_own_host
    assert newer["result"] == on_newer_host
    if match == "strict":
        extra = set(newer["extra_features"])
        assert "avx512vnni" in extra  # Cascade Lake's addition over Skylake
        assert extra == host_features("Xeon-Platinum-8268") - host_features("Xeon-Gold-6148")
        assert newer["reasons"][0].startswith("match='strict' and hv2 has features the guest does not list: ")
    if match == "minimum":
        assert any("match='minimum'" in r for r in newer["reasons"])


# -- feature policies --------------------------------------------------------------------------------------------


def test_forbid_fails_when_the_host_has_the_feature():
    guest = with_features(fixture("Xeon-Gold-6148", "guest"), "forbid", ["avx512vnni"])
    assert compare(guest, fixture("Xeon-Gold-6148", "host"))["result"] == "identical"
    result = compare(guest, fixture("Xeon-Platinum-8268", "host"), host_name="hv2")
    assert result["result"] == "incompatible"
    assert result["reasons"] == ["feature avx512vnni is forbidden by the guest but hv2 has it"]


def test_forbidding_svm_on_an_amd_host():
    result = compare(cpu_xml("qemu64", forbid=["svm"]), fixture("EPYC-7502-32-Core", "host"), host_name="hv3")
    assert result["reasons"] == ["feature svm is forbidden by the guest but hv3 has it"]


@pytest.mark.parametrize("policy", ["disable", "optional", "force"])
def test_features_a_guest_does_not_require(policy):
    guest = fixture("Ice-Lake-Server", "guest")
    before = compare(guest, fixture("Xeon-Platinum-8268", "host"))
    assert before["result"] == "incompatible" and before["missing_features"]
    # mark exactly what was missing: the same host is then fine
    after = compare(_repolicy(guest, before["missing_features"], policy), fixture("Xeon-Platinum-8268", "host"),
                    host_name="hv2")
    assert after["compatible"] is True, after
    assert after["missing_features"] == []
    if policy == "force":
        assert any(r.startswith("the guest forces avx512-vpopcntdq") and "hv2 lacks them" in r
                   for r in after["reasons"])


def _repolicy(guest, names, policy):
    """The guest with `names` under `policy` (replacing an explicit require where there is one)."""
    for name in names:
        guest = guest.replace("<feature policy='require' name='%s'/>" % name, "")
    return with_features(guest, policy, names)


def test_feature_without_policy_is_required():
    result = compare("<cpu mode='custom' match='exact'><model>kvm64</model><feature name='avx512f'/></cpu>",
                     fixture("Core2-E6850", "host"), host_name="hv0")
    assert result["missing_features"] == ["avx512f"]
    assert result["reasons"] == ["hv0 lacks avx512f, which the guest requires explicitly"
                                 " (<feature policy='require'>)"]


def test_feature_aliases_in_a_guest():
    result = compare(cpu_xml("kvm64", require=["sse4_1"]), fixture("Core2-E6850", "host"))
    assert result["missing_features"] == ["sse4.1"]  # libvirt's name for QEMU's sse4_1


def test_unknown_policy_is_an_error():
    result = compare(cpu_xml("kvm64", maybe=["sse2"]), fixture("Core2-E6850", "host"), guest_name="vm1")
    assert result["result"] == "error"
    assert "policy 'maybe'" in result["reasons"][0]


# -- unknown names ------------------------------------------------------------------------------------------------


def test_unknown_guest_model_is_an_error_naming_it():
    result = compare(cpu_xml("Skylake-Server-v99"), fixture("Xeon-Gold-6148", "host"), guest_name="vm1",
                     host_name="hv1")
    assert result["result"] == "error" and result["compatible"] is False
    assert result["reasons"] == [
        "vm1: CPU model 'Skylake-Server-v99' is not in the CPU map at %s (%d x86 models known); pass the CPU map of"
        " the libvirt that produced this CPU definition" % (MAP_11, len(_cpu_map.load(MAP_11).models))]


def test_unknown_host_model_is_an_error_naming_it():
    host = fixture("Xeon-Gold-6148", "host").replace("Skylake-Server-v1", "Skylake-Server-v42")
    result = compare(fixture("Xeon-Gold-6148", "guest"), host, host_name="hv1")
    assert result["result"] == "error"
    assert result["reasons"][0].startswith("hv1: CPU model 'Skylake-Server-v42' is not in the CPU map at ")


def test_unknown_guest_feature_is_an_error_naming_it():
    result = compare(cpu_xml("kvm64", require=["warp-drive"], disable=["flux"]), fixture("Core2-E6850", "host"),
                     guest_name="vm1")
    assert result["result"] == "error"
    assert result["reasons"][0].startswith("vm1: CPU features flux, warp-drive are not in the CPU map at ")


# -- versioned models and the 9.0 map ------------------------------------------------------------------------------


def test_versioned_guest_model():
    # EPYC-Rome-v4 is v3 without xsaves: it runs on the EPYC 7502, whose capabilities say EPYC-Rome-v3
    assert model("EPYC-Rome-v3").features - model("EPYC-Rome-v4").features == {"xsaves"}
    result = compare(cpu_xml("EPYC-Rome-v4"), fixture("EPYC-7502-32-Core", "host"))
    assert result["result"] == "superset"
    assert compare(cpu_xml("EPYC-Rome-v3"), fixture("EPYC-7601-32-Core", "host"))["result"] == "incompatible"


@needs_installed_map
def test_9_0_map_resolves_unversioned_guests():
    # Core2 guest: model Conroe and features that libvirt 9.0 knows
    guest = fixture("Core2-E6850", "guest")
    host = fixture("Core2-E6850", "host")  # says Conroe-v1, which 9.0 does not know
    wrong = verdicts.compare(guest, host, host_name="hv1")
    assert wrong["result"] == "error"
    assert "'Conroe-v1' is not in the CPU map at %s" % MAP_9 in wrong["reasons"][0]
    right = verdicts.compare(guest, host, host_name="hv1", host_cpu_map_dir=MAP_11)
    # identical although 11.3's Conroe adds VMX capabilities 9.0's lacks: the destination's libvirt expands the
    # guest's Conroe with its own map, so they are not extras
    assert right["result"] == "identical"


@needs_installed_map
def test_9_0_map_rejects_features_it_does_not_know():
    # the Xeon Gold's host-model guest requires fdp-excptn-only, which libvirt 9.0 has never heard of
    result = verdicts.compare(fixture("Xeon-Gold-6148", "guest"), fixture("Xeon-Gold-6148", "host"),
                              guest_name="vm1", host_cpu_map_dir=MAP_11)
    assert result["result"] == "error"
    assert "fdp-excptn-only" in result["reasons"][0] and MAP_9 in result["reasons"][0]


@needs_installed_map
def test_guest_of_a_newer_libvirt_on_a_host_with_an_older_map():
    host_9 = "<cpu><arch>x86_64</arch><model>Skylake-Server</model><vendor>Intel</vendor><feature name='vmx'/></cpu>"
    result = verdicts.compare(cpu_xml("Skylake-Server-v4"), host_9, guest_cpu_map_dir=MAP_11, host_name="old")
    assert result["result"] == "incompatible"
    assert result["reasons"][0] == ("old's CPU map (%s) does not know model Skylake-Server-v4, so its libvirt will"
                                    " refuse the guest" % MAP_9)
    # Conroe from 11.3 with vmx carries vmx-* capabilities 9.0 cannot report: not held against the host
    ok = verdicts.compare(cpu_xml("Conroe", require=["vmx"]), host_9, guest_cpu_map_dir=MAP_11, host_name="old")
    assert ok["compatible"] is True
    assert any(r.startswith("not checked: vmx-") for r in ok["reasons"])


# -- host-passthrough, host-model, TCG, no CPU ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["host-passthrough", "maximum"])
def test_passthrough_without_source_cannot_be_judged(mode):
    result = compare(domain("<cpu mode='%s' check='none' migratable='on'/>" % mode),
                     fixture("EPYC-7502-32-Core", "host"), guest_name="gpu1", host_name="hv3")
    assert result["result"] == "error"
    assert result["reasons"][0].startswith("host-passthrough needs an identical host CPU, so gpu1 can only be"
                                           " judged against the host it runs on")


def test_passthrough_to_a_different_cpu_is_incompatible():
    result = compare(domain("<cpu mode='host-passthrough'/>"), fixture("EPYC-7502-32-Core", "host"),
                     host_name="hv3", source_host_xml=fixture("EPYC-7601-32-Core", "host"), source_host_name="hv1")
    assert result["result"] == "incompatible"
    assert result["reasons"][0] == ("host-passthrough needs an identical host CPU: hv3 is EPYC-Rome-v3 (AMD), the"
                                    " guest was started on hv1 (EPYC-v1, AMD)")
    extra = host_features("EPYC-7502-32-Core") - host_features("EPYC-7601-32-Core")
    missing = host_features("EPYC-7601-32-Core") - host_features("EPYC-7502-32-Core")
    assert result["missing_features"] == sorted(missing)
    assert result["extra_features"] == sorted(extra)


def test_passthrough_between_identical_cpus():
    # The Ryzen 7 1800X and the EPYC 7601 report the same model and features, differing in stepping only.
    assert host_features("Ryzen-7-1800X-Eight-Core") == host_features("EPYC-7601-32-Core")
    result = compare(domain("<cpu mode='host-passthrough'/>"), fixture("Ryzen-7-1800X-Eight-Core", "host"),
                     host_name="hv2", source_host_xml=fixture("EPYC-7601-32-Core", "host"), source_host_name="hv1")
    assert result["result"] == "identical"
    assert result["reasons"] == ["hv1 and hv2 differ only in CPU stepping (2 vs 1)"]


def test_passthrough_across_vendors():
    result = compare("<cpu mode='host-passthrough'/>", fixture("EPYC-7502-32-Core", "host"), host_name="hv3",
                     source_host_xml=fixture("Xeon-Gold-6148", "host"), source_host_name="hv1")
    assert result["result"] == "incompatible"
    assert result["reasons"][0] == ("host-passthrough needs an identical host CPU: hv3 is EPYC-Rome-v3 (AMD), the"
                                    " guest was started on hv1 (Skylake-Server-v1, Intel)")


def test_host_model_guest_without_model_is_recomputed_on_the_destination():
    result = compare(domain("<cpu mode='host-model' check='partial'/>"), fixture("Core2-E6850", "host"),
                     guest_name="web1", host_name="hv1")
    assert result["result"] == "identical" and result["compatible"] is True
    assert "pass its live XML" in result["reasons"][-1] and "web1 uses host-model" in result["reasons"][-1]


def test_host_model_guest_requiring_vmx_on_amd():
    result = compare(domain("<cpu mode='host-model'><feature policy='require' name='vmx'/></cpu>"),
                     fixture("EPYC-7601-32-Core", "host"), host_name="hv3")
    assert result["result"] == "incompatible"
    assert result["reasons"][0] == \
        "vendor mismatch: the guest requires Intel (its CPU exposes vmx, Intel VT-x); hv3 is AMD"


def test_running_host_model_guest_is_compared_by_its_expanded_cpu():
    # newer libvirt shows a running host-model guest as mode='host-model' with the model it got
    expanded = fixture("Xeon-Gold-6148", "guest").replace("mode='custom' match='exact'", "mode='host-model'")
    live = domain(expanded)
    assert compare(live, fixture("Xeon-Gold-6148", "host"))["result"] == "identical"
    older = compare(live, fixture("Xeon-E5-2650-v3", "host"), host_name="hv0")
    assert older["result"] == "incompatible"
    assert "avx512f" in older["missing_features"]


def test_tcg_guest_runs_anywhere():
    result = compare(domain(fixture("Ice-Lake-Server", "guest"), domain_type="qemu", name="work1"),
                     fixture("Core2-E6850", "host"), guest_name="work1")
    assert result["compatible"] is True
    assert result["reasons"] == ["work1 runs under TCG (domain type 'qemu'): QEMU emulates its CPU, so the host CPU"
                                 " does not limit it"]


def test_domain_without_cpu_gets_the_default_model():
    result = compare(domain(""), fixture("Opteron-6282", "host"), guest_name="tiny", host_name="hv6")
    assert result["result"] == "superset"
    assert result["reasons"] == ["tiny has no CPU model, so it gets the hypervisor's default CPU (qemu64 on x86),"
                                 " which hv6 runs"]


# -- host CPU shapes -----------------------------------------------------------------------------------------------


def test_full_capabilities_and_domain_capabilities_documents():
    host_cpu = fixture("Xeon-Gold-6148", "host")
    caps = "<capabilities><host><uuid>x</uuid>%s</host><guest/></capabilities>" % host_cpu
    guest = fixture("Xeon-Gold-6148", "guest")
    assert compare(guest, caps)["result"] == "identical"
    # the host-model CPU of domain capabilities, as <mode> and as a whole document
    inner = guest.split(">", 1)[1].rsplit("</cpu>", 1)[0]
    mode = "<mode name='host-model' supported='yes'>%s</mode>" % inner
    domcaps = ("<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><arch>x86_64</arch><cpu>"
               "<mode name='host-passthrough' supported='yes'/>%s</cpu></domainCapabilities>" % mode)
    for host in (mode, domcaps, guest):
        assert compare(guest, host)["result"] == "identical"
    disabled = domcaps.replace("<feature policy='require' name='mpx'/>", "<feature policy='disable' name='mpx'/>")
    assert compare(guest, disabled)["missing_features"] == ["mpx"]


def test_domain_capabilities_without_host_model():
    domcaps = "<domainCapabilities><cpu><mode name='host-model' supported='no'/></cpu></domainCapabilities>"
    result = compare(cpu_xml("kvm64"), domcaps, host_name="hv1")
    assert result["result"] == "error"
    assert "reports host-model as unsupported" in result["reasons"][0]


def test_guest_cpu_given_as_host_is_an_error():
    result = compare(cpu_xml("kvm64"), "<cpu mode='host-passthrough'/>", host_name="hv1")
    assert result["result"] == "error" and "not a host CPU" in result["reasons"][0]


def test_non_x86_host():
    arm = "<cpu><arch>aarch64</arch><model>cortex-a57</model></cpu>"
    # An x86 guest cannot run there, whatever the CPU: libvirt on an aarch64 host has no x86 emulator.
    result = compare(domain(cpu_xml("kvm64"), name="vm1"), arm, guest_name="vm1", host_name="arm1")
    assert result["result"] == "incompatible" and not result["compatible"]
    assert result["reasons"] == ["vm1's architecture is x86_64 and arm1's is aarch64: a hypervisor runs guests of"
                                 " its own architecture only"]
    # An aarch64 guest there is beyond this check.
    arm_guest = domain(cpu_xml("cortex-a57"), name="vm2").replace("arch='x86_64'", "arch='aarch64'")
    result = compare(arm_guest, arm, guest_name="vm2", host_name="arm1")
    assert result["result"] == "error"
    assert result["reasons"] == ["arm1: its CPU architecture is aarch64; this check understands x86 CPUs only"]


def arch_domain(arch, cpu):
    return domain(cpu).replace("arch='x86_64'", "arch='%s'" % arch)


@pytest.mark.parametrize("arch", ["aarch64", "ppc64le", "s390x"])
def test_guest_of_another_architecture_is_incompatible(arch):
    for guest in (arch_domain(arch, "<cpu mode='custom'><model>cortex-a57</model></cpu>"),
                  arch_domain(arch, "<cpu mode='host-passthrough'/>"), arch_domain(arch, "")):
        for dtype in ("kvm", "qemu"):
            result = compare(guest.replace("type='kvm'", "type='%s'" % dtype), fixture("EPYC-7502-32-Core", "host"),
                             guest_name="arm1", host_name="hv1")
            assert result["result"] == "incompatible" and not result["compatible"], result
            assert result["reasons"] == ["arm1's architecture is %s and hv1's is x86_64: a hypervisor runs guests"
                                         " of its own architecture only" % arch]


def test_x86_64_guest_on_i686_host_is_incompatible_and_the_reverse_is_not():
    host_32 = fixture("Core2-E6850", "host").replace("<arch>x86_64</arch>", "<arch>i686</arch>")
    assert "<arch>i686</arch>" in host_32
    guest = cpu_xml("qemu32")
    result = compare(arch_domain("x86_64", guest), host_32, guest_name="vm1", host_name="old")
    assert result["result"] == "incompatible"
    assert result["reasons"] == ["vm1 is a 64-bit x86_64 guest and old is a 32-bit i686 host"]
    assert compare(arch_domain("i686", guest), host_32)["compatible"]
    assert compare(arch_domain("i686", guest), fixture("Core2-E6850", "host"))["compatible"]


def test_host_without_vendor_cannot_prove_the_vendor_a_guest_names():
    # kvm64 has no vendor in the CPU map; a host CPU given without <vendor> names none.
    vendorless = "<cpu><arch>x86_64</arch><model>kvm64</model></cpu>"
    assert model("kvm64").vendor is None
    named = compare(cpu_xml("kvm64", vendor="Intel"), vendorless, guest_name="vm1", host_name="hv9")
    assert named["result"] == "incompatible" and not named["compatible"]
    assert named["reasons"] == ["vendor unknown: the guest's <vendor> requires Intel and hv9's CPU names no vendor,"
                                " so it cannot be shown to be Intel"]
    # The same host does prove it when it names the vendor; a guest that names none does not care.
    assert compare(cpu_xml("kvm64", vendor="Intel"), vendorless.replace("</cpu>", "<vendor>Intel</vendor></cpu>")
                   )["compatible"]
    assert compare(cpu_xml("kvm64"), vendorless)["compatible"]


# -- bad input -----------------------------------------------------------------------------------------------------


def test_malformed_guest_xml_names_the_guest():
    with pytest.raises(HvmaintError, match="guest db1: malformed XML"):
        compare("<cpu><model>kvm64</model>", fixture("Core2-E6850", "host"), guest_name="db1")


def test_malformed_host_xml_names_the_host():
    with pytest.raises(HvmaintError, match="host hv7: malformed XML"):
        verdicts.check_matrix([{"name": "vm1", "xml": cpu_xml("kvm64")}], [{"name": "hv7", "xml": "<cpu>"}], MAP_11)


def test_wrong_root_element():
    with pytest.raises(HvmaintError, match="guest vm1: expected a <domain> or <cpu> element, not <network>"):
        compare("<network/>", fixture("Core2-E6850", "host"), guest_name="vm1")


@pytest.mark.parametrize("guests, message", [
    ([{"name": "a", "xml": "<cpu/>"}, {"name": "a", "xml": "<cpu/>"}], "guest name 'a' appears more than once"),
    ([{"xml": "<cpu/>"}], r"guests\[0\] has no name"),
    (["<cpu/>"], r"guests\[0\] must be a dictionary"),
    ([{"name": "a"}], "guest a: no XML given"),
])
def test_bad_guest_entries(guests, message):
    with pytest.raises(HvmaintError, match=message):
        verdicts.check_matrix(guests, [{"name": "hv1", "xml": fixture("Core2-E6850", "host")}], MAP_11)


# -- matrix ----------------------------------------------------------------------------------------------------------


def test_matrix_parses_each_distinct_cpu_once():
    guests = [{"name": "vm%d" % i, "xml": domain(fixture(INTEL[i % 5], "guest"), name="vm%d" % i)}
              for i in range(50)]
    hosts = [{"name": "hv%d" % i, "xml": fixture(AMD[i % 5], "host")} for i in range(20)]
    session = cc._Session(MAP_11)
    matrix = session.matrix(session.guests(guests), session.hosts(hosts))
    assert len(matrix) == 1000 and len(session._guests) == 5
    assert len(session._hosts) == 4  # the Opteron and the FX report the same CPU
    assert {p["result"] for p in matrix} == {"incompatible"}
    # names are filled into shared reasons per pair
    assert matrix[0]["reasons"][0].endswith("; hv0 is AMD") and matrix[1]["reasons"][0].endswith("; hv1 is AMD")


def test_matrix_of_a_thousand_guests_and_a_hundred_hosts_is_fast():
    guests = [{"name": "vm%d" % i, "xml": with_features(fixture((INTEL + AMD)[i % 10], "guest"), "disable",
                                                        ["sse4.2", "avx", "aes", "popcnt"][: i // 10 % 5])}
              for i in range(1000)]
    hosts = [{"name": "hv%d" % i, "xml": fixture((INTEL + AMD)[i % 10], "host")} for i in range(100)]
    start = time.perf_counter()
    matrix = verdicts.check_matrix(guests, hosts, MAP_11)
    elapsed = time.perf_counter() - start
    assert len(matrix) == 100000
    assert elapsed < 10, elapsed  # benchmarks/bench_cpu_matrix.py measures it properly; this catches a blow-up


def test_per_guest_and_per_host_maps_in_a_matrix():
    # the default map does not exist, but every CPU names its own
    matrix = verdicts.check_matrix(
        [{"name": "vm1", "xml": fixture("Xeon-Gold-6148", "guest"), "cpu_map_dir": MAP_11}],
        [{"name": "hv1", "xml": fixture("Xeon-Gold-6148", "host"), "cpu_map_dir": MAP_11}],
        cpu_map_dir=os.path.join(FIXTURES, "no-such-map"))
    assert matrix[0]["result"] == "identical"
    with pytest.raises(HvmaintError, match="no-such-map does not exist"):
        verdicts.check_matrix([{"name": "vm1", "xml": cpu_xml("kvm64")}],
                              [{"name": "hv1", "xml": fixture("Core2-E6850", "host")}],
                              os.path.join(FIXTURES, "no-such-map"))


# -- baseline --------------------------------------------------------------------------------------------------------


def _fits_everywhere(result, cpus):
    for cpu in cpus:
        verdict = compare(result["xml"], fixture(cpu, "host"), host_name=cpu)
        assert verdict["compatible"], verdict


def test_baseline_of_intel_hosts():
    hosts = [{"name": c, "xml": fixture(c, "host")} for c in INTEL]
    result = verdicts.baseline(hosts, MAP_11)
    assert result["vendor"] == "Intel"
    assert model(result["model"]).vendor in ("Intel", None)
    _fits_everywhere(result, INTEL)
    # nothing with more features fits: the oldest host (Core2) bounds it
    common = frozenset.intersection(*[host_features(c) for c in INTEL])
    better = [m for m in _cpu_map.load(MAP_11).models.values()
              if len(m.features - m.added) > len(model(result["model"]).features - model(result["model"]).added)
              and m.vendor in ("Intel", None) and _cpu_map.without_vmx_subfeatures(m.features - m.added) <= common
              and (m.decode_host or m.decode_guest)]
    assert better == []
    assert "<vendor>Intel</vendor>" in result["xml"]
    assert result["reasons"][0].startswith("all hosts are Intel; %s is the most capable" % result["model"])


def test_baseline_of_recent_intel_hosts_drops_non_migratable_features():
    cpus = ["Xeon-Gold-6148", "Xeon-Platinum-8268", "Ice-Lake-Server"]
    assert all("invtsc" in host_features(c) for c in cpus)
    result = verdicts.baseline([{"name": c, "xml": fixture(c, "host")} for c in cpus], MAP_11)
    assert result["vendor"] == "Intel"
    assert "invtsc" not in result["features"]
    assert all("xsaves" in host_features(c) for c in cpus)
    assert "left out invtsc, xsaves: libvirt marks them non-migratable" in result["reasons"]
    assert "vmx" in result["features"]  # every host offers nested virtualization
    _fits_everywhere(result, cpus)


def test_baseline_of_mixed_vendors_is_vendor_neutral():
    hosts = [{"name": c, "xml": fixture(c, "host")} for c in INTEL + AMD]
    result = verdicts.baseline(hosts, MAP_11)
    assert result["vendor"] is None
    assert model(result["model"]).vendor is None
    assert result["model"] == "kvm64"  # qemu64 has svm, which the Intel hosts lack
    assert "svm" in model("qemu64").features
    assert "<vendor>" not in result["xml"]
    assert result["reasons"][0].startswith("the hosts mix CPU vendors (AMD: Opteron-6282, ")
    assert "keep guests within one vendor's hosts" in result["reasons"][1]
    _fits_everywhere(result, INTEL + AMD)


def test_baseline_with_a_broken_host():
    with pytest.raises(HvmaintError, match="cannot compute a baseline: hv1: CPU model 'Nope'"):
        verdicts.baseline([{"name": "hv1", "xml": "<cpu><model>Nope</model></cpu>"}], MAP_11)


# -- live libvirt, faked -------------------------------------------------------------------------------------------


class FakeDomain:
    def __init__(self, name, xml):
        self._name, self._xml = name, xml

    def name(self):
        return self._name

    def XMLDesc(self, flags=0):
        return self._xml


class FakeConn:
    """The few virConnect methods cpu_compat uses, answering like libvirt would."""

    def __init__(self, hostname, caps, verdict=None, domains=()):
        self.hostname, self.caps, self.verdict = hostname, caps, verdict
        self.domains = {d.name(): d for d in domains}
        self.calls = []

    def getCapabilities(self):
        return self.caps

    def getDomainCapabilities(self, emulator, arch, machine, virttype, flags=0):
        if getattr(self, "domcaps", None) is None:
            raise libvirt.libvirtError("unsupported configuration: this fake host has no %s domain" % virttype)
        return self.domcaps

    def getHostname(self):
        return self.hostname

    def listAllDomains(self, flags=0):
        return list(self.domains.values())

    def lookupByName(self, name):
        if name not in self.domains:
            raise libvirt.libvirtError("Domain not found: no domain with matching name '%s'" % name)
        return self.domains[name]

    def compareHypervisorCPU(self, emulator, arch, machine, virttype, xml, flags=0):
        self.calls.append(("compare", emulator, arch, machine, virttype, xml, flags))
        if self.verdict == "error":
            raise libvirt.libvirtError("unsupported configuration: CPU model Foo is unknown")
        code = {"identical": 1, "superset": 2, "incompatible": 0}[self.verdict]
        if code == 0 and flags & libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE:
            raise libvirt.libvirtError("the CPU is incompatible with host CPU: Host CPU does not provide required"
                                       " features: avx512f")
        return code

    def baselineHypervisorCPU(self, emulator, arch, machine, virttype, xml_cpus, flags=0):
        self.calls.append(("baseline", emulator, arch, machine, virttype, list(xml_cpus), flags))
        return "<cpu mode='custom' match='exact'><model>Skylake-Server</model></cpu>"


def connector(conns):
    opened = []

    def connect(uri, read_only=False):
        opened.append((uri, read_only))
        return contextlib.nullcontext(conns[uri])

    connect.opened = opened
    return connect


needs_libvirt = pytest.mark.skipif(libvirt is None, reason="libvirt-python is not installed")


@needs_libvirt
def test_live_hosts_are_asked_and_disagreements_shown():
    src = FakeConn("hv1", "<capabilities><host>%s</host></capabilities>" % fixture("Xeon-E5-2650-v3", "host"),
                   domains=[FakeDomain("db1", domain(fixture("Xeon-E5-2650-v3", "guest"), name="db1")),
                            FakeDomain("gpu1", domain("<cpu mode='host-passthrough'/>", name="gpu1"))])
    dst = FakeConn("hv2", "<capabilities><host>%s</host></capabilities>" % fixture("Xeon-Platinum-8268", "host"),
                   verdict="incompatible")
    connect = connector({"qemu+tls://hv1/system": src, "qemu+tls://hv2/system": dst})
    out = cc.run(live_guests=[{"uri": "qemu+tls://hv1/system", "cpu_map_dir": MAP_11}],
                 live_hosts=[{"name": "hv2", "uri": "qemu+tls://hv2/system", "cpu_map_dir": MAP_11}],
                 hosts=[{"name": "hv1", "xml": fixture("Xeon-E5-2650-v3", "host")}], cpu_map_dir=MAP_11,
                 want_baseline=True, connect=connect)
    pairs = {(p["guest"], p["host"]): p for p in out["matrix"]}
    assert set(pairs) == {("db1", "hv1"), ("db1", "hv2"), ("gpu1", "hv1"), ("gpu1", "hv2")}
    db1 = pairs[("db1", "hv2")]
    assert db1["result"] == "superset" and db1["libvirt_result"] == "incompatible"
    assert db1["disagreement"] is True
    assert db1["libvirt_message"].endswith("Host CPU does not provide required features: avx512f")
    assert db1["reasons"][-1].startswith("the offline check says superset, libvirt on hv2 says incompatible: trust"
                                         " libvirt on the destination")
    assert "libvirt_result" not in pairs[("db1", "hv1")]
    # host-passthrough: the source host came with the live guest
    assert pairs[("gpu1", "hv1")]["result"] == "identical"
    assert pairs[("gpu1", "hv2")]["result"] == "incompatible"
    # libvirt was asked with the guest's <cpu>, its domain type and the arch, once per distinct CPU
    compares = [c for c in dst.calls if c[0] == "compare" and c[6] == 0]
    assert len(compares) == 2
    assert compares[0][1:5] == (None, "x86_64", None, "kvm")
    sent = ET.fromstring(compares[0][5])
    assert sent.tag == "cpu" and sent.findtext("model") == "Haswell-noTSX"
    assert out["summary"]["disagreements"] == 1  # gpu1 on hv2: both say incompatible
    assert ("qemu+tls://hv1/system", True) in connect.opened  # guests are read through a read-only connection
    assert out["baseline"]["libvirt_host"] == "hv2"
    assert out["baseline"]["libvirt_xml"].startswith("<cpu")
    base_call = next(c for c in dst.calls if c[0] == "baseline")
    assert len(base_call[5]) == 2 and base_call[6] == libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE


@needs_libvirt
def test_live_host_libvirt_error_is_reported():
    dst = FakeConn("hv2", fixture("Xeon-Platinum-8268", "host"), verdict="error")
    out = cc.run(guests=[{"name": "vm1", "xml": cpu_xml("Foo")}],
                 live_hosts=[{"name": "hv2", "uri": "u2"}], cpu_map_dir=MAP_11, connect=connector({"u2": dst}))
    pair = out["matrix"][0]
    assert pair["result"] == "error" and pair["libvirt_result"] == "error"
    assert pair["disagreement"] is False
    assert pair["libvirt_message"] == "unsupported configuration: CPU model Foo is unknown"


@needs_libvirt
def test_live_host_without_an_emulator_for_the_guest_architecture_agrees():
    class NoArmEmulator(FakeConn):
        def compareHypervisorCPU(self, emulator, arch, machine, virttype, xml, flags=0):
            self.calls.append(("compare", emulator, arch, machine, virttype, xml, flags))
            raise libvirt.libvirtError("unsupported configuration: unable to find any emulator to serve '%s'"
                                       " architecture" % arch)

    dst = NoArmEmulator("hv2", fixture("EPYC-7502-32-Core", "host"))
    out = cc.run(guests=[{"name": "arm1", "xml": arch_domain("aarch64", cpu_xml("cortex-a57"))}],
                 live_hosts=[{"name": "hv2", "uri": "u2"}], cpu_map_dir=MAP_11, connect=connector({"u2": dst}))
    pair = out["matrix"][0]
    assert pair["result"] == "incompatible" and pair["libvirt_result"] == "incompatible"
    assert pair["disagreement"] is False
    assert "aarch64" in pair["libvirt_message"]
    assert dst.calls[0][2] == "aarch64"


@needs_libvirt
def test_live_guest_that_does_not_exist():
    src = FakeConn("hv1", fixture("Core2-E6850", "host"))
    with pytest.raises(HvmaintError, match="cannot find VM nope on u1"):
        cc.run(live_guests=[{"uri": "u1", "names": ["nope"]}], hosts=[{"name": "x", "xml": fixture("Core2-E6850",
               "host")}], cpu_map_dir=MAP_11, connect=connector({"u1": src}))


def test_run_needs_hosts_and_something_to_do():
    with pytest.raises(HvmaintError, match="no hosts to compare with"):
        cc.run(guests=[{"name": "a", "xml": "<cpu/>"}], cpu_map_dir=MAP_11)
    with pytest.raises(HvmaintError, match="nothing to do"):
        cc.run(hosts=[{"name": "a", "xml": "<cpu/>"}], cpu_map_dir=MAP_11)


def test_run_with_hypervisor_facts():
    facts = [
        {"name": "hv1", "cpu": {"capabilities_xml": fixture("Xeon-Gold-6148", "host")},
         "vms": [{"name": "db1", "domain_type": "kvm", "cpu": {"xml": fixture("Xeon-Gold-6148", "guest")}},
                 {"name": "gpu1", "domain_type": "kvm", "cpu": {"xml": "<cpu mode='host-passthrough'/>"}},
                 {"name": "tiny", "domain_type": "kvm", "cpu": {"xml": None}},
                 {"name": "tcg1", "domain_type": "qemu", "cpu": {"xml": fixture("Ice-Lake-Server", "guest")}}]},
        {"name": "hv2", "cpu": {"capabilities_xml": fixture("Xeon-E5-2650-v3", "host")}, "vms": []},
    ]
    out = cc.run(hypervisors=facts, cpu_map_dir=MAP_11, want_baseline=True)
    results = {(p["guest"], p["host"]): p["result"] for p in out["matrix"]}
    assert results == {
        ("db1", "hv1"): "identical", ("db1", "hv2"): "incompatible",
        ("gpu1", "hv1"): "identical", ("gpu1", "hv2"): "incompatible",
        ("tiny", "hv1"): "superset", ("tiny", "hv2"): "superset",
        ("tcg1", "hv1"): "superset", ("tcg1", "hv2"): "superset",
    }
    assert out["summary"]["guests_without_host"] == []
    assert out["summary"]["pairs"] == 8 and out["summary"]["incompatible"] == 2
    assert out["baseline"]["vendor"] == "Intel"


def test_run_keeps_the_matrix_when_no_baseline_exists():
    out = cc.run(guests=[{"name": "vm1", "xml": cpu_xml("kvm64")}],
                 hosts=[{"name": "hv1", "xml": "<cpu><model>Nope</model></cpu>"}], cpu_map_dir=MAP_11,
                 want_baseline=True)
    assert out["matrix"][0]["result"] == "error"
    assert out["baseline"]["model"] is None
    assert out["baseline"]["reasons"][0].startswith("cannot compute a baseline: hv1: CPU model 'Nope'")
    assert out["summary"]["guests_without_host"] == ["vm1"]


@needs_libvirt
def test_live_path_against_libvirts_test_driver():
    """Real libvirt-python calls (no daemon): the test driver has no host CPU model and no CPU comparison."""
    out = cc.run(live_guests=[{"uri": "test:///default"}], live_hosts=[{"name": "t", "uri": "test:///default"}],
                 cpu_map_dir=MAP_11, want_baseline=True)
    pair = out["matrix"][0]
    assert pair["guest"] == "test" and pair["host"] == "t"
    assert pair["result"] == "error" and "has no <model>" in pair["reasons"][0]
    assert out["baseline"]["libvirt_message"].startswith("this function is not supported")


@needs_libvirt
def test_live_host_cpu_is_what_the_hypervisor_offers():
    """KVM on the lab's nested hosts withholds pni although the CPU has it: domain capabilities say so, and the
    offline verdict must follow them rather than the raw host CPU (recorded from the lab)."""
    fixtures = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "libvirt")
    with open(os.path.join(fixtures, "hv1-capabilities.xml"), encoding="utf-8") as handle:
        caps = handle.read()
    with open(os.path.join(fixtures, "hv1-domcapabilities-kvm.xml"), encoding="utf-8") as handle:
        domcaps = handle.read()
    conn = FakeConn("hv1", caps, verdict="incompatible")
    conn.domcaps = domcaps
    guest = "<cpu mode='custom' match='exact'><model>qemu64</model><feature policy='disable' name='svm'/></cpu>"
    result = cc.run(guests=[{"name": "plain", "xml": guest}], live_hosts=[{"name": "hv1", "uri": "fake"}],
                    connect=lambda uri, read_only=False: contextlib.nullcontext(conn))
    (pair,) = result["matrix"]
    assert pair["result"] == "incompatible" and "pni" in pair["missing_features"]
    assert pair["libvirt_result"] == "incompatible" and not pair["disagreement"]
