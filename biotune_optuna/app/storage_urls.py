"""Storage URLs: where a command finds one, and how it is shown without its secrets.

A PostgreSQL or MySQL URL carries a password (``postgresql://user:password@host/db``), and a
study's note, the console, logs and error messages are read by others. Every place the
toolkit shows or stores a URL goes through :func:`masked`; the URL itself can come from the
environment (:data:`ENV_VAR`) or a TOML file instead of the command line, where every local
user sees it in the process list.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode

ENV_VAR = "BIOTUNE_OPTUNA_STORAGE"
MASK = "***"
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)


def from_environment() -> str | None:
    """The storage URL set in :data:`ENV_VAR`, if any."""
    return os.environ.get(ENV_VAR) or None


def storage_file(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` or ``journal:///`` URL, read the way SQLAlchemy reads
    SQLite URLs: three slashes and a relative path (``sqlite:///studies/k.db``), four for an
    absolute one (``journal:////data/k.log``). None for servers and in-memory databases."""
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme):
            rest = url[len(scheme):].partition("?")[0]
            if rest in ("", ":memory:"):
                return None
            path, legacy = Path(rest), Path("/") / rest
            # Journal URLs were once read as absolute: keep finding the studies made then.
            if scheme == "journal:///" and not path.exists() and legacy.is_file():
                return legacy
            return path
    return None


def masked(url: str) -> str:
    """The URL with its password and secret query parameters (``password=``, ``token=``,
    ...) replaced by ``***``; URLs without secrets come back unchanged."""
    head, sep, query = url.partition("?")
    password = _password(head)
    if password:
        start = head.index("//") + 2
        user = head[start:].partition(":")[0]
        head = f"{head[:start]}{user}:{MASK}{head[start + len(user) + 1 + len(password):]}"
    if sep:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_NAME.search(k) else v) for k, v in pairs],
                          safe="*/:")
    return head + sep + query


def has_secret(url: str) -> bool:
    return masked(url) != url


def secrets(url: str) -> list[str]:
    """The secret parts of a URL as they may appear in a driver's message: raw and
    percent-decoded."""
    found = [_password(url.partition("?")[0])]
    query = url.partition("?")[2]
    found += [v for k, v in parse_qsl(query, keep_blank_values=True) if _SECRET_NAME.search(k)]
    return sorted({s for value in found if value for s in (value, unquote(value))},
                  key=len, reverse=True)


def _password(head: str) -> str:
    """The password of ``scheme://user:password@host/...`` (which may itself hold ``@``:
    the host starts after the last one)."""
    _, slashes, rest = head.partition("//")
    userinfo, at, _ = rest.rpartition("@")
    return userinfo.partition(":")[2] if slashes and at else ""


_opened: set[str] = set()


def remember(url: str) -> None:
    """Note a URL this process opened, so that :func:`scrubbed` masks its secrets."""
    if has_secret(url):
        _opened.add(url)


def scrubbed(text: str, url: str | None = None) -> str:
    """``text`` (an error message, a traceback) with every secret of ``url`` and of the URLs
    this process opened masked."""
    known = sorted({url, *_opened} - {None, ""}, key=len, reverse=True)
    for each in known:
        text = text.replace(each, masked(each))
    # Longest first, so one URL's short secret cannot cut into another's; whole tokens only,
    # so a password such as "p" does not mask every "p".
    for secret in sorted({s for each in known for s in secrets(each)}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w]){re.escape(secret)}(?![\w])", MASK, text)
    return text
