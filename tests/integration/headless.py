"""Look at an HTML file as a person's browser shows it: Debian's headless Chromium, with no network.

open_in_chromium(html, png) loads the file twice (--dump-dom for the DOM it built, --screenshot for what it
painted), with every host name unresolvable and a dead proxy, so a page that needed the network would fail to
load something, and Chromium logs that, as it logs anything the page writes to its console. read_png decodes the
screenshot (8-bit RGB or RGBA, as Chromium writes it) without an imaging library.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
    "--enable-logging=stderr", "--v=0",
    # No network: whatever the page would fetch fails, and Chromium says so in its log.
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
]
# Lines of Chromium's log that concern the page (its console, failed loads), not the browser's own complaints
# about a machine without D-Bus or a GPU.
PAGE_PROBLEMS = ("CONSOLE", "Failed to load", "net::ERR_", "Refused to", "Uncaught")


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_in_chromium(html_path, png_path, profile_dir, width=1280, height=2400, timeout=120):
    """(dom, page_problems): the DOM Chromium built, and the log lines about the page (none when it loaded
    cleanly); writes the screenshot to png_path."""
    binary = chromium()
    url = "file://" + html_path
    common = [binary] + CHROMIUM_FLAGS + ["--user-data-dir=%s" % profile_dir, "--window-size=%d,%d" % (width, height)]
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=timeout, check=True)
    shot = subprocess.run(common + ["--screenshot=%s" % png_path, url], capture_output=True, text=True,
                          timeout=timeout, check=True)
    problems = [line for line in (dom.stderr + shot.stderr).splitlines()
                if any(marker in line for marker in PAGE_PROBLEMS)]
    return dom.stdout, problems


def read_png(path, max_rows=None):
    """(width, height, rows) with rows a list of lists of (r, g, b) tuples: the first max_rows rows (all by
    default; pure Python takes some seconds for a full page, and rows are unfiltered from the top)."""
    with open(path, "rb") as handle:
        data = handle.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "%s is not a PNG" % path
    offset, idat, header = 8, b"", None
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, color, interlace = header[0], header[1], header[2], header[3], header[6]
    assert depth == 8 and color in (2, 6) and interlace == 0, "unexpected PNG layout %s" % (header,)
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous, at = [], bytearray(stride), 0
    for _row in range(min(height, max_rows or height)):
        kind, line = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + predictor) & 0xFF
        rows.append([tuple(line[x * channels:x * channels + 3]) for x in range(width)])
        previous = line
    return width, height, rows
