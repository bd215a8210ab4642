# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The maintenance mark: a small JSON file kept on the hypervisor itself.

It lives beside libvirt's own state so that every job and every controller that looks at the host sees it,
and it goes away only when someone clears it.
"""

from __future__ import annotations

import json
import os
import tempfile

from ansible_collections.hvmaint.libvirt.plugins.module_utils._actor import controller_user

DEFAULT_MARK_PATH = "/var/lib/libvirt/hvmaint/maintenance.json"


def read_mark(path=DEFAULT_MARK_PATH):
    """The mark as a dict ({since, reason, by, ...}), or None when the host is not under maintenance."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return unreadable_mark(path, exc)
    return parse_mark(text, path)


def unreadable_mark(where, why):
    # A mark that cannot be read still means someone meant to mark the host: never treat it as absent.
    return {"since": None, "reason": "unreadable maintenance mark at %s: %s" % (where, why), "by": None}


def parse_mark(text, where):
    """The mark that a mark file's text holds (the file is untrusted: anything but a JSON object is still a mark)."""
    try:
        mark = json.loads(text)
    except ValueError as exc:
        return unreadable_mark(where, exc)
    return mark if isinstance(mark, dict) else {"since": None, "reason": str(mark)[:200], "by": None}


def write_mark(mark, path=DEFAULT_MARK_PATH):
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    # Write then rename, so a reader never sees half a mark.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".maintenance-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(mark, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def clear_mark(path=DEFAULT_MARK_PATH):
    """Remove the mark; True when there was one."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def default_actor():
    """Who is acting when the caller does not say: the login name on the host the module runs on.

    AWX's user is known only on the controller (the hvmaint.libvirt.actor lookup), which the roles pass as `by`.
    """
    return controller_user()


class NotAMarkError(ValueError):
    """The path holds something other than a maintenance mark."""


# Keys every mark written by write_mark carries.
_MARK_KEYS = ("since", "reason")


def refuse_other_files(path):
    """Raise NotAMarkError unless `path` is absent or holds a maintenance mark.

    `path` is an option: a typo or a copy-paste must not make state=absent delete, or state=present overwrite,
    some other file.
    """
    if not os.path.lexists(path):
        return
    why = None
    if os.path.islink(path) or not os.path.isfile(path):
        why = "it is not a regular file"
    else:
        try:
            with open(path, encoding="utf-8") as handle:
                content = json.load(handle)
        except (OSError, ValueError) as exc:
            why = "it is not JSON (%s)" % exc
        else:
            if not isinstance(content, dict) or not all(key in content for key in _MARK_KEYS):
                why = "it is JSON without the %s of a mark" % " and ".join(_MARK_KEYS)
    if why:
        raise NotAMarkError("%s is not a maintenance mark (%s): refusing to remove or overwrite it. Point path at"
                            " a mark, or remove the file by hand if it is a damaged mark" % (path, why))


def apply_mark(state, reason, by, path=DEFAULT_MARK_PATH, check_mode=False, now=None, job=None):
    """Set or clear the mark; returns {changed, maintenance, previous}. `job` (an AWX job id) is kept when given."""
    import socket
    import time

    refuse_other_files(path)
    previous = read_mark(path)
    if state == "absent":
        if previous is not None and not check_mode:
            clear_mark(path)
        return {"changed": previous is not None, "maintenance": None, "previous": previous}
    mark = dict(previous or {})
    if not previous:
        mark["since"] = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        mark["by"] = by or default_actor()
        mark["host"] = socket.gethostname()
    elif by:
        mark["by"] = by
    if job:
        mark["job"] = job
    mark["reason"] = reason
    changed = mark != previous
    if changed and not check_mode:
        write_mark(mark, path)
    return {"changed": changed, "maintenance": mark, "previous": previous}
