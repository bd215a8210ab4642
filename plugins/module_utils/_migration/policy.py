# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""Migration options and policy (pure): the defaults and where each comes from, option validation, the flags and
parameters of a migration, its timeouts, and the Escalator that steps a migration that does not converge.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, libvirt
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import GIB

# ---- defaults, and where each comes from (docs/live_migrate.md repeats this table for users) ---------------
# QEMU's own downtime-limit default; libvirt does not change it.
DEFAULT_MAX_DOWNTIME_MS = 300
# KubeVirt (parallelOutboundMigrationsPerNode), oVirt/VDSM (max_outgoing_migrations) and Hyper-V (simultaneous
# live migrations) all default to two outbound migrations per host.
DEFAULT_MAX_PARALLEL = 2
# Ours, the outbound figure mirrored: when one call sends VMs to several hosts, no destination takes more than two
# incoming migrations at a time (each starts a QEMU and receives a full-rate stream).
DEFAULT_MAX_PARALLEL_PER_DESTINATION = 2
# KubeVirt's completionTimeoutPerGiB as documented for KubeVirt / OpenShift Virtualization (pkg/virt-config).
DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB = 800
# Ours: fixed costs (starting QEMU on the destination, handshakes) do not scale with memory, so a 64 MiB VM
# must not get a 50 s budget.
DEFAULT_COMPLETION_TIMEOUT_MIN_S = 60
# KubeVirt's progressTimeout.
DEFAULT_PROGRESS_TIMEOUT_S = 150
# Ours: two memory passes that do not finish the migration are what "does not converge" means here (oVirt's
# convergence schedule also steps on stalled iterations, not on time).
DEFAULT_ITERATIONS_PER_STEP = 2
# Ceiling of a downtime step: QEMU accepts up to 2000 s, but a VM paused for minutes is no longer "live".
MAX_DOWNTIME_STEP_MS = 60000
# libvirt's own ceiling for a migration's bandwidth on 64-bit hosts (QEMU_DOMAIN_MIG_BANDWIDTH_MAX: QEMU takes
# bytes/s in a signed 64-bit number); above it libvirt refuses the migration when it starts.
MAX_BANDWIDTH_MIB_S = (2 ** 63 - 1) // (1024 * 1024)
# Ours: a sanity ceiling; far fewer migrations at once already saturate a host and its link.
MAX_PARALLEL = 64

POLL_INTERVAL_S = 1.0
# The watcher's first poll comes sooner: the first figures are what a user watching the job waits for (the module's
# start already took seconds), and one early query costs the migration nothing measurable.
FIRST_POLL_S = 0.3
# How often a watcher asks the destination whether the VM runs there yet (one cheap call): the moment it does, the
# migration's slot goes to the next VM while libvirt stops the source's QEMU.
SWITCHOVER_CHECK_S = 0.2
# Longest wait for a call that steers a running migration (downtime, post-copy, abort). Seen once on the lab: a
# migrateSetMaxDowntime that never returned while the migration ran on, which would have kept every later step
# and timeout from firing; past this the step is reported as failed and the watcher goes on.
CONTROL_CALL_TIMEOUT_S = 30.0

TRANSPORT_SCHEMES = {"tls": "qemu+tls", "ssh": "qemu+ssh", "tcp": "qemu+tcp"}
COPY_STORAGE_MODES = ("auto", "always", "never")
TIMEOUT_ACTIONS = ("abort", "postcopy")
COMPRESSION_METHODS = ("none", "xbzrle", "zstd", "zlib")
SHUTOFF_CHOICES = ("fail", "move")
# Multifd compression methods: QEMU compresses per channel, so they need parallel connections.
MULTIFD_COMPRESSION = ("zstd", "zlib")

POLICY_OPTIONS = ("bandwidth_mib_s", "max_downtime_ms", "escalation", "parallel_connections", "compression",
                  "copy_storage", "tls_stream", "completion_timeout_s_per_gib", "completion_timeout_min_s",
                  "completion_timeout_action", "progress_timeout_s", "progress_timeout_action", "max_parallel",
                  "max_parallel_per_destination", "shutoff_vms")

_NAME_FORBIDDEN = set("/?#@ \t\n\\'\"")


def _flag(name, fallback):
    """A libvirt constant, or its documented value when the bindings on the host are older than the daemon."""
    return getattr(libvirt, name, fallback) if libvirt is not None else fallback


def parse_libvirt_uri(uri, role):
    """Check that `uri` is a libvirt QEMU URI; return (transport, host). `role` names it in errors."""
    if not isinstance(uri, str) or not uri.strip():
        raise HvmaintError("%s is empty" % role)
    try:
        parts = urlsplit(uri)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise HvmaintError("%s %r is not a valid libvirt URI: %s" % (role, uri, exc)) from exc
    del port
    driver, transport = parts.scheme.split("+", 1) if "+" in parts.scheme else (parts.scheme, "")
    if driver != "qemu":
        raise HvmaintError("%s %r is not a valid libvirt URI for QEMU/KVM: it must start with qemu://, qemu+tls://,"
                           " qemu+ssh:// or qemu+tcp://" % (role, uri))
    if transport not in ("", "tls", "tcp", "ssh", "libssh", "libssh2", "unix", "ext"):
        raise HvmaintError("%s %r names an unknown libvirt transport %r" % (role, uri, transport))
    if parts.path not in ("/system", "/session"):
        raise HvmaintError("%s %r must end in /system (the system libvirtd)" % (role, uri))
    return transport or ("unix" if not parts.hostname else "tls"), parts.hostname


def derive_destination_uri(destination, transport):
    if not destination:
        raise HvmaintError("give destination (a host name) or destination_uri")
    if set(destination) & _NAME_FORBIDDEN:
        raise HvmaintError("destination %r is not a host name" % destination)
    return "%s://%s/system" % (TRANSPORT_SCHEMES[transport], destination)


class Policy:
    """The validated migration policy for a whole run (every VM of a list gets the same)."""

    def __init__(self, **kw):
        self.bandwidth_mib_s = int(kw.get("bandwidth_mib_s") or 0)
        self.max_downtime_ms = int(kw.get("max_downtime_ms") or DEFAULT_MAX_DOWNTIME_MS)
        escalation = kw.get("escalation") or {}
        self.downtime_steps = [int(v) for v in (escalation.get("downtime_steps") or [])]
        self.auto_converge = bool(escalation.get("auto_converge"))
        self.post_copy = bool(escalation.get("post_copy"))
        self.iterations_per_step = int(escalation.get("iterations_per_step") or DEFAULT_ITERATIONS_PER_STEP)
        self.from_history = escalation.get("from_history") is not False
        self.parallel_connections = int(kw.get("parallel_connections") or 1)
        self.compression = kw.get("compression") or "none"
        self.copy_storage = kw.get("copy_storage") or "auto"
        self.tls_stream = bool(kw.get("tls_stream"))
        per_gib = kw.get("completion_timeout_s_per_gib")
        self.completion_timeout_s_per_gib = DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB if per_gib is None else per_gib
        minimum = kw.get("completion_timeout_min_s")
        self.completion_timeout_min_s = DEFAULT_COMPLETION_TIMEOUT_MIN_S if minimum is None else minimum
        self.completion_timeout_action = kw.get("completion_timeout_action") or "abort"
        progress = kw.get("progress_timeout_s")
        self.progress_timeout_s = DEFAULT_PROGRESS_TIMEOUT_S if progress is None else progress
        self.progress_timeout_action = kw.get("progress_timeout_action") or "abort"
        self.max_parallel = int(kw.get("max_parallel") or DEFAULT_MAX_PARALLEL)
        self.max_parallel_per_destination = int(kw.get("max_parallel_per_destination")
                                                or DEFAULT_MAX_PARALLEL_PER_DESTINATION)
        self.shutoff_vms = kw.get("shutoff_vms") or "fail"

    def as_dict(self):
        return dict(vars(self))


def validate_policy(options):
    """Return a Policy, or raise HvmaintError naming every problem of the options at once."""
    problems = []
    escalation = options.get("escalation") or {}

    def number(key, value, minimum, maximum=None):
        if value is None:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append("%s must be a number, not %r" % (key, value))
        elif value < minimum or (maximum is not None and value > maximum):
            problems.append("%s must be between %s and %s, not %s" % (key, minimum, maximum or "unbounded", value))

    number("bandwidth_mib_s", options.get("bandwidth_mib_s"), 0, MAX_BANDWIDTH_MIB_S)
    number("max_downtime_ms", options.get("max_downtime_ms"), 1, MAX_DOWNTIME_STEP_MS)
    number("parallel_connections", options.get("parallel_connections"), 1, 255)
    number("completion_timeout_s_per_gib", options.get("completion_timeout_s_per_gib"), 0)
    number("completion_timeout_min_s", options.get("completion_timeout_min_s"), 1)
    number("progress_timeout_s", options.get("progress_timeout_s"), 0)
    number("max_parallel", options.get("max_parallel"), 1, MAX_PARALLEL)
    number("max_parallel_per_destination", options.get("max_parallel_per_destination"), 1, MAX_PARALLEL)
    number("escalation.iterations_per_step", escalation.get("iterations_per_step"), 1, 100)
    for key, allowed in (("compression", COMPRESSION_METHODS), ("copy_storage", COPY_STORAGE_MODES),
                         ("completion_timeout_action", TIMEOUT_ACTIONS), ("shutoff_vms", SHUTOFF_CHOICES),
                         ("progress_timeout_action", TIMEOUT_ACTIONS)):
        value = options.get(key)
        if value is not None and value not in allowed:
            problems.append("%s must be one of %s, not %r" % (key, ", ".join(allowed), value))
    unknown = sorted(set(escalation) - {"downtime_steps", "auto_converge", "post_copy", "iterations_per_step",
                                        "from_history"})
    if unknown:
        problems.append("escalation has unknown keys: %s" % ", ".join(unknown))
    steps = escalation.get("downtime_steps") or []
    downtime = options.get("max_downtime_ms") or DEFAULT_MAX_DOWNTIME_MS
    previous = downtime
    for step in steps:
        if not isinstance(step, int) or isinstance(step, bool) or step > MAX_DOWNTIME_STEP_MS:
            problems.append("escalation.downtime_steps must be whole milliseconds up to %d, not %r"
                            % (MAX_DOWNTIME_STEP_MS, step))
            break
        if step <= previous:
            problems.append("escalation.downtime_steps must rise above max_downtime_ms (%d ms) step by step: %s"
                            % (downtime, steps))
            break
        previous = step
    post_copy = bool(escalation.get("post_copy"))
    for key in ("completion_timeout_action", "progress_timeout_action"):
        if options.get(key) == "postcopy" and not post_copy:
            problems.append("%s=postcopy needs escalation.post_copy=true: post-copy must be allowed when the"
                            " migration starts" % key)
    compression = options.get("compression") or "none"
    parallel = options.get("parallel_connections") or 1
    if compression in MULTIFD_COMPRESSION and parallel < 2:
        problems.append("compression=%s compresses per connection: it needs parallel_connections of 2 or more"
                        % compression)
    if compression == "xbzrle" and parallel > 1:
        problems.append("compression=xbzrle cannot be combined with parallel_connections (QEMU's multifd does not"
                        " support it); use zstd or zlib")
    if post_copy and parallel > 1:
        problems.append("escalation.post_copy cannot be combined with parallel_connections (QEMU refuses"
                        " post-copy over multifd)")
    if problems:
        raise HvmaintError("invalid options: " + "; ".join(problems))
    return Policy(**options)


def completion_timeout_s(policy, memory_bytes, copied_disk_bytes=0):
    """Seconds a migration may take: scales with the memory (and the disks it copies, as KubeVirt counts them for
    block migration), never below the minimum. 0 per GiB disables the timeout (returns None)."""
    if not policy.completion_timeout_s_per_gib:
        return None
    gib = (memory_bytes + copied_disk_bytes) / float(GIB)
    return max(float(policy.completion_timeout_min_s), policy.completion_timeout_s_per_gib * gib)


def migration_flags(policy, copy_storage):
    flags = (_flag("VIR_MIGRATE_LIVE", 1) | _flag("VIR_MIGRATE_PEER2PEER", 2) | _flag("VIR_MIGRATE_PERSIST_DEST", 8)
             | _flag("VIR_MIGRATE_UNDEFINE_SOURCE", 16)
             # Without it libvirt would resume the VM on the source after a failed I/O during storage copy.
             | _flag("VIR_MIGRATE_ABORT_ON_ERROR", 4096))
    if copy_storage:
        flags |= _flag("VIR_MIGRATE_NON_SHARED_DISK", 64)
    if policy.tls_stream:
        flags |= _flag("VIR_MIGRATE_TLS", 65536)
    if policy.auto_converge:
        flags |= _flag("VIR_MIGRATE_AUTO_CONVERGE", 8192)
    if policy.post_copy:
        flags |= _flag("VIR_MIGRATE_POSTCOPY", 32768)
    if policy.parallel_connections > 1:
        flags |= _flag("VIR_MIGRATE_PARALLEL", 131072)
    if policy.compression != "none":
        flags |= _flag("VIR_MIGRATE_COMPRESSED", 2048)
    return flags


def offline_flags():
    """Flags that move the definition of a shut-off VM: nothing runs, so there is no stream to tune or encrypt."""
    return (_flag("VIR_MIGRATE_OFFLINE", 1024) | _flag("VIR_MIGRATE_PEER2PEER", 2)
            | _flag("VIR_MIGRATE_PERSIST_DEST", 8) | _flag("VIR_MIGRATE_UNDEFINE_SOURCE", 16))


def migration_params(policy, migrate_disks=None, destination_xml=None, persistent_xml=None):
    """The typed parameters of virDomainMigrateToURI3 (string keys: the hosts' bindings may predate some).
    destination_xml and persistent_xml are the definitions a move to another site gives the destination (the
    running VM's and the persistent one), rewritten for its networks and pools."""
    params = {}
    if destination_xml:
        params["destination_xml"] = destination_xml
    if persistent_xml:
        params["persistent_xml"] = persistent_xml
    if policy.bandwidth_mib_s:
        params["bandwidth"] = policy.bandwidth_mib_s
    if policy.parallel_connections > 1:
        params["parallel.connections"] = policy.parallel_connections
    if policy.compression != "none":
        params["compression"] = policy.compression
    if migrate_disks:
        params["migrate_disks"] = list(migrate_disks)
    return params


FLAG_NAMES = (("VIR_MIGRATE_LIVE", 1), ("VIR_MIGRATE_PEER2PEER", 2), ("VIR_MIGRATE_PERSIST_DEST", 8),
              ("VIR_MIGRATE_UNDEFINE_SOURCE", 16), ("VIR_MIGRATE_NON_SHARED_DISK", 64),
              ("VIR_MIGRATE_OFFLINE", 1024), ("VIR_MIGRATE_COMPRESSED", 2048), ("VIR_MIGRATE_ABORT_ON_ERROR", 4096),
              ("VIR_MIGRATE_AUTO_CONVERGE", 8192), ("VIR_MIGRATE_POSTCOPY", 32768), ("VIR_MIGRATE_TLS", 65536),
              ("VIR_MIGRATE_PARALLEL", 131072))


def flag_names(flags):
    return [name[len("VIR_MIGRATE_"):].lower() for name, value in FLAG_NAMES if flags & value]


def start_from_history(policy, metadata):
    """Where a VM's migration starts when its last migration needed escalation (the VM's metadata history): the
    downtime limit that finally worked, rounded up to one of this policy's own steps (never past its last one), and
    post-copy as the next step when post-copy was needed and this policy allows it. None: start as the policy says.
    The metadata is the VM's own, so untrusted: anything odd in it means no head start."""
    if not policy.from_history:
        return None
    moves = [m for m in (metadata or {}).get("moves") or [] if isinstance(m, dict) and m.get("outcome") == "migrated"]
    if not moves or moves[-1].get("escalated") is not True:
        return None
    last = moves[-1]
    limit = last.get("downtime_limit_ms")
    downtime = policy.max_downtime_ms
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > downtime and policy.downtime_steps:
        downtime = next((v for v in policy.downtime_steps if v >= limit), policy.downtime_steps[-1])
    postcopy = last.get("postcopy") is True and policy.post_copy
    if downtime == policy.max_downtime_ms and not postcopy:
        return None
    why = "its last migration (%s, %s -> %s) needed escalation: starts at max downtime %d ms" % (
        last.get("at") or "?", last.get("from") or "?", last.get("to") or "?", downtime)
    if postcopy:
        why += ", post-copy as its next step"
    return {"downtime_ms": downtime, "postcopy": postcopy, "why": why}


class Escalator:
    """Decides, from successive job statistics, what the policy does next to a running migration.

    observe() returns actions for the engine: ("downtime", ms), ("postcopy", why), ("abort", why). The order is the
    issue's: raise the allowed downtime step by step, then (QEMU's) auto-converge throttling, then post-copy.
    Auto-converge cannot be switched on in a running job (libvirt has no call for it), so when allowed it is armed
    at the start and QEMU itself starts throttling only once passes stop converging; observe() records when the
    throttle shows up. Post-copy is the last step: once in post-copy the VM cannot go back, so no timeout applies.
    """

    def __init__(self, policy, timeout_s, start=None):
        self.policy = policy
        self.timeout_s = timeout_s
        self.downtime_ms = policy.max_downtime_ms
        self.pending_downtime = list(policy.downtime_steps)
        self.reference_iteration = 1
        self.postcopy = False             # libvirt accepted the switch to post-copy: no way back, no timeout
        self.postcopy_requested = False   # asked for, not yet confirmed by the engine
        self.postcopy_failed = False      # libvirt refused it: the timeouts go on, and abort instead
        self._postcopy_why = ""
        self.throttle = 0
        self.steps = []
        self.max_processed = -1
        self.progress_at = 0.0
        self.fired = None
        if start is not None:
            # Where the VM's last migration ended up (start_from_history): its steps are not taken again.
            self.downtime_ms = start["downtime_ms"]
            self.pending_downtime = [] if start["postcopy"] else [v for v in self.pending_downtime
                                                                  if v > self.downtime_ms]
            self._step(0.0, 0, "note", start["why"])

    @property
    def escalated(self):
        """Whether this migration needed more than the base policy (what the next one starts from)."""
        return self.postcopy or self.downtime_ms > self.policy.max_downtime_ms

    def _step(self, elapsed_s, iteration, action, detail):
        self.steps.append({"at_s": round(elapsed_s, 1), "iteration": iteration, "action": action, "detail": detail})

    def observe(self, stats, elapsed_s):
        if self.fired or not stats or not stats.get("type"):
            return []
        iteration = int(stats.get("memory_iteration") or 0)
        processed = stats.get("data_processed")
        if processed is None:
            processed = stats.get("memory_processed", 0) + stats.get("disk_processed", 0)
        if processed > self.max_processed:
            self.max_processed, self.progress_at = processed, elapsed_s
        throttle = int(stats.get("auto_converge_throttle") or 0)
        if throttle > self.throttle:
            self.throttle = throttle
            self._step(elapsed_s, iteration, "auto_converge", "QEMU throttles the vCPUs by %d%%" % throttle)
        if self.postcopy:
            return []
        policy = self.policy
        if self.timeout_s is not None and elapsed_s >= self.timeout_s:
            return self._timeout(elapsed_s, iteration, "completion", policy.completion_timeout_action,
                                 "not completed within %.0f s (completion timeout)" % self.timeout_s)
        if policy.progress_timeout_s and elapsed_s - self.progress_at >= policy.progress_timeout_s:
            return self._timeout(elapsed_s, iteration, "progress", policy.progress_timeout_action,
                                 "no data moved for %.0f s (progress timeout)" % (elapsed_s - self.progress_at))
        if self.postcopy_requested or iteration < self.reference_iteration + policy.iterations_per_step:
            return []
        if self.pending_downtime:
            new = self.pending_downtime.pop(0)
            self._step(elapsed_s, iteration, "downtime", "max downtime %d -> %d ms after %d passes without"
                       " converging" % (self.downtime_ms, new, iteration - self.reference_iteration))
            self.downtime_ms, self.reference_iteration = new, iteration
            return [("downtime", new)]
        if policy.post_copy and not self.postcopy_failed:
            self.postcopy_requested = True
            self._postcopy_why = "still not converging at max downtime %d ms" % self.downtime_ms
            return [("postcopy", "not converging")]
        return []

    def postcopy_started(self, elapsed_s):
        """The engine's switch to post-copy was accepted: from now on the VM cannot go back to the source."""
        self.postcopy, self.postcopy_requested = True, False
        self._step(elapsed_s, None, "postcopy", "switched to post-copy: " + self._postcopy_why)

    def postcopy_refused(self, elapsed_s, problem):
        """libvirt refused the switch: the migration is still pre-copy, so the timeouts still apply (and abort)."""
        self.postcopy_requested, self.postcopy_failed = False, True
        self._step(elapsed_s, None, "error", "post-copy could not start (%s): the timeouts still apply" % problem)

    def _timeout(self, elapsed_s, iteration, kind, action, why):
        if action == "postcopy" and not (self.postcopy_failed or self.postcopy_requested):
            self.postcopy_requested = True
            self._postcopy_why = why
            return [("postcopy", why)]
        self.fired = "%s_timeout" % kind
        self._step(elapsed_s, iteration, "abort", "aborted: " + why)
        return [("abort", why)]
