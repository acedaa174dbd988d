"""The ``inspect`` stage: group captures into scenes, plan LR/HR pairs and list problems (reads files only)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..captures import SCALE_TOLERANCE, CaptureSet, discover


def run_inspect(capture_dir: Path | str) -> CaptureSet:
    """Scenes, planned pairs and problems of a capture folder (:func:`realsr_tools.captures.discover`)."""
    return discover(capture_dir)


def print_inspection(found: CaptureSet, capture_dir: Path | str, out: Console) -> None:
    """One table row per scene (captures with focal lengths and any encoding other than sRGB, the HR capture, the
    pairs), then the problems."""
    table = Table(title=f"Scenes in {capture_dir}", show_lines=True)
    for column in ("scene", "camera", "captures (focal mm)", "HR", "pairs (scale)"):
        table.add_column(column, overflow="fold")
    for scene in found.scenes:
        if not scene.captures:
            continue
        captures = "\n".join(
            (f"{Path(c.path).name} ({c.focal_mm:g}{'*' if c.focal_source == 'captures.csv' else ''})"
             if c.focal_mm else f"{Path(c.path).name} ([red]?[/])")
            + (f" {c.encoding}" if c.encoding not in (None, "srgb") else "") for c in scene.captures)
        pairs = "\n".join(f"{Path(p.lr).name} x{p.scale} ({p.focal_ratio:.2f})" for p in scene.pairs) or "[red]none"
        table.add_row(scene.name, scene.camera or "?", captures, Path(scene.hr).name if scene.hr else "-", pairs)
    out.print(table)
    if found.csv_used:
        out.print("* focal length from captures.csv")
    out.print(f"{len(found.scenes)} scene folder(s), {len(found.pairs)} pair(s); tracks x2/x3/x4 within "
              f"{SCALE_TOLERANCE:.0%} of the focal ratio")
    if found.problems:
        out.print(f"[yellow]{len(found.problems)} problem(s):[/]")
        for problem in found.problems:
            out.print(f"  [yellow]-[/] {problem}", highlight=False, soft_wrap=True)
