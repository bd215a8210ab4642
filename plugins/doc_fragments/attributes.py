# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: attribute descriptions shared by the collection's modules.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
  idempotent:
    description: Running the module twice with the same arguments gives the same result, and the second run reports no change.
"""

    # For modules that only read: they support check mode fully and change nothing.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: This module changes nothing, so check mode runs it as usual.
  diff_mode:
    support: N/A
    details: This module changes nothing.
  idempotent:
    support: full
"""
