"""The one printer's plumbing: the consoles, JSON documents, clean error lines, and the
small wording helpers every screen shares (plurals, units, key/value lines that never
break a URL or a path inside a token)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson
from rich.console import Console

from migrator.masking import mask_secrets

LEVEL_STYLE = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "block": "[bold red]block[/]"}
LEVEL_ORDER = {"block": 0, "warn": 1, "ok": 2}


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 warning', '2 warnings', '1,024 indexes' (with many='indexes')."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def listing(items, limit: int = 6) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


_ORJSON_OPTIONS = (orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                   | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)
_NOT_ASCII = re.compile(r"[^\x00-\x7e]+")   # and DEL, which json.dumps escapes too


def json_text(doc: Any) -> str:
    """doc as `json.dumps(doc, indent=2, default=str)` writes it (ASCII, non-ASCII
    characters escaped), by orjson: a plan's document is megabytes, and the standard
    library's encoder is pure Python as soon as it indents (a quarter of a second for a
    thousand tables, against a hundredth)."""
    try:
        text = orjson.dumps(doc, default=str, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        # An integer wider than 64 bits, say: the standard library takes anything.
        return json.dumps(doc, indent=2, default=str)
    if text.isascii() and "\x7f" not in text:
        return text
    # Outside printable ASCII is only ever inside a string: escaped there as json.dumps does.
    return _NOT_ASCII.sub(lambda m: encode_basestring_ascii(m.group())[1:-1], text)


@dataclass
class BaseOutput:
    """Where a command's report goes: a rich console, or one JSON document on stdout."""

    json_mode: bool = False
    # No emoji codes: a name, a message or a statement with `:x:` in it is shown as it is.
    console: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True, emoji=False))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True, emoji=False))

    def document(self, doc: Any) -> None:
        """Print one JSON document, secrets masked."""
        sys.stdout.write(mask_secrets(json_text(doc)) + "\n")
        sys.stdout.flush()

    def line(self, text: str = "", style: str | None = None) -> None:
        if not self.json_mode:
            self.console.print(mask_secrets(text), style=style, markup=False)

    def verbatim(self, lines: Iterable[str]) -> None:
        """Lines that go out exactly as they are (SQL), secrets masked: straight to the
        console's file, where rich would expand tabs and take a fifth of a millisecond a
        line (`plan --sql` on a thousand tables prints fifteen thousand)."""
        if not self.json_mode:
            self.console.file.write("".join(mask_secrets(line) + "\n" for line in lines))
            self.console.file.flush()

    def markup(self, text: str) -> None:
        if not self.json_mode:
            self.console.print(mask_secrets(text))

    def error(self, message: str, hint: str | None = None) -> None:
        """One clean line on stderr (and a JSON twin on stdout with --json)."""
        message = mask_secrets(message)
        if self.json_mode:
            self.document({"ok": False, "error": message, "hint": mask_secrets(hint) if hint else None})
        self.err.print(f"[bold red]error:[/] {escape(message)}")
        if hint:
            self.err.print(f"[dim]hint:[/] {escape(mask_secrets(hint))}")

    def waiting(self, text: str) -> None:
        """What a command waits for (a server restarting), on stderr: --json keeps stdout one document."""
        self.err.print(f"[yellow]waiting:[/] {escape(mask_secrets(text))}")

    def traceback(self) -> None:
        self.err.print_exception(show_locals=False)

    @contextmanager
    def status(self, text: str):
        if self.json_mode or not self.err.is_terminal:
            yield
            return
        with self.err.status(text):
            yield

    def prose(self, text: str, *, indent: int = 0, hang: int | None = None, style: str | None = None) -> None:
        """Markup text wrapped at the console's width between words (never inside one):
        for sentences, not for SQL, URLs or paths, which go out whole with line()."""
        if self.json_mode:
            return
        from rich.text import Text

        body = Text.from_markup(mask_secrets(text), style=style or "", emoji=False)
        hang = indent if hang is None else hang
        width = self.console.width
        first = body.wrap(self.console, max(20, width - indent))[0]
        first.rstrip()
        self.console.print(Text(" " * indent) + first, soft_wrap=True)
        rest = body[len(first.plain):]
        rest = rest[len(rest.plain) - len(rest.plain.lstrip()):]
        if rest.plain:
            for piece in rest.wrap(self.console, max(20, width - hang)):
                piece.rstrip()
                self.console.print(Text(" " * hang) + piece, soft_wrap=True)

    def pair(self, label: str, value: str, *, width: int = 12, indent: int = 0) -> None:
        """'label   value' on one line; a value too long for it (a URL, a path) goes whole on
        the next line, so a terminal never breaks it where it could not be copied."""
        if self.json_mode:
            return
        value = mask_secrets(value)
        pad = " " * indent
        if indent + width + len(value) <= self.console.width or "\n" in value:
            self.line(f"{pad}{label:<{width}}{value}")
        else:
            self.line(f"{pad}{label}")
            self.line(f"{pad}  {value}")
