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
def train(
    source: Optional[Path] = typer.Argument(None, help="Crop/wash output (or its manifest.jsonl) or a folder with "
                                            "HR/ and LR/."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder: config, log, last.pt, best.pt, "
                                           "curve.png."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="2, 3 or 4 (default: from the data)."),
    model: str = typer.Option("edsr", "--model", "-m", help="Model name (see --list-models)."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Override the model's feature width."),
    blocks: Optional[int] = typer.Option(None, "--blocks", help="Override the model's residual block count."),
    val: Optional[Path] = typer.Option(None, "--val", help="Separate validation pairs (default: hold out "
                                       "--val-fraction of SOURCE)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of SOURCE held out for validation."),
    steps: int = typer.Option(300_000, "--steps", help="Optimizer steps (an upper bound with --max-minutes)."),
    batch: int = typer.Option(16, "--batch", "-b", help="Global batch (patches per step over all processes)."),
    patch: int = typer.Option(48, "--patch", "-p", help="LR patch side in pixels (HR: scale x patch)."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (Adam)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Warm-up steps (default: 2% of steps, <= 1000)."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="EMA decay of the weights."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Max gradient norm (0: off)."),
    ssim_weight: float = typer.Option(0.0, "--ssim-weight", help="Weight of the 1 - SSIM loss term (0: off)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="No dihedral augmentation."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and of every batch."),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate and save every N steps "
                                            "(default: 10 times per run)."),
    log_every: int = typer.Option(100, "--log-every", help="Log the mean loss every N steps."),
    val_tile: Optional[int] = typer.Option(None, "--val-tile", help="LR tile side for validation inference."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Plan the schedule to end after M "
                                                "minutes of wall time."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from last.pt."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a run folder that holds a run."),
    list_models_: bool = typer.Option(False, "--list-models", help="List the models and their options, then exit."),
) -> None:
    """Train a super-resolution model on LR/HR pairs; keeps last.pt and the best.pt by validation PSNR."""
    from .errors import ConfigError

    if list_models_:
        from .models import create_model, list_models

        table = Table(title="realsr models")
        for column in ("name", "options", "parameters (x4)"):
            table.add_column(column)
        for name, defaults in list_models().items():
            count = sum(p.numel() for p in create_model(name, 4).parameters())
            table.add_row(name, ", ".join(f"{k}={v}" for k, v in defaults.items()), f"{count / 1e6:.2f} M")
        out.print(table)
        return
    if source is None or out_dir is None:
        raise ConfigError("pass SOURCE and --out RUN_DIR (or --list-models)")
    from .train import TrainConfig, run_training

    config = TrainConfig(
        source=source, out=out_dir, scale=scale, model=model, model_options={"channels": channels, "blocks": blocks},
        val=val, val_fraction=val_fraction, steps=steps, batch=batch, patch=patch, lr=lr, warmup=warmup,
        ema_decay=ema_decay, grad_clip=grad_clip, ssim_weight=ssim_weight, augment=not no_augment, seed=seed,
        val_every=val_every, log_every=log_every, val_tile=val_tile, max_minutes=max_minutes, device=device,
        compile=compile_model, resume=resume, overwrite=overwrite)
    result = run_training(config, show_progress=not options.quiet)
    if result.rank != 0:  # other torchrun processes: rank 0 reports
        return
    table = Table(title=f"Training run {result.run_dir}")
    table.add_column("")
    table.add_column("value")
    table.add_row("device", f"{result.device} x{result.world_size}")
    table.add_row("pairs", f"{result.train_pairs} train, {result.val_pairs} validation")
    table.add_row("steps", f"{result.steps} of {result.planned_steps}" + (" (ended by --max-minutes)"
                                                                          if result.stopped_early else ""))
    table.add_row("throughput", f"{result.patches_per_second:.1f} LR patches/s")
    table.add_row("validation PSNR", f"best {result.best_psnr:.3f} dB (step {result.best_step}), last "
                  f"{result.last_psnr:.3f} dB, bicubic {result.bicubic_psnr:.3f} dB")
    table.add_row("time", f"{result.seconds / 60:.1f} min")
    table.add_row("checkpoints", f"{result.best_checkpoint}\n{result.last_checkpoint}")
    out.print(table)


def main() -> None:
    app()
