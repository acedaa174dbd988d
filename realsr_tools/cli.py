"""The ``realsr`` command line: a thin Typer layer that parses options, calls one stage function, prints a summary.

User errors (:class:`~realsr_tools.errors.RealsrError`) become one red line and exit code 2; ``--debug`` shows the
traceback instead. Heavy modules (torch, OpenCV, rawpy) are imported inside the commands that need them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import RealsrError

app = typer.Typer(
    name="realsr",
    help="Build real-world super-resolution datasets from DSLR zoom captures: inspect, align, crop, wash, train, "
    "score.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


@dataclass
class GlobalOptions:
    debug: bool = False
    quiet: bool = False


options = GlobalOptions()
F = TypeVar("F", bound=Callable)


def user_errors(command: F) -> F:
    """Turn a RealsrError into one red line and exit code 2 (``--debug`` re-raises for the traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RealsrError as exc:
            if options.debug:
                raise
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"realsr {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    options.debug = debug
    options.quiet = quiet


@app.command()
@user_errors
def inspect(
    capture_dir: Path = typer.Argument(..., help="Capture folder: one folder per scene (camera folders allowed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Group captures into scenes, read focal lengths and list the LR/HR pairs and problems."""
    from .captures import SCALE_TOLERANCE, discover

    found = discover(capture_dir)
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    table = Table(title=f"Scenes in {capture_dir}", show_lines=True)
    for column in ("scene", "camera", "captures (focal mm)", "HR", "pairs (scale)"):
        table.add_column(column, overflow="fold")
    for scene in found.scenes:
        if not scene.captures:
            continue
        captures = "\n".join(
            f"{Path(c.path).name} ({c.focal_mm:g}{'*' if c.focal_source == 'captures.csv' else ''})"
            if c.focal_mm else f"{Path(c.path).name} ([red]?[/])" for c in scene.captures)
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


@app.command()
@user_errors
def align(
    capture_dir: Path = typer.Argument(..., help="Capture folder: one folder per scene (camera folders allowed)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder for aligned pairs and manifest.jsonl."),
    scales: str = typer.Option("2,3,4", "--scales", help="Comma-separated nominal scales to align."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Pairs aligned in parallel."),
    preview: bool = typer.Option(False, "--preview", help="Write a checkerboard/difference PNG per pair."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo pairs already aligned (default: resume)."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="Output PNG bits per channel: 8 or 16."),
    photometric: bool = typer.Option(True, "--photometric/--no-photometric",
                                     help="Correct the LR towards the HR (gain, offset, vignetting); "
                                     "off: the LR is a bit-exact crop."),
) -> None:
    """Register LR captures to their HR capture; write aligned pairs (HR = scale x LR) and the align manifest."""
    from .align import run_align
    from .errors import ConfigError

    try:
        scale_list = tuple(int(s) for s in scales.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--scales must be comma-separated integers such as 2,3,4, got {scales!r}") from None
    summary = run_align(capture_dir, out_dir, scales=scale_list, workers=workers, preview=preview,
                        overwrite=overwrite, bit_depth=bit_depth, photometric=photometric,
                        show_progress=not options.quiet)
    for pair_id, reason in summary.failures:
        err.print(f"[yellow]failed[/] {pair_id}: {reason}", highlight=False, soft_wrap=True)
    out.print(f"aligned [green]{summary.ok}[/], failed [red]{summary.failed}[/], skipped (done before) "
              f"{summary.skipped}; manifest {summary.manifest}", highlight=False)


def main() -> None:
    app()
