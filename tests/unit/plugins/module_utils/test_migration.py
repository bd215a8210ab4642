"""Pure logic of the live-migration engine: options, policy, timeouts, escalation, progress, results (its
storage decisions: test_storage.py).

The job statistics below were recorded on the lab (libvirt 9.0, QEMU 7.2): a 256 MiB Linux guest dirtying memory,
migrated at 8 MiB/s with auto-converge, sampled after 1 s, 9 s and 16 s; and the completed statistics of an idle
96 MiB guest as the destination reports them. What libvirt does with these calls is proven on the lab
(tests/integration/test_live_migrate.py), not here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.lookups import _memory_bytes
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import (
    MAX_BANDWIDTH_MIB_S,
    POLICY_OPTIONS,
    Escalator,
    completion_timeout_s,
    derive_destination_uri,
    flag_names,
    migration_flags,
    migration_params,
    offline_flags,
    parse_libvirt_uri,
    validate_policy,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.progress import (
    GIB,
    MIB,
    format_progress_line,
    progress_from_stats,
    write_progress_file,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.results import (
    base_result,
    completed_figures,
    diff_for,
    summarize,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.run import vm_names

RUNNING_1S = {"operation": 5, "time_elapsed": 1001, "downtime": 300, "setup_time": 0, "data_total": 268828672,
              "data_processed": 4204730, "data_remaining": 263639040, "memory_total": 268828672,
              "memory_processed": 4204730, "memory_remaining": 263639040, "memory_bps": 8413380,
              "memory_constant": 243, "memory_normal": 1024, "memory_normal_bytes": 4194304, "memory_dirty_rate": 0,
              "memory_iteration": 1, "memory_postcopy_requests": 0, "memory_page_size": 4096, "disk_total": 0,
              "disk_processed": 0, "disk_remaining": 0, "type": 2}
RUNNING_9S = dict(RUNNING_1S, time_elapsed=9016, data_processed=71505516, data_remaining=172855296,
                  memory_processed=71505516, memory_remaining=172855296)
RUNNING_16S = dict(RUNNING_1S, time_elapsed=16033, downtime=1176, data_processed=130398741, data_remaining=4853760,
                   memory_processed=130398741, memory_remaining=4853760, memory_dirty_rate=2088,
                   memory_iteration=5, auto_converge_throttle=20)
COMPLETED_IDLE = {"operation": 4, "time_elapsed": 4297, "time_elapsed_net": 4295, "downtime": 18, "downtime_net": 16,
                  "setup_time": 0, "data_total": 101056512, "data_processed": 652053, "data_remaining": 0,
                  "memory_total": 101056512, "memory_processed": 652053, "memory_remaining": 0,
                  "memory_bps": 38943842, "memory_constant": 24567, "memory_normal": 105,
                  "memory_normal_bytes": 430080, "memory_dirty_rate": 0, "memory_iteration": 2,
                  "memory_postcopy_requests": 0, "memory_page_size": 4096, "disk_total": 0, "disk_processed": 0,
                  "disk_remaining": 0, "type": 3}

DOMAIN_XML = """<domain type='kvm'>
  <name>m-disk1</name>
  <uuid>8c1f0d1e-4c4b-4f3e-9a55-0f3c2b1d9e77</uuid>
  <memory unit='KiB'>98304</memory>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/m-disk1.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/mnt/nfs/data.raw'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><source file='/iso/install.iso'/><target dev='sda' bus='sata'/><readonly/>
    </disk>
    <disk type='block' device='disk'><source dev='/dev/vg0/lv1'/><target dev='vdd' bus='virtio'/></disk>
  </devices>
</domain>"""


def options(**kw):
    return {key: kw.get(key) for key in POLICY_OPTIONS}


# ---- options and policy ------------------------------------------------------------------------------------------

def test_defaults_and_where_they_come_from():
    policy = validate_policy(options())
    assert policy.max_downtime_ms == 300          # QEMU's downtime-limit default
    assert policy.max_parallel == 2               # KubeVirt, oVirt, Hyper-V: two outbound per host
    assert policy.completion_timeout_s_per_gib == 800  # KubeVirt completionTimeoutPerGiB
    assert policy.progress_timeout_s == 150       # KubeVirt progressTimeout
    assert policy.bandwidth_mib_s == 0 and policy.parallel_connections == 1 and policy.compression == "none"
    assert policy.downtime_steps == [] and not policy.auto_converge and not policy.post_copy
    assert policy.copy_storage == "auto" and not policy.tls_stream


def test_zero_disables_timeouts_rather_than_picking_defaults():
    policy = validate_policy(options(completion_timeout_s_per_gib=0, progress_timeout_s=0))
    assert completion_timeout_s(policy, 4 * GIB) is None
    assert policy.progress_timeout_s == 0


@pytest.mark.parametrize("bad, fragment", [
    (dict(completion_timeout_action="postcopy"), "needs escalation.post_copy=true"),
    (dict(progress_timeout_action="postcopy"), "needs escalation.post_copy=true"),
    (dict(compression="zstd"), "needs parallel_connections of 2 or more"),
    (dict(compression="xbzrle", parallel_connections=4), "xbzrle cannot be combined"),
    (dict(escalation={"post_copy": True}, parallel_connections=4), "post-copy over multifd"),
    (dict(escalation={"downtime_steps": [200]}), "must rise above max_downtime_ms (300 ms)"),
    (dict(escalation={"downtime_steps": [500, 400]}), "must rise above"),
    (dict(escalation={"downtime_steps": [500, 120000]}), "whole milliseconds up to 60000"),
    (dict(escalation={"speed": 1}), "unknown keys: speed"),
    (dict(max_parallel=0), "max_parallel must be between 1"),
    (dict(bandwidth_mib_s=-1), "bandwidth_mib_s must be between 0"),
    (dict(copy_storage="sometimes"), "copy_storage must be one of auto, always, never"),
])
def test_conflicting_or_invalid_options_are_refused(bad, fragment):
    with pytest.raises(HvmaintError) as refused:
        validate_policy(options(**bad))
    assert fragment in str(refused.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(HvmaintError) as refused:
        validate_policy(options(max_parallel=0, compression="zlib", completion_timeout_action="postcopy"))
    text = str(refused.value)
    assert "max_parallel" in text and "zlib" in text and "postcopy" in text


def test_post_copy_allowed_makes_postcopy_actions_valid():
    policy = validate_policy(options(escalation={"post_copy": True}, completion_timeout_action="postcopy"))
    assert policy.post_copy and policy.completion_timeout_action == "postcopy"


@pytest.mark.parametrize("uri, transport, host", [
    ("qemu:///system", "unix", None),
    ("qemu+tls://hv2/system", "tls", "hv2"),
    ("qemu+ssh://root@hv2/system?keyfile=/k", "ssh", "hv2"),
    ("qemu+tcp://10.0.0.2:16509/system", "tcp", "10.0.0.2"),
    ("qemu://hv2/system", "tls", "hv2"),
])
def test_valid_uris(uri, transport, host):
    assert parse_libvirt_uri(uri, "uri") == (transport, host)


@pytest.mark.parametrize("uri, fragment", [
    ("", "is empty"),
    ("qemu+tls//hv2/system", "not a valid libvirt URI"),
    ("xen://hv2/system", "not a valid libvirt URI for QEMU/KVM"),
    ("qemu+tls://hv2:port/system", "not a valid libvirt URI"),
    ("qemu+carrier-pigeon://hv2/system", "unknown libvirt transport"),
    ("qemu+tls://hv2/", "must end in /system"),
])
def test_invalid_uris(uri, fragment):
    with pytest.raises(HvmaintError) as refused:
        parse_libvirt_uri(uri, "destination_uri")
    assert fragment in str(refused.value)


def test_destination_uri_is_derived_from_name_and_transport():
    assert derive_destination_uri("hv2", "tls") == "qemu+tls://hv2/system"
    assert derive_destination_uri("hv2", "ssh") == "qemu+ssh://hv2/system"
    assert derive_destination_uri("hv2", "tcp") == "qemu+tcp://hv2/system"
    for bad in ("", "hv2/system", "hv 2", "root@hv2"):
        with pytest.raises(HvmaintError):
            derive_destination_uri(bad, "tls")


def test_completion_timeout_scales_with_memory_and_copied_disks():
    policy = validate_policy(options())
    assert completion_timeout_s(policy, 96 * MIB) == 75.0         # 800 s/GiB * 96 MiB
    assert completion_timeout_s(policy, 32 * MIB) == 60.0         # the minimum
    assert completion_timeout_s(policy, 8 * GIB) == 6400.0
    assert completion_timeout_s(policy, 1 * GIB, 3 * GIB) == 3200.0


def test_a_shut_off_vm_moves_with_offline_flags_only_when_the_policy_says_so():
    # Offline: the definition moves, nothing runs, so there is no stream to make live, encrypt or tune.
    assert flag_names(offline_flags()) == ["peer2peer", "persist_dest", "undefine_source", "offline"]
    assert validate_policy(options()).shutoff_vms == "fail"
    assert validate_policy(options(shutoff_vms="move")).shutoff_vms == "move"
    with pytest.raises(HvmaintError, match="shutoff_vms must be one of fail, move, not 'start'"):
        validate_policy(options(shutoff_vms="start"))


def test_flags_and_params_follow_the_policy():
    plain = migration_flags(validate_policy(options()), copy_storage=False)
    assert flag_names(plain) == ["live", "peer2peer", "persist_dest", "undefine_source", "abort_on_error"]
    full = validate_policy(options(tls_stream=True, escalation={"auto_converge": True, "post_copy": True},
                                   compression="xbzrle", bandwidth_mib_s=100))
    names = flag_names(migration_flags(full, copy_storage=True))
    assert {"non_shared_disk", "tls", "auto_converge", "postcopy", "compressed"} <= set(names)
    assert "parallel" not in names
    assert migration_params(full, ["vda"]) == {"bandwidth": 100, "compression": "xbzrle", "migrate_disks": ["vda"]}
    multifd = validate_policy(options(parallel_connections=4, compression="zstd"))
    assert "parallel" in flag_names(migration_flags(multifd, False))
    assert migration_params(multifd) == {"parallel.connections": 4, "compression": "zstd"}
    assert migration_params(validate_policy(options())) == {}


# ---- progress --------------------------------------------------------------------------------------------------

def test_progress_from_recorded_statistics():
    first = progress_from_stats(RUNNING_1S)
    assert first["percent"] == 1.9 and first["iteration"] == 1
    assert first["rate_bps"] == 8413380  # QEMU's own figure when there is no previous sample
    later = progress_from_stats(RUNNING_9S, previous=RUNNING_1S["data_processed"], interval_s=8.0)
    assert later["percent"] == 35.7
    assert later["rate_bps"] == int((71505516 - 4204730) / 8.0)
    last = progress_from_stats(RUNNING_16S)
    assert last["dirty_rate_bps"] == 2088 * 4096 and last["throttle_percent"] == 20 and last["iteration"] == 5


def test_progress_line_format():
    vm = dict(progress_from_stats(RUNNING_9S), name="work1", status="running", downtime_limit_ms=300)
    assert format_progress_line("hv1", "hv2", vm) == (
        "[hv1\u2192hv2] work1: 36% 164.8/256.4 MiB remaining 8 MiB/s iteration 1 max downtime 300 ms")
    done = {"name": "work1", "status": "migrated", "elapsed_s": 2.41, "downtime_ms": 48}
    assert format_progress_line("hv1", "hv2", done) == "[hv1\u2192hv2] work1: migrated in 2.4 s, downtime 48 ms"
    assert format_progress_line("hv1", "hv2", {"name": "w", "status": "queued"}) == "[hv1\u2192hv2] w: queued"
    starting = {"name": "w", "status": "running", "elapsed_s": 1.2, "total_bytes": 0}
    assert format_progress_line("hv1", "hv2", starting) == "[hv1\u2192hv2] w: starting (1 s)"


# ---- escalation ------------------------------------------------------------------------------------------------

def escalator(timeout_s=None, **kw):
    return Escalator(validate_policy(options(**kw)), timeout_s)


def at_iteration(iteration, processed, **extra):
    return dict(RUNNING_9S, memory_iteration=iteration, data_processed=processed, **extra)


def test_no_steps_without_escalation():
    esc = escalator()
    assert [esc.observe(at_iteration(i, i * 10), float(i)) for i in range(1, 10)] == [[]] * 9
    assert esc.steps == []


def test_downtime_steps_then_post_copy_every_two_passes():
    esc = escalator(escalation={"downtime_steps": [600, 1200], "post_copy": True})
    actions = {i: esc.observe(at_iteration(i, i * 100), float(i)) for i in range(1, 10)}
    assert actions[3] == [("downtime", 600)]
    assert actions[5] == [("downtime", 1200)]
    assert actions[7] == [("postcopy", "not converging")]
    assert all(actions[i] == [] for i in (1, 2, 4, 6, 8, 9))
    esc.postcopy_started(7.1)   # the engine says libvirt accepted the switch
    assert [s["action"] for s in esc.steps] == ["downtime", "downtime", "postcopy"]
    assert esc.steps[0]["detail"] == "max downtime 300 -> 600 ms after 2 passes without converging"


def test_iterations_per_step_is_honoured():
    esc = escalator(escalation={"downtime_steps": [400, 500], "iterations_per_step": 1})
    assert esc.observe(at_iteration(2, 10), 1.0) == [("downtime", 400)]
    assert esc.observe(at_iteration(3, 20), 2.0) == [("downtime", 500)]
    assert esc.observe(at_iteration(4, 30), 3.0) == []


def test_auto_converge_throttle_is_recorded_when_seen():
    esc = escalator(escalation={"auto_converge": True})
    esc.observe(RUNNING_9S, 9.0)
    esc.observe(RUNNING_16S, 16.0)
    esc.observe(dict(RUNNING_16S, auto_converge_throttle=20), 17.0)
    esc.observe(dict(RUNNING_16S, auto_converge_throttle=30), 18.0)
    assert [s["detail"] for s in esc.steps] == ["QEMU throttles the vCPUs by 20%", "QEMU throttles the vCPUs by 30%"]


def test_completion_timeout_aborts_once():
    esc = escalator(timeout_s=10.0)
    assert esc.observe(RUNNING_9S, 9.0) == []
    assert esc.observe(RUNNING_16S, 10.5) == [("abort", "not completed within 10 s (completion timeout)")]
    assert esc.fired == "completion_timeout"
    assert esc.observe(RUNNING_16S, 12.0) == []


def test_completion_timeout_may_switch_to_post_copy_instead():
    esc = escalator(timeout_s=10.0, escalation={"post_copy": True}, completion_timeout_action="postcopy")
    assert esc.observe(RUNNING_16S, 11.0)[0][0] == "postcopy"
    esc.postcopy_started(11.1)
    # In post-copy nothing more is done: no abort is possible any more.
    assert esc.observe(RUNNING_16S, 500.0) == []
    assert esc.fired is None


def test_progress_timeout_counts_time_without_data_moved():
    esc = escalator(progress_timeout_s=5)
    assert esc.observe(at_iteration(1, 100), 1.0) == []
    assert esc.observe(at_iteration(1, 200), 2.0) == []
    assert esc.observe(at_iteration(1, 200), 6.5) == []
    assert esc.observe(at_iteration(1, 200), 7.0) == [("abort", "no data moved for 5 s (progress timeout)")]
    assert esc.fired == "progress_timeout"


def test_a_job_not_yet_started_is_ignored():
    esc = escalator(timeout_s=1.0)
    assert esc.observe({"type": 0}, 5.0) == []
    assert esc.observe({}, 5.0) == []


# ---- results ---------------------------------------------------------------------------------------------------

def test_completed_figures_from_recorded_destination_statistics():
    figures = completed_figures(COMPLETED_IDLE)
    assert figures == {"downtime_ms": 18, "data_transferred_bytes": 652053, "memory_iterations": 2,
                       "dirty_rate_pages_s": 0, "dirty_rate_mib_s": 0.0, "libvirt_time_ms": 4297}
    assert completed_figures({})["downtime_ms"] is None


def test_summary_changed_only_when_something_moved():
    def entry(outcome):
        return dict(base_result("vm", "u", "hv1", "hv2"), outcome=outcome)

    assert summarize([entry("migrated"), entry("already_there")])[:2] == (True, False)
    assert summarize([entry("already_there")])[:2] == (False, False)
    assert summarize([entry("migrated"), entry("failed"), entry("skipped")]) == (
        True, True, "1 failed, 1 migrated, 1 skipped")
    assert summarize([entry("aborted")])[:2] == (False, True)


def test_diff_shows_host_before_and_after():
    moved = dict(base_result("a", "u1", "hv1", "hv2"), outcome="migrated")
    there = dict(base_result("b", "u2", "hv1", "hv2"), outcome="already_there")
    failed = dict(base_result("c", "u3", "hv1", "hv2"), outcome="failed")
    assert diff_for([moved, there, failed]) == {
        "before": {"a": {"host": "hv1"}, "b": {"host": "hv2"}, "c": {"host": "hv1"}},
        "after": {"a": {"host": "hv2"}, "b": {"host": "hv2"}, "c": {"host": "hv1"}}}


def test_vm_names():
    assert vm_names({"name": "a"}) == ["a"]
    assert vm_names({"names": ["a", "b"]}) == ["a", "b"]
    for bad in ({}, {"names": []}, {"names": ["a", " "]}):
        with pytest.raises(HvmaintError):
            vm_names(bad)


def test_memory_units():
    assert _memory_bytes(ET.fromstring(DOMAIN_XML)) == 96 * MIB
    assert _memory_bytes(ET.fromstring("<domain><memory unit='GiB'>2</memory></domain>")) == 2 * GIB
    assert _memory_bytes(ET.fromstring("<domain><memory>1024</memory></domain>")) == MIB


def test_progress_file_is_written_atomically(tmp_path):
    path = tmp_path / "async" / "progress.json"
    write_progress_file(str(path), {"finished": False, "vms": []})
    write_progress_file(str(path), {"finished": True, "vms": []})
    assert path.read_text() == '{"finished": true, "vms": []}'
    assert not (tmp_path / "async" / "progress.json.tmp").exists()


def test_limits_are_libvirts_and_the_engines():
    # Above libvirt's QEMU_DOMAIN_MIG_BANDWIDTH_MAX (INT64_MAX bytes/s in MiB/s) libvirt refuses at migration time.
    assert MAX_BANDWIDTH_MIB_S == 8796093022207
    validate_policy({"bandwidth_mib_s": MAX_BANDWIDTH_MIB_S})
    for options, words in (({"bandwidth_mib_s": MAX_BANDWIDTH_MIB_S + 1}, "bandwidth_mib_s must be between 0"),
                           ({"max_parallel": 100}, "max_parallel must be between 1 and 64"),
                           ({"max_parallel_per_destination": 0}, "max_parallel_per_destination must be between")):
        with pytest.raises(HvmaintError, match=words):
            validate_policy(options)
