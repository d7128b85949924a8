#!/usr/bin/env python3
"""The image's health check: exit 0 if this member's HTTP listener answers PATH (default
``/health``: it knows a leader and a linearizable read completes; ``/readyz``, ``/livez``)
with a 2xx status, else print why and exit 1.

The listener's address is ``CONFER_LISTEN_METRICS`` (the image's default ``0.0.0.0:8379``);
a wildcard host is reached on 127.0.0.1. Only the standard library: slim images have no
curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

WILDCARD_HOSTS = ("", "0.0.0.0", "[::]")
TIMEOUT_SECONDS = 4.0
"""Under Docker's and compose's check timeout (5 s); /health itself waits for a quorum
round of at most two election timeouts (2 s by default)."""


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/health"
    host, _, port = os.environ.get("CONFER_LISTEN_METRICS", "0.0.0.0:8379").rpartition(":")
    url = f"http://{'127.0.0.1' if host in WILDCARD_HOSTS else host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            print(response.read().decode(errors="replace").strip())
        return 0
    except urllib.error.HTTPError as e:  # 503: the body says which check failed
        print(f"{url}: {e.code} {e.read().decode(errors='replace').strip()}", file=sys.stderr)
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"{url}: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
