"""The cpu_compat module, driven through main() as Ansible would run it."""

from __future__ import annotations

import contextlib
import os

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _cpu_compat
from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_map import DEFAULT_CPU_MAP_DIR
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import libvirt
from ansible_collections.hvmaint.libvirt.plugins.modules import cpu_compat

from .utils import run_module

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "cpu")
MAP_11 = os.path.join(FIXTURES, "cpu_map-11.3.0")


def fixture(cpu, kind):
    with open(os.path.join(FIXTURES, "x86_64-cpuid-%s-%s.xml" % (cpu, kind))) as handle:
        return handle.read()


def run(**args):
    args.setdefault("cpu_map_dir", MAP_11)
    return run_module(cpu_compat.main, args)


GUESTS = [
    {"name": "web1", "xml": fixture("Xeon-E5-2650-v3", "guest")},
    {"name": "db1", "xml": fixture("Ice-Lake-Server", "guest")},
    {"name": "amd1", "xml": fixture("EPYC-7502-32-Core", "guest")},
]
HOSTS = [
    {"name": "hv1", "xml": fixture("Xeon-Platinum-8268", "host")},
    {"name": "hv2", "xml": fixture("Core2-E6850", "host")},
    {"name": "hv3", "xml": fixture("EPYC-7502-32-Core", "host")},
]


def test_offline_matrix_and_summary():
    result, code = run(guests=GUESTS, hosts=HOSTS)
    assert code == 0
    assert result["changed"] is False
    verdicts = [(p["guest"], p["host"], p["result"]) for p in result["matrix"]]
    assert verdicts == [
        ("web1", "hv1", "superset"), ("web1", "hv2", "incompatible"), ("web1", "hv3", "incompatible"),
        ("db1", "hv1", "incompatible"), ("db1", "hv2", "incompatible"), ("db1", "hv3", "incompatible"),
        ("amd1", "hv1", "incompatible"), ("amd1", "hv2", "incompatible"), ("amd1", "hv3", "identical"),
    ]
    summary = result["summary"]
    assert summary["pairs"] == 9 and summary["compatible"] == 2 and summary["incompatible"] == 7
    assert summary["guests_without_host"] == ["db1"]
    hv3 = result["matrix"][2]
    assert hv3["reasons"][0].startswith("vendor mismatch: the guest requires Intel (")
    assert hv3["reasons"][0].endswith("); hv3 is AMD")
    assert "baseline" not in result


def test_check_mode_changes_nothing_and_runs_the_same():
    normal = run(guests=GUESTS, hosts=HOSTS)[0]
    checked, code = run(guests=GUESTS, hosts=HOSTS, _ansible_check_mode=True)
    assert code == 0 and checked["changed"] is False
    assert checked["matrix"] == normal["matrix"]


def test_baseline():
    result, code = run(hosts=HOSTS[:2], baseline=True)
    assert code == 0
    assert result["matrix"] == []
    assert result["baseline"]["vendor"] == "Intel"
    assert result["baseline"]["xml"].startswith("<cpu mode='custom' match='exact'>")
    # what it proposes runs on both hosts
    check = run(guests=[{"name": "evc", "xml": result["baseline"]["xml"]}], hosts=HOSTS[:2])[0]
    assert [p["compatible"] for p in check["matrix"]] == [True, True]


def test_unknown_model_is_a_verdict_not_a_failure():
    result, code = run(guests=[{"name": "vm1", "xml": "<cpu mode='custom'><model>Zen9</model></cpu>"}], hosts=HOSTS)
    assert code == 0
    assert {p["result"] for p in result["matrix"]} == {"error"}
    assert "'Zen9' is not in the CPU map" in result["matrix"][0]["reasons"][0]


def test_malformed_xml_fails_naming_the_guest():
    result, code = run(guests=[{"name": "db1", "xml": "<domain><cpu>"}], hosts=HOSTS)
    assert code == 1 and result["failed"] is True
    assert result["msg"].startswith("guest db1: malformed XML")


def test_malformed_host_xml_fails_naming_the_host():
    result, code = run(guests=GUESTS, hosts=[{"name": "hv9", "xml": "not xml"}])
    assert code == 1 and result["msg"].startswith("host hv9: malformed XML")


def test_duplicate_names_fail():
    result, code = run(guests=GUESTS, hosts=HOSTS + [HOSTS[0]])
    assert code == 1 and result["msg"] == "host name 'hv1' appears more than once; names must be unique"


@pytest.mark.parametrize("args, message", [
    ({"guests": "web1", "hosts": HOSTS}, "dictionary requested"),
    ({"guests": [{"xml": "<cpu/>"}], "hosts": HOSTS}, "missing required arguments: name"),
    ({"guests": GUESTS, "hosts": HOSTS, "baseline": "maybe"}, "baseline"),
    ({"guests": GUESTS, "hosts": HOSTS, "colour": "blue"}, "Unsupported parameters"),
    ({"guests": [dict(GUESTS[0], domain_type="xen")], "hosts": HOSTS}, "domain_type"),
])
def test_argument_errors_come_from_ansible(args, message):
    result, code = run(**args)
    assert code == 1 and result["failed"] is True
    assert message in result["msg"]


def test_nothing_to_compare_with():
    result, code = run(guests=GUESTS)
    assert code == 1 and result["msg"] == "no hosts to compare with: give hosts, live_hosts or hypervisors"


def test_missing_cpu_map_fails():
    result, code = run(guests=GUESTS, hosts=HOSTS, cpu_map_dir=os.path.join(FIXTURES, "missing"))
    assert code == 1 and "does not exist" in result["msg"]


def test_hypervisor_facts():
    facts = [{"name": "hv1", "cpu": {"capabilities_xml": fixture("Xeon-Platinum-8268", "host")},
              "vms": [{"name": "web1", "domain_type": "kvm", "cpu": {"xml": fixture("Xeon-Gold-6148", "guest")}}]},
             {"name": "hv2", "cpu": {"capabilities_xml": fixture("Xeon-Gold-6148", "host")}, "vms": []}]
    result, code = run(hypervisors=facts)
    assert code == 0
    assert [(p["host"], p["result"]) for p in result["matrix"]] == [("hv1", "superset"), ("hv2", "identical")]


@pytest.mark.skipif(not os.path.isfile(os.path.join(DEFAULT_CPU_MAP_DIR, "index.xml")),
                    reason="no libvirt CPU map installed")
def test_default_cpu_map_is_the_installed_one():
    host = "<cpu><arch>x86_64</arch><model>Skylake-Server</model><vendor>Intel</vendor></cpu>"
    result, code = run_module(cpu_compat.main, {
        "guests": [{"name": "vm1", "xml": "<cpu mode='custom' match='exact'><model>Haswell-noTSX</model></cpu>"}],
        "hosts": [{"name": "hv1", "xml": host}],
    })
    assert code == 0 and result["matrix"][0]["result"] == "superset"


class _FakeConn:
    def __init__(self, caps, code):
        self.caps, self.code = caps, code

    def getCapabilities(self):
        return self.caps

    def getDomainCapabilities(self, emulator, arch, machine, virttype, flags=0):
        raise libvirt.libvirtError("unsupported configuration: this fake host has no domain capabilities")

    def compareHypervisorCPU(self, emulator, arch, machine, virttype, xml, flags=0):
        return self.code

    def baselineHypervisorCPU(self, emulator, arch, machine, virttype, xml_cpus, flags=0):
        return "<cpu mode='custom' match='exact'><model>Conroe</model></cpu>"


@pytest.mark.skipif(libvirt is None, reason="libvirt-python is not installed")
def test_live_host(monkeypatch):
    conns = {"qemu+tls://hv4/system": _FakeConn(fixture("Xeon-Gold-6148", "host"), libvirt.VIR_CPU_COMPARE_SUPERSET)}
    monkeypatch.setattr(_cpu_compat, "Connection", lambda uri, read_only=False: contextlib.nullcontext(conns[uri]))
    result, code = run(guests=GUESTS[:1], live_hosts=[{"name": "hv4", "uri": "qemu+tls://hv4/system"}],
                       baseline=True)
    assert code == 0
    pair = result["matrix"][0]
    assert (pair["host"], pair["result"], pair["libvirt_result"], pair["disagreement"]) == \
        ("hv4", "superset", "superset", False)
    assert result["baseline"]["libvirt_host"] == "hv4"
    assert result["baseline"]["libvirt_xml"].startswith("<cpu")
