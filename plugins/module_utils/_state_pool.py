# -*- coding: utf-8 -*-
# Private to hvmaint.libvirt: not a public API, may change without notice.
"""The maintenance mark and the lease of a host, read over its libvirt connection (the controller-side fleet read).

Both are files in one directory on the host (_maintenance.py, _lease.py), which libvirt's API cannot read as
files. libvirt serves a directory's files as the volumes of a storage pool of type dir, and a volume's bytes with
a download (virStorageVolDownload): so the reader finds the pool whose target is that directory or starts a
transient one over it, downloads the two files, and destroys the transient pool again. The files stay the one
home of the mark and the lease; nothing is mirrored, so nothing can disagree, and a mark written by any version of
the collection (or by hand) is seen. The pool's build step creates the directory when no mark was ever written.

Whatever cannot be read raises HvmaintError: the caller leaves the host out of the plan, never assumes it unmarked.
The files' content is untrusted: it is capped in size and parsed as the modules on the host parse it.
"""

from __future__ import annotations

import os
from xml.etree import ElementTree as ET

from ansible_collections.hvmaint.libvirt.plugins.module_utils._lease import DEFAULT_LEASE_PATH, parse_lease
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, explain
from ansible_collections.hvmaint.libvirt.plugins.module_utils._maintenance import DEFAULT_MARK_PATH, parse_mark

STATE_DIR = os.path.dirname(DEFAULT_MARK_PATH)
MARK_FILE = os.path.basename(DEFAULT_MARK_PATH)
LEASE_FILE = os.path.basename(DEFAULT_LEASE_PATH)
# The name of the transient pool; a pool that someone defined over the directory is used under its own name.
STATE_POOL_NAME = "hvmaint-state"
# A mark or a lease is a few hundred bytes: anything far larger is not one.
MAX_STATE_BYTES = 64 * 1024

_POOL_XML = ("<pool type='dir'><name>%s</name><target><path>%s</path>"
             "<permissions><mode>0755</mode></permissions></target></pool>")


def is_state_pool(pool_facts):
    """True for the pool over the collection's own state directory (hypervisor_info leaves it out of the facts: it
    holds no VM's disks, and it exists only while a controller reads the host)."""
    return (pool_facts.get("path") or "").rstrip("/") == STATE_DIR


def _pool_target(pool):
    try:
        return (ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or "").rstrip("/")
    except ET.ParseError:
        return ""


def _find_state_pool(conn):
    for pool in conn.listAllStoragePools(0):
        if _pool_target(pool) == STATE_DIR:
            return pool
    return None


def _download(conn, vol, max_bytes=MAX_STATE_BYTES):
    """The volume's first max_bytes + 1 bytes (one more than allowed, so that an oversized file shows)."""
    stream = conn.newStream(0)
    chunks, total = [], 0
    try:
        vol.download(stream, 0, max_bytes + 1, 0)
        while total <= max_bytes:
            data = stream.recv(max_bytes + 1 - total)
            if not data:
                break
            chunks.append(data)
            total += len(data)
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except Exception:  # noqa: BLE001 - the download's own error is the one to report
            pass
        raise
    return b"".join(chunks)


def _file_text(conn, pool, name, where):
    """The text of file `name` of the state directory, or None when there is no such file."""
    import libvirt

    if name not in pool.listVolumes():
        return None
    try:
        vol = pool.storageVolLookupByName(name)
        data = _download(conn, vol)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise
    if len(data) > MAX_STATE_BYTES:
        # Not a mark or a lease; parsed as one, it reads as unreadable, which never counts as absent.
        return "\0file over %d bytes at %s" % (MAX_STATE_BYTES, where)
    return data.decode("utf-8", errors="replace")


def _start_transient_pool(conn):
    """A transient pool over the state directory, or None when another reader's pool is already over it. The build
    step (creating the directory) is asked for only when the directory is missing: no mark was ever written."""
    import libvirt

    xml = _POOL_XML % (STATE_POOL_NAME, STATE_DIR)
    try:
        return conn.storagePoolCreateXML(xml, 0)
    except libvirt.libvirtError:
        if _find_state_pool(conn) is not None:
            return None
    try:
        return conn.storagePoolCreateXML(xml, libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
    except libvirt.libvirtError:
        if _find_state_pool(conn) is not None:
            return None
        raise


def read_state(conn, host=None):
    """(mark, lease) of the host at the other end of `conn`, as read_mark and read_lease on the host would return
    them (None when absent). Raises HvmaintError when they cannot be read."""
    import libvirt

    where = "%s:%s" % (host or conn.getURI(), STATE_DIR)
    created = None
    try:
        pool = _find_state_pool(conn)
        if pool is None:
            pool = created = _start_transient_pool(conn)
            if pool is None:
                # Another controller's read started one meanwhile: use theirs.
                pool = _find_state_pool(conn)
            if pool is None:
                raise HvmaintError("cannot start a storage pool over %s (nor find one)" % where)
        elif not pool.isActive():
            raise HvmaintError("the storage pool %s over %s is defined but not active: start it, or undefine it"
                               % (pool.name(), where))
        else:
            pool.refresh(0)
        texts = {}
        for name in (MARK_FILE, LEASE_FILE):
            try:
                texts[name] = _file_text(conn, pool, name, where)
            except libvirt.libvirtError:
                # The file was replaced or removed between the listing and the download (a write is a rename):
                # list again and read once more; a second failure is the host's answer.
                pool.refresh(0)
                texts[name] = _file_text(conn, pool, name, where)
    except libvirt.libvirtError as exc:
        raise explain(exc, "cannot read the maintenance mark and the lease in %s over libvirt" % where) from exc
    finally:
        if created is not None:
            try:
                created.destroy()
            except libvirt.libvirtError:
                pass  # already gone: another reader's destroy, or the daemon's restart
    mark = None if texts[MARK_FILE] is None else parse_mark(texts[MARK_FILE], "%s/%s" % (where, MARK_FILE))
    lease = None if texts[LEASE_FILE] is None else parse_lease(texts[LEASE_FILE], "%s/%s" % (where, LEASE_FILE))
    return mark, lease
