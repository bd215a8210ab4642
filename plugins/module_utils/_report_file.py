# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to hvmaint.libvirt: the report_file module's work (make a report's directory, write a report whole), used
by the module on a host and by its action plugin in the controller's own process."""

from __future__ import annotations

import os
import tempfile

DIRECTORY_MODE = 0o755
FILE_MODE = 0o644


class ReportFileError(OSError):
    """A directory or file that cannot be made or written, with a message a person can act on."""


def make_directory(path, check_mode=False):
    """Make `path` and its missing parents (mode 0755; an existing directory is left as it is), and check that a
    file can be written in it: a directory the run could not write its report in stops it before any change.
    Returns whether a directory was (or in check mode would be) made."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        if os.path.lexists(current):
            raise ReportFileError("cannot make the report directory %s: %s is not a directory" % (path, current))
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    if check_mode:
        if not missing and not os.access(path, os.W_OK | os.X_OK):
            raise ReportFileError("cannot write in the report directory %s: permission denied" % path)
        return bool(missing)
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
            # Not left to the umask: the reports are read by whoever runs the play, as the template module made them.
            os.chmod(directory, DIRECTORY_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ReportFileError("cannot make the report directory %s: %s" % (path, exc)) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ReportFileError("cannot write in the report directory %s: permission denied" % path)
    return bool(missing)


def write_file(path, content, check_mode=False):
    """Write `content` (text, UTF-8) to `path` whole: a temporary file beside it, then a rename, so a reader never
    sees half a report and a failed write leaves no file. Mode 0644. Returns whether the file changed."""
    data = content.encode("utf-8")
    try:
        with open(path, "rb") as handle:
            if handle.read() == data:
                return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ReportFileError("cannot write the report %s: %s" % (path, exc)) from exc
    if check_mode:
        return True
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    except OSError as exc:
        raise ReportFileError("cannot write the report %s: %s" % (path, exc)) from exc
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), FILE_MODE)
        os.replace(temporary, path)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise ReportFileError("cannot write the report %s: %s" % (path, exc)) from exc
    return True
