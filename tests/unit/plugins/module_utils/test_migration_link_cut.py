"""A migration whose destination's link is cut: the engine must end it within a bounded time, with the VM on one
host, and never act on a state it could not read.

The destination behind a cut link is a stand-in whose every call waits, as a call on a TCP connection to an
unreachable peer does, then fails as libvirt's keepalive makes it fail. The source's states are those the lab
showed (tests/integration/test_faults.py, case link_cut): the VM running and persistent on the source, and, until
the destination's libvirtd gave the migration up, a paused transient copy on the destination.
"""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, libvirt
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import engine as engine_module
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import verification
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.engine import Migrator
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.lookups import _presence
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import POLICY_OPTIONS, validate_policy
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.preflight import Plan

from .test_migration import RUNNING_16S

pytestmark = pytest.mark.skipif(libvirt is None, reason="libvirt-python is needed for its error class")

UUID = "3d5b0f7a-3c57-4d2e-9a55-2c1f2f0b0c01"


def libvirt_error(text):
    error = libvirt.libvirtError(text)
    error.err = (1, 0, text, 2, "", None, None, 0, 0)   # VIR_ERR_INTERNAL_ERROR, as libvirt reports it
    return error


class SourceDomain:
    """work1 on the source: running, persistent; its migration stalls (the link is cut) until it is aborted."""

    def __init__(self):
        self.aborted = threading.Event()
        self.abort_at = None

    def migrateSetMaxDowntime(self, *_args):  # noqa: N802 - libvirt's name
        pass

    def migrateToURI3(self, *_args):  # noqa: N802 - libvirt's name
        if not self.aborted.wait(60):
            raise AssertionError("never aborted")
        raise libvirt_error("operation aborted: migration out job: canceled by client")

    def abortJob(self):  # noqa: N802 - libvirt's name
        self.abort_at = time.monotonic()
        self.aborted.set()

    def jobStats(self, _flags=0):  # noqa: N802 - libvirt's name
        return dict(RUNNING_16S)  # the same figures at every poll: no data moves

    def isActive(self):  # noqa: N802 - libvirt's name
        return True

    def isPersistent(self):  # noqa: N802 - libvirt's name
        return True


class SourceConnection:
    def __init__(self, dom):
        self.dom = dom

    def getHostname(self):  # noqa: N802 - libvirt's name
        return "hv1"

    def lookupByUUIDString(self, _uuid):  # noqa: N802 - libvirt's name
        return self.dom

    def close(self):
        pass


class CutDestination:
    """Every call waits hang_s, then fails as a connection that keepalive closed."""

    def __init__(self, hang_s):
        self.hang_s = hang_s
        self.calls = 0

    def lookupByUUIDString(self, _uuid):  # noqa: N802 - libvirt's name
        self.calls += 1
        time.sleep(self.hang_s)
        raise libvirt_error("Cannot recv data: Connection reset by peer (keepalive timeout)")

    def close(self):
        pass


def link_cut_engine(monkeypatch, hang_s, **policy):
    monkeypatch.setattr(engine_module, "open_connection", _unreachable)
    monkeypatch.setattr(verification, "INCOMING_CLEANUP_WAIT_S", 0.0, raising=False)
    options = {key: None for key in POLICY_OPTIONS}
    options.update(policy)
    dom = SourceDomain()
    engine = Migrator("qemu+tls://hv1/system", "qemu+tls://hv2/system", validate_policy(options), destination="hv2",
                      record_history=False, source_conn=SourceConnection(dom))
    engine.dconn = CutDestination(hang_s)
    plan = Plan("work1")
    plan.uuid, plan.dom, plan.action, plan.memory_bytes, plan.inactive_xml = UUID, dom, "move", 256 << 20, "<x/>"
    return engine, plan, dom


def _unreachable(uri, *_args, **_kwargs):
    raise HvmaintError("cannot connect to libvirt at %s: No route to host" % uri)


def test_a_destination_that_does_not_answer_does_not_hold_back_the_progress_timeout(monkeypatch):
    # The switch-over check asks the destination every 0.2 s; behind a cut link that call waits. The progress
    # timeout (2 s) must still abort the migration on the source on time, not once the destination answers.
    engine, plan, dom = link_cut_engine(monkeypatch, hang_s=8.0, progress_timeout_s=2)
    started = time.monotonic()
    box = {}
    worker = threading.Thread(target=lambda: box.update(results=engine.run([plan])), daemon=True)
    worker.start()
    assert dom.aborted.wait(6.0), "no abort within 6 s: the watcher waited on the destination"
    assert dom.abort_at - started < 5.0
    worker.join(30)
    assert not worker.is_alive()
    result = box["results"][0]
    assert result["outcome"] == "failed" and result["timed_out"] == "progress_timeout"


def test_a_link_cut_ends_failed_with_the_vm_on_its_source_and_the_destination_unknown(monkeypatch):
    engine, plan, _dom = link_cut_engine(monkeypatch, hang_s=0.5, progress_timeout_s=1)
    started = time.monotonic()
    result = engine.run([plan])[0]
    assert time.monotonic() - started < 20
    assert result["outcome"] == "failed"
    assert result["where"]["source"] == {"defined": True, "running": True, "persistent": True}
    assert result["where"]["destination"]["error"]   # could not be read: not taken for absent
    assert "needs_attention" not in result            # the VM runs, persistent, on its source


def test_no_connection_is_not_an_answer():
    assert _presence(None, UUID)["error"] == "no connection"
    assert _presence(None, UUID)["defined"] is None


class PostcopySource:
    """work1 on the source after post-copy switched over and the link was cut: each post-copy resume fails until
    `fails` tries have been made (both hosts must first give the broken stream up, and the link come back)."""

    def __init__(self, fails):
        self.fails = fails
        self.resumes = 0
        self.resumed = False

    def migrateToURI3(self, _uri, _params, flags):  # noqa: N802 - libvirt's name
        assert flags & libvirt.VIR_MIGRATE_POSTCOPY_RESUME, "only a post-copy resume may be tried"
        self.resumes += 1
        if self.resumes <= self.fails:
            raise libvirt_error("Unable to connect to hv2: No route to host")
        self.resumed = True

    def isActive(self):  # noqa: N802 - libvirt's name
        return True   # paused (post-copy failed): active all the same

    def isPersistent(self):  # noqa: N802 - libvirt's name
        return True


class PostcopySourceConnection(SourceConnection):
    def lookupByUUIDString(self, _uuid):  # noqa: N802 - libvirt's name
        if self.dom.resumed:   # UNDEFINE_SOURCE: gone from the source once the migration completed
            error = libvirt.libvirtError("Domain not found")
            error.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 2, "", None, None, 0, 0)
            raise error
        return self.dom


class ArrivedDomain:
    def jobStats(self, _flags=0):  # noqa: N802 - libvirt's name
        return {}

    def isActive(self):  # noqa: N802 - libvirt's name
        return True

    def isPersistent(self):  # noqa: N802 - libvirt's name
        return True


class ReachedDestination:
    def isAlive(self):  # noqa: N802 - libvirt's name
        return 1

    def lookupByUUIDString(self, _uuid):  # noqa: N802 - libvirt's name
        return ArrivedDomain()

    def close(self):
        pass


def postcopy_job(engine, plan):
    job = engine_module.Job(plan, engine.policy, 0, {}, migrator=engine)
    job.result = {"name": plan.name, "policy_steps": []}
    job.started = time.monotonic()
    job.escalator.postcopy = True   # libvirt had accepted the switch to post-copy
    return job


def cut_off_post_copy(monkeypatch, source, source_conn):
    """The engine's handling of a post-copy whose call failed with the link (short resume window): the destination
    is unreachable until `source` says the migration resumed or finished. Returns the job, handled."""
    monkeypatch.setattr(verification, "POSTCOPY_RESUME_RETRY_S", 0.01)
    monkeypatch.setattr(verification, "POSTCOPY_RESUME_WINDOW_S", 0.5)

    def reach_destination(uri, *_args, **_kwargs):
        if not source.resumed:
            _unreachable(uri)   # the link is still down
        return ReachedDestination()

    monkeypatch.setattr(engine_module, "open_connection", reach_destination)
    options = {key: None for key in POLICY_OPTIONS}
    options.update(escalation={"post_copy": True}, completion_timeout_action="postcopy")
    engine = Migrator("qemu+tls://hv1/system", "qemu+tls://hv2/system", validate_policy(options), destination="hv2",
                      record_history=False, source_conn=source_conn)
    engine.dconn = CutDestination(0.0)   # the engine's own connection died with the link
    plan = Plan("work1")
    plan.uuid, plan.dom, plan.action, plan.memory_bytes, plan.inactive_xml = UUID, source, "move", 256 << 20, "<x/>"
    job = postcopy_job(engine, plan)
    engine._after_failure(job, libvirt_error("Disconnected from hv2 or ... (keepalive timeout)"))
    return job


@pytest.mark.parametrize("fails, outcome", [(2, "migrated"), (100, "failed")])
def test_a_post_copy_cut_off_is_resumed_once_both_hosts_allow_it_else_left_needing_attention(
        monkeypatch, fails, outcome):
    source = PostcopySource(fails)
    job = cut_off_post_copy(monkeypatch, source, PostcopySourceConnection(source))
    assert job.result["outcome"] == outcome
    steps = [s["detail"] for s in job.escalator.steps if s["action"] == "postcopy_resume"]
    if outcome == "migrated":
        assert source.resumes == 3 and steps[-1] == "post-copy resumed" and "needs_attention" not in job.result
    else:
        # Never the stale source copy resumed: the VM stays paused on the destination, and the result says so.
        assert source.resumes > 3 and "post-copy resume failed" in job.result["error"]
        assert "switched to post-copy and then failed" in job.result["needs_attention"]


class FinishingSource(PostcopySource):
    """As on the lab (case post-copy then link cut): the engine's call failed with the link, but the source's
    libvirtd finished the post-copy once the link was back, leaving its copy shut off (migrated), still defined.
    From then on every resume fails: there is nothing left to resume."""

    def __init__(self, finishes_after):
        super().__init__(fails=10 ** 6)
        self.finishes_after = finishes_after
        self.undefined = False

    def migrateToURI3(self, _uri, _params, flags):  # noqa: N802 - libvirt's name
        assert flags & libvirt.VIR_MIGRATE_POSTCOPY_RESUME, "only a post-copy resume may be tried"
        self.resumes += 1
        if self.resumes >= self.finishes_after:
            self.resumed = True   # finished by libvirt itself, not by this try
            raise libvirt_error("Requested operation is not valid: domain is not being migrated")
        raise libvirt_error("Unable to connect to hv2: No route to host")

    def isActive(self):  # noqa: N802 - libvirt's name
        return not self.resumed

    def undefine(self):
        self.undefined = True


class FinishingSourceConnection(SourceConnection):
    def lookupByUUIDString(self, _uuid):  # noqa: N802 - libvirt's name
        if self.dom.undefined:
            error = libvirt.libvirtError("Domain not found")
            error.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 2, "", None, None, 0, 0)
            raise error
        return self.dom


def test_a_post_copy_that_libvirt_finished_by_itself_is_a_move_not_a_vm_needing_attention(monkeypatch):
    # Found on the lab: the VM ran on hv2 (running, migrated) while hv1 kept a shut-off definition, and the engine
    # kept trying to resume for its whole window, then said "needs attention" with the VM defined on two hosts.
    source = FinishingSource(finishes_after=3)
    job = cut_off_post_copy(monkeypatch, source, FinishingSourceConnection(source))
    assert job.result["outcome"] == "migrated" and "needs_attention" not in job.result
    assert source.undefined, "the source's stale definition was left: the VM stays defined on two hosts"
    assert source.resumes == 3, "resumes went on after the VM was found moved"
    steps = [s["detail"] for s in job.escalator.steps if s["action"] == "postcopy_resume"]
    assert steps[-1].startswith("post-copy finished without a resume")


class SlowCapabilities:
    """A libvirtd just (re)started: its first getCapabilities takes a while (about 4 s on the lab). With `together`
    (a barrier shared by both hosts), each read waits for the other host's read to have started: read one after the
    other, the first one waits in vain and both are marked `alone` (no timing, so a loaded machine cannot fail it)."""

    def __init__(self, name, uuid, together=None):
        self.name, self.uuid, self.together = name, uuid, together
        self.alone = False

    def getCapabilities(self):  # noqa: N802 - libvirt's name
        if self.together is not None:
            try:
                self.together.wait()
            except threading.BrokenBarrierError:
                self.alone = True
        return "<capabilities><host><uuid>%s</uuid></host></capabilities>" % self.uuid

    def getHostname(self):  # noqa: N802 - libvirt's name
        return self.name

    def close(self):
        pass


def test_both_hosts_capabilities_are_read_side_by_side_at_connect(monkeypatch):
    options = {key: None for key in POLICY_OPTIONS}
    together = threading.Barrier(2, timeout=10)
    source = SlowCapabilities("hv1", "00000000-0000-0000-0000-000000000001", together)
    destination = SlowCapabilities("hv2", "00000000-0000-0000-0000-000000000002", together)
    monkeypatch.setattr(engine_module, "open_connection", lambda *_a, **_k: destination)
    engine = Migrator("qemu+tls://hv1/system", "qemu+tls://hv2/system", validate_policy(options), destination="hv2",
                      record_history=False, source_conn=source)
    engine.connect()
    assert not (source.alone or destination.alone), "the two hosts' capabilities were read one after the other"
    # The check they serve still holds: a destination with the source's host UUID is the source itself.
    source = SlowCapabilities("hv1", source.uuid)
    same = SlowCapabilities("hv2", source.uuid)
    monkeypatch.setattr(engine_module, "open_connection", lambda *_a, **_k: same)
    engine = Migrator("qemu+tls://hv1/system", "qemu+tls://hv2/system", validate_policy(options), destination="hv2",
                      record_history=False, source_conn=source)
    with pytest.raises(HvmaintError, match="is the source host hv1 itself"):
        engine.connect()
