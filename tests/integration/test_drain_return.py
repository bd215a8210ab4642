"""The drain and return playbooks on the lab, end to end, as an administrator runs them."""

from __future__ import annotations

import getpass
import os
import re

import pytest

from conftest import REPO, guests_of, mark_of, read_ledger, recap, run_playbook, where_is
from headless import chromium, open_in_chromium, read_png

pytestmark = pytest.mark.lab

DRAINED = "hv1"
TIERS = {"critical": ["work*"], "high": ["disk*"], "low": ["idle*"]}
# Where tests leave what a person may want to look at afterwards (the report's screenshot).
TEST_OUTPUT = os.path.join(REPO, ".tmp", "test-output")


def check_drain_report(report, entries, shut_off):
    """The drain's HTML report as a person sees it in a browser: it loads with no network and no error, names
    every move with where it went, and its timeline is painted (a bar per live migration, green: moved)."""
    with open(report, encoding="utf-8") as handle:
        html = handle.read()
    for entry in entries:
        assert ">%s → %s</text>" % (entry["vm"], entry["destination"]) in html or entry["vm"] == shut_off, entry
        assert "<td>%s</td><td>%s</td>" % (entry["source"], entry["destination"]) in html, entry
    if not chromium():
        pytest.skip("no chromium (scripts/bootstrap installs it): the report was not checked in a browser")
    os.makedirs(TEST_OUTPUT, exist_ok=True)
    png = os.path.join(TEST_OUTPUT, "report.png")
    dom, problems = open_in_chromium(report, png, os.path.join(os.path.dirname(report), "chromium-profile"))
    assert problems == [], "Chromium reported problems loading the report:\n" + "\n".join(problems)
    timeline = dom.split('id="timeline"')[1].split("</section>")[0]
    live = [e for e in entries if e["mode"] == "live"]
    assert len(re.findall(r'<rect [^>]*fill="#2e7d32"', timeline)) >= len(live), "a green bar per live move"
    width, height, rows = read_png(png, max_rows=700)  # the header, the summary and the timeline
    colours = {pixel for row in rows[::4] for pixel in row[::4]}
    green = sum(pixel == (0x2E, 0x7D, 0x32) for row in rows for pixel in row)
    print("\nreport screenshot %s: %dx%d, %d colours, %d pixels of the timeline's green" % (
        png, width, height, len(colours), green))
    assert len(colours) > 20, "the screenshot is (nearly) blank"
    assert green > 50 * len(live), "the timeline's bars are not painted"


def test_drain_moves_critical_first_then_return_brings_every_vm_home(
        lab_at_home, ansible_env, tmp_path, define_shut_off_vm):
    lab = lab_at_home
    ledger = str(tmp_path / "ledger.jsonl")
    moved_out = guests_of(lab, DRAINED)
    assert len(moved_out) >= 3
    # A VM that is only defined there: its definition moves too (offline), after the running VMs.
    shut_off = define_shut_off_vm(DRAINED)["name"]

    reports = str(tmp_path / "reports")
    drain = run_playbook(lab, ansible_env, "drain_host.yml", {
        "drain_host_host": DRAINED, "drain_host_tiers": TIERS, "drain_host_ledger": ledger,
        "drain_host_reason": "test drain", "awx_user_name": "alice", "awx_job_id": 4711,
        "drain_host_report_dir": reports})
    print(drain.stdout[-3000:])
    # The play names its HTML report; a browser shows it (checked below, after the ledger).
    report = re.search(r"The report of this drain: (\S+\.html)", drain.stdout).group(1)
    assert os.path.dirname(report) == reports and os.path.basename(report).startswith("drain-%s-" % DRAINED)
    # The report sets each move's predicted time against what it took, and the totals.
    for name in moved_out:
        assert re.search(r"%s -> \S+: predicted [\d.]+ s, took [\d.]+ s" % re.escape(name), drain.stdout), name
    assert re.search(r"total: predicted [\d.]+ s, took [\d.]+ s", drain.stdout)

    # The host is empty of running VMs and marked, and every VM runs on exactly one other host.
    for name in moved_out:
        defined, running = where_is(lab, name)
        assert running and running[0] != DRAINED, "%s still on %s" % (name, DRAINED)
        assert defined == running
    mark = mark_of(lab, DRAINED)
    # As AWX runs it: the mark names the AWX user and job, not the remote user the modules run as.
    assert (mark["reason"], mark["by"], mark["job"]) == ("test drain", "alice", "4711")
    off_defined, off_running = where_is(lab, shut_off)
    assert off_running == [] and len(off_defined) == 1 and off_defined[0] != DRAINED, (off_defined, off_running)
    # The workload guests kept running through their move: they answer on their own address from the new host.
    for guest in lab.config["guests"]:
        if guest["name"] in moved_out and guest["kind"] == "linux":
            assert lab_module_ping(guest["ip"]), "%s does not answer after its move" % guest["name"]

    # Critical first: in the ledger's order, and finished before any lower tier started (waves do not overlap).
    entries = [e for e in read_ledger(ledger) if e["operation"] == "drain"]
    assert sorted(e["vm"] for e in entries) == sorted(moved_out + [shut_off])
    assert all(e["outcome"] == "migrated" for e in entries)
    assert {(e["by"], e["job"]) for e in entries} == {("alice", "4711")}
    assert [e["vm"] for e in entries if e["mode"] == "offline"] == [shut_off]
    assert entries[-1]["vm"] == shut_off, "definitions move after every running VM"
    assert entries[-1]["destination"] == off_defined[0]
    entries = [e for e in entries if e["mode"] == "live"]
    tiers_in_order = [e["tier"] for e in entries]
    rank = {"critical": 0, "high": 1, "normal": 2, "low": 3}
    assert tiers_in_order == sorted(tiers_in_order, key=rank.get), tiers_in_order
    critical = [e for e in entries if e["tier"] == "critical"]
    others = [e for e in entries if e["tier"] != "critical"]
    assert critical and others
    assert max(e["started_at"] + e["duration_s"] for e in critical) <= min(e["started_at"] for e in others) + 0.5
    # ... and they landed where the ledger says, which is where the plan sent them.
    for entry in entries:
        assert where_is(lab, entry["vm"])[1] == [entry["destination"]]

    check_drain_report(report, entries, shut_off)

    # A host under maintenance is never a destination: a drain of hv2 must not put anything on hv1.
    home = {"return_host_host": DRAINED, "return_host_ledger": ledger, "return_host_report_dir": reports}
    back = run_playbook(lab, ansible_env, "return_host.yml", home)
    print(back.stdout[-2000:])
    returned_report = re.search(r"The report of this return: (\S+\.html)", back.stdout).group(1)
    with open(returned_report, encoding="utf-8") as handle:
        html = handle.read()
    assert all(">%s</td>" % name in html for name in moved_out), "every VM that came home is in the return's report"
    assert re.search(r"total: predicted [\d.]+ s, took [\d.]+ s", back.stdout)
    for name in moved_out:
        assert where_is(lab, name)[1] == [DRAINED], "%s did not come home" % name
    assert where_is(lab, shut_off) == ([DRAINED], []), "the shut-off VM's definition came home, still shut off"
    assert mark_of(lab, DRAINED) is None
    returned = [e for e in read_ledger(ledger) if e["operation"] == "return"]
    assert sorted(e["vm"] for e in returned) == sorted(moved_out + [shut_off])
    # Outside AWX: the controller's user, and no job.
    controller_user = next((os.environ[n] for n in ("SUDO_USER", "USER", "LOGNAME") if os.environ.get(n)), None)
    assert {(e["by"], e["job"]) for e in returned} == {(controller_user or getpass.getuser(), None)}

    again = run_playbook(lab, ansible_env, "return_host.yml", home)
    assert all(counters["changed"] == 0 for counters in recap(again.stdout).values()), again.stdout[-3000:]
    assert len(read_ledger(ledger)) == 2 * len(returned)


def test_tier_overlap_starts_lower_tiers_while_the_last_critical_migration_runs(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    ledger = str(tmp_path / "ledger.jsonl")
    moved_out = guests_of(lab, DRAINED)
    drain = run_playbook(lab, ansible_env, "drain_host.yml", {
        "drain_host_host": DRAINED, "drain_host_tiers": TIERS, "drain_host_ledger": ledger,
        "drain_host_tier_overlap": True})
    print(drain.stdout[-3000:])
    # One call moved every tier (the wave loop ran once), and each VM was verified and recorded as in waves.
    assert len(re.findall(r"TASK \[hvmaint\.libvirt\.drain_host : Move the wave's VMs\]", drain.stdout)) == 1
    for name in moved_out:
        defined, running = where_is(lab, name)
        assert running and running[0] != DRAINED and defined == running, name
    entries = [e for e in read_ledger(ledger) if e["operation"] == "drain"]
    assert sorted(e["vm"] for e in entries) == sorted(moved_out)
    assert all(e["outcome"] == "migrated" for e in entries)
    rank = {"critical": 0, "high": 1, "low": 3}
    # A VM of a lower tier starts only once every VM of the higher tiers has started ...
    for entry in entries:
        higher = [e for e in entries if rank[e["tier"]] < rank[entry["tier"]]]
        assert all(e["started_at"] <= entry["started_at"] + 0.05 for e in higher), (entry["vm"], entry["tier"])
    # ... and need not wait for them to end: the critical migration was still running when a lower tier started.
    critical_end = max(e["started_at"] + e["duration_s"] for e in entries if e["tier"] == "critical")
    assert min(e["started_at"] for e in entries if e["tier"] != "critical") < critical_end, entries
    assert re.search(r"total: predicted [\d.]+ s, took [\d.]+ s", drain.stdout)

    back = run_playbook(lab, ansible_env, "return_host.yml", {"return_host_host": DRAINED, "return_host_ledger": ledger})
    print(back.stdout[-1000:])
    for name in moved_out:
        assert where_is(lab, name)[1] == [DRAINED], "%s did not come home" % name


def test_check_mode_shows_the_plan_and_changes_nothing(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    ledger = str(tmp_path / "ledger.jsonl")
    result = run_playbook(lab, ansible_env, "drain_host.yml", {
        "drain_host_host": DRAINED, "drain_host_tiers": TIERS, "drain_host_ledger": ledger}, check_mode=True)
    for name in guests_of(lab, DRAINED):
        assert name in result.stdout  # the plan names every VM it would move
        assert where_is(lab, name)[1] == [DRAINED]
    assert mark_of(lab, DRAINED) is None
    assert not os.path.exists(ledger) or read_ledger(ledger) == []


def test_drain_that_cannot_place_a_vm_stops_before_anything_moves(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    # Only hv3 may take VMs, and a 1900 MiB reserve leaves it 148 MiB: the 256 MiB workload guest fits nowhere.
    result = run_playbook(lab, ansible_env, "drain_host.yml", {
        "drain_host_host": DRAINED, "drain_host_exclude_hosts": ["hv2"], "drain_host_memory_reserve_mib": 1900,
        "drain_host_tiers": TIERS, "drain_host_ledger": str(tmp_path / "ledger.jsonl")}, check=False)
    assert result.returncode != 0
    assert "stops before any VM moves" in result.stdout
    assert "work1" in result.stdout.split("stops before any VM moves")[1][:400]
    for name in guests_of(lab, DRAINED):
        assert where_is(lab, name)[1] == [DRAINED]
    assert mark_of(lab, DRAINED) is None


def test_bad_input_stops_before_anything_moves(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    unknown = run_playbook(lab, ansible_env, "drain_host.yml", {"drain_host_host": "hv9"}, check=False)
    assert unknown.returncode != 0 and "hv9 is not among this play's reachable hypervisors" in unknown.stdout
    wrong_type = run_playbook(lab, ansible_env, "drain_host.yml", {
        "drain_host_host": DRAINED, "drain_host_max_parallel": "lots"}, check=False)
    assert wrong_type.returncode != 0 and "drain_host_max_parallel" in wrong_type.stdout
    missing = run_playbook(lab, ansible_env, "drain_host.yml", {}, check=False)
    assert missing.returncode != 0 and "drain_host_host" in missing.stdout
    typo = run_playbook(lab, ansible_env, "drain_host.yml", {
        "drain_host_host": DRAINED, "drain_host_migration": {"max_downtme_ms": 500}}, check=False)
    assert typo.returncode != 0 and "max_downtme_ms" in typo.stdout
    # A value only live_migrate can judge: refused by the dry-run of the planned moves, before the mark is set.
    out_of_range = run_playbook(lab, ansible_env, "drain_host.yml", {
        "drain_host_host": DRAINED, "drain_host_migration": {"max_downtime_ms": 0}}, check=False)
    assert out_of_range.returncode != 0 and "max_downtime_ms must be between 1 and" in out_of_range.stdout
    for name in guests_of(lab, DRAINED):
        assert where_is(lab, name)[1] == [DRAINED]
    assert mark_of(lab, DRAINED) is None


def test_vms_that_can_go_nowhere_are_parked_by_policy_and_started_on_return(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    ledger = str(tmp_path / "ledger.jsonl")
    others = [h for h in lab.hosts if h != DRAINED]
    run_playbook(lab, ansible_env, "drain_host.yml", {
        "drain_host_host": DRAINED, "drain_host_tiers": TIERS, "drain_host_ledger": ledger,
        "drain_host_exclude_hosts": others, "drain_host_shutdown_timeout": 3,
        "drain_host_unplaceable_policy": {"critical": "suspend", "high": "leave", "low": "shutdown"}})
    state = {name: lab.virsh(DRAINED, ["domstate", name]).stdout.strip() for name in guests_of(lab, DRAINED)}
    work = [g["name"] for g in lab.config["guests"] if g["host"] == DRAINED and g["kind"] == "linux"]
    idle = [n for n in guests_of(lab, DRAINED) if n.startswith("idle")]
    disk = [n for n in guests_of(lab, DRAINED) if n.startswith("disk")]
    assert work and idle and disk
    for name in work:
        assert state[name] == "shut off"
        assert "yes" in lab.virsh(DRAINED, ["dominfo", name]).stdout.split("Managed save:")[1].splitlines()[0]
    assert all(state[name] == "shut off" for name in idle), state
    assert all(state[name] == "running" for name in disk), state
    outcomes = {e["vm"]: e["outcome"] for e in read_ledger(ledger)}
    assert {outcomes[n] for n in work} == {"suspended"} and {outcomes[n] for n in idle} == {"shut down"}
    assert {outcomes[n] for n in disk} == {"left running"}
    assert mark_of(lab, DRAINED) is not None

    run_playbook(lab, ansible_env, "return_host.yml", {"return_host_host": DRAINED, "return_host_ledger": ledger})
    for name in guests_of(lab, DRAINED):
        assert where_is(lab, name)[1] == [DRAINED], name
        assert "<hvmaint:parked>" not in lab.virsh(DRAINED, ["dumpxml", name]).stdout
    # The suspended workload guest resumed where it stopped: its network is up without a boot.
    for guest in lab.config["guests"]:
        if guest["name"] in work:
            assert lab_module_ping(guest["ip"])
    started = {e["vm"] for e in read_ledger(ledger) if e["operation"] == "return" and e["outcome"] == "started"}
    assert started == set(work) | set(idle)


def lab_module_ping(address):
    from conftest import lab_module

    return lab_module.wait_for_ping(address, 15)


def test_rolling_maintenance_drains_maintains_and_returns_each_host(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    hosts = [h for h in lab.hosts if guests_of(lab, h)][:2]
    tasks = tmp_path / "maintenance.yml"
    # The user's maintenance: record, on the host itself, which VMs were running while it was maintained.
    tasks.write_text(
        "- name: Record the VMs running during maintenance\n"
        "  ansible.builtin.shell: virsh -q list --name > /var/lib/libvirt/hvmaint/during-maintenance.txt\n"
        "  changed_when: true\n")
    ledger = str(tmp_path / "ledger.jsonl")
    result = run_playbook(lab, ansible_env, "rolling_maintenance.yml", {
        "rolling_maintenance_hosts": hosts, "rolling_maintenance_tasks": str(tasks),
        "drain_host_ledger": ledger, "return_host_ledger": ledger})
    print(result.stdout[-2500:])
    for host in hosts:
        record = os.path.join(lab.host_dir(host), "var-lib-libvirt", "hvmaint", "during-maintenance.txt")
        with open(record, encoding="utf-8") as handle:
            assert handle.read().split() == [], "%s ran VMs during its maintenance" % host
        os.unlink(record)
        assert mark_of(lab, host) is None
    for guest in lab.config["guests"]:
        assert where_is(lab, guest["name"])[1] == [guest["host"]], guest["name"]
    operations = [(e["operation"], e["source"] if e["operation"] == "drain" else e["destination"])
                  for e in read_ledger(ledger)]
    # One host at a time: the first host's drain and return come before the second host's drain.
    first = [i for i, entry in enumerate(operations) if entry[1] == hosts[0]]
    second = [i for i, entry in enumerate(operations) if entry[1] == hosts[1]]
    assert first and second and max(first) < min(second), operations
