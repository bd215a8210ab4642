"""The host lease: one job holds a host; a second is refused by name; heartbeats, expiry, release, break."""

from __future__ import annotations

import threading

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _lease as lease
from ansible_collections.hvmaint.libvirt.plugins.module_utils import _maintenance as maintenance

T0 = 1_800_000_000


def take(path, job, now=T0, **kwargs):
    args = dict(by="alice", operation="drain", subject="hv1", role="source", ttl=600, path=path, now=now)
    args.update(kwargs)
    return lease.acquire(job, **args)


def test_second_job_is_refused_naming_the_first(tmp_path):
    path = str(tmp_path / "hvmaint" / "lease.json")
    first = take(path, "4711")
    assert first["changed"] and first["previous"] is None
    assert first["lease"]["since"] == "2027-01-15T08:00:00Z"
    with pytest.raises(lease.LeaseConflict) as refused:
        take(path, "4712", now=T0 + 5, by="bob", subject="hv2", role="destination")
    message = str(refused.value)
    assert "job 4711" in message and "by alice" in message and "drain of hv1" in message
    assert "since 2027-01-15T08:00:00Z" in message
    assert lease.read_lease(path)["job"] == "4711"


def test_heartbeat_keeps_since_and_pushes_expiry(tmp_path):
    path = str(tmp_path / "lease.json")
    take(path, "4711")
    renewed = take(path, "4711", now=T0 + 500)
    assert renewed["lease"]["since"] == "2027-01-15T08:00:00Z"
    assert renewed["lease"]["heartbeat"] == "2027-01-15T08:08:20Z"
    # Without the heartbeat the lease would have lapsed at T0+600; with it, another job is still refused.
    with pytest.raises(lease.LeaseConflict):
        take(path, "4712", now=T0 + 900)


def test_lease_of_a_killed_controller_lapses(tmp_path):
    path = str(tmp_path / "lease.json")
    take(path, "4711")
    later = take(path, "4712", now=T0 + 601, by="bob")
    assert later["previous"]["job"] == "4711" and later["lease"]["job"] == "4712"


def test_break_job_breaks_only_the_named_lease(tmp_path):
    path = str(tmp_path / "lease.json")
    take(path, "4711")
    with pytest.raises(lease.LeaseConflict):
        take(path, "4713", break_job="4799")
    broken = take(path, "4713", break_job="4711")
    assert broken["broken"]["job"] == "4711" and lease.read_lease(path)["job"] == "4713"


def test_release_leaves_another_jobs_lease_alone(tmp_path):
    path = str(tmp_path / "lease.json")
    take(path, "4711")
    assert not lease.release("4712", path)["changed"]
    assert lease.read_lease(path)["job"] == "4711"
    assert lease.release("4711", path, check_mode=True)["changed"]
    assert lease.read_lease(path) is not None
    assert lease.release("4711", path)["changed"]
    assert lease.read_lease(path) is None
    assert not lease.release("4711", path)["changed"]


def test_check_mode_writes_nothing_but_reports_conflicts(tmp_path):
    path = str(tmp_path / "lease.json")
    assert take(path, "4711", check_mode=True)["changed"]
    assert lease.read_lease(path) is None
    take(path, "4711")
    with pytest.raises(lease.LeaseConflict):
        take(path, "4712", check_mode=True)


def test_a_marked_host_is_not_taken_as_a_destination(tmp_path):
    path, mark = str(tmp_path / "lease.json"), str(tmp_path / "maintenance.json")
    maintenance.apply_mark("present", "firmware", "carol", mark)
    with pytest.raises(lease.LeaseConflict) as refused:
        take(path, "4711", role="destination", refuse_marked=True, mark_path=mark)
    assert "under maintenance" in str(refused.value) and "carol" in str(refused.value)
    assert lease.read_lease(path) is None
    # A destination marked after the job took it stops the job at its next heartbeat.
    maintenance.apply_mark("absent", None, None, mark)
    take(path, "4711", role="destination", refuse_marked=True, mark_path=mark)
    maintenance.apply_mark("present", "firmware", "carol", mark)
    with pytest.raises(lease.LeaseConflict):
        take(path, "4711", role="destination", refuse_marked=True, mark_path=mark, now=T0 + 1)
    # The host the job drains (and marks itself) is renewed whatever its mark.
    assert take(path, "4711", role="source", mark_path=mark, now=T0 + 2)["lease"]["role"] == "source"


def test_unreadable_lease_is_held_and_never_lapses(tmp_path):
    path = tmp_path / "lease.json"
    path.write_text("{not json")
    with pytest.raises(lease.LeaseConflict) as refused:
        take(str(path), "4711", now=T0 + 10**6)
    assert "unreadable" in str(refused.value)


@pytest.mark.parametrize("bad", [dict(role="elsewhere"), dict(ttl=5), dict(ttl="60")])
def test_bad_arguments(tmp_path, bad):
    with pytest.raises(ValueError):
        take(str(tmp_path / "lease.json"), "4711", **bad)


def test_two_jobs_racing_for_one_host_one_wins(tmp_path):
    path = str(tmp_path / "lease.json")
    results = {}

    def race(job):
        try:
            results[job] = take(path, job)["lease"]["job"]
        except lease.LeaseConflict:
            results[job] = "refused"

    threads = [threading.Thread(target=race, args=("job-%d" % n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [job for job, outcome in results.items() if outcome != "refused"]
    assert len(winners) == 1 and lease.read_lease(path)["job"] == winners[0]


def test_the_look_from_the_facts_judges_a_lease_as_the_take_does(tmp_path):
    # conflict() is the take's own rule: whatever it lets through, acquire takes, and the other way round.
    path = str(tmp_path / "hvmaint" / "lease.json")
    held = take(path, "4711")["lease"]
    assert "held by job 4711" in lease.conflict(held, ["4712"], now=T0 + 5)
    assert lease.conflict(held, ["4711"], now=T0 + 5) is None                # its own
    assert lease.conflict(held, ["4712", "4711"], now=T0 + 5) is None        # the job it breaks
    assert lease.conflict(held, ["4712", ""], now=T0 + 600) is None          # lapsed
    assert lease.conflict(None, ["4712"]) is None
    assert "unreadable" in lease.conflict({"job": None, "unreadable": "x: bad"}, ["4712", None], now=T0 + 10 ** 6)
    for jobs, now, taken in ((["4712"], T0 + 5, False), (["4712", "4711"], T0 + 5, True), (["4712"], T0 + 600, True)):
        try:
            take(path, jobs[0], now=now, break_job=jobs[1] if len(jobs) > 1 else None, check_mode=True)
            assert taken
        except lease.LeaseConflict:
            assert not taken
