"""The report's Markdown: `leaderboard.md` (every table of the report), the leaderboard tables
alone (`bench report --markdown-only`, CI logs) and the one pipe-table writer the study summary
(`bench.tune.summary`) shares. The cells come from `bench.report.tables`' display frames.
"""
from __future__ import annotations

import pandas as pd

from bench.report.tables import Section, leaderboard_sections, sections


def pipe_table(head: list[str], rows: list[list[str]]) -> str:
    """The one GitHub-flavoured pipe-table writer (report tables, study summary); `|` escaped."""
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in [head, *rows]]
    lines.insert(1, "|" + "|".join("---" for _ in head) + "|")
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame's values as a pipe table (floats with `g`, missing values empty)."""
    rows = [["" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v)) for v in row]
            for row in frame.itertuples(index=False)]
    return pipe_table([str(c) for c in frame.columns], rows)


def render(parts: list[Section], level: str = "##") -> str:
    blocks = [f"{level} {s.title}\n\n{s.note}" + (f"\n\nGroup: `{s.details}`" if s.details else "")
              + "\n\n" + (markdown_table(s.frame) if not s.frame.empty else "_no complete runs_")
              for s in parts]
    return "\n\n".join(blocks) + "\n"


def to_markdown(table: pd.DataFrame, metric: str | None = None) -> str:
    """The leaderboard tables alone (one per comparison group)."""
    if metric and not table.empty:
        table.attrs.setdefault("metric", metric)
    return render([s for s in leaderboard_sections(table)
                   if s.key.startswith("leaderboard") or not s.frame.empty])


def leaderboard_markdown(results, table: pd.DataFrame) -> str:
    """leaderboard.md: every table of the report."""
    sources = sorted(set(results.runs["source_name"])) if "source_name" in results.runs else []
    head = f"# Leaderboard: {', '.join(sources) or 'no results'}\n\n"
    return head + render(sections(results, table))
