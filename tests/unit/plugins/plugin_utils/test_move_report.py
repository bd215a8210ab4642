"""The HTML report's figures (plugins/plugin_utils/_move_report.py) and its template (role move_report)."""

from __future__ import annotations

import os
import re

import jinja2
import pytest

from ansible_collections.hvmaint.libvirt.plugins.plugin_utils._move_report import (
    ReportError,
    report_data,
)

TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "move_report", "templates",
                        "move_report.html.j2")
T0 = 1764640000.0
HOSTILE = "<script>alert(1)</script>"


def vm(name, memory, state="running"):
    return {"name": name, "state": state, "memory_mib": memory, "vcpus": 1}


def host(name, vms, total=8192):
    return {"name": name, "memory_total_mib": total, "vms": vms}


def move(name, destination, wave, tier, estimated, memory=96):
    return {"vm": name, "source": "hv1", "destination": destination, "tier": tier, "mode": "live", "wave": wave,
            "estimated_seconds": estimated, "memory_mib": memory, "reason": "most free memory among 2 hosts"}


def a_drain():
    """hv1 drained: web1 (critical) to hv2, then db1 to hv3 and HOSTILE to hv2, HOSTILE failing; batch1 refused."""
    plan = {
        "ok": True,
        "waves": [
            {"wave": 1, "tier": "critical", "mode": "live", "predicted_seconds": 2.0,
             "moves": [move("web1", "hv2", 1, "critical", 2.0)]},
            {"wave": 2, "tier": "low", "mode": "live", "predicted_seconds": 6.0,
             "moves": [move("db1", "hv3", 2, "low", 6.0, 256), move(HOSTILE, "hv2", 2, "low", 3.0)]},
        ],
        "unplaceable": [{"vm": "batch1", "tier": "low", "policy": "leave",
                         "reasons": ["batch1 needs 16 GiB of memory; the most any host can give is 7 GiB"]}],
        "actions": [{"vm": "batch1", "host": "hv1", "tier": "low", "action": "leave", "reason": "nowhere to go"}],
        "excluded_destinations": [{"host": "hv4", "reason": "under maintenance"}],
        "plan_warnings": ["db1 copies 32 MiB of host-local disk"],
    }
    migrations = [
        {"name": "web1", "source": "hv1", "destination": "hv2", "outcome": "migrated", "started_at": T0,
         "finished_at": T0 + 1.5, "elapsed_s": 1.5, "downtime_ms": 40, "data_transferred_bytes": 100 * 1048576},
        {"name": "db1", "source": "hv1", "destination": "hv3", "outcome": "migrated", "started_at": T0 + 2,
         "finished_at": T0 + 12, "elapsed_s": 10.0, "downtime_ms": 120, "data_transferred_bytes": None},
        {"name": HOSTILE, "source": "hv1", "destination": "hv2", "outcome": "failed", "started_at": T0 + 2,
         "finished_at": T0 + 4, "elapsed_s": 2.0, "downtime_ms": None, "error": "cannot <b>reach</b> hv2"},
    ]
    before = [host("hv1", [vm("web1", 96), vm("db1", 256), vm(HOSTILE, 96), vm("batch1", 16384)], 32768),
              host("hv2", [vm("x", 1024)]), host("hv3", [], 2048)]
    after = [host("hv1", [vm(HOSTILE, 96), vm("batch1", 16384)], 32768),
             host("hv2", [vm("x", 1024), vm("web1", 96)]), host("hv3", [vm("db1", 256)], 2048)]
    return plan, migrations, before, after


def data():
    plan, migrations, before, after = a_drain()
    return report_data(plan, migrations, before, after, host_overrides={"hv3": {"memory_mib": 4096}},
                       operation="drain", subject="hv1", actor={"user": "alice", "job": "4711"}, generated_at=T0 + 20)


def test_every_vm_is_placed_where_its_migration_left_it():
    rows = {row["vm"]: row for row in data()["placements"]}
    assert (rows["web1"]["now_on"], rows["web1"]["outcome"], rows["web1"]["data_mib"]) == ("hv2", "migrated", 100.0)
    assert (rows["db1"]["now_on"], rows["db1"]["predicted_s"], rows["db1"]["actual_s"]) == ("hv3", 6.0, 10.0)
    assert (rows[HOSTILE]["now_on"], rows[HOSTILE]["arrived"]) == ("hv1", False)
    report = data()
    assert report["counts"] == {"planned": 3, "arrived": 2, "not_arrived": 1, "refused": 3}
    assert report["ok"] is False
    assert report["longest_downtime_ms"] == 120


def test_a_planned_move_whose_wave_never_ran_is_shown_as_not_run():
    plan, migrations, before, after = a_drain()
    report = report_data(plan, migrations[:1], before, after, subject="hv1")
    rows = {row["vm"]: row for row in report["placements"]}
    assert rows["db1"]["outcome"] == "not run" and rows["db1"]["now_on"] == "hv1"
    assert {"vm": "db1", "what": "not run (still on hv1)", "why": "its wave did not run"} in report["refused"]


def test_refusals_name_the_reason():
    refused = data()["refused"]
    assert {"vm": HOSTILE, "what": "failed (still on hv1)", "why": "cannot <b>reach</b> hv2"} in refused
    assert refused[0]["vm"] == "batch1" and "16 GiB" in refused[0]["why"]
    assert data()["excluded"] == [{"host": "hv4", "why": "under maintenance"}]


def test_timeline_puts_each_migration_at_its_time_with_its_prediction():
    timeline = data()["timeline"]
    bars = {drawn["vm"]: drawn for drawn in timeline["bars"]}
    # 12 s from the first start to the last end: 700 units of chart.
    assert timeline["span_s"] == 12.0
    assert bars["web1"]["x"] == 230 and bars["db1"]["x"] == pytest.approx(230 + 2 * 700 / 12.0, abs=0.1)
    assert bars["db1"]["width"] == pytest.approx(10 * 700 / 12.0, abs=0.1)
    assert bars["db1"]["predicted_width"] == pytest.approx(6 * 700 / 12.0, abs=0.1)
    assert [drawn["vm"] for drawn in timeline["bars"]][0] == "web1"
    assert [band["wave"] for band in timeline["waves"]] == [1, 2]
    assert [tick["label"] for tick in timeline["ticks"]] == ["0 s", "2 s", "4 s", "6 s", "8 s", "10 s", "12 s"]
    # The totals add the waves, as the play's own report line does.
    assert (data()["predicted_s"], data()["actual_s"]) == (8.0, 11.5)


def test_memory_before_and_after_counts_running_vms_against_the_declared_size():
    rows = {row["host"]: row for row in data()["memory"]["rows"]}
    assert list(rows) == ["hv1", "hv2", "hv3"]
    assert (rows["hv1"]["before"]["used_mib"], rows["hv1"]["after"]["used_mib"]) == (16832, 16480)
    assert (rows["hv3"]["before"]["vms"], rows["hv3"]["after"]["vms"]) == (0, 1)
    assert rows["hv3"]["declared_mib"] == 4096 and rows["hv3"]["declared_from"].startswith("inventory")
    assert rows["hv2"]["after"]["percent"] == round(100 * 1120 / 8192.0)


def test_nothing_moved_still_makes_a_report():
    report = report_data({}, [], [], [], subject="hv1")
    assert report["timeline"] is None and report["placements"] == [] and report["ok"] is True
    assert report["memory"]["rows"] == []


def test_bad_input_is_named():
    with pytest.raises(ReportError, match="migrations must be a list"):
        report_data({}, migrations="web1")
    with pytest.raises(ReportError, match="plan must be a dict"):
        report_data(["web1"])


def render(report):
    with open(TEMPLATE, encoding="utf-8") as handle:
        template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(handle.read())
    return template.render(move_report__data=report)


def test_the_template_shows_everything_and_escapes_what_the_hosts_said():
    html = render(data())
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>reach</b>" not in html and "cannot &lt;b&gt;reach&lt;/b&gt; hv2" in html
    # One bar per migration in the timeline, the failed one red.
    timeline = html.split('id="timeline"')[1].split("</section>")[0]
    assert len(re.findall(r'<rect [^>]*rx="2" fill="#2e7d32"', timeline)) == 2
    assert len(re.findall(r'<rect [^>]*rx="2" fill="#c62828"', timeline)) == 1
    for text in ("web1 → hv2", "1.5 / 2.0 s, 40 ms down", "wave 2 (low)", "batch1", "16 GiB of memory",
                 "under maintenance", "db1 copies 32 MiB", "by alice", "job 4711", "4 GiB"):
        assert text in html, text
    # Self-contained: nothing to fetch, nothing to run.
    assert not re.search(r"(src|href)\s*=|url\(|@import|<script|<link", html, re.IGNORECASE)


def test_the_template_renders_a_run_where_nothing_moved():
    html = render(report_data({}, [], [], [], subject="hv1"))
    assert "No migration started." in html and "No VM was to move." in html
