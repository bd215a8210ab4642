# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to hvmaint.libvirt: action plugins that run a pure-logic module (planner, readiness, locate) inside the
controller's worker, and take the fleet's facts from hostvars rather than from the task's arguments; and when a
module delegated to the controller (the ledger, the report) may run in the controller's own process.

Passing a thousand hosts' facts as a module argument costs Ansible a template pass over every value, a JSON
round trip and a Python start-up (about 20 s for 10,000 VMs here); reading them from the hosts that the role
fleet_facts registered them on costs one pass in Python (plugins/module_utils/_fleet.py).
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.hvmaint.libvirt.plugins.module_utils._fleet import Fleet, FleetError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError


LOCAL_CONNECTIONS = ("local", "ansible.builtin.local")


def in_controller_process(connection, play_context, task):
    """Whether a module the task would run could run in the controller's own worker instead: it would run as this
    same user on this same machine with this same environment, so nothing differs but the process. With become
    (another user) or an environment of the task's own, it must run as a module."""
    return (connection.transport in LOCAL_CONNECTIONS and not play_context.become
            and not any(task.environment or []))


class InControllerProcessAction(ActionBase):
    """A module the roles delegate to the controller (the ledger, the report), run in the controller's own worker
    when in_controller_process() allows it, else as a module as usual. Subclasses name the module's argument spec,
    the work (`work(params, check_mode)`, shared with the module), the errors it raises and the result fields of a
    failure."""

    _supports_check_mode = True
    REQUIRED_IF = None
    ERRORS = ()

    @staticmethod
    def argument_spec():
        raise NotImplementedError

    @staticmethod
    def work(params, check_mode):
        raise NotImplementedError

    @staticmethod
    def failure(params, exc):
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        if not in_controller_process(self._connection, self._play_context, self._task):
            result.update(self._execute_module(module_args=dict(self._task.args), task_vars=task_vars))
            return result
        validated = ArgumentSpecValidator(self.argument_spec(), required_if=self.REQUIRED_IF).validate(
            dict(self._task.args))
        if validated.error_messages:
            return dict(result, failed=True, msg="; ".join(validated.error_messages))
        params = validated.validated_parameters
        try:
            result.update(self.work(params, self._task.check_mode))
        except self.ERRORS as exc:
            return dict(result, failed=True, **self.failure(params, exc))
        return result


def play_fleet(task_vars, templar):
    """The facts that the role fleet_facts read on the play's hosts."""
    return Fleet(task_vars.get("ansible_play_hosts") or [], task_vars["hostvars"].raw_get, template=templar.template)


class ControllerModuleAction(ActionBase):
    """Subclasses name the module's argument spec, the option that holds the fleet, the options filled along with
    it when the task leaves them out (option: what of the Fleet), and the function doing the work."""

    _supports_check_mode = True
    FLEET_OPTION = "hosts"
    COMPANIONS = {}
    MUTUALLY_EXCLUSIVE = None
    REQUIRED_ONE_OF = None

    @staticmethod
    def argument_spec():
        raise NotImplementedError

    @staticmethod
    def work(params):
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        try:
            fleet = None
            if args.get(self.FLEET_OPTION) is None:
                fleet = play_fleet(task_vars or {}, self._templar)
                # The fleet is hypervisor_info's output, not the task's input: checking it against the argument
                # spec (which also deep-copies it) took 5 s at 10,000 VMs. The task's own arguments are checked.
                args[self.FLEET_OPTION] = []
                for option, what in self.COMPANIONS.items():
                    if args.get(option) is None:
                        args[option] = fleet.get(what)
            validated = ArgumentSpecValidator(self.argument_spec(), mutually_exclusive=self.MUTUALLY_EXCLUSIVE,
                                              required_one_of=self.REQUIRED_ONE_OF).validate(args)
            if validated.error_messages:
                return dict(result, failed=True, msg="; ".join(validated.error_messages))
            params = validated.validated_parameters
            if fleet is not None:
                params[self.FLEET_OPTION] = fleet.hypervisors
            warnings = []
            result.update(self.work(params, warnings.append))
            if warnings:
                result["warnings"] = result.get("warnings", []) + warnings
        except (HvmaintError, FleetError) as exc:
            return dict(result, failed=True, msg=str(exc))
        result.setdefault("changed", False)
        return result
