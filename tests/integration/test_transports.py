"""live_migrate through ansible on the source host, over each transport the lab offers: TLS, SSH and plain TCP."""

from __future__ import annotations

import pytest

from conftest import ansible_module_json, where_is

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("transport", ["tls", "ssh", "tcp"])
def test_transport_round_trip(lab_at_home, ansible_env, transport):
    lab = lab_at_home
    guest = next(g for g in lab.config["guests"] if g["kind"] == "idle" and not g.get("disk_mib")
                 and g.get("network", "lan") == "lan")
    source = guest["host"]
    destination = next(h for h in lab.hosts if h != source)
    there = ansible_module_json(lab, source, "hvmaint.libvirt.live_migrate", {
        "name": guest["name"], "destination": destination, "transport": transport}, ansible_env)
    (move,) = there["migrations"]
    assert there["changed"] and move["outcome"] == "migrated"
    assert there["destination_uri"] == "qemu+%s://%s/system" % (transport, destination)
    assert where_is(lab, guest["name"]) == ([destination], [destination])
    back = ansible_module_json(lab, destination, "hvmaint.libvirt.live_migrate", {
        "name": guest["name"], "destination": source, "transport": transport}, ansible_env)
    assert back["changed"] and back["migrations"][0]["outcome"] == "migrated"
    assert where_is(lab, guest["name"]) == ([source], [source])
    # Asking to move a VM to the host it is on is bad input, refused before anything moves.
    again = ansible_module_json(lab, source, "hvmaint.libvirt.live_migrate", {
        "name": guest["name"], "destination": source, "transport": transport}, ansible_env, check=False)
    assert again["failed"] and "source" in again["msg"]
