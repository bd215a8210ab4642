# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: the connection options every libvirt module shares.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - The libvirt connection URI.
      - The default V(qemu:///system) is the local hypervisor of the host the task runs on, which is how the
        collection's roles use it (one task per hypervisor, over SSH).
      - To run on the controller instead, give a remote URI such as V(qemu+tls://hv1.example.com/system)
        (with C(?pkipath=DIR) when the client certificates are not in C(/etc/pki)), or V(qemu+ssh://root@hv1/system).
      - Set it once for all modules of the collection with C(module_defaults) and the group
        C(group/hvmaint.libvirt.libvirt).
    type: str
    default: qemu:///system
requirements:
  - libvirt-python (C(python3-libvirt) on Debian, Ubuntu and EL) on the host that runs the module.
"""
