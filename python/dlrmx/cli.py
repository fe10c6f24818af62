"""What every dlrmx command line shares: a parser whose mistakes are one `error:` line (the
unknown flag and the nearest known one, or a flag given twice) instead of a usage dump."""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import NoReturn, Sequence


class CliError(ValueError):
    """A user mistake on the command line; the CLI prints it as one `error:` line, rc 2."""


class Parser(argparse.ArgumentParser):
    """argparse with short errors: `error: unrecognized argument --lerning-rate (did you mean
    --learning-rate?)`, and a single-valued flag given twice is an error, not 'the last wins'."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # a typo must not silently pick another flag
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise CliError(self._explain(message))

    def parse_args(self, args: Sequence[str] | None = None, namespace=None):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        self._check_repeats(argv)
        return super().parse_args(argv, namespace)

    def _explain(self, message: str) -> str:
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            flags = [u.split("=", 1)[0] for u in unknown if u.startswith("-")] or unknown
            return "; ".join(self._nearest(f) for f in flags)
        return message

    def _nearest(self, flag: str) -> str:
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else f" (see {self.prog} --help)"
        return f"unrecognized argument {flag}{hint}"

    def _check_repeats(self, argv: list[str]) -> None:
        seen: dict[str, str] = {}
        for i, tok in enumerate(argv):
            if tok == "--":
                break
            if not tok.startswith("-") or tok == "-":
                continue
            name, eq, value = tok.partition("=")
            action = self._option_string_actions.get(name)
            if action is None or isinstance(action, (argparse._AppendAction, argparse._CountAction,
                                                     argparse._HelpAction)):
                continue
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) and action.nargs != 0 else ""
            key = action.dest
            if key in seen:
                raise CliError(f"{'/'.join(action.option_strings)} given twice "
                               f"({seen[key] or 'set'} and {value or 'set'}): give it once")
            seen[key] = value


def die(message: object) -> int:
    """Print one `error:` line and return the exit status for a user error."""
    print(f"error: {message}", file=sys.stderr)
    return 2
