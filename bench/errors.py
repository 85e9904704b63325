"""The one user-facing error type: the CLI prints its message on one line and exits with code 2.

Messages teach, as diffusers' do: they name the file, the key path and the valid choices, e.g.
`suites/x.yaml: diffusion.schedule: unknown 'cosin'; choose from cosine, linear, quadratic, sigmoid`.
"""
from __future__ import annotations

import difflib


class BenchError(Exception):
    """A bad input (suite key, path, missing weights): reported in one line, exit code 2."""


def choices_error(where: str, what: str, value, choices) -> BenchError:
    """`where: unknown what 'value'; choose from a, b, c` (close matches first)."""
    options = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(value), options, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return BenchError(f"{where}: unknown {what} {value!r}{hint}; choose from {', '.join(options)}")
