"""Evaluation outputs: CED plots (PNG) and result tables (Markdown, CSV, JSON).

Every file is written atomically through facealign.atomic, so an interrupted run
never leaves a half-written report behind.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from facealign.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from facealign.evaluation.metrics import DEFAULT_THRESHOLD, auc, ced_curve

def pyplot():
    """matplotlib's pyplot on the headless Agg backend, imported on the first plot: the GPU machine that
    trains and evaluates from packs has no matplotlib (benchmarks/device_env)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: must be chosen before pyplot is imported
    import matplotlib.pyplot as plt

    return plt


PLOT_DPI = 150
PLOT_SIZE_IN = (6.0, 4.5)


def ced_legend_entries(
    errors_by_method: dict[str, np.ndarray], threshold: float = DEFAULT_THRESHOLD
) -> list[tuple[str, np.ndarray]]:
    """(legend label, errors) per method, best AUC first; labels read "name (AUC@t = 0.xxxx)"."""
    if not errors_by_method:
        raise ValueError("errors_by_method is empty")
    scored = [(name, auc(e, threshold), e) for name, e in errors_by_method.items()]
    scored.sort(key=lambda item: -item[1])  # stable: ties keep the caller's order
    return [(f"{name} (AUC@{threshold:g} = {area:.4f})", e) for name, area, e in scored]


def plot_ced(
    errors_by_method: dict[str, np.ndarray],
    path,
    threshold: float = DEFAULT_THRESHOLD,
    title: str | None = None,
    norm_label: str = "NME (inter-ocular)",
) -> Path:
    """Write one PNG with a CED curve per method, x in [0, threshold], y in [0, 1].

    errors_by_method: method name -> (N,) per-image errors (dimensionless).
    Legend entries read "name (AUC@t = 0.xxxx)", sorted by AUC, best first.
    Returns the written path.
    """
    entries = ced_legend_entries(errors_by_method, threshold)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=PLOT_SIZE_IN)
    try:
        for label, e in entries:
            x, y = ced_curve(e, threshold)
            ax.plot(x, y, label=label)
        ax.set_xlim(0.0, threshold)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel(norm_label)
        ax.set_ylabel("Fraction of images")
        if title:
            ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        # Render to memory first so the file appears only once complete. A tight bounding box grows the
        # image to hold every artist: long legend labels were clipped at the left edge.
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight", pad_inches=0.1)
    finally:
        plt.close(fig)  # pyplot keeps figures alive otherwise; long evaluations would leak
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _plain(v):
    """numpy scalars/arrays -> Python values, so JSON gets numbers rather than strings."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _md_cell(v, float_fmt: str) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return float_fmt.format(v)
    return str(v).replace("|", "\\|")  # a bare pipe would split the cell


def write_table(
    rows: list[dict],
    stem,
    columns: list[str] | None = None,
    float_fmt: str = "{:.4f}",
) -> list[Path]:
    """Write `rows` as stem.md, stem.csv and stem.json; return the three paths in that order.

    columns: defaults to the keys of the first row, in order. A missing value is
    an empty cell (null in JSON). float_fmt applies to the Markdown table only;
    the CSV and JSON keep full precision so they can be re-analysed.
    """
    if columns is None:
        if not rows:
            raise ValueError("cannot infer columns from an empty table; pass columns=")
        columns = list(rows[0])
    table = [[_plain(row.get(c)) for c in columns] for row in rows]
    stem = Path(stem)
    md_path, csv_path, json_path = (stem.with_name(f"{stem.name}.{ext}") for ext in ("md", "csv", "json"))

    md_lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(_md_cell(v, float_fmt) for v in r) + " |" for r in table),
    ]
    atomic_write_text(md_path, "\n".join(md_lines) + "\n")
    atomic_write_text(csv_path, _csv_text(columns, [["" if v is None else v for v in r] for r in table]))
    atomic_write_json(json_path, [dict(zip(columns, r)) for r in table])
    return [md_path, csv_path, json_path]


def write_per_image_csv(
    path,
    names: list[str],
    errors,
    extra: dict[str, list] | None = None,
) -> Path:
    """Write one row per image: name, nme, then the `extra` columns in dict order.

    errors: (N,) per-image errors; names and every extra column must have length N. NaN marks a face
    left out of the metric (e.g. a skipped detector miss) and is written as an empty cell.
    Returns the written path.
    """
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    extra = extra or {}
    lengths = {"names": len(names), "errors": errors.size, **{k: len(v) for k, v in extra.items()}}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"per-image columns differ in length: {lengths}")
    header = ["name", "nme", *extra]
    if len(set(header)) != len(header):
        raise ValueError(f"extra column names clash with 'name'/'nme' or each other: {list(extra)}")
    rows = [
        [name, "" if np.isnan(e) else repr(float(e)), *(_plain(col[i]) for col in extra.values())]
        for i, (name, e) in enumerate(zip(names, errors))
    ]
    path = Path(path)
    atomic_write_text(path, _csv_text(header, rows))
    return path
