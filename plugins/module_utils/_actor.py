# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Who is acting, as the controller knows it: the AWX/Tower user and job, else the controller's own user.

AWX passes its user and job to a playbook as extra variables (awx_user_name, awx_job_id, and the older tower_*
names), not as environment variables of the hypervisors, so this must be worked out on the controller and handed
to the modules that record it (the maintenance mark, the audit ledger, a lease).
"""

from __future__ import annotations

import getpass
import os

# AWX's names first, then the names AWX and Ansible Tower also set for older playbooks.
_USER_VARIABLES = ("awx_user_name", "tower_user_name")
_JOB_VARIABLES = ("awx_job_id", "tower_job_id")


def controller_user(environ=None):
    """The controller's login name (SUDO_USER first: the person behind sudo, not root)."""
    environ = os.environ if environ is None else environ
    for name in ("SUDO_USER", "USER", "LOGNAME"):
        if environ.get(name):
            return environ[name]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def actor(variables, environ=None):
    """{user, job, via}: the AWX user and job id when the play's variables carry them, else the controller's user.

    `via` says which: V(awx) or V(controller). `job` is a string, or None outside AWX.
    """
    variables = variables or {}
    user = next((str(variables[name]) for name in _USER_VARIABLES if variables.get(name) not in (None, "")), None)
    job = next((str(variables[name]) for name in _JOB_VARIABLES if variables.get(name) not in (None, "")), None)
    if user is None and job is None:
        return {"user": controller_user(environ), "job": None, "via": "controller"}
    # A job launched by a schedule has no user; the job id still says who to ask.
    return {"user": user or "awx", "job": job, "via": "awx"}
