"""Which routes of the HTTP listener may serve keys and values: not those that would be a way
around the client port's TLS (etcd's JSON gateway, the dashboard)."""

from __future__ import annotations

import logging

from confer.server.http.member import Member

log = logging.getLogger("confer.http")


def bypasses_client_tls(member: Member, what: str) -> bool:
    """Whether serving ``what`` (the gateway, the dashboard) on the HTTP listener would be a
    way around the client port's TLS: the client port serves TLS and the listener does not.
    Over HTTPS (``--listen-metrics https://...``) the listener has the client port's files
    and client-certificate rule, and a certificate's common name is the user, as there."""
    cfg = member.cfg
    if cfg.client_tls is None or cfg.metrics_tls is not None:
        return False
    log.info("%s is not served on the HTTP listener: the client port serves TLS and the "
             "listener does not (serve it over HTTPS: --listen-metrics https://HOST:PORT; "
             "docs/security.md)", what)
    return True
