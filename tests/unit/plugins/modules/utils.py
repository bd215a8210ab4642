"""Run a module's main() in-process, the way Ansible would, and return what it printed."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from ansible.module_utils import basic


def run_module(main, args):
    """Call main() with args as the module arguments; return (result dict, exit code)."""
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode("utf-8")
    if hasattr(basic, "_ANSIBLE_PROFILE"):
        basic._ANSIBLE_PROFILE = "legacy"  # ansible-core 2.19+ refuses arguments without a serialization profile
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
            main()
    finally:
        basic._ANSIBLE_ARGS = None
    return json.loads(out.getvalue()), exc.value.code
