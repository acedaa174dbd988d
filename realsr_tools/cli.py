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
def score(
    sr: Optional[Path] = typer.Option(None, "--sr", help="Folder of SR images, paired with --hr by file name."),
    hr: Optional[Path] = typer.Option(None, "--hr", help="Folder of HR images (with --sr)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint to run on every LR image of --data."),
    bicubic: bool = typer.Option(False, "--bicubic", help="Score the MATLAB-bicubic baseline on --data."),
    data: Optional[Path] = typer.Option(None, "--data", help="Stage output (manifest) or HR/+LR/ folder."),
    scale: Optional[int] = typer.Option(None, "--scale", help="Scale where the data does not say it."),
    crop_border: Optional[int] = typer.Option(None, "--crop-border", help="Pixels cut from every side before "
                                              "measuring (default: the scale)."),
    channels: str = typer.Option("rgb", "--channels", help="rgb (AIM 2020) or y (BT.601 luma, not rounded)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="LR tile size for --model; 0 = whole image "
                                       "(default: the largest tile that fits --memory-budget)."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="LR pixels shared by neighbouring tiles "
                                          "(default: enough for tiled = untiled)."),
    memory_budget: Optional[float] = typer.Option(None, "--memory-budget", help="GiB for one tile's forward "
                                                  "pass (default: 80% of free GPU memory, or RAM / 4)."),
    ensemble: bool = typer.Option(False, "--self-ensemble", help="Average the x8 flips/rotations (--model)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Folder to keep the SR images in (<id>.png)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Write scores.csv and summary.json here."),
    per_image: bool = typer.Option(False, "--per-image", help="List every image in the table."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (model and metrics)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """PSNR, SSIM and the AIM 2020 score of SR images, a model or the bicubic baseline against HR."""
    from .score import run_score

    report = run_score(sr_dir=sr, hr_dir=hr, checkpoint=model, data=data, bicubic=bicubic, scale=scale,
                       crop_border=crop_border, channels=channels, tile=tile, overlap=overlap,
                       memory_budget=memory_budget, ensemble=ensemble, save_dir=save, out_dir=out_dir,
                       overwrite=overwrite, device=device, show_progress=not options.quiet)
    method = report.method
    table = Table(title=f"realsr score: {method['form']} ({report.count} image(s))")
    for column in ("image", "PSNR (dB)", "SSIM"):
        table.add_column(column, justify="left" if column == "image" else "right")
    if per_image:
        for image in report.images:
            table.add_row(image.id, f"{image.psnr:.4f}", f"{image.ssim:.6f}")
        table.add_section()
    table.add_row("[bold]mean", f"[bold]{report.psnr:.4f}", f"[bold]{report.ssim:.6f}")
    out.print(table)
    protocol = report.protocol
    out.print(f"AIM 2020 score {report.score:.6f} = PSNR/50 + (SSIM - 0.4)/0.6 over {report.count} image(s)")
    out.print(f"protocol: {protocol.channels.upper()}, crop border {protocol.crop_border}, data range "
              f"{protocol.data_range:g}, SSIM 11x11 Gaussian sigma 1.5" +
              (", Y = BT.601 16 + (65.481 R + 128.553 G + 24.966 B)/255, not rounded" if protocol.channels == "y"
               else ""), highlight=False)
    if "upscaler" in method:
        out.print(f"upscaler: {method['upscaler']}", highlight=False)
    if method.get("form") == "model":
        fit = method["largest_tile"]
        tiling = (f"tile {method['tile']} LR px, overlap {method['overlap']}" if method["tile"] else "whole images")
        if fit:
            tiling += (f" (largest tile that fits {fit['budget_bytes'] / 2**30:.2f} GiB on {method['device']}: "
                       f"about {fit['bytes_per_lr_pixel'] / 2**10:.1f} KiB per LR pixel)")
        out.print(f"model {method['model']} x{method['scale']} on {method['device']}, {tiling}"
                  f"{', x8 self-ensemble' if method['self_ensemble'] else ''}", highlight=False)
    if out_dir is not None:
        out.print(f"wrote {out_dir / 'scores.csv'} and {out_dir / 'summary.json'}")
    if report.failures:
        err.print(f"[yellow]{len(report.failures)} pair(s) not scored (not in the means):[/]")
        for image_id, reason in report.failures:
            err.print(f"  [yellow]-[/] {image_id}: {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def main() -> None:
    app()
