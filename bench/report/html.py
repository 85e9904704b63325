"""report.html: one self-contained page per report — every table, every plot and every run's
fixed-noise sample grid embedded (base64 PNG data URIs), inline CSS, no script and no external URL,
so it opens offline, attaches to an e-mail and archives as one file.

The page answers one study question per section (which entry is best and is it real, what the
quality costs, how training went, reconstruction vs t, how many samples/steps FID needs, what the
samples look like), then gives the protocol and environment behind every row. It fits a 1280 px
screen: each comparison group's numbers come as three narrow tables (leaderboard, other quality
metrics, cost) headed by a short protocol label (`FID-4096 vs train · DDPM-1000 · EMA`) with the
full protocol key one click away (`<details>`); a table that still overflows scrolls with its entry
column pinned.
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import pandas as pd

from bench.report.tables import Section, sections
from bench.run.results import write_with

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1400px; color: #222;
       padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 2px solid #ddd; padding-bottom: 4px;
margin-top: 32px; } h3 { font-size: 15px; margin-bottom: 4px; }
p.note { color: #555; margin: 4px 0 8px; max-width: 1100px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f0f3f7; white-space: normal; min-width: 4.5em; }
tr:nth-child(even) td { background: #fafafa; }
td:first-child, th:first-child { text-align: left; }  /* the entry (or t, N...) column */
table[id^="leaderboard"] td:first-child, table[id^="leaderboard"] th:first-child { text-align: right; }
table[id^="leaderboard"] td:nth-child(2), table[id^="leaderboard"] th:nth-child(2) { text-align: left; }
table[id^="leaderboard"] td:nth-child(2), table[id^="quality"] td:first-child,
table[id^="cost"] td:first-child { position: sticky; left: 0; background: #fff; }  /* if it scrolls */
table#protocols td { white-space: normal; overflow-wrap: anywhere; }  /* long protocols wrap */
table#protocols td:first-child { white-space: nowrap; overflow-wrap: normal; }
table#protocols td:nth-child(2) { min-width: 28em; text-align: left; }
details { margin: 2px 0; font-size: 12.5px; } details code { white-space: normal; }
img.plot { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
.grids { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; text-align: center; font-size: 12px; }
figure img { width: 160px; image-rendering: pixelated; border: 1px solid #ddd; }
nav a { margin-right: 14px; } code { background: #f4f4f4; padding: 0 3px; }
"""

QUESTIONS = [  # (anchor, question, table keys (prefix match), plots)
    ("ranking", "Which entry is best, and are the differences real?",
     ["groups", "leaderboard", "quality"], []),
    ("cost", "What does the quality cost?", ["cost"], ["quality_vs_cost"]),
    ("training", "How did training go?", ["losses"], ["curves", "loss", "val_loss_quarters"]),
    ("recon", "How well is an image recovered from each noise level (SSIM/PSNR vs t)?",
     ["recon"], ["recon_vs_t"]),
    ("sampling", "How many samples and sampling steps does FID need?", ["fid-steps", "fid-n"],
     ["fid_vs_steps", "fid_vs_n"]),
    ("snapshots", "How did the samples change over training (same noise at every evaluation)?", [],
     ["training_grids"]),
    ("x0", "What does one denoising step recover from x_t (held-out images)?", [], ["x0_panel"]),
    ("classes", "Which classes do the samples look like (harness-trained classifier)?", [],
     ["class_histograms"]),
]


def write_html(results, table: pd.DataFrame, plots: dict, path: str | Path, folders) -> Path:
    """Write the page to `path` (atomically) and return it."""
    path = Path(path)
    tables = sections(results, table)
    body = [_header(table, folders), _nav()]
    for anchor, question, keys, plot_names in QUESTIONS:
        chosen = [s for s in tables if any(s.key.startswith(k) for k in keys)]
        body.append(_question(anchor, question, chosen, [plots[p] for p in plot_names if p in plots]))
    body.append(_samples(results.runs, list(dict.fromkeys(table.get("label", []))),
                         plots.get("sample_grids")))
    body.append(_section("provenance", "Protocol and environment of each row",
                         "Distinct values over the row's runs; every run folder holds its full "
                         "result.json.", _table(provenance(results, table), "protocols")))
    incomplete = [s for s in tables if s.key == "incomplete"]
    if incomplete:
        body.append(_question("incomplete", "Which runs are missing?", incomplete, []))
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>bench report</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    write_with(path, lambda p: p.write_text(page, encoding="utf-8"))
    return path


def _header(table: pd.DataFrame, folders) -> str:
    names = ", ".join(html.escape(str(f)) for f in folders)
    metric = html.escape(str(table.attrs.get("metric", "")))
    return (f"<h1>bench report</h1><p class=\"note\">Results: <code>{names}</code> · ranked by "
            f"<code>{metric}</code> ({html.escape(str(table.attrs.get('direction', '')))}) · "
            f"generated {time.strftime('%Y-%m-%d %H:%M')}</p>")


def _nav() -> str:
    links = [(a, q) for a, q, _, _ in QUESTIONS] + [("samples", "Samples"),
                                                      ("provenance", "Protocol and environment")]
    return "<nav>" + "".join(f"<a href=\"#{a}\">{html.escape(q.split('(')[0].strip())}</a>"
                             for a, q in links) + "</nav>"


def _question(anchor: str, question: str, tables: list[Section], plots: list[Path]) -> str:
    parts = []
    for s in tables:  # leaderboard run folders are listed under provenance, not here
        frame = s.frame.drop(columns="runs") if s.key.startswith("leaderboard") and "runs" in s.frame else s.frame
        details = (f"<details><summary>full protocol</summary><code>{html.escape(s.details)}"
                   f"</code></details>" if s.details else "")
        parts.append(f"<h3>{html.escape(s.title)}</h3>{details}<p class=\"note\">{_inline(s.note)}</p>"
                     + (_table(frame, s.key) if not frame.empty else "<p>No complete runs.</p>"))
    parts += [_img(p, "plot", Path(p).stem) for p in plots]
    if not parts:
        parts = ["<p class=\"note\">Not measured in these results.</p>"]
    return _section(anchor, question, "", "\n".join(parts))


def _section(anchor: str, title: str, note: str, content: str) -> str:
    note = f"<p class=\"note\">{_inline(note)}</p>" if note else ""
    return f"<section id=\"{anchor}\"><h2>{html.escape(title)}</h2>{note}\n{content}</section>"


def _inline(text: str) -> str:
    """Escape, then render `code` spans."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _table(frame: pd.DataFrame, key: str = "") -> str:
    """A table in a horizontal scroller (its entry column sticks) for the rare table that is
    wider than the page; `key` becomes the table's id."""
    if frame.empty:
        return "<p class=\"note\">None.</p>"
    table = frame.to_html(index=False, border=0, na_rep="", escape=True,
                          table_id=key or None)
    return f"<div class=\"scroll\">{table}</div>"


def _img(path: Path, cls: str, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<img class=\"{cls}\" alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def _samples(runs: pd.DataFrame, order: list[str], montage: Path | None) -> str:
    """The side-by-side grids of one seed, then every complete run's grid by entry and seed."""
    done = runs[runs["status"] == "complete"] if "status" in runs else runs
    rows = []
    for label in order or list(dict.fromkeys(done.get("label", []))):
        figures = [f"<figure>{_img(Path(d) / 'samples.png', 'grid', f'{label} seed {s}')}"
                   f"<figcaption>{html.escape(str(label))} · seed {s}</figcaption></figure>"
                   for d, s in zip(*_runs_of(done, label)) if (Path(d) / "samples.png").exists()]
        if figures:
            rows.append(f"<div class=\"grids\">{''.join(figures)}</div>")
    note = ("Same fixed noise for every model and seed (eval.grid_seed), so grids compare "
            "directly; the seed is the training seed.")
    content = _img(montage, "plot", "sample grids") if montage else ""
    if rows:
        content += (f"<details open><summary>Every run's grid ({len(done)} runs)</summary>"
                    + "\n".join(rows) + "</details>")
    return _section("samples", "What do the samples look like?", note,
                    content or "<p class=\"note\">No sample grids.</p>")


def _runs_of(runs: pd.DataFrame, label: str):
    part = runs[runs["label"] == label].sort_values("seed")
    return list(part["run_dir"]), list(part["seed"])


ENV = ("device", "gpu", "torch", "cuda", "amp", "tf32", "compile", "git_commit")


def provenance(results, table: pd.DataFrame) -> pd.DataFrame:
    """Per leaderboard row: comparison group, protocol, environment and achieved budget."""
    rows = []
    for _, row in table.iterrows():
        dirs = [d for d, g, e, s in zip(results.runs["run_dir"], results.runs["group"],
                                        results.runs["entry"], results.runs["source"])
                if g == row["group"] and e == row["entry"] and s == row["source"]]
        recs = [results.records.get(d) or {} for d in dirs]
        out = {"entry": row["label"], "protocol": _distinct(
            " ".join(f"{k}={v}" for k, v in (r.get("protocol") or {}).items()) for r in recs)}
        for key in ENV:
            out[key] = _distinct((r.get("environment") or {}).get(key) for r in recs)
        out["kimg"] = _distinct((r.get("budget") or {}).get("kimg") for r in recs)
        out["train s"] = _distinct(round((r.get("budget") or {}).get("train_seconds") or 0, 1)
                                   for r in recs)
        out["runs"] = row["run_dirs"]
        rows.append(out)
    return pd.DataFrame(rows)


def _distinct(values) -> str:
    seen = list(dict.fromkeys("" if v is None else str(v) for v in values))
    return ", ".join(v for v in seen if v) or "—"
