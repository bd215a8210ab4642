"""Errors from libvirt become messages that say what to fix."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import explain


class FakeLibvirtError(Exception):
    def get_error_code(self):
        return 38


def test_missing_ca_is_explained_as_such_not_as_a_dead_daemon():
    error = FakeLibvirtError("Cannot read CA certificate '/etc/pki/CA/cacert.pem': No such file or directory")
    message = str(explain(error, "cannot connect to libvirt at qemu+tls://hv2/system"))
    assert message.startswith("cannot connect to libvirt at qemu+tls://hv2/system: Cannot read CA certificate")
    assert "no CA certificate for TLS" in message and "running" not in message


def test_dead_daemon_and_refused_connection():
    socket = FakeLibvirtError("Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory")
    assert "is libvirtd (or virtqemud) running" in str(explain(socket, "x"))
    refused = FakeLibvirtError("unable to connect to server at 'hv2:16514': Connection refused")
    assert "not listening" in str(explain(refused, "x"))
    assert explain(refused, "x").details == {"libvirt_error_code": 38}
