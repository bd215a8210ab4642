# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The one place that opens libvirt connections and turns libvirt errors into messages a person can act on."""

from __future__ import annotations

import threading
import traceback

LIBVIRT_IMPORT_ERROR = None
try:
    import libvirt
except ImportError:  # pragma: no cover - depends on the machine
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()

DEFAULT_URI = "qemu:///system"


class HvmaintError(Exception):
    """The collection's own error: its message is meant for the person running the playbook."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.details = details


# Connection options shared by every module that talks to libvirt; documented once in
# plugins/doc_fragments/connection.py.
CONNECTION_ARGUMENT_SPEC = dict(
    uri=dict(type="str", default=DEFAULT_URI),
)


def connection_argument_spec(**extra):
    spec = dict(CONNECTION_ARGUMENT_SPEC)
    spec.update(extra)
    return spec


def require_libvirt(module):
    """Fail the module with install advice when libvirt-python cannot be imported."""
    if libvirt is None:
        from ansible.module_utils.basic import missing_required_lib

        module.fail_json(
            msg=missing_required_lib(
                "libvirt-python",
                reason="to talk to libvirt (on Debian/Ubuntu: apt install python3-libvirt;"
                " on EL: dnf install python3-libvirt)",
            ),
            exception=LIBVIRT_IMPORT_ERROR,
        )


def fail_from(module, exc, **result):
    """Fail the module from the collection's error: its message, its details, and what `result` the module had
    gathered (every module turns an HvmaintError into fail_json this one way)."""
    module.fail_json(msg=str(exc), **dict(result, **exc.details))


_HINTS = (
    # (substring of libvirt's message, advice); the first match wins, so the most specific come first.
    ("Cannot read CA certificate", "the client has no CA certificate for TLS (/etc/pki/CA/cacert.pem or"
     " the URI's pkipath)"),
    ("certificate", "the TLS certificates do not match: check that both sides trust the same CA and that the"
     " server certificate names the host as the URI does"),
    ("authentication", "libvirt refused the credentials: check auth_tls/auth_tcp and the SASL/polkit setup"),
    ("No such file or directory", "is libvirtd (or virtqemud) running on that host, and is the URI right?"),
    ("Connection refused", "libvirtd is not listening there: check listen_tls/listen_tcp and the port"),
    ("No route to host", "the host is unreachable on the network"),
    ("Name or service not known", "the host name in the URI does not resolve"),
)


def explain(exc, action):
    """Return an HvmaintError for a libvirtError raised while doing `action`."""
    text = str(exc).strip()
    hint = next((advice for needle, advice in _HINTS if needle.lower() in text.lower()), None)
    message = "%s: %s" % (action, text)
    if hint:
        message += " (%s)" % hint
    code = exc.get_error_code() if hasattr(exc, "get_error_code") else None
    return HvmaintError(message, libvirt_error_code=code)


def unknown_vms(names, host, known):
    """The one error for VMs a host does not have; it lists what the host has, since a typo is the usual cause."""
    listed = ", ".join(sorted(known)) or "none"
    return HvmaintError("no VM named %s on %s (it has: %s)" % (", ".join(names), host, listed))


def _quiet_libvirt_errors():
    # libvirt prints every error to stderr by default; we raise them instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


# libvirt's keepalive (a dead peer noticed in seconds, and every call waiting on it failing) works only in a
# process that runs libvirt's event loop: without one, setKeepAlive fails and a call to a host whose link went
# down waits for TCP to give up (many minutes), whatever the engine's own timeouts say.
_EVENT_LOOP = {"thread": None}
_EVENT_LOOP_LOCK = threading.Lock()
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3


def _run_event_loop():
    while True:
        libvirt.virEventRunDefaultImpl()


def ensure_event_loop():
    """Run libvirt's default event loop in a daemon thread of this process, once, before any connection opens
    (connections opened earlier get no keepalive)."""
    with _EVENT_LOOP_LOCK:
        if _EVENT_LOOP["thread"] is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_event_loop, name="libvirt-events")
        thread.daemon = True
        thread.start()
        _EVENT_LOOP["thread"] = thread


def open_connection(uri=DEFAULT_URI, read_only=False):
    """Open a libvirt connection with keepalive, or raise HvmaintError saying what to fix."""
    if libvirt is None:
        raise HvmaintError("libvirt-python is not installed (apt install python3-libvirt, or pip install"
                           " libvirt-python)")
    _quiet_libvirt_errors()
    ensure_event_loop()
    try:
        conn = libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise explain(exc, "cannot connect to libvirt at %s" % uri) from exc
    if conn is None:  # pragma: no cover - older bindings returned None
        raise HvmaintError("cannot connect to libvirt at %s" % uri)
    try:
        # A dead peer is noticed within interval * (count + 1) seconds instead of TCP's minutes: libvirt then
        # closes the connection and every call waiting on it fails.
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    except libvirt.libvirtError:
        pass  # a local (unix socket) connection needs none: a dead daemon closes its socket
    return conn


def close_quietly(conn):
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing must never mask the real error
        pass


class Connection:
    """Context manager around open_connection."""

    def __init__(self, uri=DEFAULT_URI, read_only=False):
        self.uri = uri
        self.read_only = read_only
        self.conn = None

    def __enter__(self):
        self.conn = open_connection(self.uri, self.read_only)
        return self.conn

    def __exit__(self, *exc_info):
        close_quietly(self.conn)
        self.conn = None
        return False
