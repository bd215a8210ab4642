# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to hvmaint.libvirt: the fleet's facts as the controller holds them, for the lookup fleet_facts.

The role fleet_facts registers each host's hypervisor_info result on that host only (once per host); this module
turns those per-host results into what the planner, the CPU check and the reports take, in one pass over the
hosts, without copying the fleet into every host's variables. It runs on the controller and needs no libvirt.
"""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._cpu_compat import compared_host_cpu

# The variables the role fleet_facts registers hypervisor_info's result in, on each host, fleet_info's (every
# host's result under `hosts`, run once, so the same object on every host) when it reads from the controller, and
# host_load's when its entry point `load` measures load (tasks/load.yml).
FACTS_VAR = "fleet_facts__info"
FLEET_VAR = "fleet_facts__fleet"
LOAD_VAR = "fleet_facts__load"
WHAT = ("hypervisors", "cpus", "left_out", "names", "inventory_names", "host_overrides", "migration_uris",
        "summary_lines", "loads")


class FleetError(Exception):
    """The fleet's facts cannot be used (two hosts with one libvirt name, facts never read)."""


def _declared(host_vars, template):
    declared = {}
    for key, var in (("memory_mib", "hvmaint_memory_mib"), ("vcpus", "hvmaint_vcpus")):
        if host_vars.get(var) is not None:
            declared[key] = int(template(host_vars[var]))
    return declared


def _failure(result):
    """Why a host's facts are missing, or None when they were read."""
    if result is None:
        return "its facts were not read in this play"
    if not isinstance(result, dict):
        return "its facts are not a hypervisor_info result"
    if result.get("unreachable"):
        return "unreachable: %s" % (result.get("msg") or "no answer").strip()
    if result.get("failed") or not isinstance(result.get("hypervisor"), dict):
        return "its facts could not be read: %s" % (result.get("msg") or "no hypervisor in the result").strip()
    return None


def _result_of(host, host_vars, facts_var):
    """The host's hypervisor_info-shaped result from whichever read ran last: the role skips the other one, and its
    skipped result, registered on every host, replaces what an earlier read left."""
    fleet_read = host_vars.get(FLEET_VAR)
    if isinstance(fleet_read, dict) and isinstance(fleet_read.get("hosts"), dict):
        return fleet_read["hosts"].get(host)
    return host_vars.get(facts_var)


class Fleet:
    """Each reachable host's facts, the hosts left out and why, and the inventory's per-host settings.

    `host_vars_of(host)` returns a host's variables untemplated (hostvars.raw_get); `template(value)` renders
    one small inventory value. Only the few per-host settings are templated: the facts are data, used as they are.
    """

    def __init__(self, hosts, host_vars_of, template=lambda value: value, facts_var=FACTS_VAR):
        self.hypervisors, self.left_out = [], []
        self.inventory_names, self.host_overrides, self.migration_uris = {}, {}, {}
        self._libvirt_names = {}
        # Measured load (host_load) of the hosts whose facts were read and whose load was measured.
        self.loads = []
        for host in hosts:
            host_vars = host_vars_of(host)
            result = _result_of(host, host_vars, facts_var)
            why = _failure(result)
            if why:
                self.left_out.append({"host": host, "error": why})
                continue
            facts = result["hypervisor"]
            name = facts.get("name")
            if name in self.inventory_names:
                raise FleetError(
                    "%s and %s report the same host name to libvirt (%s): moves could not be told apart. Give each"
                    " host its own hostname." % (self.inventory_names[name], host, name))
            self.hypervisors.append(facts)
            self.inventory_names[name] = host
            self._libvirt_names[host] = name
            self.host_overrides[name] = _declared(host_vars, template)
            measured = host_vars.get(LOAD_VAR)
            if isinstance(measured, dict) and isinstance(measured.get("load"), dict) and not measured.get("failed"):
                self.loads.append(dict(measured["load"], name=name))
            uri = host_vars.get("hvmaint_migration_uri")
            if uri is not None:
                self.migration_uris[name] = template(uri)

    def libvirt_name(self, host):
        """The libvirt name of an inventory host whose facts were read (FleetError otherwise)."""
        if host not in self._libvirt_names:
            left = [entry["error"] for entry in self.left_out if entry["host"] == host]
            raise FleetError("%s is not among the hosts whose facts were read%s"
                             % (host, " (%s)" % left[0] if left else ""))
        return self._libvirt_names[host]

    def only_vms_of(self, hosts=None, home=None):
        """The facts with the VM lists of other hosts emptied: a CPU check of a drain needs every host's CPU
        but only the drained host's VMs (`hosts`), one of a return only the VMs whose home is `home`."""
        keep = {self.libvirt_name(host) for host in hosts or ()}
        home_name = self.libvirt_name(home) if home else None
        trimmed = []
        for facts in self.hypervisors:
            if facts["name"] in keep:
                trimmed.append(facts)
                continue
            vms = [vm for vm in facts.get("vms") or () if home_name and (vm.get("metadata") or {}).get("home")
                   == home_name]
            trimmed.append(dict(facts, vms=vms))
        return trimmed

    def cpus(self, hosts=None, home=None):
        """What cpu_compat reads of the facts (its `hypervisors` option), nothing more: a thousand hosts' facts
        trimmed to the one CPU definition each host is compared by pass through a task's arguments a hundred
        times faster."""
        return [{"name": facts["name"],
                 "cpu": compared_host_cpu(facts.get("cpu")),
                 "vms": [{"name": vm.get("name"), "domain_type": vm.get("domain_type"),
                          "cpu": {"xml": (vm.get("cpu") or {}).get("xml")}} for vm in facts.get("vms") or ()]}
                for facts in self.only_vms_of(hosts, home)]

    def summary_lines(self):
        lines = ["%d hypervisors read" % len(self.hypervisors)]
        lines += ["left out: %s (%s)" % (entry["host"], entry["error"]) for entry in self.left_out]
        return lines

    def get(self, what, vms_of=None, vms_homed_on=None):
        if what == "hypervisors":
            if vms_of or vms_homed_on:
                return self.only_vms_of(vms_of, vms_homed_on)
            return self.hypervisors
        if what == "cpus":
            return self.cpus(vms_of, vms_homed_on)
        if what == "names":
            return self._libvirt_names
        if what == "summary_lines":
            return self.summary_lines()
        if what == "loads":
            return self.loads
        return {"left_out": self.left_out, "inventory_names": self.inventory_names, "host_overrides": self.host_overrides,
                "migration_uris": self.migration_uris}[what]
