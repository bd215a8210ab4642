"""The filter hvmaint.libvirt.lease_conflict: the take's rule, on the lease a host's facts carry."""

from __future__ import annotations

import time

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hvmaint.libvirt.plugins.filter.lease_conflict import FilterModule

lease_conflict = FilterModule().filters()["lease_conflict"]


def a_lease(job, expires_in=600):
    return {"job": job, "by": "alice", "operation": "drain", "subject": "hv1", "role": "source",
            "since": "2026-12-02T05:00:00Z", "heartbeat": "2026-12-02T05:00:00Z",
            "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expires_in))}


def test_another_jobs_live_lease_is_named():
    message = lease_conflict(a_lease("4711"), ["4712", ""])
    assert message.startswith("held by job 4711") and "drain of hv1" in message and "since" in message


def test_no_lease_its_own_a_broken_or_a_lapsed_one_is_no_conflict():
    assert lease_conflict(None, ["4712"]) == ""
    assert lease_conflict(a_lease("4712"), ["4712"]) == ""
    assert lease_conflict(a_lease("4711"), ["4712", "4711"]) == ""
    assert lease_conflict(a_lease("4711", expires_in=-5), ["4712"]) == ""
    assert lease_conflict(a_lease("4711"), "4711") == ""


def test_bad_input_is_refused():
    with pytest.raises(AnsibleFilterError):
        lease_conflict("a string", ["x"])
    with pytest.raises(AnsibleFilterError):
        lease_conflict(None, 5)
