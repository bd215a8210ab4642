"""The audit ledger keeps every line whole when several processes append at once."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _ledger as ledger


def _writer(path, writer, count):
    for batch in range(count):
        ledger.append_entries(path, [{"vm": "vm-%d-%d-%d" % (writer, batch, i), "outcome": "migrated",
                                      "note": "x" * 3000} for i in range(5)])


def test_concurrent_appends_are_never_torn(tmp_path):
    path = str(tmp_path / "ledger.jsonl")
    processes = [multiprocessing.Process(target=_writer, args=(path, w, 20)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert len(lines) == 4 * 20 * 5
    entries = [json.loads(line) for line in lines]
    assert len({e["vm"] for e in entries}) == 400
    # A batch is written under one lock: its five entries stay together.
    for start in range(0, 400, 5):
        assert len({e["vm"].rsplit("-", 1)[0] for e in entries[start:start + 5]}) == 1


def test_known_fields_come_first_and_extra_fields_are_kept(tmp_path):
    path = str(tmp_path / "sub" / "ledger.jsonl")
    ledger.append_entries(path, [{"destination": "hv2", "vm": "a", "custom": 1}])
    (entry,) = ledger.read_entries(path)
    assert list(entry)[:len(ledger.FIELDS)] == list(ledger.FIELDS)
    assert entry["custom"] == 1 and entry["time"] is None
    assert ledger.read_entries(str(tmp_path / "missing.jsonl")) == []


def test_entries_from_live_migrate_results():
    migrations = [
        {"name": "db1", "uuid": "u1", "source": "hv1", "destination": "hv2", "outcome": "migrated", "elapsed_s": 2.5,
         "downtime_ms": 40, "data_transferred_bytes": 1000, "finished_at": 1764072000.0, "started_at": 1764071997.5},
        {"name": "web1", "outcome": "would_migrate"},
    ]
    (entry,) = ledger.entries_from_migrations(migrations, {"db1": "critical"}, "drain", "42", by="alice")
    assert entry["time"] == "2025-11-25T12:00:00Z"
    assert (entry["vm"], entry["tier"], entry["duration_s"], entry["data_bytes"], entry["operation"], entry["job"],
            entry["by"]) == ("db1", "critical", 2.5, 1000, "drain", "42", "alice")


def test_make_ready_creates_and_locks_the_ledger_and_writes_nothing(tmp_path):
    path = tmp_path / "logs" / "ledger.jsonl"
    assert ledger.make_ready(str(path), check_mode=True) is False and not path.exists()
    assert ledger.make_ready(str(path)) is True
    assert path.read_bytes() == b""
    ledger.append_entries(str(path), [{"vm": "a"}])
    before = path.read_bytes()
    assert ledger.make_ready(str(path)) is False and path.read_bytes() == before


def test_make_ready_refuses_an_unusable_path(tmp_path):
    for bad in (str(tmp_path), "/proc/hvmaint/ledger.jsonl", "/proc/version"):
        with pytest.raises(OSError):
            ledger.make_ready(bad)
    # Check mode asks access(), which lets root write almost anywhere; a directory is refused even so.
    with pytest.raises(OSError, match="cannot be appended to"):
        ledger.make_ready(str(tmp_path), check_mode=True)
    assert not os.path.exists("/proc/hvmaint")


def test_entries_carry_what_makes_a_move_unfit_for_predictions():
    migrations = [{"name": "work1", "source": "hv1", "destination": "hv2", "outcome": "migrated", "elapsed_s": 60.0,
                   "bandwidth_limit_mib_s": 2, "faulted": True}]
    (entry,) = ledger.entries_from_migrations(migrations)
    assert entry["bandwidth_limit_mib_s"] == 2 and entry["faulted"] is True


def test_entries_say_when_the_vm_ran_on_the_destination():
    # The engine frees a move's slot at the switch-over; the next plans learn from how much of the move that was.
    migrations = [
        {"name": "db1", "outcome": "migrated", "elapsed_s": 4.6, "started_at": 1764071997.5,
         "switched_over_at": 1764072000.5},
        {"name": "web1", "outcome": "migrated", "elapsed_s": 2.0, "started_at": 1764071997.5},
    ]
    db1, web1 = ledger.entries_from_migrations(migrations, {}, "drain")
    assert db1["switchover_s"] == 3.0
    assert web1["switchover_s"] is None
