"""The one user-facing error type and its one-line formatter: the CLI prints `bench: error: ...`
on one line and exits with code 2.

Messages teach, as diffusers' do: they name the file, the key path and the valid choices, e.g.
`suites/x.yaml: diffusion.schedule: unknown 'cosin'; choose from cosine, linear, quadratic, sigmoid`.
`located` puts the file in front of a message raised where the file is not known (data loaders,
samplers); `one_line` is the only formatter of an error on its way to the terminal.
"""
from __future__ import annotations

import difflib
import sys


class BenchError(Exception):
    """A bad input (suite key, path, missing weights): reported in one line, exit code 2."""


class RunDiverged(Exception):
    """A run's training loss became non-finite: the run is marked failed, the suite goes on."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite training loss {loss} at step {step}")
        self.step, self.loss = step, loss


def choices_error(where: str, what: str, value, choices) -> BenchError:
    """`where: unknown what 'value'; choose from a, b, c` (close matches first)."""
    options = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(value), options, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return BenchError(f"{where}: unknown {what} {value!r}{hint}; choose from {', '.join(options)}")


def located(where: str, err: BaseException) -> BenchError:
    """`err` as a BenchError whose message starts with the file `where` (added once)."""
    text = str(err)
    return BenchError(text if text.startswith(f"{where}:") else f"{where}: {text}")


def one_line(err: BaseException) -> str:
    """`bench: error: <message>` on a single line (newlines and runs of spaces folded)."""
    return "bench: error: " + " ".join(str(err).split())


def warn(message) -> None:
    """`bench: warning: <message>` on one stderr line: a bad file that is skipped or redone."""
    print("bench: warning: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
