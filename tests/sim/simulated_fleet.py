"""A simulated fleet for tests and benchmarks: N hosts with V VMs each, as recorded hypervisor_info facts.

Each host is an inventory host with `ansible_connection: local` and `hvmaint_recorded_facts` pointing at its
facts file, so the shipped playbooks and roles run over it unchanged: hypervisor_info's action plugin serves the
recorded facts and live_migrate's answers the drain's check-mode dry-run from them (plugins/module_utils/
_recorded.py); the planner, CPU check (real CPU definitions recorded from the lab's libvirt), readiness and
reports run as on real hosts. Recorded facts rather than libvirt's test:/// driver: the driver reports the
controller's own hostname for every host, and a module run per host would measure Python start-ups, not the
roles. A real host's fact reading is measured on the lab.

Scenario: sim0000 holds V VMs to drain; sim0001's V VMs run on sim0002... (for a return; its maintenance
mark is already cleared); every other host holds its own V VMs. Hosts alternate between the lab's hv1, hv2 and hv3
(which lacks the app bridge), so placement has constraints to honour.

    python tests/sim/simulated_fleet.py --hosts 100 --vms-per-host 10 --out /tmp/fleet100
    ansible-playbook -i /tmp/fleet100/inventory.json playbooks/drain_host.yml -e drain_host_host=sim0000 --check
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "unit", "fixtures")
# VM shapes of the lab's recorded facts (shared storage, no host devices), cycled over each host's VMs.
VM_SHAPES = ["db1", "dns1", "web1", "web2", "batch1", "paused1", "old1", "app1", "mon1", "cache1"]
TIERS = {"db1": "critical", "web1": "high", "batch1": "low", "cache1": "low"}


def _read(*parts):
    with open(os.path.join(FIXTURES, *parts), encoding="utf-8") as handle:
        return handle.read()


def _real_cpus():
    """Host CPU and host-model CPU as libvirt 9.0 reported them on the lab (the VMs are host-model guests)."""
    caps = _read("libvirt", "hv1-capabilities.xml")
    host_cpu = re.search(r"<host>.*?(<cpu>.*?</cpu>)", caps, re.S).group(1)
    domcaps = _read("libvirt", "hv1-domcapabilities-kvm.xml")
    host_model = re.search(r"<mode name='host-model' supported='yes'>(.*?)</mode>", domcaps, re.S).group(1)
    return host_cpu, "<cpu mode='custom' match='exact'>%s</cpu>" % host_model


def make_fleet(n_hosts, vms_per_host):
    lab = {host["name"]: host for host in json.load(open(os.path.join(FIXTURES, "facts", "lab3.json"),
                                                         encoding="utf-8"))}
    shapes = {vm["name"]: vm for host in lab.values() for vm in host["vms"]}
    host_cpu, host_model = _real_cpus()
    hosts = []
    for i in range(n_hosts):
        template = lab[("hv1", "hv2", "hv3")[i % 3]]
        name = "sim%04d" % i
        host = copy.deepcopy(dict(template, vms=[]))
        host.update(name=name, host_uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), memory_total_mib=262144,
                    memory_free_mib=200000, maintenance=None)
        host["cpu"].update(count=64, capabilities_xml=host_cpu, host_model_xml=host_model)
        for j in range(vms_per_host):
            shape = VM_SHAPES[j % len(VM_SHAPES)]
            vm = copy.deepcopy(shapes[shape])
            vm_name = "%s-%s-%d" % (name, shape, j)
            vm.update(name=vm_name, uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, vm_name)), job=None,
                      metadata={"home": name, "tier": TIERS.get(shape, "normal")})
            for disk in vm["disks"]:
                disk["path"] = "/mnt/vmstore/%s.qcow2" % vm_name
            for k, nic in enumerate(vm["nics"]):
                nic["mac"] = "52:54:%02x:%02x:%02x:%02x" % (i >> 8, i & 255, j & 255, k)
            host["vms"].append(vm)
        hosts.append(host)
    if n_hosts > vms_per_host + 2:
        away = hosts[1]
        for k, vm in enumerate(away["vms"]):
            hosts[2 + k]["vms"].append(vm)
        away["vms"] = []
    return hosts


def write_fleet(out, n_hosts, vms_per_host, python=sys.executable):
    facts_dir = os.path.join(out, "facts")
    os.makedirs(facts_dir, exist_ok=True)
    inventory = {}
    for host in make_fleet(n_hosts, vms_per_host):
        path = os.path.join(facts_dir, host["name"] + ".json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(host, handle)
        inventory[host["name"]] = {"hvmaint_recorded_facts": path}
    document = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": python},
                        "children": {"hypervisors": {"hosts": inventory}}}}
    path = os.path.join(out, "inventory.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--vms-per-host", type=int, default=10)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    print(write_fleet(args.out, args.hosts, args.vms_per_host))


if __name__ == "__main__":
    main()
