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
def crop(
    source: Path = typer.Argument(..., help="realsr align/crop/wash output folder, or a folder with HR/ and LR/."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (HR/, LR/, meta_info.txt, manifest)."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="HR/LR scale; required for an HR/+LR/ folder."),
    size: Optional[int] = typer.Option(None, "--size", help="LR patch side; default AIM 2020: 380 x2, 272 x3, 192 x4."),
    step: Optional[int] = typer.Option(None, "--step", help="LR distance between patches; default --size."),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes cutting pairs in parallel."),
    png_compression: int = typer.Option(3, "--png-compression", help="PNG zlib level 0-9 (3: BasicSR's; 0: "
                                        "fastest, ~2x larger files; 9: smallest, several times slower)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo everything instead of resuming."),
) -> None:
    """Cut pairs into LR/HR training patches at exactly corresponding places.

    The HR patch of LR box (x, y, N) is (S x, S y, S N). Patches start every --step pixels and the last row/column
    is placed flush with the border, so no pixel is lost. Patches touching pixels align marked invalid are skipped.
    Names keep the source pair id: <id>_s001.png in both HR/ and LR/.
    """
    from .crop import run_crop

    summary = run_crop(source, out_dir, scale=scale, size=size, step=step, workers=workers,
                       png_compression=png_compression, overwrite=overwrite, show_progress=not options.quiet)
    out.print(f"{summary.patches} patch pair(s) from {summary.pairs} pair(s) in {summary.out_dir} "
              f"({summary.pairs_done} cut now, {summary.pairs_resumed} resumed, {summary.pairs_empty} gave no patch, "
              f"{summary.patches_skipped_invalid} patch(es) skipped for invalid pixels)")
    for failure in summary.failures:
        out.print(f"  [red]failed:[/] {failure}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def wash(
    source: Path = typer.Argument(..., help="realsr align/crop output folder, or a folder with HR/ and LR/."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (manifest, kept HR/+LR/, report/)."),
    min_psnr: float = typer.Option(29.0, "--min-psnr", help="Wash PSNR floor in dB (defined above)."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Only pairs of this scale (default: inferred)."),
    min_ssim: Optional[float] = typer.Option(None, "--min-ssim", help="SSIM floor (LR vs predicted LR)."),
    max_shift: Optional[float] = typer.Option(None, "--max-shift", help="Largest median residual shift, LR px."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print how many pairs several floors keep; write nothing."),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes scoring pairs in parallel."),
) -> None:
    """Score every pair for misalignment and damage; keep those above the floors and report the rest.

    Wash PSNR: the HR is passed through the dataset's own degradation (one blur kernel and colour relation per
    camera and scale, least squares per pair, median over up to 32 pairs), sampled on the LR grid, fitted to the LR
    with one cubic tone curve shared by the channels (a colour cast is not fitted away); both are low-passed (Gaussian 0.7 LR px) and the MSE is taken over textured
    pixels (7x7 std >= 0.035), 4 px border excluded. Well-aligned real pairs score high, shifted, rotated,
    swapped or colour-cast ones low. Pairs with under 5% textured pixels are reported as flat (misalignment not
    measurable). Kept pairs are hard links (copies across file systems) in OUT/HR and OUT/LR.
    """
    from .wash import run_wash

    summary = run_wash(source, out_dir, min_psnr=min_psnr, scale=scale, min_ssim=min_ssim, max_shift=max_shift,
                       dry_run=dry_run, workers=workers, show_progress=not options.quiet)
    if dry_run:
        table = Table(title=f"{summary.pairs} pair(s): how many each --min-psnr keeps (nothing written)")
        table.add_column("--min-psnr", justify="right")
        table.add_column("kept", justify="right")
        table.add_column("share", justify="right")
        for threshold, kept in summary.sweep:
            table.add_row(f"{threshold:g}", str(kept), f"{kept / max(summary.pairs, 1):.0%}")
        out.print(table)
    else:
        out.print(f"kept {summary.kept} of {summary.pairs} pair(s) in {summary.out_dir} ({summary.dropped} dropped, "
                  f"{summary.failed} failed, {summary.flat} flat); report in {summary.report}")
    for reason, count in sorted(summary.by_reason.items(), key=lambda kv: -kv[1]):
        out.print(f"  {reason}: {count}", highlight=False)


def main() -> None:
    app()
