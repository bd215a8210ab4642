"""vm_locate's logic: one VM, found by UUID across hosts, with what must never be flagged."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._locate import locate, summary_lines


def vm(name, uuid, state="running", persistent=True, metadata=None):
    return {"name": name, "uuid": uuid, "state": state, "persistent": persistent, "metadata": metadata or {}}


def test_vm_away_from_home_with_history():
    moves = [{"at": "t1", "from": "hv1", "to": "hv2", "outcome": "migrated"}]
    hosts = [{"name": "hv1", "vms": []},
             {"name": "hv2", "vms": [vm("db1", "u1", metadata={"home": "hv1", "tier": "critical", "moves": moves})]}]
    (db1,), missing = locate(hosts)
    assert missing == []
    assert db1["host"] == "hv2" and db1["home"] == "hv1" and not db1["at_home"]
    assert db1["moves"] == moves and db1["tier"] == "critical" and db1["problems"] == []


def test_split_brain_and_transient_vms_are_flagged():
    hosts = [{"name": "hv1", "vms": [vm("a", "u1"), vm("t", "u2", persistent=False)]},
             {"name": "hv2", "vms": [vm("a", "u1")]}]
    vms = locate(hosts)[0]
    a, t = vms
    assert any("running on 2 hosts" in p for p in a["problems"])
    assert any("defined on 2 hosts" in p for p in a["problems"])
    assert a["host"] is None
    assert any("transient" in p for p in t["problems"])


def test_names_filter_ledger_and_missing():
    hosts = [{"name": "hv1", "vms": [vm("a", "u1", state="shutoff"), vm("b", "u2")]}]
    ledger = [{"vm": "a", "uuid": "u1", "outcome": "migrated"}, {"vm": "b", "uuid": "u2"}]
    vms, missing = locate(hosts, ["a", "zz"], ledger)
    assert [v["name"] for v in vms] == ["a"] and missing == ["zz"]
    assert vms[0]["host"] == "hv1" and vms[0]["running_on"] == []
    assert vms[0]["ledger"] == [ledger[0]]
    assert summary_lines(vms)[1].split()[:3] == ["a", "hv1", "-"]
