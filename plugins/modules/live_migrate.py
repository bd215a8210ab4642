#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: live_migrate
short_description: Live-migrate libvirt VMs from this host to another
version_added: 0.1.0
author: hvmaint.libvirt maintainers (@hvmaint)
description:
  - Moves one VM, or a list of VMs, from the host it runs on (O(uri), normally this host) to a destination host,
    live, peer to peer, persistent on the destination and undefined on the source, keeping name and UUID.
  - A VM is never left defined on both hosts or on neither, and never running on two. After a failure the module
    looks where the VM is and repairs the definitions when libvirt left them half-done, and says so in
    RV(migrations[].policy_steps).
  - A list migrates with at most O(max_parallel) migrations at a time, started in the order given. With O(moves),
    one call sends VMs to several destinations at once, with at most O(max_parallel_per_destination) going into
    any one of them; a VM whose destination is busy waits while later VMs to other destinations start. When one
    fails, the module starts no further migrations of the list, lets those already running finish, and reports
    the rest as V(skipped).
  - While migrations run, the action plugin of this module prints their progress (percent, data remaining, rate,
    pass) in C(ansible-playbook) output about every 4 seconds. See the C(docs/live_migrate.md) document of the
    collection for how this works, its cost, and when it falls back to a plain run.
  - Every VM that moves records the move in its own libvirt domain metadata (when, from, to, outcome), and its
    home host the first time it leaves home; see O(record_history).
  - The policy options say what libvirt's or QEMU's own default is, or which other platform a default follows.
    The C(docs/live_migrate.md) document explains each.
options:
  uri:
    description:
      - libvirt URI of the source host, where the VMs run now.
      - The default reaches the libvirtd of the host the module runs on, which is how the module is meant to run
        (delegated to, or targeting, the source host).
    type: str
    default: qemu:///system
  name:
    description:
      - Name of one VM to migrate. Exclusive with O(names) and O(moves).
    type: str
  names:
    description:
      - Names of the VMs to migrate, in the order they should start. Exclusive with O(name) and O(moves).
    type: list
    elements: str
  moves:
    description:
      - VMs to migrate, each with its own destination, in the order they should start. Exclusive with O(name),
        O(names), O(destination), O(destination_uri) and O(destination_connect_uri); O(transport) and the policy
        options apply to every move.
      - This is how the C(drain_host) role runs a wave whose VMs go to several hosts in one call.
      - An empty list means nothing to move - every other option is still checked, with the same limits as
        a run that moves VMs (a bad option fails the task), and nothing is connected or changed. The roles'
        dry-run relies on it, so a run with nothing to move refuses bad options too.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the VM.
        type: str
        required: true
      destination:
        description: Destination host, as in O(destination).
        type: str
      destination_uri:
        description: Destination URI, as in O(destination_uri).
        type: str
      destination_connect_uri:
        description: This module's own URI for the destination, as in O(destination_connect_uri).
        type: str
      wave:
        description:
          - The wave the VM belongs to, when one call runs several waves (the C(drain_host) role's
            C(drain_host_tier_overlap)). A VM starts only once every VM of a lower wave has started, so a later
            wave takes the slots an earlier one no longer needs but never starts before it. A move without it
            counts as wave 0.
        type: int
        version_added: 0.1.0
  state:
    description:
      - V(migrated) moves the VMs.
      - V(aborted) cancels the running migration job of each named VM on the source host; the VMs stay running
        there. The action plugin uses it when a playbook is interrupted.
    type: str
    choices: [migrated, aborted]
    default: migrated
  destination:
    description:
      - Name of the destination host, as the source host resolves it. Used to derive O(destination_uri) and named
        in the results and in the VMs' history.
      - It must be the host the URIs reach, as libvirt reports its host name (or its short form; an IP address is
        not compared by name). When O(destination_connect_uri) differs from O(destination_uri), the module also
        checks that both reach the same host (libvirt host UUID). A URI that reaches another host is refused
        before anything moves.
      - One of O(destination) and O(destination_uri) is required when O(state=migrated), unless O(moves) is
        given.
    type: str
  destination_uri:
    description:
      - libvirt URI of the destination as the source host's libvirtd reaches it (the migration is peer to peer, so
        the source libvirtd connects to it itself).
      - Default derived from O(destination) and O(transport), for example V(qemu+tls://hv2/system).
    type: str
  destination_connect_uri:
    description:
      - URI this module uses for its own connection to the destination (pre-flight checks and verification).
      - Defaults to O(destination_uri). Set it only when the module does not run on the source host and reaches
        the destination differently (for example with another C(pkipath)).
    type: str
  transport:
    description:
      - Transport of the derived O(destination_uri) (libvirt's control connection between the hosts).
      - V(tls) needs libvirt's TLS certificates on both hosts; V(ssh) needs the source host's root to reach the
        destination over SSH without a password; V(tcp) is unencrypted and unauthenticated unless SASL is set up.
    type: str
    choices: [tls, ssh, tcp]
    default: tls
  tls_stream:
    description:
      - Encrypt the migration stream itself (the VM's memory and disks) with TLS (libvirt's C(VIR_MIGRATE_TLS)).
      - Without it the stream goes over plain TCP whatever O(transport) is, which is libvirt's default; it needs
        QEMU's certificates (C(/etc/pki/qemu)) on both hosts and costs CPU on both.
    type: bool
    default: false
  bandwidth_mib_s:
    description:
      - Bandwidth limit of each migration in MiB/s. V(0) is unlimited, which is libvirt's default (and KubeVirt's
        current C(bandwidthPerMigration)).
    type: int
    default: 0
  max_downtime_ms:
    description:
      - Longest pause of the VM that QEMU may choose for the final switch-over, in milliseconds.
      - The default is QEMU's own default C(downtime-limit); the module sets it at the start of each migration.
    type: int
    default: 300
  escalation:
    description:
      - What to do with a VM whose memory changes faster than it can be copied (it "does not converge"). All steps
        are off by default, as in libvirt, KubeVirt and oVirt, because each trades the VM's performance or safety
        for finishing.
    type: dict
    suboptions:
      downtime_steps:
        description:
          - Raise the allowed downtime to each of these values (ms, rising) in turn, one step after every
            O(escalation.iterations_per_step) memory passes that did not finish the migration.
        type: list
        elements: int
        default: []
      auto_converge:
        description:
          - Allow QEMU's auto-converge, which slows the VM's vCPUs down until the migration converges.
          - libvirt cannot switch it on for a running migration, so it is armed at the start; QEMU starts
            throttling only when passes stop converging. The throttle is reported as a policy step when seen.
        type: bool
        default: false
      post_copy:
        description:
          - Allow post-copy and switch to it as the last step, after the downtime steps. In post-copy the VM runs
            on the destination while its memory is still being fetched; if either host or the network fails then,
            the VM is lost. Required for O(completion_timeout_action=postcopy) and
            O(progress_timeout_action=postcopy).
        type: bool
        default: false
      iterations_per_step:
        description:
          - Memory passes without convergence between two escalation steps.
        type: int
        default: 2
      from_history:
        description:
          - When the VM's last migration (its C(metadata.moves)) needed escalation, start this one where that one
            ended, instead of spending memory passes on steps that did not suffice last time - the downtime limit
            that finally worked, rounded up to one of O(escalation.downtime_steps) (never beyond the last one),
            and post-copy as the next step if it was needed and O(escalation.post_copy) allows it.
          - The policy's own limits always hold; a note in RV(migrations[].policy_steps) says when it applied.
        type: bool
        default: true
        version_added: 0.1.0
  parallel_connections:
    description:
      - Number of parallel connections for the migration stream (QEMU multifd). V(1) is a single stream, which is
        libvirt's default.
    type: int
    default: 1
  compression:
    description:
      - Compression of the migration stream. V(none) is libvirt's default.
      - V(xbzrle) sends only the changed bytes of pages sent before (good for VMs that rewrite a few bytes of many
        pages); V(zstd) and V(zlib) compress each multifd connection and need O(parallel_connections) of 2 or more
        and a libvirt and QEMU that support them.
    type: str
    choices: [none, xbzrle, zstd, zlib]
    default: none
  copy_storage:
    description:
      - Copy the VM's disks to the destination during the migration (libvirt's C(VIR_MIGRATE_NON_SHARED_DISK)).
      - V(auto) copies the disks that are on host-local storage and only those, as told by the storage pool of
        each disk (C(dir), C(fs), C(logical), C(disk), C(zfs) pools are local; C(netfs), C(rbd), C(gluster),
        C(iscsi) and other network or SAN pools are shared) or, for a disk in no pool when the module runs on
        the source host, by the file system holding it. A disk that cannot be told is an error; set V(always) or
        V(never).
      - The copy on the source is left in place.
    type: str
    choices: [auto, always, never]
    default: auto
  completion_timeout_s_per_gib:
    description:
      - Completion timeout, in seconds per GiB of the VM's memory (plus the disks it copies). V(0) disables it.
      - The default is KubeVirt's C(completionTimeoutPerGiB) as documented for KubeVirt and OpenShift
        Virtualization.
    type: int
    default: 800
  completion_timeout_min_s:
    description:
      - The completion timeout is never shorter than this, because starting QEMU on the destination takes the
        same time for any VM size.
    type: int
    default: 60
  completion_timeout_action:
    description:
      - What happens when the completion timeout fires. V(abort) cancels the migration and the VM keeps running on
        the source. V(postcopy) switches to post-copy (needs O(escalation.post_copy)).
    type: str
    choices: [abort, postcopy]
    default: abort
  progress_timeout_s:
    description:
      - Progress timeout, in seconds without any data moved. V(0) disables it. The default is KubeVirt's
        C(progressTimeout).
    type: int
    default: 150
  progress_timeout_action:
    description:
      - What happens when the progress timeout fires; as O(completion_timeout_action).
    type: str
    choices: [abort, postcopy]
    default: abort
  max_parallel:
    description:
      - Most migrations running at the same time from the source host. Two outbound migrations per host is the
        default of KubeVirt, oVirt and Hyper-V.
    type: int
    default: 2
  shutoff_vms:
    description:
      - What to do with a listed VM that is shut off on the source.
      - V(fail) refuses the list before anything moves, as C(virsh migrate --live) would.
      - V(move) moves its definition (libvirt's offline migration, C(VIR_MIGRATE_OFFLINE)); it is defined on the
        destination, still shut off, and undefined on the source, with its history recorded like a live move.
        Its disks must be reachable from the destination already (shared storage, or no writable disk), because
        an offline migration copies no disk; a shut-off VM on host-local storage is refused.
    type: str
    choices: [fail, move]
    default: fail
  max_parallel_per_destination:
    description:
      - Most migrations running at the same time into any one destination. It matters with O(moves), when one
        call sends VMs to several hosts; with a single destination O(max_parallel) is the tighter bound unless
        this one is smaller.
      - Our default mirrors the outbound one, so a spare host that receives from a drain is not flooded.
    type: int
    default: 2
  verify:
    description:
      - After each move, check that the VM runs and is persistent on the destination and is neither running nor
        defined on the source (a definition libvirt left on the source is removed).
    type: bool
    default: true
  record_history:
    description:
      - Record each move (and failed attempt) in the VM's libvirt domain metadata, in the collection's namespace,
        and its home host the first time it leaves it.
    type: bool
    default: true
  home:
    description:
      - Set the VM's home host to this name when it moves, instead of keeping the one recorded (or, when none is,
        the source host).
    type: str
  site_mapping:
    description:
      - Move the VMs to a host of another site, whose networks, bridges and storage pools have other names. The
        destination is given the VM's definitions rewritten for it (the running VM's and the persistent one);
        each NIC's network or bridge and each disk's pool (and its path, the target pool's directory plus the
        file name) are replaced by the names this mapping gives.
      - Every writable disk in a mapped pool is copied (the other site reaches none of this site's storage),
        whatever O(copy_storage) says; read-only disks and CD-ROMs are mapped but not copied (the target site must
        hold its own copy); network disks are left as they are.
      - A NIC or disk the mapping cannot place (an unlisted name and no default, a disk outside any pool, a block
        device, a C(<shareable/>) disk, a NIC of another type) stops the task before anything moves, naming it.
      - See the role hvmaint.libvirt.evacuate_site, which also checks that the target site can hold the VMs.
    type: dict
    version_added: 0.2.0
    suboptions:
      networks:
        description: Target network name for each source network name.
        type: dict
      default_network:
        description: Target network for a network that O(site_mapping.networks) does not list.
        type: str
      bridges:
        description: Target bridge name for each source bridge name (NICs of type bridge).
        type: dict
      default_bridge:
        description: Target bridge for a bridge that O(site_mapping.bridges) does not list.
        type: str
      pools:
        description: Target storage pool name for each source pool name.
        type: dict
      default_pool:
        description: Target pool for a pool that O(site_mapping.pools) does not list.
        type: str
  remove_source_copies:
    description:
      - After a move that copied disks, delete the source host's copies of them (its storage volumes), and only
        once the VM is verified running on the destination (with O(verify=true); a failed or unverified move
        keeps them). By default they are kept and listed in RV(migrations[].source_copies).
    type: bool
    default: false
    version_added: 0.2.0
  mark_source:
    description:
      - Mark the source host under maintenance, as M(hvmaint.libvirt.maintenance_mode) with V(state=present) does,
        before anything moves. The mark is set in this module run, so a drain needs no module run of its own for
        it; the role P(hvmaint.libvirt.drain_host#role) gives it with its first wave.
      - A mark that cannot be set fails the task before any VM moves. In check mode nothing is written.
      - The mark is returned as RV(maintenance); a mark that changed makes the task changed.
    type: dict
    version_added: 0.2.0
    suboptions:
      reason:
        description: Why the host is under maintenance.
        type: str
        default: maintenance
      by:
        description: Who marked it (default the login name on the host).
        type: str
      job:
        description: The job that marked it (an AWX job id).
        type: str
      path:
        description: Where the mark is kept on the host.
        type: path
        default: /var/lib/libvirt/hvmaint/maintenance.json
  progress_file:
    description:
      - Internal, set by the action plugin. Path on the source host where the module writes its progress as JSON.
    type: path
  result_file:
    description:
      - Internal, set by the action plugin. When given (with O(state=migrated), outside check mode), the module
        answers at once with the process id of a detached process that runs the migrations and writes the
        module's final result to this path on the source host.
    type: path
    version_added: 0.2.0
notes:
  - Needs libvirt-python on the host the module runs on (C(python3-libvirt) on Debian and EL).
  - Only running (or paused) persistent VMs move; offline migration is not done by this module.
  - The module handles SIGTERM and SIGINT by aborting the migrations it runs, leaving the VMs on the source.
  - When the task sets C(async), the module runs under Ansible's own async handling and shows no progress lines.
attributes:
  check_mode:
    support: full
    details: Looks up each VM and the destination and runs the pre-flight checks; reports what would move.
  diff_mode:
    support: full
    details: Shows the host of each VM before and after.
  idempotent:
    support: full
    details: A VM already running on the destination is reported as V(already_there) and not changed.
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
    details: The action plugin starts the module as a detached run on the host, to print progress and to abort on
      interruption.
  async:
    description: Supports being used with the C(async) keyword.
    support: full
extends_documentation_fragment:
  - hvmaint.libvirt.attributes
"""

EXAMPLES = r"""
- name: Move two VMs from hv1 to hv2 over TLS
  hvmaint.libvirt.live_migrate:
    names: [web1, db1]
    destination: hv2
  delegate_to: hv1

- name: Move a busy VM, escalating if it does not converge
  hvmaint.libvirt.live_migrate:
    name: db1
    destination: hv2
    bandwidth_mib_s: 200
    max_downtime_ms: 300
    escalation:
      downtime_steps: [500, 1000, 2000]
      auto_converge: true
  delegate_to: hv1

- name: A VM on host-local storage, over SSH, stream encrypted
  hvmaint.libvirt.live_migrate:
    name: build1
    destination: hv3
    transport: ssh
    tls_stream: true
    copy_storage: auto
  delegate_to: hv1

- name: One wave of a drain, to two hosts at once (at most 2 leave hv1, at most 1 enters each destination)
  hvmaint.libvirt.live_migrate:
    moves:
      - {name: db1, destination: hv2}
      - {name: web1, destination: hv3}
      - {name: web2, destination: hv2}
    max_parallel: 2
    max_parallel_per_destination: 1
  delegate_to: hv1

- name: Cancel a running migration (the VM stays on hv1)
  hvmaint.libvirt.live_migrate:
    name: db1
    state: aborted
  delegate_to: hv1
"""

RETURN = r"""
maintenance:
  description: The source host's maintenance mark after O(mark_source) was applied.
  returned: with O(mark_source)
  type: dict
  sample: {since: "2026-12-02T15:00:00Z", reason: firmware update, by: alice, job: "4711", host: hv1}
migrations:
  description: One entry per VM, in the order given.
  returned: when O(state=migrated)
  type: list
  elements: dict
  contains:
    name:
      description: VM name.
      type: str
    uuid:
      description: VM UUID.
      type: str
    source:
      description: Host name of the source (libvirt's hostname).
      type: str
    destination:
      description: The destination host.
      type: str
    outcome:
      description:
        - V(migrated), V(already_there), V(failed), V(aborted), V(skipped) (not started after an earlier failure
          or an abort), or in check mode V(would_migrate).
      type: str
    elapsed_s:
      description: Wall time of this VM's migration, including verification and history.
      type: float
    libvirt_time_ms:
      description: libvirt's own time of the migration job.
      type: int
    downtime_ms:
      description: The VM's downtime as libvirt measured it.
      type: int
    data_transferred_bytes:
      description: Memory and disk data sent.
      type: int
    memory_iterations:
      description: Memory passes.
      type: int
    dirty_rate_pages_s:
      description: The VM's memory dirty rate at the end, in pages per second.
      type: int
    dirty_rate_mib_s:
      description: The same in MiB/s.
      type: float
    copy_storage:
      description: Whether the disks were copied.
      type: bool
    source_copies:
      description:
        - The source host's copies of the disks the move copied, each with C(target), C(path), C(host) and
          C(removed) (true only with O(remove_source_copies=true) after a verified move; C(kept_because) says
          why one was kept when removal was asked).
      type: list
      elements: dict
      version_added: 0.2.0
    mode:
      description: V(live) for a running VM, V(offline) for the definition of a shut-off VM (O(shutoff_vms=move)).
      type: str
    downtime_limit_ms:
      description: The allowed downtime the migration ended with (after any escalation step). Live moves only.
      type: int
    escalated:
      description:
        - Whether the migration needed more than the base policy (a higher downtime limit, or post-copy). It is
          recorded with the move in the VM's history, and the VM's next migration starts there
          (O(escalation.from_history)).
      type: bool
    postcopy:
      description: Whether the migration switched to post-copy.
      type: bool
    bandwidth_limit_mib_s:
      description:
        - The policy's O(bandwidth_mib_s) the migration ran under, none when unlimited. Live moves only. Recorded
          with the move in the VM's history and the ledger; plans learn no times from throttled moves.
      type: int
      version_added: 0.2.0
    faulted:
      description:
        - Whether a move that ended migrated ran into a fault on the way (a monitoring error, a repair, a post-copy
          resume, RV(migrations[].needs_attention)). Recorded with the move; plans learn no times from it.
      type: bool
      version_added: 0.2.0
    switched_over_at:
      description:
        - When the VM was seen running on the destination (epoch seconds); from then on libvirt only stopped the
          source's QEMU, and the migration's slot went to the next VM. Absent when the call returned first.
      type: float
    policy_steps:
      description: Escalation steps, timeouts, repairs and notes, each with C(action)
        and a C(detail) text.
      type: list
      elements: dict
    where:
      description: After a failure, where the VM is (defined, running, persistent on source and destination).
      type: dict
    error:
      description: Why the VM did not move.
      type: str
    needs_attention:
      description:
        - Set when the module could not make the VM's place certain and did nothing about it, saying what a person
          must check. A host whose state could not be read is never taken for a host without the VM, and after a
          switch to post-copy the source's stale copy is never resumed (the VM is left paused on the destination
          when libvirt's post-copy resume fails).
      type: str
    started_at:
      description: Start of the migration (UNIX time).
      type: float
    finished_at:
      description: End of the migration (UNIX time).
      type: float
  sample:
    - name: work1
      uuid: 8c1f0d1e-4c4b-4f3e-9a55-0f3c2b1d9e77
      source: hv1
      destination: hv2
      outcome: migrated
      elapsed_s: 2.41
      libvirt_time_ms: 812
      downtime_ms: 48
      data_transferred_bytes: 96468992
      memory_iterations: 3
      dirty_rate_pages_s: 2048
      dirty_rate_mib_s: 8.0
      copy_storage: false
      policy_steps: []
      error: null
needs_attention:
  description: Every VM's C(needs_attention) text; the task's C(msg) repeats them.
  returned: when O(state=migrated)
  type: list
  elements: str
aborts:
  description: With O(state=aborted), one entry per VM with C(outcome) V(aborted), V(no_job), V(not_found) or V(failed).
  returned: when O(state=aborted)
  type: list
  elements: dict
source:
  description: Host name of the source.
  returned: when O(state=migrated)
  type: str
destination:
  description: The destination host; V(null) when O(moves) named several.
  returned: when O(state=migrated)
  type: str
destinations:
  description: Every destination host, in the order first named.
  returned: when O(state=migrated)
  type: list
  elements: str
destination_uri:
  description: The URI the source libvirtd migrated to; V(null) when O(moves) named several destinations.
  returned: when O(state=migrated)
  type: str
policy:
  description: The policy used, with every default filled in.
  returned: when O(state=migrated)
  type: dict
startup_s:
  description:
    - Seconds the module spent before the first migration started, in C(connect_s) (the connections, with the
      checks of each destination's identity) and C(preflight_s) (each VM looked up and its move decided).
  returned: when O(state=migrated)
  type: dict
  sample: {"connect_s": 0.41, "preflight_s": 0.08}
"""

import signal

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvmaint.libvirt.plugins.module_utils._argspec import migration_policy_spec
from ansible_collections.hvmaint.libvirt.plugins.module_utils._maintenance import (
    DEFAULT_MARK_PATH,
    NotAMarkError,
    apply_mark,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import (
    CONNECTION_ARGUMENT_SPEC,
    HvmaintError,
    fail_from,
    require_libvirt,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils import _migration
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.detached import run_detached
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.run import execute


def argument_spec():
    spec = dict(CONNECTION_ARGUMENT_SPEC)
    spec.update(migration_policy_spec())
    spec.update(
        name=dict(type="str"),
        names=dict(type="list", elements="str"),
        moves=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            destination=dict(type="str"),
            destination_uri=dict(type="str"),
            destination_connect_uri=dict(type="str"),
            wave=dict(type="int"),
        )),
        state=dict(type="str", choices=["migrated", "aborted"], default="migrated"),
        destination=dict(type="str"),
        destination_uri=dict(type="str"),
        destination_connect_uri=dict(type="str"),
        transport=dict(type="str", choices=["tls", "ssh", "tcp"], default="tls"),
        verify=dict(type="bool", default=True),
        record_history=dict(type="bool", default=True),
        home=dict(type="str"),
        site_mapping=dict(type="dict", options=dict(
            networks=dict(type="dict"), default_network=dict(type="str"),
            bridges=dict(type="dict"), default_bridge=dict(type="str"),
            pools=dict(type="dict"), default_pool=dict(type="str"),
        )),
        remove_source_copies=dict(type="bool", default=False),
        mark_source=dict(type="dict", options=dict(
            reason=dict(type="str", default="maintenance"),
            by=dict(type="str"),
            job=dict(type="str"),
            path=dict(type="path", default=DEFAULT_MARK_PATH),
        )),
        progress_file=dict(type="path"),
        result_file=dict(type="path"),
    )
    return spec


def _abort_on_signals(batch):
    # AWX cancels a job with SIGINT then SIGTERM; under async the module is detached from the controller, so it
    # must cancel the libvirt jobs itself or they would run on.
    def handler(signum, _frame):
        batch.request_abort("signal %s received" % signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


MUTUALLY_EXCLUSIVE = [("name", "names", "moves"), ("moves", "destination"), ("moves", "destination_uri"),
                      ("moves", "destination_connect_uri")]
REQUIRED_ONE_OF = [("name", "names", "moves")]
REQUIRED_IF = [("state", "migrated", ("destination", "destination_uri", "moves"), True)]


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
        required_one_of=REQUIRED_ONE_OF,
        required_if=REQUIRED_IF,
        supports_check_mode=True,
    )
    require_libvirt(module)
    marked = _mark_source(module)
    if module.params.get("result_file") and module.params["state"] == "migrated" and not module.check_mode:
        # The action plugin follows the run through the progress and result files.
        run_detached(module, _migration, lambda detached: _migrate(detached, marked))
    _migrate(module, marked)


def _mark_source(module):
    """Set mark_source's mark before anything moves (before the detached start, so that a mark that cannot be
    written fails this run at once); its result, or None without mark_source."""
    mark = module.params.get("mark_source")
    if not mark:
        return None
    try:
        return apply_mark("present", mark["reason"], mark["by"], mark["path"], check_mode=module.check_mode,
                          job=mark["job"])
    except (NotAMarkError, OSError) as exc:
        module.fail_json(msg="cannot mark the source host under maintenance, so nothing moved: %s" % exc)


def _migrate(module, marked=None):
    try:
        result = execute(module.params, check_mode=module.check_mode, on_start=_abort_on_signals)
    except HvmaintError as exc:
        fail_from(module, exc)
    if marked is not None:
        result["maintenance"] = marked["maintenance"]
        result["changed"] = result.get("changed", False) or marked["changed"]
    if result.pop("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
