"""A VM whose last migration needed escalation starts the next one where that one ended (start_from_history),
within the policy's own limits; what a migration ended with is what the next reads."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import (
    POLICY_OPTIONS,
    Escalator,
    start_from_history,
    validate_policy,
)


def policy(**options):
    return validate_policy({key: None for key in POLICY_OPTIONS} | options)


def history(*moves):
    return {"home": "hv1", "moves": [dict({"at": "2026-12-01T10:00:00Z", "from": "hv1", "to": "hv2",
                                           "outcome": "migrated"}, **m) for m in moves]}


STEPS = {"escalation": {"downtime_steps": [500, 1000, 3000]}}


def stats(iteration):
    return {"type": 2, "memory_iteration": iteration, "data_processed": iteration * 100}


def test_the_limit_that_worked_last_time_is_where_the_next_migration_starts():
    start = start_from_history(policy(**STEPS), history({"escalated": True, "downtime_limit_ms": 1000}))
    assert start["downtime_ms"] == 1000 and not start["postcopy"]
    escalator = Escalator(policy(**STEPS), None, start)
    assert escalator.downtime_ms == 1000 and escalator.pending_downtime == [3000]
    assert escalator.steps[0]["action"] == "note" and "starts at max downtime 1000 ms" in escalator.steps[0]["detail"]
    # Two passes that do not converge: the next step is the one after 1000, not 500 again.
    assert escalator.observe(stats(1), 1.0) == []
    assert escalator.observe(stats(3), 2.0) == [("downtime", 3000)]
    assert escalator.escalated


def test_the_policy_bounds_the_head_start():
    # Last time 2000 ms worked under another policy: this one rounds up to its own step, never past its last.
    assert start_from_history(policy(**STEPS), history({"escalated": True, "downtime_limit_ms": 2000}))[
        "downtime_ms"] == 3000
    assert start_from_history(policy(**STEPS), history({"escalated": True, "downtime_limit_ms": 9000}))[
        "downtime_ms"] == 3000
    # A policy without steps or post-copy gives no head start; post-copy only when this policy allows it.
    assert start_from_history(policy(), history({"escalated": True, "downtime_limit_ms": 1000})) is None
    last = history({"escalated": True, "downtime_limit_ms": 300, "postcopy": True})
    assert start_from_history(policy(**STEPS), last) is None
    allowed = policy(escalation={"downtime_steps": [500], "post_copy": True})
    assert start_from_history(allowed, last)["postcopy"] is True
    assert Escalator(allowed, None, start_from_history(allowed, last)).pending_downtime == []


def test_only_the_last_successful_migration_counts_and_odd_metadata_gives_no_head_start():
    assert start_from_history(policy(**STEPS), history({"escalated": True, "downtime_limit_ms": 1000}, {})) is None
    assert start_from_history(policy(**STEPS), history(
        {"escalated": True, "downtime_limit_ms": 1000}, {"outcome": "failed"}))["downtime_ms"] == 1000
    for odd in ({"escalated": "yes", "downtime_limit_ms": 1000}, {"escalated": True, "downtime_limit_ms": "1000"},
                {"escalated": True, "downtime_limit_ms": True}):
        start = start_from_history(policy(**STEPS), history(odd))
        assert start is None, odd
    assert start_from_history(policy(**STEPS), {"moves": ["junk", None]}) is None
    off = policy(escalation={"downtime_steps": [500, 1000, 3000], "from_history": False})
    assert start_from_history(off, history({"escalated": True, "downtime_limit_ms": 1000})) is None


def test_a_migration_that_stayed_within_the_base_policy_is_not_escalated():
    escalator = Escalator(policy(**STEPS), None)
    escalator.observe(stats(1), 1.0)
    assert not escalator.escalated
