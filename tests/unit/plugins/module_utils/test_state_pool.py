"""The mark and the lease read over libvirt (plugins/module_utils/_state_pool.py), against a stand-in for libvirt's
storage API that serves a real directory's files as a dir pool does. The real libvirt is exercised on the lab
(tests/integration/test_fleet_read_from_controller.py)."""

from __future__ import annotations

import json
import os

import pytest

libvirt = pytest.importorskip("libvirt")

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _state_pool  # noqa: E402
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError  # noqa: E402


def libvirt_error(code, message="libvirt says no"):
    exc = libvirt.libvirtError(message)
    exc.err = (code, 0, message, 0, None, None, None, 0, 0)
    return exc


class Stream:
    def __init__(self):
        self.data, self.finished, self.aborted = b"", False, False

    def recv(self, nbytes):
        chunk, self.data = self.data[:nbytes], self.data[nbytes:]
        return chunk

    def finish(self):
        self.finished = True

    def abort(self):
        self.aborted = True


class Vol:
    def __init__(self, path, pool):
        self.path, self.pool = path, pool

    def download(self, stream, offset, length, flags):
        if self.pool.fail_downloads:
            self.pool.fail_downloads -= 1
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "cannot open volume: No such file or directory")
        with open(self.path, "rb") as handle:
            stream.data = handle.read()[offset:offset + length]


class Pool:
    """A dir pool over `directory`: its volumes are the files seen at the last refresh."""

    def __init__(self, conn, name, directory, active=True, transient=False):
        self.conn, self._name, self.directory, self.active, self.transient = conn, name, directory, active, transient
        self.fail_downloads, self.refreshes, self.destroyed = 0, 0, False
        self._refresh()

    def _refresh(self):
        self.volumes = sorted(os.listdir(self.directory)) if os.path.isdir(self.directory) else []

    def name(self):
        return self._name

    def XMLDesc(self, flags):
        return "<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>" % (self._name,
                                                                                            self.directory)

    def isActive(self):
        return self.active

    def refresh(self, flags):
        self.refreshes += 1
        self._refresh()

    def listVolumes(self):
        return list(self.volumes)

    def storageVolLookupByName(self, name):
        if name not in self.volumes:
            raise libvirt_error(libvirt.VIR_ERR_NO_STORAGE_VOL, "Storage volume not found")
        return Vol(os.path.join(self.directory, name), self)

    def destroy(self):
        self.destroyed = True
        self.conn.pools.remove(self)


class Conn:
    def __init__(self, state_dir, pools=()):
        self.state_dir, self.pools, self.created, self.streams = state_dir, list(pools), [], []
        self.create_flags = []

    def getURI(self):
        return "qemu+tls://hv1/system"

    def listAllStoragePools(self, flags):
        return list(self.pools)

    def storagePoolCreateXML(self, xml, flags):
        assert "<path>%s</path>" % _state_pool.STATE_DIR in xml
        self.create_flags.append(flags)
        if not os.path.isdir(self.state_dir):
            if flags != libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD:
                raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "cannot open directory: No such file")
            os.makedirs(self.state_dir)
        pool = Pool(self, _state_pool.STATE_POOL_NAME, self.state_dir, transient=True)
        self.pools.append(pool)
        self.created.append(pool)
        return pool

    def newStream(self, flags):
        self.streams.append(Stream())
        return self.streams[-1]


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """The host's state directory, standing at the path the pools are matched by."""
    directory = tmp_path / "hvmaint"
    monkeypatch.setattr(_state_pool, "STATE_DIR", str(directory))
    return directory


MARK = {"since": "2026-12-02T05:00:00Z", "reason": "firmware CHG-1", "by": "alice", "host": "hv3"}
LEASE = {"job": "other-job", "by": "bob", "operation": "drain", "subject": "hv3", "role": "source",
         "since": "2026-12-02T05:00:00Z", "heartbeat": "2026-12-02T05:01:00Z", "expires": "2026-12-02T06:01:00Z"}


def test_reads_mark_and_lease_through_a_transient_pool_it_then_destroys(state_dir):
    state_dir.mkdir()
    (state_dir / "maintenance.json").write_text(json.dumps(MARK))
    (state_dir / "lease.json").write_text(json.dumps(LEASE))
    (state_dir / "lease.json.lock").write_text("")
    conn = Conn(str(state_dir))
    assert _state_pool.read_state(conn, "hv3") == (MARK, LEASE)
    assert len(conn.created) == 1 and conn.created[0].destroyed and conn.pools == []
    assert all(stream.finished for stream in conn.streams)
    assert conn.create_flags == [0]  # the directory is there: no build step


def test_no_directory_yet_means_no_mark_and_no_lease_and_the_directory_is_built(state_dir):
    conn = Conn(str(state_dir))
    assert _state_pool.read_state(conn) == (None, None)
    assert state_dir.is_dir() and conn.pools == []
    assert conn.create_flags == [0, libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD]


def test_a_pool_defined_over_the_directory_is_refreshed_and_kept(state_dir):
    state_dir.mkdir()
    conn = Conn(str(state_dir))
    theirs = Pool(conn, "admins-pool", str(state_dir) + "/")
    conn.pools.append(theirs)
    (state_dir / "maintenance.json").write_text(json.dumps(MARK))  # written after the pool's last refresh
    assert _state_pool.read_state(conn) == (MARK, None)
    assert theirs.refreshes == 1 and not theirs.destroyed and conn.created == []


def test_an_inactive_pool_over_the_directory_is_an_error_not_an_unmarked_host(state_dir):
    state_dir.mkdir()
    conn = Conn(str(state_dir))
    conn.pools.append(Pool(conn, "admins-pool", str(state_dir), active=False))
    with pytest.raises(HvmaintError, match="defined but not active"):
        _state_pool.read_state(conn)


def test_damaged_or_oversized_files_still_mean_marked_and_held(state_dir):
    state_dir.mkdir()
    (state_dir / "maintenance.json").write_text("{not json")
    (state_dir / "lease.json").write_text(" " * (_state_pool.MAX_STATE_BYTES + 10) + "{}")
    mark, lease = _state_pool.read_state(Conn(str(state_dir)), "hv3")
    assert mark["reason"].startswith("unreadable maintenance mark at hv3:")
    assert lease["job"] is None and "hv3:" in lease["unreadable"]


def marked_host_whose_downloads_fail(state_dir, failures):
    """A marked host whose transient state pool fails its first `failures` downloads (the file was replaced
    while it was read)."""
    state_dir.mkdir()
    (state_dir / "maintenance.json").write_text(json.dumps(MARK))
    conn = Conn(str(state_dir))
    original = conn.storagePoolCreateXML

    def create(xml, flags):
        pool = original(xml, flags)
        pool.fail_downloads = failures
        return pool
    conn.storagePoolCreateXML = create
    return conn


def test_a_file_replaced_during_the_read_is_read_again(state_dir):
    conn = marked_host_whose_downloads_fail(state_dir, 1)
    assert _state_pool.read_state(conn) == (MARK, None)
    assert conn.created[0].refreshes == 1 and conn.streams[0].aborted


def test_a_download_that_keeps_failing_is_an_error_not_an_unmarked_host(state_dir):
    conn = marked_host_whose_downloads_fail(state_dir, 2)
    with pytest.raises(HvmaintError, match="cannot read the maintenance mark and the lease"):
        _state_pool.read_state(conn, "hv1")
    assert conn.pools == []  # the transient pool is destroyed also on failure


def test_another_readers_pool_started_meanwhile_is_used(state_dir):
    state_dir.mkdir()
    (state_dir / "lease.json").write_text(json.dumps(LEASE))
    conn = Conn(str(state_dir))

    def raced(xml, flags):
        conn.pools.append(Pool(conn, _state_pool.STATE_POOL_NAME, str(state_dir), transient=True))
        raise libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED, "pool 'hvmaint-state' already exists")
    conn.storagePoolCreateXML = raced
    assert _state_pool.read_state(conn) == (None, LEASE)
    assert conn.pools and not conn.pools[0].destroyed  # theirs: their read destroys it


def test_the_state_pool_is_not_a_pool_for_vm_disks():
    assert _state_pool.is_state_pool({"path": _state_pool.STATE_DIR + "/"})
    assert not _state_pool.is_state_pool({"path": "/var/lib/libvirt/images"})
    assert not _state_pool.is_state_pool({"path": None})
