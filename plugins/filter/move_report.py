# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter hvmaint.libvirt.move_report (documented in move_report.yml); the work is in
plugins/plugin_utils/_move_report.py."""

from __future__ import annotations

import time

from ansible.errors import AnsibleFilterError

from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._move_report import ReportError, report_data


def move_report(plan, migrations=None, hosts_before=None, hosts_after=None, host_overrides=None, operation="drain",
                subject=None, actor=None, generated_at=None):
    try:
        return report_data(plan, migrations=migrations, hosts_before=hosts_before, hosts_after=hosts_after,
                           host_overrides=host_overrides, operation=operation, subject=subject, actor=actor,
                           generated_at=time.time() if generated_at is None else generated_at)
    except ReportError as e:
        raise AnsibleFilterError("move_report: %s" % e) from e


class FilterModule:
    def filters(self):
        return {"move_report": move_report}
