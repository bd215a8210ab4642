"""Fixtures for tests that run against the lab (tests/lab/lab up).

The lab is named by HVMAINT_LAB_CONFIG (default tests/lab/lab.json); tests derive host names, guests and
addresses from it rather than assuming the default lab.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_DIR = os.path.join(REPO, "tests", "lab")


def _load_lab_module():
    spec = importlib.util.spec_from_file_location("hvmaint_lab", os.path.join(LAB_DIR, "lab.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["hvmaint_lab"] = module
    spec.loader.exec_module(module)
    return module


lab_module = _load_lab_module()


@pytest.fixture(scope="session")
def lab():
    """The running lab (a tests/lab/lab.py Lab); skips when it is not up."""
    the_lab = lab_module.Lab(lab_module.load_config())
    down = [name for name in the_lab.hosts if the_lab.host_pid(name) is None]
    if down:
        pytest.skip("the lab is not up (hosts %s down): run tests/lab/lab up" % ", ".join(down))
    return the_lab


@pytest.fixture(scope="session")
def ansible_env():
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, ".tmp", "collections")
    env["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def run_ansible(args, env, check=True, timeout=900):
    """Run an ansible command from the venv; returns the CompletedProcess."""
    binary = os.path.join(os.path.dirname(sys.executable), args[0])
    result = subprocess.run([binary] + list(args[1:]), cwd=REPO, env=env, text=True, timeout=timeout,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if check and result.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (" ".join(args), result.returncode, result.stdout[-6000:]))
    return result


def ansible_module_json(lab, host, module, module_args, env, check=True, check_mode=False, diff=False):
    """Run one module on one lab host through ansible-playbook; returns its registered result dict."""
    inventory = os.path.join(lab.state_dir, "inventory.yml")
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "result.json")
        play = [{
            "hosts": host, "gather_facts": False,
            "tasks": [
                {"name": "run", module: module_args, "register": "result", "ignore_errors": True,
                 "check_mode": check_mode, "diff": diff},
                {"name": "save", "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": out},
                 "delegate_to": "localhost"},
            ],
        }]
        playbook = os.path.join(work, "play.yml")
        with open(playbook, "w", encoding="utf-8") as handle:
            json.dump(play, handle)
        result = run_ansible(["ansible-playbook", "-i", inventory, playbook], env, check=False)
        if not os.path.exists(out):
            raise AssertionError("no result from %s on %s:\n%s" % (module, host, result.stdout[-4000:]))
        with open(out, encoding="utf-8") as handle:
            host_result = json.load(handle)
    if check and host_result.get("failed"):
        raise AssertionError("%s failed on %s: %s" % (module, host, host_result.get("msg")))
    return host_result


def clear_maintenance_marks(lab):
    """Remove every host's maintenance mark and lease (set-up: a test starts from a fleet nobody holds)."""
    for host in lab.hosts:
        for name in ("maintenance.json", "lease.json"):
            path = os.path.join(lab.host_dir(host), "var-lib-libvirt", "hvmaint", name)
            if os.path.exists(path):
                os.unlink(path)


def _hvmaint_file_of(lab, host, name):
    """The JSON file `name` that the collection keeps on a lab host, or None."""
    path = os.path.join(lab.host_dir(host), "var-lib-libvirt", "hvmaint", name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def lease_of(lab, host):
    """The lease on a lab host as host_lease wrote it, or None."""
    return _hvmaint_file_of(lab, host, "lease.json")


def mark_of(lab, host):
    """The maintenance mark on a lab host as maintenance_mode wrote it, or None."""
    return _hvmaint_file_of(lab, host, "maintenance.json")


def guests_of(lab, host):
    """The lab guests whose configured (home) host is `host`."""
    return [g["name"] for g in lab.config["guests"] if g["host"] == host]


def read_ledger(path):
    """The audit ledger's entries, in order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def migration_job_of(lab, host, name):
    """libvirt's job type for the VM on the host ('Unbounded' while a migration runs, 'None' when none does)."""
    info = lab.virsh(host, ["domjobinfo", name], check=False).stdout
    for line in info.splitlines():
        if line.startswith("Job type:"):
            return line.split(":", 1)[1].strip()
    return None


def start_playbook(lab, env, playbook, extra_vars, log_path):
    """Launch a playbook in the background (as a second AWX job would be); returns the Popen, output in log_path."""
    inventory = os.path.join(lab.state_dir, "inventory.yml")
    binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    log = open(log_path, "w", encoding="utf-8")
    return subprocess.Popen([binary, "-i", inventory, os.path.join(REPO, "playbooks", playbook),
                             "-e", json.dumps(extra_vars)], cwd=REPO, env=env, text=True,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def restore_placement(lab):
    """Put every lab guest back on the host the lab config gives it, running, and clear maintenance marks.

    Uses plain virsh (not the collection) so that a test never depends on the code it tests to set up."""
    clear_maintenance_marks(lab)
    for guest in lab.config["guests"]:
        name, home = guest["name"], guest["host"]
        defined, running = lab.locate_guest(name)
        assert len(running) <= 1 and len(defined) <= 1, "%s is on several hosts: %s %s" % (name, defined, running)
        where = running[0] if running else (defined[0] if defined else None)
        assert where is not None, "%s is on no host" % name
        if where != home:
            if not running:
                lab.virsh(where, ["start", name])
            flags = ["--live", "--p2p", "--persistent", "--undefinesource"]
            if guest.get("disk_mib"):
                flags.append("--copy-storage-all")
            lab.virsh(where, ["migrate"] + flags + [name, "qemu+tls://%s/system" % home], timeout=300)
        elif not running:
            lab.virsh(home, ["start", name])


def revive_linux_guests(lab):
    """Set-up, not a test: restart a Linux workload guest that no longer answers ping.

    Under TCG on this nested machine the guest kernel has been seen to crash minutes after a migration (a
    general protection fault in its timer code, in its serial log), once in dozens of moves. A test that needs the
    guest alive must not fail for what an earlier test left; the restart is printed so it stays visible."""
    for guest in lab.config["guests"]:
        if guest["kind"] != "linux" or lab_module.wait_for_ping(guest["ip"], 10):
            continue
        defined, running = lab.locate_guest(guest["name"])
        host = (running or defined)[0]
        serial = os.path.join(lab.host_dir(host), "log-libvirt", "qemu", "%s-serial.log" % guest["name"])
        tail = open(serial, encoding="utf-8", errors="replace").read()[-600:] if os.path.exists(serial) else ""
        print("\nset-up: %s on %s did not answer ping; restarting it. Its console ended with:\n%s"
              % (guest["name"], host, tail))
        lab.virsh(host, ["destroy", guest["name"]], check=False)
        lab.virsh(host, ["start", guest["name"]])
        assert lab_module.wait_for_ping(guest["ip"], 90), "%s does not come back" % guest["name"]


@pytest.fixture
def lab_at_home(lab):
    """The lab with every guest on its configured host before and after the test."""
    restore_placement(lab)
    revive_linux_guests(lab)
    yield lab
    restore_placement(lab)


@pytest.fixture
def define_shut_off_vm(lab):
    """define_shut_off_vm(host) defines a small VM, shut off, on `host` and returns its lab guest entry; every VM
    it defined is undefined from every host afterwards, wherever the test left it."""
    made = []

    def define(host, name="hvmaint-test-off"):
        guest = {"name": name, "host": host, "kind": "idle", "memory_mib": 64}
        lab.define_from_xml(host, "define", lab.guest_xml(guest, "qemu"))
        made.append(name)
        return guest

    yield define
    for name in made:
        for host in lab.hosts:
            lab.virsh(host, ["undefine", name], check=False)


def where_is(lab, name):
    """(defined_on, running_on) for a guest, asserting the collection's promise: one host each, at most."""
    defined, running = lab.locate_guest(name)
    assert len(running) <= 1, "%s runs on %s" % (name, running)
    assert len(defined) <= 1, "%s is defined on %s" % (name, defined)
    return defined, running


def run_playbook(lab, env, playbook, extra_vars=None, check_mode=False, check=True, timeout=900):
    inventory = os.path.join(lab.state_dir, "inventory.yml")
    args = ["ansible-playbook", "-i", inventory, os.path.join(REPO, "playbooks", playbook)]
    if extra_vars:
        args += ["-e", json.dumps(extra_vars)]
    if check_mode:
        args.append("--check")
    return run_ansible(args, env, check=check, timeout=timeout)


def recap(output):
    """PLAY RECAP counters per host: {host: {ok, changed, failed, ...}}."""
    counters = {}
    for line in output.split("PLAY RECAP")[-1].splitlines()[1:]:
        if ":" not in line:
            continue
        host, rest = line.split(":", 1)
        counters[host.strip()] = {k: int(v) for k, v in (item.split("=") for item in rest.split())}
    return counters


def assert_fleet_invariants(lab, output="", ledger=None, names=None):
    """The collection's promise after anything, as a person would check it with virsh on every host.

    - every VM runs on exactly one host and is defined on exactly one (the same);
    - none is left paused unless the output says it needs attention;
    - the last ledger entry of each VM that moved names the host where it now is;
    - no host under maintenance runs a VM (the lab's drains leave none by policy).
    Returns {vm: host}."""
    names = names or [guest["name"] for guest in lab.config["guests"]]
    placement, problems = {}, []
    for name in names:
        defined, running = lab.locate_guest(name)
        if len(running) != 1 or defined != running:
            problems.append("%s: defined on %s, running on %s" % (name, defined, running))
            continue
        host = placement[name] = running[0]
        state = lab.virsh(host, ["domstate", name], check=False).stdout.strip()
        if state == "paused" and not re.search(r"needs[ _]attention", output, re.IGNORECASE):
            problems.append("%s is paused on %s and the output does not say it needs attention" % (name, host))
    if ledger and os.path.exists(ledger):
        last = {}
        with open(ledger, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    entry = json.loads(line)
                    if entry.get("outcome") == "migrated":
                        last[entry["vm"]] = entry
        for name, entry in last.items():
            if name in placement and placement[name] != entry["destination"]:
                problems.append("the ledger says %s went to %s; it is on %s" % (name, entry["destination"],
                                                                                placement[name]))
    for host in lab.hosts:
        if os.path.exists(os.path.join(lab.host_dir(host), "var-lib-libvirt", "hvmaint", "maintenance.json")):
            left = sorted(name for name, where in placement.items() if where == host)
            if left:
                problems.append("%s is marked under maintenance but runs %s" % (host, ", ".join(left)))
    assert not problems, "fleet invariants broken:\n  " + "\n  ".join(problems)
    return placement
