#!/usr/bin/env python3
"""Fetch the source archives that validate rpc-table, from the package index pip uses.

Usage: fetch_validation_sdists.py DEST

Two old base-node-rpc firmware packages ship a generated `node.py` (every `_CMD_*` code)
beside the `Node.h` it was generated from; with the base-node-rpc headers of their time they
are complete inputs and outputs of the firmware's code generator. pip cannot build these
sdists, so the archives themselves are downloaded: the index is PIP_INDEX_URL, else pip's
configured `global.index-url`, else pip's default index. Each archive is checked against the
SHA-256 below, and only the files the test reads are extracted under DEST. With
RPC_TABLE_SDIST_DIR set, archives already in that folder are used instead of the network.

Exits non-zero with a message saying what failed; it never skips.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
import zipfile

ARCHIVES = [
    ("dropbot-dx", "dropbot-dx-1.1.post3.zip",
     "9af8e1aac817eb00f77c6ed5a2221d228be70c6358152738a52adbf1a2da48ab",
     ["dropbot_dx/node.py", "dropbot_dx/Arduino/dropbot_dx/Node.h"]),
    ("teensy-minimal-rpc", "teensy-minimal-rpc-0.2.post1.zip",
     "6a804f8929009c4b8cb889e0c5f340f6016117012d4dd3986cd46b51d1c286d3",
     ["teensy_minimal_rpc/node.py",
      "teensy_minimal_rpc/Arduino/teensy_minimal_rpc/Node.h"]),
    ("base-node-rpc", "base-node-rpc-0.16.post1.zip",
     "2089ae217cc6bd9bf855185b21232f4754ab7326abe9a96a3901f16bb82b6e40",
     ["base_node_rpc/Arduino/library/BaseNodeRpc/src/BaseNodeRpc/"]),
    ("base-node-rpc", "base-node-rpc-0.12.post13.zip",
     "4e9086801163ebed83f8753b89a20a1562c007a1051b34814367fbd79b256b62",
     ["base_node_rpc/Arduino/library/BaseNodeRpc/src/BaseNodeRpc/"]),
]


def index_url():
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        try:
            out = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                capture_output=True, text=True, timeout=60)
            url = out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            url = ""
    if not url:
        from pip._internal.models.index import PyPI
        url = PyPI.simple_url
    return url.rstrip("/")


def file_url(index, project, filename):
    """The download URL of `filename` on the project's simple page (PEP 691 or PEP 503)."""
    page = f"{index}/{project}/"
    request = urllib.request.Request(page, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    with urllib.request.urlopen(request, timeout=120) as response:
        kind = response.headers.get("Content-Type", "")
        body = response.read().decode("utf-8", "replace")
    if "json" in kind:
        for f in json.loads(body).get("files", []):
            if f.get("filename") == filename:
                return f["url"]
    else:
        for href, text in re.findall(r'<a[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', body):
            if text.strip() == filename:
                return urllib.parse.urljoin(page, href.replace("&amp;", "&"))
    raise RuntimeError(f"{filename} is not listed on {page}")


def archive_bytes(index, project, filename, sha256):
    local = os.environ.get("RPC_TABLE_SDIST_DIR")
    if local and os.path.isfile(os.path.join(local, filename)):
        with open(os.path.join(local, filename), "rb") as f:
            data = f.read()
    else:
        url = file_url(index, project, filename)
        with urllib.request.urlopen(url.split("#")[0], timeout=600) as response:
            data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{filename}: SHA-256 {digest}, expected {sha256}")
    return data


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    dest = sys.argv[1]
    os.makedirs(dest, exist_ok=True)
    index = index_url()
    for project, filename, sha256, wanted in ARCHIVES:
        try:
            data = archive_bytes(index, project, filename, sha256)
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            sys.exit(f"cannot fetch {filename} from {index}: {e}")
        top = filename[: -len(".zip")]
        path = os.path.join(dest, filename)
        with open(path, "wb") as f:
            f.write(data)
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                inner = member[len(top) + 1:] if member.startswith(top + "/") else None
                if inner and any(inner == w or (w.endswith("/") and inner.startswith(w))
                                 for w in wanted):
                    z.extract(member, dest)
        os.remove(path)
    with open(os.path.join(dest, ".complete"), "w") as f:
        f.write("\n".join(a[1] for a in ARCHIVES) + "\n")


if __name__ == "__main__":
    main()
