"""Secrets never appear in output, logs, state or errors: every text a person or a
file may see passes through `mask_secrets`. No migrator imports: the errors, the
connection seam and the output all use it.
"""

from __future__ import annotations

import re

MASK = "****"

# postgresql://user:secret@host/db  and  key=value password=secret  forms.
_URL_PASSWORD = re.compile(r"(?P<pre>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)", re.I)
# key=value (not after ? or &: that is a URL's query, below); libpq quotes with single
# quotes only, so in an unquoted value a double quote is part of the password.
_KV_PASSWORD = re.compile(r"(?<![?&])(?P<pre>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s']+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<pre>[?&]password=)(?P<pw>[^&\s]+)", re.I)


# A `password` keyword whose value may be on the next line (`password =` then a newline).
_OPEN_ENDED = re.compile(r"\bpassword\s*=?\s*$", re.I)
# Longer texts (plan --json of a thousand tables is megabytes) are masked line by line,
# only where a line can hold a secret.
_BY_LINE = 64 * 1024


def mask_secrets(text: str) -> str:
    """Replace every password in DSNs found in text with ****."""
    if not text or ("://" not in text and "password" not in text.lower()):
        return text
    if len(text) <= _BY_LINE:
        return _mask(text)
    lines = text.split("\n")
    suspect = [i for i, line in enumerate(lines) if "://" in line or "password" in line.lower()]
    if any(_OPEN_ENDED.search(lines[i]) for i in suspect):
        return _mask(text)
    for i in suspect:
        lines[i] = _mask(lines[i])
    return "\n".join(lines)


def _mask(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
    return _QUERY_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
