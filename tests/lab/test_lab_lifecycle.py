"""The lab survives `up; up; down; down` and an `up` killed halfway, and `down` leaves nothing behind.

Runs a small lab of its own (lab-lifecycle.json), so it can be torn down without disturbing the main lab.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "lab-lifecycle.json")
ENV = dict(os.environ, HVMAINT_LAB_CONFIG=CONFIG)

with open(CONFIG, encoding="utf-8") as _handle:
    LAB = json.load(_handle)


def lab(*args, check=True):
    result = subprocess.run([sys.executable, os.path.join(HERE, "lab.py")] + list(args), env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600, check=False)
    if check:
        assert result.returncode == 0, result.stdout
    return result


def leftovers():
    """Everything of this lab still on the machine, by kind; empty lists when it is gone."""
    found = {}
    found["namespaces"] = [n for n in os.listdir("/run/netns") if n.startswith(LAB["netns_prefix"])] \
        if os.path.isdir("/run/netns") else []
    links = subprocess.run(["ip", "-o", "link", "show"], text=True, stdout=subprocess.PIPE, check=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    found["links"] = [n for n in names if n == LAB["uplink_bridge"] or n.startswith(LAB["veth_prefix"])]
    found["processes"] = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if LAB["state_dir"] in cmdline or "guest=lt-idle1" in cmdline:
            found["processes"].append(cmdline[:120])
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        found["mounts"] = [line for line in handle if LAB["state_dir"] in line or LAB["netns_prefix"] in line]
    found["files"] = [LAB["state_dir"]] if os.path.exists(LAB["state_dir"]) else []
    return {kind: items for kind, items in found.items() if items}


def assert_running():
    status = lab("status")
    for host in LAB["hosts"]:
        assert "%s " % host["name"] in status.stdout and " up " in status.stdout, status.stdout
    assert "lt-idle1(running)" in status.stdout, status.stdout


def test_up_twice_then_down_twice_leaves_nothing():
    lab("down")
    assert leftovers() == {}
    lab("down")
    assert leftovers() == {}
    lab("up")
    assert_running()
    second = lab("up")
    assert "defining" not in second.stdout  # the second up repairs nothing and defines nothing again
    assert_running()
    lab("down")
    assert leftovers() == {}
    lab("down")
    assert leftovers() == {}


def test_up_killed_halfway_is_cleaned_by_down_and_can_be_rebuilt():
    lab("down")
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "lab.py"), "up"], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first_host = os.path.join("/run/netns", LAB["netns_prefix"] + LAB["hosts"][0]["name"])
    deadline = time.time() + 60
    while not os.path.exists(first_host) and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(first_host), "up never got as far as the first host"
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert leftovers(), "the interrupted up had left something to clean (else this test proves nothing)"
    lab("down")
    assert leftovers() == {}
    # A lab interrupted and cleaned can be built again, and up repairs an interrupted up too.
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "lab.py"), "up"], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while not os.path.exists(first_host) and time.time() < deadline + 60:
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    lab("up")
    assert_running()
    lab("down")
    assert leftovers() == {}
