# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.fleet_info: reads every host of the play over libvirt from Ansible's own process
on the controller (no module start, no JSON round trip of the fleet's facts), with each host's URI from the
inventory. A simulated host (hvmaint_recorded_facts, for tests and benchmarks) is read from its recorded facts in
the same pool of threads."""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.hvmaint.libvirt.plugins.module_utils._fleet_read import (
    FLEET_INFO_ARGUMENT_SPEC,
    check_limits,
    deadline_s,
    read_fleet,
    read_over_libvirt,
    summary,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import LIBVIRT_IMPORT_ERROR
from ansible_collections.hvmaint.libvirt.plugins.module_utils._recorded import RECORDED_FACTS_VAR, load_facts

URI_VAR = "hvmaint_libvirt_uri"


def default_uri(address):
    """TLS unless the inventory says otherwise: the facts name every VM, and a drain trusts them."""
    return "qemu+tls://%s/system" % address


def _recorded_reader(path):
    def read():
        try:
            return {"changed": False, "hypervisor": load_facts(path), "recorded": True}
        except (OSError, ValueError) as exc:
            return {"failed": True, "msg": "recorded facts %s: %s" % (path, exc)}
    return read


class ActionModule(ActionBase):

    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        validated = ArgumentSpecValidator(FLEET_INFO_ARGUMENT_SPEC).validate(dict(self._task.args))
        if validated.error_messages:
            return dict(result, failed=True, msg="; ".join(validated.error_messages))
        params = validated.validated_parameters
        wrong = check_limits(params)
        if wrong:
            return dict(result, failed=True, msg=wrong)
        readers = self._readers(params, task_vars)
        if LIBVIRT_IMPORT_ERROR and any(not getattr(reader, "recorded", False) for reader in readers.values()):
            return dict(result, failed=True, msg="fleet_info reads libvirt from the controller: install libvirt-python"
                        " in the Python that runs ansible-playbook (pip install libvirt-python)",
                        exception=LIBVIRT_IMPORT_ERROR)
        result.update(summary(read_fleet(readers, params["max_workers"], deadline_s(params))))
        return result

    def _readers(self, params, task_vars):
        """{inventory host: reader}: the task's URIs, else each play host's URI or recorded facts."""
        retries, own_jobs = params["migration_wait_retries"], params["own_jobs"]
        if params["uris"]:
            return {host: self._libvirt_reader(str(uri), retries, own_jobs) for host, uri in params["uris"].items()}
        readers = {}
        for host in task_vars.get("ansible_play_hosts") or []:
            # Untemplated, then only the one or two values used: templating every host's variables would cost
            # what the per-host read costs.
            host_vars = task_vars["hostvars"].raw_get(host)
            recorded = host_vars.get(RECORDED_FACTS_VAR)
            if recorded:
                readers[host] = _recorded_reader(self._templar.template(recorded))
                readers[host].recorded = True
                continue
            uri = host_vars.get(URI_VAR)
            if uri is None:
                uri = default_uri(self._templar.template(host_vars.get("ansible_host", host)))
            readers[host] = self._libvirt_reader(str(self._templar.template(uri)), retries, own_jobs)
        return readers

    @staticmethod
    def _libvirt_reader(uri, retries, own_jobs):
        return lambda: read_over_libvirt(uri, retries, own_jobs=own_jobs)
