#!/usr/bin/env python3
"""Fetch single members of a remote wheel (a zip) with HTTP Range requests, stdlib only.

    wheel-member.py URL OUTDIR MEMBER...      extract the named members under OUTDIR
    wheel-member.py --list URL                print the central directory (name, size)

A Triton wheel is 150-285 MB; its ptxas is ~30-50 MB and __init__.py a few KB, so reading
the end-of-central-directory record, the central directory, and each member's local header and
data costs a fraction of the download. Members are written as `<member>` under OUTDIR, with the
member's own file mode.
"""
import base64
import hashlib
import os
import struct
import sys
import urllib.request
import zlib


def get(url, start, end):
    """Bytes [start, end] of url (inclusive, as HTTP ranges are)."""
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-{end}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        if r.status != 206:
            raise SystemExit(f"{url}: server ignored the Range request (HTTP {r.status})")
        return r.read()


def size_of(url):
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=60) as r:
        return int(r.headers["Content-Length"])


def central_directory(url):
    size = size_of(url)
    tail = get(url, max(0, size - 65557), size - 1)
    eocd = tail.rfind(b"PK\x05\x06")
    if eocd < 0:
        raise SystemExit(f"{url}: no end-of-central-directory record")
    cd_size, cd_off = struct.unpack("<II", tail[eocd + 12 : eocd + 20])
    if cd_off == 0xFFFFFFFF:  # zip64: the locator sits right before the EOCD
        loc = tail.rfind(b"PK\x06\x07", 0, eocd)
        (z64_off,) = struct.unpack("<Q", tail[loc + 8 : loc + 16])
        z64 = get(url, z64_off, z64_off + 55)
        cd_size, cd_off = struct.unpack("<QQ", z64[40:56])
    cd = get(url, cd_off, cd_off + cd_size - 1)
    entries = {}
    i = 0
    while i + 46 <= len(cd) and cd[i : i + 4] == b"PK\x01\x02":
        (method,) = struct.unpack("<H", cd[i + 10 : i + 12])
        csize, usize = struct.unpack("<II", cd[i + 20 : i + 28])
        nlen, xlen, clen = struct.unpack("<HHH", cd[i + 28 : i + 34])
        (attr,) = struct.unpack("<I", cd[i + 38 : i + 42])
        (off,) = struct.unpack("<I", cd[i + 42 : i + 46])
        name = cd[i + 46 : i + 46 + nlen].decode()
        extra = cd[i + 46 + nlen : i + 46 + nlen + xlen]
        # zip64 extra field: the 0xFFFFFFFF fields, in order usize, csize, offset.
        j = 0
        while j + 4 <= len(extra):
            tag, ln = struct.unpack("<HH", extra[j : j + 4])
            if tag == 1:
                vals = list(struct.unpack(f"<{ln // 8}Q", extra[j + 4 : j + 4 + ln - ln % 8]))
                if usize == 0xFFFFFFFF:
                    usize = vals.pop(0)
                if csize == 0xFFFFFFFF:
                    csize = vals.pop(0)
                if off == 0xFFFFFFFF:
                    off = vals.pop(0)
            j += 4 + ln
        entries[name] = (method, csize, usize, off, (attr >> 16) & 0o7777)
        i += 46 + nlen + xlen + clen
    return entries


def member(url, entry):
    method, csize, usize, off, _ = entry
    head = get(url, off, off + 29)
    nlen, xlen = struct.unpack("<HH", head[26:30])
    start = off + 30 + nlen + xlen
    data = get(url, start, start + csize - 1)
    if method == 8:
        data = zlib.decompress(data, -15)
    elif method != 0:
        raise SystemExit(f"compression method {method} not supported")
    if len(data) != usize:
        raise SystemExit(f"size mismatch: {len(data)} != {usize}")
    return data


def main():
    if sys.argv[1] == "--list":
        for name, e in sorted(central_directory(sys.argv[2]).items()):
            print(f"{e[2]:>12} {name}")
        return
    url, outdir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    entries = central_directory(url)
    # The wheel's RECORD lists each member's sha256: every member fetched is checked against it.
    record = {}
    for rname in (n for n in entries if n.endswith(".dist-info/RECORD")):
        for line in member(url, entries[rname]).decode().splitlines():
            parts = line.rsplit(",", 2)
            if len(parts) == 3 and parts[1].startswith("sha256="):
                record[parts[0]] = parts[1][len("sha256=") :]
    for name in names:
        if name not in entries:
            raise SystemExit(f"{url}: no member {name}")
        data = member(url, entries[name])
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if record.get(name) != digest:
            raise SystemExit(f"{url}: {name}: sha256 {digest} is not RECORD's {record.get(name)}")
        path = os.path.join(outdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, entries[name][4] or 0o644)
        print(f"wheel-member.py: {name} ({len(data)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
