"""Credential masking: the one function every log line, event, CSV row and message goes through.

Cameras take credentials in the URL's user info (`rtsp://user:pass@host`, `rtsp://:pass@host`)
or in the query string (`?user=admin&password=...`, `pwd=`, `token=`, `auth=`...). Any URL in
a text has both masked; the user name stays readable.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# Any `scheme://...` run up to whitespace or a quote/bracket (URLs inside messages and JSON).
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]*", re.IGNORECASE)
# A query/path parameter whose name says it carries a secret: password, passwd, pass, pwd,
# token, auth, and names built on them (access_token, auth_key, client_secret, apikey...).
_SECRET_PARAM = re.compile(
    r"([?&;](?:[^=&#;?/]*(?:pass|pwd|token|auth|secret)[^=&#;?/]*|[^=&#;?/]*key)=)[^&#;]*", re.IGNORECASE
)


def _redact_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    # The user info ends at the last '@' before the query. With `user:pass` before any '/', '?'
    # or '#', the password may hold those characters and '@' unescaped (cameras' web pages let
    # users type them): it ends at the last '@' of all. Masking too much (an '@' in a query
    # value) is safe; too little leaks the password.
    head = re.split(r"[/?#]", rest, maxsplit=1)[0]
    query = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@") if ":" in head else rest.rfind("@", 0, query)
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        if colon and not any(c in user for c in "/?#"):
            rest = f"{user}:{MASK}{rest[at:]}"
    return f"{scheme}://{_SECRET_PARAM.sub(lambda m: m.group(1) + MASK, rest)}"


def _redact_match(url: str) -> str:
    # Punctuation closing a sentence after a URL ("... ?token=abc: cannot open") is not part of it.
    core = url.rstrip(":,.;)")
    return _redact_url(core) + url[len(core):]


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it masked (`***`)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: _redact_match(m.group(0)), text)


class RedactingFormatter(logging.Formatter):
    """Masks credentials in the whole formatted record (message, arguments and traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
