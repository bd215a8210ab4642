# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of hvmaint.libvirt.vm_locate: looks on the controller, with the fleet's facts from hostvars when
the task gives no hosts (plugins/plugin_utils/_controller_module.py)."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.modules import vm_locate
from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._controller_module import ControllerModuleAction


class ActionModule(ControllerModuleAction):
    argument_spec = staticmethod(vm_locate.argument_spec)
    work = staticmethod(vm_locate.find)
