# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: write every task result and the final stats to the JSON file named by HVMAINT_RECORD_RESULTS."""

from __future__ import annotations

DOCUMENTATION = r"""
name: record_results
type: aggregate
short_description: Record every task result as JSON (tests only)
description: Writes each result (task, host, status, result) and the stats as JSON to E(HVMAINT_RECORD_RESULTS).
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.tasks = []

    def _record(self, status, result):
        self.tasks.append({"task": result.task_name, "host": result._host.get_name(), "status": status,
                           "result": self._convert_to_json_compatible(result._result)})

    @staticmethod
    def _convert_to_json_compatible(value):
        return json.loads(json.dumps(value, default=str))

    def v2_runner_on_ok(self, result):
        self._record("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_unreachable(self, result):
        self._record("unreachable", result)

    def v2_runner_on_skipped(self, result):
        self._record("skipped", result)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        with open(os.environ["HVMAINT_RECORD_RESULTS"], "w", encoding="utf-8") as handle:
            json.dump({"tasks": self.tasks, "stats": summary}, handle)
