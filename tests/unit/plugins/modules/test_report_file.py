"""report_file as Ansible runs it on a host: arguments in, JSON out."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.modules.report_file import main

from .utils import run_module


def test_directory_then_file_and_a_refusal(tmp_path):
    reports = tmp_path / "reports"
    made, code = run_module(main, {"path": str(reports), "state": "directory"})
    assert code == 0 and made["changed"] and reports.is_dir()
    written, code = run_module(main, {"path": str(reports / "r.html"), "content": "<html></html>"})
    assert code == 0 and written["changed"] and (reports / "r.html").read_text() == "<html></html>"
    refused, code = run_module(main, {"path": "/proc/hvmaint/reports", "state": "directory"})
    assert code == 1 and refused["failed"] and "cannot make the report directory" in refused["msg"]
    missing, code = run_module(main, {"path": str(reports / "r.html")})
    assert code == 1 and "content" in missing["msg"]
