"""The destination a move reaches must be the host the plan named, over both URIs, before anything moves.

A copy-paste mistake in hvmaint_migration_uri or destination_connect_uri used to send VMs planned for hv2 to hv3
while results, history and ledger said hv2, or to make the repair define a VM again on the source while it ran
elsewhere. The module runs on the source host, as the roles run it.
"""

from __future__ import annotations

import pytest

from conftest import ansible_module_json, where_is

pytestmark = pytest.mark.lab

SOURCE, PLANNED, OTHER = "hv1", "hv2", "hv3"


def idle_guest_on(lab, host):
    for guest in lab.config["guests"]:
        if guest["host"] == host and guest["kind"] == "idle" and not guest.get("disk_mib"):
            return guest["name"]
    pytest.skip("no idle guest on %s" % host)


@pytest.mark.parametrize("uris", [
    # The migration URI (and so the module's own connection, which defaults to it) reaches hv3.
    {"destination_uri": "qemu+tls://%s/system" % OTHER},
    # The migration goes to hv2 but the module's checks look at hv3.
    {"destination_uri": "qemu+tls://%s/system" % PLANNED, "destination_connect_uri": "qemu+tls://%s/system" % OTHER},
    # The module's checks look at hv2 but the migration would go to hv3.
    {"destination_uri": "qemu+tls://%s/system" % OTHER, "destination_connect_uri": "qemu+tls://%s/system" % PLANNED},
], ids=["migration-uri-elsewhere", "connect-uri-elsewhere", "migration-uri-elsewhere-connect-right"])
def test_a_uri_that_reaches_another_host_is_refused_before_anything_moves(lab_at_home, ansible_env, uris):
    lab = lab_at_home
    name = idle_guest_on(lab, SOURCE)
    result = ansible_module_json(lab, SOURCE, "hvmaint.libvirt.live_migrate",
                                 dict(uris, name=name, destination=PLANNED, tls_stream=True), ansible_env,
                                 check=False)
    print("\n%s: %s" % (uris, result.get("msg")))
    assert result.get("failed"), "the move was not refused: %s" % result
    assert OTHER in result["msg"] and PLANNED in result["msg"] and "nothing was moved" in result["msg"]
    assert where_is(lab, name) == ([SOURCE], [SOURCE])
