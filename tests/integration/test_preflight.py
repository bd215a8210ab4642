"""Pre-flight on the lab: CPU verdicts agree with libvirt's own, and lab differences give the matching blockers."""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET

import pytest

from conftest import ansible_module_json

pytestmark = pytest.mark.lab

SOURCE = "hv1"

# qemu64 plus features that no lab host has: AVX-512 (the lab's AMD EPYC lacks it) and AMD-V (nested
# virtualization is not exposed to the lab's hosts).
NEEDS_AVX512 = ("<domain type='kvm'><cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>"
                "<feature policy='require' name='avx512f'/><feature policy='disable' name='svm'/></cpu></domain>")
NEEDS_SVM = ("<domain type='kvm'><cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>"
             "<feature policy='require' name='svm'/></cpu></domain>")
# KVM on the lab's nested hosts withholds pni (SSE3) although the CPU has it, so a plain qemu64 cannot run there;
# the lab's own guests disable it, as libvirt did when it started them.
QEMU64 = ("<domain type='kvm'><cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>"
          "<feature policy='disable' name='svm'/></cpu></domain>")
PLAIN = ("<domain type='kvm'><cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>"
         "<feature policy='disable' name='svm'/><feature policy='disable' name='pni'/></cpu></domain>")


def live_hosts(lab):
    # The module runs on hv1: its own libvirt locally, the others over TLS with hv1's client certificate.
    return [{"name": name, "uri": "qemu:///system" if name == SOURCE else "qemu+tls://%s/system" % name}
            for name in lab.hosts]


def test_cpu_verdicts_name_missing_features_and_agree_with_libvirt(lab, ansible_env):
    result = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.cpu_compat", {
        "guests": [{"name": "needs-avx512", "xml": NEEDS_AVX512}, {"name": "needs-svm", "xml": NEEDS_SVM},
                   {"name": "qemu64", "xml": QEMU64}, {"name": "plain", "xml": PLAIN}],
        "live_hosts": live_hosts(lab),
    }, ansible_env)
    pairs = {(p["guest"], p["host"]): p for p in result["matrix"]}
    assert len(pairs) == 4 * len(lab.hosts)
    for host in lab.hosts:
        avx = pairs[("needs-avx512", host)]
        assert avx["result"] == "incompatible" and not avx["compatible"]
        assert "avx512f" in avx["missing_features"]
        assert any("avx512f" in reason for reason in avx["reasons"])
        assert avx["libvirt_result"] == "incompatible", avx
        svm = pairs[("needs-svm", host)]
        assert not svm["compatible"] and "svm" in svm["missing_features"]
        assert any("AMD-V" in reason for reason in svm["reasons"]), svm["reasons"]
        assert svm["libvirt_result"] == "incompatible", svm
        withheld = pairs[("qemu64", host)]
        assert not withheld["compatible"] and "pni" in withheld["missing_features"]
        assert withheld["libvirt_result"] == "incompatible"
        plain = pairs[("plain", host)]
        assert plain["compatible"] and plain["libvirt_result"] in ("identical", "superset"), plain
        # Where libvirt and the offline check differ in wording but both allow the move, the module says so;
        # a real disagreement about compatibility would be a failure here.
        for pair in (avx, svm, withheld, plain):
            assert pair["compatible"] == (pair["libvirt_result"] in ("identical", "superset"))


def test_odd_cpu_input_verdicts_agree_with_libvirt(lab, ansible_env):
    """A guest of another architecture, and a guest naming a vendor, judged as libvirt on the lab judges them."""
    domcaps = ET.fromstring(lab.virsh(SOURCE, ["domcapabilities", "--virttype", "kvm"]).stdout)
    host_model = domcaps.find("cpu/mode[@name='host-model']")
    vendor = host_model.findtext("vendor")
    other = "Intel" if vendor == "AMD" else "AMD"
    # libvirt's x86 comparison checks a named vendor before any feature, with one answer for a host of another
    # vendor and a host that names none ("host CPU vendor does not match required CPU vendor"). The lab's hosts
    # all name theirs: the other vendor shows libvirt's answer, and a copy of hv1's CPU without <vendor> is the
    # host that names none.
    vendorless = ET.tostring(host_model, encoding="unicode")
    vendorless = vendorless.replace("<vendor>%s</vendor>" % vendor, "")
    named = ("<domain type='kvm'><cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>"
             "<vendor>%s</vendor><feature policy='disable' name='svm'/><feature policy='disable' name='pni'/>"
             "</cpu></domain>")
    arm = ("<domain type='kvm'><os><type arch='aarch64' machine='virt'>hvm</type></os>"
           "<cpu mode='custom' match='exact'><model>cortex-a57</model></cpu></domain>")
    result = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.cpu_compat", {
        "guests": [{"name": "arm", "xml": arm}, {"name": "other-vendor", "xml": named % other},
                   {"name": "same-vendor", "xml": named % vendor}],
        "hosts": [{"name": "vendorless", "xml": vendorless}],
        "live_hosts": live_hosts(lab),
    }, ansible_env)
    pairs = {(p["guest"], p["host"]): p for p in result["matrix"]}
    for host in lab.hosts:
        arm_pair = pairs[("arm", host)]
        assert arm_pair["result"] == "incompatible" and arm_pair["libvirt_result"] == "incompatible", arm_pair
        assert "aarch64" in arm_pair["reasons"][0] and "aarch64" in arm_pair["libvirt_message"]
        assert not arm_pair["disagreement"]
        other_pair = pairs[("other-vendor", host)]
        assert other_pair["result"] == "incompatible" and other_pair["libvirt_result"] == "incompatible"
        assert "does not match required CPU vendor %s" % other in other_pair["libvirt_message"]
        same = pairs[("same-vendor", host)]
        assert same["compatible"] and same["libvirt_result"] in ("identical", "superset"), same
    assert pairs[("arm", "vendorless")]["result"] == "incompatible"
    unproven = pairs[("same-vendor", "vendorless")]
    assert unproven["result"] == "incompatible", unproven
    assert unproven["reasons"] == ["vendor unknown: the guest's <vendor> requires %s and vendorless's CPU names no"
                                   " vendor, so it cannot be shown to be %s" % (vendor, vendor)]


def test_running_vms_are_checked_from_their_live_definition(lab, ansible_env):
    result = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.cpu_compat", {
        "live_guests": [{"uri": "qemu:///system"}], "live_hosts": live_hosts(lab)}, ansible_env)
    running_here = set(lab.virsh(SOURCE, ["list", "--name"]).stdout.split())
    guests = {p["guest"] for p in result["matrix"]}
    assert running_here and guests == running_here
    # Every lab guest was started on a lab host, so every lab host can run it; libvirt agrees.
    for pair in result["matrix"]:
        assert pair["compatible"], pair
        assert pair["libvirt_result"] in ("identical", "superset"), pair


def test_missing_network_and_small_host_are_blockers(lab, ansible_env):
    """idle3 uses the app network, which hv3 lacks; a 1.5 GiB VM does not fit hv3's declared 2 GiB."""
    big = "big-preflight"
    xml = lab.guest_xml({"name": big, "kind": "idle", "memory_mib": 1536}, "kvm")
    with tempfile.NamedTemporaryFile("w", suffix=".xml", dir=lab.state_dir, delete=False) as handle:
        handle.write(xml)
    try:
        lab.virsh(SOURCE, ["define", handle.name])
        lab.virsh(SOURCE, ["start", big])
        facts = [ansible_module_json(lab, host, "hvmaint.libvirt.hypervisor_info", {}, ansible_env)["hypervisor"]
                 for host in lab.hosts]
        on_source = {vm["name"] for vm in facts[0]["vms"]}
        assert {"idle3", big} <= on_source, "the test expects idle3 and %s on %s" % (big, SOURCE)
        overrides = {name: {"memory_mib": host["memory_mib"], "vcpus": host["vcpus"]}
                     for name, host in lab.hosts.items()}
        result = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.migration_readiness", {
            "hosts": facts, "source": SOURCE, "host_overrides": overrides}, ansible_env)
    finally:
        lab.virsh(SOURCE, ["destroy", big], check=False)
        lab.virsh(SOURCE, ["undefine", big], check=False)
        os.unlink(handle.name)
    pairs = {(p["vm"], p["destination"]): p for p in result["pairs"]}
    idle3_hv3 = pairs[("idle3", "hv3")]
    assert not idle3_hv3["migratable"]
    assert any(b["code"] in ("network", "bridge") and "app" in b["reason"] for b in idle3_hv3["blockers"])
    assert pairs[("idle3", "hv2")]["migratable"]
    big_hv3 = pairs[(big, "hv3")]
    assert not big_hv3["migratable"]
    assert any(b["code"] == "memory" for b in big_hv3["blockers"]), big_hv3["blockers"]
    assert pairs[(big, "hv2")]["migratable"]
    # The local qcow2 disk is a warning with a time estimate, not a blocker.
    disk = pairs[("disk1", "hv2")]
    assert disk["migratable"] and any(w["code"] == "storage_copy" for w in disk["warnings"])
    assert result["summary_lines"] and any("idle3" in line for line in result["summary_lines"])


def test_bad_input_is_a_clear_error(lab, ansible_env):
    broken = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.cpu_compat", {
        "guests": [{"name": "bad", "xml": "<domain><cpu>"}], "hosts": [{"name": "h", "xml": "<cpu/>"}]},
        ansible_env, check=False)
    assert broken["failed"] and "bad" in broken["msg"]
    unknown_model = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.cpu_compat", {
        "guests": [{"name": "g", "xml": "<cpu mode='custom'><model>Pentium-Z9000</model></cpu>"}],
        "live_hosts": live_hosts(lab)[:1]}, ansible_env, check=False)
    pair = unknown_model["matrix"][0]
    assert pair["result"] == "error" and any("Pentium-Z9000" in r for r in pair["reasons"])
    facts = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.hypervisor_info", {}, ansible_env)["hypervisor"]
    wrong_host = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.migration_readiness", {
        "hosts": [facts], "source": "hv9"}, ansible_env, check=False)
    assert wrong_host["failed"] and "hv9" in wrong_host["msg"]
    wrong_type = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.cpu_compat", {
        "guests": "not a list", "hosts": []}, ansible_env, check=False)
    assert wrong_type["failed"]
