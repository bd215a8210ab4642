#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: report_file
short_description: Write a run's report file whole, or make the directory it goes in
version_added: 0.1.0
description:
  - Writes a text file (the HTML report of a drain or a return) through a temporary file and a rename, so that a
    reader never sees half of it and a failed write leaves no file; the file's mode is C(0644).
  - With O(state=directory), makes the directory and its missing parents (mode C(0755); an existing directory is
    left as it is) and checks that a file can be written in it. The roles P(hvmaint.libvirt.drain_host#role) and
    P(hvmaint.libvirt.return_host#role) run it before their first change, so that a report that could not be
    written stops them with nothing changed.
  - Delegated to C(localhost) (how the collection's roles call it), it runs in Ansible's own process on the
    controller rather than as a module in a new Python process; on any other host, with become or with a task
    environment, it runs as a module on that host.
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  path:
    description: The file to write, or with O(state=directory) the directory to make.
    type: path
    required: true
  content:
    description: The file's text, written as UTF-8. Required with O(state=file).
    type: str
  state:
    description: V(file) writes O(content) to O(path); V(directory) makes the directory O(path).
    type: str
    choices: [file, directory]
    default: file
seealso:
  - module: ansible.builtin.copy
    description: The general way to write a file on a host, with owner, SELinux context, backup and validation.
"""

EXAMPLES = r"""
- name: Make the reports' directory before anything changes (one that cannot be written stops the play here)
  hvmaint.libvirt.report_file:
    path: /var/lib/hvmaint/reports
    state: directory
  delegate_to: localhost

- name: Write the report
  hvmaint.libvirt.report_file:
    path: /var/lib/hvmaint/reports/drain-hv1.html
    content: "{{ lookup('ansible.builtin.template', 'move_report.html.j2') }}"
  delegate_to: localhost
"""

RETURN = r"""
path:
  description: The file written or the directory made.
  returned: always
  type: str
  sample: /var/lib/hvmaint/reports/drain-hv1-20261202T120000Z.html
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._report_file import (
    ReportFileError,
    make_directory,
    write_file,
)


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        content=dict(type="str"),
        state=dict(type="str", choices=["file", "directory"], default="file"),
    )


REQUIRED_IF = [("state", "file", ["content"])]


def write(params, check_mode):
    """The module's result for validated `params`; raises ReportFileError. The action plugin calls it too, in the
    controller's own process, when the task runs on the controller."""
    if params["state"] == "directory":
        changed = make_directory(params["path"], check_mode)
    else:
        changed = write_file(params["path"], params["content"], check_mode)
    return dict(changed=changed, path=params["path"])


def main():
    module = AnsibleModule(argument_spec=argument_spec(), required_if=REQUIRED_IF, supports_check_mode=True)
    try:
        result = write(module.params, module.check_mode)
    except ReportFileError as exc:
        module.fail_json(msg=str(exc), path=module.params["path"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
