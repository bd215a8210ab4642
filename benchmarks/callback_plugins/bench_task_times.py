# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""For benchmarks/bench_drain.py and bench_fleet_scale.py only: writes each task's wall time, and what live_migrate
reports about its own cost, to the JSON file named by HVMAINT_BENCH_TIMES when the playbook ends."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: bench_task_times
    type: aggregate
    short_description: task wall times for the drain benchmark
    description: Writes each task's name and wall time to the file named by HVMAINT_BENCH_TIMES.
    requirements:
      - enabled in ANSIBLE_CALLBACKS_ENABLED
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._tasks = []
        self._current = None
        self._migrations = []

    def _close(self):
        if self._current is not None:
            self._current["seconds"] = round(time.monotonic() - self._current.pop("_start"), 3)
            self._tasks.append(self._current)
            self._current = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close()
        self._current = {"name": task.get_name(), "_start": time.monotonic(), "started_at": time.time()}

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def v2_runner_on_ok(self, result):
        data = result._result
        if "migrations" in data and "progress_polling" in data:
            self._migrations.append({"task": result._task.get_name(), "progress_polling": data["progress_polling"],
                                     "engine": data.get("engine_cost"), "migrations": data["migrations"]})

    def v2_playbook_on_stats(self, stats):
        self._close()
        path = os.environ.get("HVMAINT_BENCH_TIMES")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({"tasks": self._tasks, "live_migrate": self._migrations}, handle)
