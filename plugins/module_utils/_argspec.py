# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Argument specs shared by several modules, built from the engine's own constants so that a default or a
choice is written once: the migration policy options (live_migrate; the drain_host and return_host roles pass
them through, and tests/unit/plugins/module_utils/test_argspec.py fails when their argument specs or
docs/live_migrate.md drift from this) and the capacity options (migration_readiness, evacuation_plan).
"""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import (
    COMPRESSION_METHODS,
    COPY_STORAGE_MODES,
    DEFAULT_COMPLETION_TIMEOUT_MIN_S,
    DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB,
    DEFAULT_ITERATIONS_PER_STEP,
    DEFAULT_MAX_DOWNTIME_MS,
    DEFAULT_MAX_PARALLEL,
    DEFAULT_MAX_PARALLEL_PER_DESTINATION,
    DEFAULT_PROGRESS_TIMEOUT_S,
    SHUTOFF_CHOICES,
    TIMEOUT_ACTIONS,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import (
    DEFAULT_MEMORY_OVERCOMMIT,
    DEFAULT_MEMORY_RESERVE_MIB,
    DEFAULT_VCPU_OVERCOMMIT,
)


def migration_policy_spec():
    """The options of _migration.policy.POLICY_OPTIONS, as an Ansible argument spec (a fresh copy each call)."""
    return dict(
        tls_stream=dict(type="bool", default=False),
        bandwidth_mib_s=dict(type="int", default=0),
        max_downtime_ms=dict(type="int", default=DEFAULT_MAX_DOWNTIME_MS),
        escalation=dict(type="dict", options=dict(
            downtime_steps=dict(type="list", elements="int", default=[]),
            auto_converge=dict(type="bool", default=False),
            post_copy=dict(type="bool", default=False),
            iterations_per_step=dict(type="int", default=DEFAULT_ITERATIONS_PER_STEP),
            from_history=dict(type="bool", default=True),
        )),
        parallel_connections=dict(type="int", default=1),
        compression=dict(type="str", choices=list(COMPRESSION_METHODS), default="none"),
        copy_storage=dict(type="str", choices=list(COPY_STORAGE_MODES), default="auto"),
        completion_timeout_s_per_gib=dict(type="int", default=DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB),
        completion_timeout_min_s=dict(type="int", default=DEFAULT_COMPLETION_TIMEOUT_MIN_S),
        completion_timeout_action=dict(type="str", choices=list(TIMEOUT_ACTIONS), default="abort"),
        progress_timeout_s=dict(type="int", default=DEFAULT_PROGRESS_TIMEOUT_S),
        progress_timeout_action=dict(type="str", choices=list(TIMEOUT_ACTIONS), default="abort"),
        max_parallel=dict(type="int", default=DEFAULT_MAX_PARALLEL),
        max_parallel_per_destination=dict(type="int", default=DEFAULT_MAX_PARALLEL_PER_DESTINATION),
        shutoff_vms=dict(type="str", choices=list(SHUTOFF_CHOICES), default="fail"),
    )


# The options that migration_readiness and evacuation_plan share (documented in doc_fragments/capacity.py): the
# hosts to plan against and how much of each may be used.
CAPACITY_ARGUMENT_SPEC = dict(
    hosts=dict(type="list", elements="dict"),
    cpu_matrix=dict(type="list", elements="dict"),
    host_overrides=dict(type="dict"),
    memory_overcommit=dict(type="float", default=DEFAULT_MEMORY_OVERCOMMIT),
    memory_reserve_mib=dict(type="int", default=DEFAULT_MEMORY_RESERVE_MIB),
    vcpu_overcommit=dict(type="float", default=DEFAULT_VCPU_OVERCOMMIT),
    bandwidth_mib_s=dict(type="float", default=100),
)
