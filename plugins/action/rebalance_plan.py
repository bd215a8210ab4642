# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.rebalance_plan: plans on the controller, with the fleet's facts and measured
loads from hostvars when the task gives none (plugins/plugin_utils/_controller_module.py)."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.modules import rebalance_plan
from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._controller_module import ControllerModuleAction


class ActionModule(ControllerModuleAction):
    COMPANIONS = {"host_overrides": "host_overrides", "migration_uris": "migration_uris", "loads": "loads"}
    argument_spec = staticmethod(rebalance_plan.argument_spec)
    work = staticmethod(rebalance_plan.plan)
