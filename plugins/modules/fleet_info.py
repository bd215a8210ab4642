#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hvmaint.libvirt maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet_info
short_description: Read every hypervisor's facts from one place over libvirt, many hosts at once
version_added: 0.2.0
description:
  - Reads, for each host of O(uris), what M(hvmaint.libvirt.hypervisor_info) reads on the host itself (the shape
    of the collection's C(docs/facts.md)), over that host's libvirt URI, at most O(max_workers) hosts at a time.
    One task for the whole fleet instead of one task on every host, which is what a fleet of hundreds of hosts
    waits for.
  - The maintenance mark and the lease are files on each host (M(hvmaint.libvirt.maintenance_mode),
    M(hvmaint.libvirt.host_lease)). libvirt serves them as the volumes of a storage pool of type C(dir) over their
    directory C(/var/lib/libvirt/hvmaint). The module uses a pool over that directory when one is defined, or
    starts a transient pool C(hvmaint-state) (creating the directory when it is missing), downloads the two files
    and destroys the transient pool again. The connection needs the right to do so (a TLS client certificate
    that libvirtd accepts with full access does).
  - A host whose facts, mark or lease cannot be read is returned failed (or unreachable), never as unmarked; the
    role P(hvmaint.libvirt.fleet_facts#role) leaves it out of every plan and names it.
  - Each host waits, up to O(migration_wait_retries) times 5 seconds, for migrations under way on it (started by
    an interrupted run) to end, as the role does with M(hvmaint.libvirt.hypervisor_info). With O(own_jobs), a host
    that another job holds is returned at once, as the role does too.
  - The role P(hvmaint.libvirt.fleet_facts#role) runs it with C(fleet_facts_read=from_controller). Its action
    plugin reads on the controller, in Ansible's own process, and fills O(uris) from the play's hosts when the
    task does not give it (each host's C(hvmaint_libvirt_uri), else V(qemu+tls://<ansible_host>/system)).
author: hvmaint.libvirt maintainers (@hvmaint)
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
  - hvmaint.libvirt.attributes.INFO_MODULE
options:
  uris:
    description:
      - Inventory host name to the libvirt URI to read it over, for example
        V(qemu+tls://hv1.example.com/system) (add C(?pkipath=DIR) when the client certificates are not in
        C(/etc/pki)).
      - When left out, the action plugin reads the play's hosts (C(ansible_play_hosts)), each over its inventory
        variable C(hvmaint_libvirt_uri), else V(qemu+tls://) followed by its C(ansible_host) (or its name) and
        V(/system). TLS is the default; a plain C(qemu+tcp) URI sends the facts unencrypted.
    type: dict
  max_workers:
    description:
      - How many hosts are read at once. Each is a libvirt connection and a thread of the process that runs the
        module.
    type: int
    default: 20
  timeout:
    description:
      - Seconds the whole read may take, beyond the wait for migrations; a host that has not answered by then is
        returned unreachable (for example one whose network drops packets, where a TCP connect waits minutes).
    type: int
    default: 300
  migration_wait_retries:
    description:
      - How many times, 5 seconds apart, to read a host again while a migration is under way on it. A host still
        migrating after that is returned failed.
    type: int
    default: 120
  own_jobs:
    description:
      - The job ids of the run that reads (its own, and a dead job it breaks, as the role
        P(hvmaint.libvirt.fleet_lease#role) names them). A host whose lease another job holds (not one of these, not
        expired) is returned at once, without waiting for its migrations (the run is refused on that host anyway,
        and the wait would only delay the refusal). Empty, every host is waited for.
    type: list
    elements: str
    default: []
requirements:
  - libvirt-python on the machine that runs it (the controller, for the action plugin).
seealso:
  - module: hvmaint.libvirt.hypervisor_info
"""

EXAMPLES = r"""
- name: Read the whole fleet from the controller, twenty hosts at a time
  hvmaint.libvirt.fleet_info:
  run_once: true
  register: fleet

- name: Name the hosts that could not be read
  ansible.builtin.debug:
    msg: "{{ fleet.left_out }}"
  run_once: true

- name: Read two hosts whose client certificates are in a directory of their own
  hvmaint.libvirt.fleet_info:
    uris:
      kvm01: qemu+tls://kvm01.example.com/system?pkipath=/etc/hvmaint/pki
      kvm02: qemu+tls://kvm02.example.com/system?pkipath=/etc/hvmaint/pki
  run_once: true
"""

RETURN = r"""
hosts:
  description:
    - Inventory host name to that host's result, shaped like a registered M(hvmaint.libvirt.hypervisor_info)
      result, C({hypervisor}) when its facts, mark and lease were read, else C({failed, msg}) or
      C({unreachable, msg}).
  returned: always
  type: dict
  sample: {hv1: {changed: false, hypervisor: {name: hv1, maintenance: null, lease: null, vms: []}},
           hv3: {unreachable: true, msg: "cannot connect to libvirt at qemu+tls://hv3/system: ..."}}
read:
  description: The hosts whose facts were read.
  returned: always
  type: list
  elements: str
  sample: [hv1, hv2]
left_out:
  description: The hosts whose facts could not be read, and why.
  returned: always
  type: list
  elements: dict
  sample: [{host: hv3, error: "cannot connect to libvirt at qemu+tls://hv3/system: Connection refused"}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hvmaint.libvirt.plugins.module_utils._fleet_read import (
    FLEET_INFO_ARGUMENT_SPEC,
    check_limits,
    read_uris,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import require_libvirt


def main():
    module = AnsibleModule(argument_spec=FLEET_INFO_ARGUMENT_SPEC, supports_check_mode=True)
    require_libvirt(module)
    if not module.params["uris"]:
        module.fail_json(msg="give uris (inventory host name: libvirt URI); only the action plugin, on the"
                             " controller, reads them from the play's hosts")
    wrong = check_limits(module.params)
    if wrong:
        module.fail_json(msg=wrong)
    module.exit_json(**read_uris(module.params))


if __name__ == "__main__":
    main()
