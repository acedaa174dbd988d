"""The ``realsr`` command line: a thin Typer layer that parses options, calls one stage function, prints a summary.

Exit codes, the same for every command: 0 when at least one item succeeded (the failures are counted and listed),
1 when none did (:func:`exit_for`), 2 for a usage or input error found before the work starts. User errors
(:class:`~realsr_tools.errors.RealsrError`, and an output location that is full or read-only) become one red line
and exit code 2; ``--debug`` shows the traceback instead. Heavy modules (torch, OpenCV, rawpy) are imported inside
the commands that need them.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import RealsrError
from .pipeline.runner import SCHEDULER_ENV, keep_freed_memory

GLOBAL_FLAGS = ("--quiet", "-q", "--debug")


class _RealsrGroup(TyperGroup):
    """The command group: global flags are accepted after the subcommand too, and flags show no type placeholder.

    ``realsr align DIR --out X --quiet`` means ``realsr --quiet align DIR --out X`` (no subcommand has a ``-q`` or
    ``--debug`` of its own); arguments after ``--`` are left alone.
    """

    def parse_args(self, ctx, args):
        args = list(args)
        command = next((i for i, a in enumerate(args) if a in self.commands), None)
        if command is not None:
            end = args.index("--") if "--" in args[command:] else len(args)
            moved = [a for a in args[command + 1:end] if a in GLOBAL_FLAGS]
            if moved:
                rest = [a for a in args[command + 1:end] if a not in GLOBAL_FLAGS]
                args = moved + args[:command + 1] + rest + args[end:]
        return super().parse_args(ctx, args)

    def get_params(self, ctx):
        return _no_flag_placeholder(super().get_params(ctx))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _no_flag_placeholder(command.params)
            if not getattr(command, "_realsr_help", False):
                help_option = command.get_help_option

                def get_help_option(context, _make=help_option):
                    option = _make(context)
                    return _no_flag_placeholder([option])[0] if option is not None else None

                command.get_help_option, command._realsr_help = get_help_option, True
        return command


def _no_flag_placeholder(params):
    for param in params:  # a flag takes no value, so help shows no "<bool>" type for it
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


app = typer.Typer(
    cls=_RealsrGroup,
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

# Where per-item work runs: options shared by align, crop, wash and score (see realsr_tools.pipeline.runner).
Workers = Annotated[Optional[int], typer.Option(
    "--workers", "-j", min=1, help="Local processes working in parallel (default: every CPU this process may use).")]
Scheduler = Annotated[Optional[str], typer.Option(
    "--scheduler", envvar=SCHEDULER_ENV, show_envvar=True,
    help="Run on this Dask cluster: scheduler address (tcp://host:8786) or scheduler file. Never starts one.")]
SchedulerFile = Annotated[Optional[Path], typer.Option(
    "--scheduler-file", help="Run on the Dask cluster whose scheduler wrote this file "
    "(dask scheduler --scheduler-file PATH).")]


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
        except OSError as exc:  # only a full, read-only or forbidden output location; anything else is a bug
            from .pipeline.output import location_error

            problem = location_error(exc, exc.filename or "output")
            if problem is None or options.debug:
                raise
            err.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def exit_for(succeeded: int, failed: int) -> None:
    """The exit-code policy's last step: exit 1 when items failed and none succeeded (else return: exit 0)."""
    if failed and not succeeded:
        raise typer.Exit(1)


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
    keep_freed_memory()  # this process runs a stage's items itself when it has one worker


@app.command()
@user_errors
def inspect(
    capture_dir: Path = typer.Argument(..., help="Capture folder: one folder per scene (camera folders allowed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Group captures into scenes, read focal lengths and list the LR/HR pairs and problems."""
    from .stages.inspect import print_inspection, run_inspect

    found = run_inspect(capture_dir)
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    print_inspection(found, capture_dir, out)


@app.command()
@user_errors
def align(
    capture_dir: Path = typer.Argument(..., help="Capture folder: one folder per scene (camera folders allowed)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder for aligned pairs and manifest.jsonl."),
    scales: str = typer.Option("2,3,4", "--scales", help="Comma-separated nominal scales to align."),
    workers: Workers = None,
    preview: bool = typer.Option(False, "--preview", help="Write preview/<id>.png per pair (and per pair the "
                                 "verifier refused): checkerboard, difference, the verifier's tile shifts."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo pairs already aligned (default: resume)."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="Output PNG bits per channel: 8 or 16."),
    photometric: bool = typer.Option(True, "--photometric/--no-photometric",
                                     help="Correct the LR towards the HR (gain, offset, vignetting); "
                                     "off: the LR is a bit-exact crop."),
    raw_gamma: str = typer.Option("bt709", "--raw-gamma", help="RAW rendering curve: bt709 or linear."),
    raw_colour: str = typer.Option("srgb", "--raw-colour", help="RAW output primaries: srgb, adobe, prophoto or raw."),
    raster_curve: str = typer.Option("auto", "--raster-curve",
                                     help="Transfer curve of the JPEG/PNG/TIFF captures, decoded to linear light for "
                                     "registration: auto (what each file states: ICC profile, PNG cICP/sRGB/gAMA, "
                                     "EXIF colour space; sRGB where none) or one for all: srgb, bt709, linear, "
                                     "power:G (linear = encoded^G, e.g. power:2.2)."),
    max_uncertainty: float = typer.Option(0.53, "--max-uncertainty",
                                          help="Refuse a pair whose window corners the overlap's texture pins to "
                                          "worse than this, LR px (one standard deviation), unless the scene check "
                                          "confirms it (docs/align.md, \"The scene check\")."),
    scene_check: bool = typer.Option(True, "--scene-check/--no-scene-check",
                                     help="Register each scene's LR captures to each other and refuse a pair that "
                                     "disagrees with all the others (about one more registration per pair); a pair "
                                     "above --max-uncertainty is kept only if they confirm it; a pair takes the "
                                     "mapping the scene's narrowest capture implies where that is better pinned, "
                                     "and a pair refused on its own is offered it."),
    scheduler: Scheduler = None,
    scheduler_file: SchedulerFile = None,
) -> None:
    """Register LR captures to their HR capture; write aligned pairs (HR = scale x LR) and the align manifest."""
    from .stages.align import run_align
    from .imaging import RawRendering
    from .errors import ConfigError

    try:
        scale_list = tuple(int(s) for s in scales.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--scales must be comma-separated integers such as 2,3,4, got {scales!r}") from None
    if raw_gamma not in ("bt709", "linear") or raw_colour not in ("srgb", "adobe", "prophoto", "raw"):
        raise ConfigError(f"--raw-gamma must be bt709 or linear and --raw-colour srgb, adobe, prophoto or raw; got "
                          f"{raw_gamma!r} and {raw_colour!r}")
    summary = run_align(capture_dir, out_dir, scales=scale_list, workers=workers, preview=preview,
                        overwrite=overwrite, bit_depth=bit_depth, photometric=photometric,
                        raw=RawRendering(gamma=raw_gamma, color_space=raw_colour), max_uncertainty=max_uncertainty,
                        show_progress=not options.quiet, scene_check=scene_check, raster_curve=raster_curve,
                        scheduler=scheduler, scheduler_file=scheduler_file)
    for pair_id, reason in summary.failures:
        err.print(f"[yellow]failed[/] {pair_id}: {reason}", highlight=False, soft_wrap=True)
    unmeasurable = f" ({summary.unmeasurable} unmeasurable by the verifier)" if summary.unmeasurable else ""
    out.print(f"aligned [green]{summary.ok}[/]{unmeasurable}, failed [red]{summary.failed}[/], skipped (done before) "
              f"{summary.skipped}; manifest {summary.manifest}", highlight=False)
    exit_for(summary.ok + summary.skipped, summary.failed)


@app.command()
@user_errors
def crop(
    source: Path = typer.Argument(..., help="realsr align/crop/wash output folder, or a folder with HR/ and LR/."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (HR/, LR/, meta_info.txt, manifest)."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="HR/LR scale; required for an HR/+LR/ folder."),
    size: Optional[int] = typer.Option(None, "--size", help="LR patch side; default AIM 2020: 380 x2, 272 x3, 192 x4."),
    step: Optional[int] = typer.Option(None, "--step", help="LR distance between patches; default --size."),
    workers: Workers = None,
    png_compression: int = typer.Option(3, "--png-compression", help="PNG zlib level 0-9 (3: BasicSR's; 0: "
                                        "fastest, ~2x larger files; 9: smallest, several times slower)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo everything instead of resuming."),
    scheduler: Scheduler = None,
    scheduler_file: SchedulerFile = None,
) -> None:
    """Cut pairs into LR/HR training patches at exactly corresponding places.

    The HR patch of LR box (x, y, N) is (S x, S y, S N). Patches start every --step pixels and the last row/column
    is placed flush with the border, so no pixel is lost. Patches touching pixels align marked invalid are skipped.
    Names keep the source pair id: <id>_s001.png in both HR/ and LR/.
    """
    from .stages.crop import run_crop

    summary = run_crop(source, out_dir, scale=scale, size=size, step=step, workers=workers,
                       png_compression=png_compression, overwrite=overwrite, show_progress=not options.quiet,
                       scheduler=scheduler, scheduler_file=scheduler_file)
    out.print(f"{summary.patches} patch pair(s) from {summary.pairs} pair(s) in {summary.out_dir} "
              f"({summary.pairs_done} cut now, {summary.pairs_resumed} resumed, {summary.pairs_empty} gave no patch, "
              f"{summary.patches_skipped_invalid} patch(es) skipped for invalid pixels)")
    for failure in summary.failures:
        out.print(f"  [red]failed:[/] {failure}", highlight=False, soft_wrap=True)
    exit_for(summary.pairs_done + summary.pairs_resumed, summary.pairs_failed + summary.pairs_empty)


@app.command()
@user_errors
def wash(
    source: Path = typer.Argument(..., help="realsr align/crop output folder, or a folder with HR/ and LR/."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (manifest, kept HR/+LR/, report/)."),
    min_psnr: float = typer.Option(29.0, "--min-psnr", help="Wash PSNR floor in dB (defined above)."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Only pairs of this scale (default: inferred)."),
    min_ssim: Optional[float] = typer.Option(None, "--min-ssim", help="SSIM floor (LR vs predicted LR)."),
    max_shift: Optional[float] = typer.Option(None, "--max-shift", help="Largest median residual shift, LR px."),
    max_misalignment: float = typer.Option(0.3, "--max-misalignment", help="Verifier limit, LR px: drop a pair "
                                           "whose displacement field exceeds it anywhere measurable by more than "
                                           "1.5 standard errors (0: off)."),
    drop_unmeasurable: bool = typer.Option(False, "--drop-unmeasurable", help="Also drop pairs the verifier cannot "
                                           "measure (flat or one-directional): keep only pairs measured aligned."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print how many pairs several floors keep; write nothing."),
    workers: Workers = None,
    scheduler: Scheduler = None,
    scheduler_file: SchedulerFile = None,
) -> None:
    """Score every pair for misalignment and damage; keep those above the floors and report the rest.

    Wash PSNR: the HR is passed through the dataset's own degradation (one blur kernel and colour relation per
    camera and scale, least squares per pair, median over up to 32 pairs), sampled on the LR grid, fitted to the LR
    with one cubic tone curve shared by the channels (a colour cast is not fitted away); both are low-passed
    (Gaussian 3 LR px) and the MSE is taken over textured pixels (7x7 std >= 0.035), 4 px border excluded: it
    judges content and colour (swapped scenes, casts). Misalignment is the independent verifier's: a pair whose
    displacement field exceeds --max-misalignment anywhere measurable is dropped as misaligned; pairs it cannot
    measure (flat, one-directional) are counted as unmeasurable (dropped with --drop-unmeasurable). Kept pairs are
    hard links (copies across file systems) in OUT/HR and OUT/LR.
    """
    from .stages.wash import run_wash

    summary = run_wash(source, out_dir, min_psnr=min_psnr, scale=scale, min_ssim=min_ssim, max_shift=max_shift,
                       max_misalignment=max_misalignment or None, drop_unmeasurable=drop_unmeasurable,
                       dry_run=dry_run, workers=workers,
                       show_progress=not options.quiet, scheduler=scheduler, scheduler_file=scheduler_file)
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
                  f"{summary.failed} failed, {summary.misaligned} misaligned, {summary.unmeasurable} unmeasurable, "
                  f"{summary.flat} flat); report in {summary.report}")
    for reason, count in sorted(summary.by_reason.items(), key=lambda kv: -kv[1]):
        out.print(f"  {reason}: {count}", highlight=False)
    exit_for(summary.pairs - summary.failed, summary.failed)


@app.command()
@user_errors
def lmdb(
    source: Path = typer.Argument(..., help="realsr align/crop/wash output folder, or a folder with HR/ and LR/."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (HR.lmdb/, LR.lmdb/, manifest)."),
    compression: int = typer.Option(1, "--compression", help="PNG zlib level 0-9 of the stored images "
                                    "(1: BasicSR's default)."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Only pairs of this scale (each HR must be "
                                        "exactly scale x its LR)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming."),
) -> None:
    """Write the pairs as BasicSR LMDB databases (io_backend: lmdb): OUT/HR.lmdb and OUT/LR.lmdb.

    Keys are the file names without extension, identical in both; values are PNG bytes; each database's
    meta_info.txt has one '<key>.png (h,w,c) <compression>' line per image. Names BasicSR cannot read back as the
    same key (a dot, a space, non-ASCII) are refused before anything is written.
    """
    from .stages.lmdb_export import run_lmdb

    summary = run_lmdb(source, out_dir, compression=compression, scale=scale, overwrite=overwrite,
                       show_progress=not options.quiet)
    out.print(f"{summary.pairs - summary.failed} pair(s) in {summary.out_dir / 'HR.lmdb'} and "
              f"{summary.out_dir / 'LR.lmdb'} ({summary.written} written now, {summary.resumed} resumed, "
              f"{summary.failed} failed); manifest {summary.manifest}", highlight=False)
    for failure in summary.failures:
        err.print(f"  [red]failed:[/] {failure}", highlight=False, soft_wrap=True)
    exit_for(summary.pairs - summary.failed, summary.failed)


@app.command()
@user_errors
def train(
    source: Optional[Path] = typer.Argument(None, help="Crop/wash output (or its manifest.jsonl) or a folder with "
                                            "HR/ and LR/."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder: config, log, last.pt, best.pt, "
                                           "curve.png."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="2, 3 or 4 (default: from the data)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (see --list-models; default: "
                                        "edsr on CUDA, edsr_small on a CPU)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these weights: a realsr checkpoint or a "
                                        "BasicSR EDSR/RCAN one (params/params_ema); its architecture and scale "
                                        "replace --model."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Override the model's feature width."),
    blocks: Optional[int] = typer.Option(None, "--blocks", help="Override the model's residual block count."),
    val: Optional[Path] = typer.Option(None, "--val", help="Separate validation pairs (default: hold out "
                                       "--val-fraction of SOURCE)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of SOURCE held out for validation."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (an upper bound with "
                                        "--max-minutes; default 300000, 800 for the CPU model, and on a CPU "
                                        "--max-minutes 60 unless either is given)."),
    batch: Optional[int] = typer.Option(None, "--batch", "-b", help="Global batch (patches per step over all "
                                        "processes; default 16 on CUDA, 8 on a CPU)."),
    patch: Optional[int] = typer.Option(None, "--patch", "-p", help="LR patch side in pixels (HR: scale x patch; "
                                        "default 48 on CUDA, 32 on a CPU)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (Adam; default 2e-4 on CUDA, 2e-3 "
                                       "for the CPU model)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Warm-up steps (default: 2% of steps, <= 1000)."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="EMA decay of the weights."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Max gradient norm (0: off)."),
    ssim_weight: float = typer.Option(0.0, "--ssim-weight", help="Weight of the 1 - SSIM loss term (0: off)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="No dihedral augmentation."),
    lr_sharpness: float = typer.Option(0.0, "--lr-sharpness", help="LR sharpness jitter: each LR patch blurred "
                                       "or sharpened by a random unsharp-mask amount in [-J, J] (0: off)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and of every batch."),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate and save every N steps "
                                            "(default: 10 times per run)."),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="Log the mean loss every N steps (and after "
                                            "the first; default 100 on CUDA, 10 on a CPU)."),
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
    from .train.config import device_defaults

    if device == "cpu":
        cuda = False
    else:
        import torch

        cuda = torch.cuda.is_available()
    chosen, reasons = device_defaults(cuda=cuda, given={"model": model, "batch": batch, "patch": patch, "lr": lr,
                                                        "steps": steps, "log_every": log_every,
                                                        "max_minutes": max_minutes})
    model, batch, patch, lr = chosen["model"], chosen["batch"], chosen["patch"], chosen["lr"]
    steps, log_every, max_minutes = chosen["steps"], chosen["log_every"], chosen["max_minutes"]
    rank0 = os.environ.get("RANK", "0") == "0"
    pending = [f"default: {reason}" for reason in reasons]  # said once the run has started (not before an error)

    def say(text: str) -> None:
        for line in (*pending, text):
            out.print(line, highlight=False, soft_wrap=True)
        pending.clear()

    config = TrainConfig(
        source=source, out=out_dir, scale=scale, model=model, model_options={"channels": channels, "blocks": blocks},
        val=val, val_fraction=val_fraction, steps=steps, batch=batch, patch=patch, lr=lr, warmup=warmup,
        ema_decay=ema_decay, grad_clip=grad_clip, ssim_weight=ssim_weight, augment=not no_augment,
        lr_sharpness=lr_sharpness, seed=seed, val_every=val_every, log_every=log_every, val_tile=val_tile,
        max_minutes=max_minutes, device=device,
        compile=compile_model, resume=resume, overwrite=overwrite, init=init)
    result = run_training(config, show_progress=not options.quiet, say=say if rank0 and not options.quiet else None)
    if result.rank != 0:  # other torchrun processes: rank 0 reports
        return
    table = Table(title=f"Training run {result.run_dir}")
    table.add_column("")
    table.add_column("value")
    table.add_row("device", f"{result.device} x{result.world_size}")
    if reasons:
        table.add_row("defaults chosen", "\n".join(reasons))
    table.add_row("pairs", f"{result.train_pairs} train, {result.val_pairs} validation")
    table.add_row("steps", f"{result.steps} of {result.planned_steps}" + (" (ended by --max-minutes)"
                                                                          if result.stopped_early else ""))
    table.add_row("throughput", f"{result.patches_per_second:.1f} LR patches/s")
    table.add_row("validation PSNR", f"best {result.best_psnr:.3f} dB (step {result.best_step}), last "
                  f"{result.last_psnr:.3f} dB, bicubic {result.bicubic_psnr:.3f} dB")
    table.add_row("time", f"{result.seconds / 60:.1f} min")
    table.add_row("checkpoints", f"{result.best_checkpoint}\n{result.last_checkpoint}")
    out.print(table)


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
    workers: Workers = None,
    scheduler: Scheduler = None,
    scheduler_file: SchedulerFile = None,
    gpus_per_task: Optional[float] = typer.Option(None, "--gpus-per-task", help="GPUs each Dask task needs "
                                                  "(workers declare them: dask worker --resources GPU=1)."),
) -> None:
    """PSNR, SSIM and the AIM 2020 score of SR images, a model or the bicubic baseline against HR."""
    from .stages.score import run_score

    report = run_score(sr_dir=sr, hr_dir=hr, checkpoint=model, data=data, bicubic=bicubic, scale=scale,
                       crop_border=crop_border, channels=channels, tile=tile, overlap=overlap,
                       memory_budget=memory_budget, ensemble=ensemble, save_dir=save, out_dir=out_dir,
                       overwrite=overwrite, device=device, show_progress=not options.quiet, workers=workers,
                       scheduler=scheduler, scheduler_file=scheduler_file, gpus_per_task=gpus_per_task)
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
    exit_for(report.count, len(report.failures))


@app.command()
@user_errors
def report(
    folder: Path = typer.Argument(..., help="A realsr stage output folder (align, crop, wash, lmdb) or an HR/+LR/ "
                                  "folder."),
) -> None:
    """Write FOLDER/report/index.html: summary, sortable table of every item, LR/HR flicker view of every pair.

    One self-contained page (no network): failed and dropped items first; each pair shows its most textured LR
    square, nearest-upscaled, and the same place in the HR, side by side or flickering, zoomable.
    """
    from .stages.report import run_report

    summary = run_report(folder, show_progress=not options.quiet)
    out.print(f"{summary.items} item(s), {summary.pairs_shown} pair view(s): {summary.page}", highlight=False)
    for line in summary.not_shown:
        err.print(f"  [yellow]not shown:[/] {line}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def demo(
    out_dir: Path = typer.Option(Path("realsr_demo"), "--out", "-o", help="Folder for every demo output."),
    minutes: float = typer.Option(2.0, "--minutes", help="Training time on the CPU."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Train exactly this many steps instead of "
                                        "--minutes (the same work on any machine)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo in --out (only the folders "
                                   "its realsr-demo.json lists; nothing else in --out is touched)."),
) -> None:
    """Run the whole pipeline on the bundled sample photographs: inspect, align, crop, wash, train, score."""
    from .stages.demo import run_demo

    result = run_demo(out_dir, minutes=minutes, steps=steps, overwrite=overwrite, show_progress=not options.quiet,
                      say=lambda text: out.print(text, highlight=False))
    table = Table(title=f"realsr demo: held-out scene, x2, RGB, crop border 2 ({result.seconds / 60:.1f} min)")
    for column in ("method", "PSNR (dB)", "SSIM"):
        table.add_column(column, justify="left" if column == "method" else "right")
    table.add_row("bicubic", f"{result.bicubic_psnr:.2f}", f"{result.bicubic_ssim:.4f}")
    table.add_row("trained edsr_small", f"{result.model_psnr:.2f}", f"{result.model_ssim:.4f}")
    out.print(table)
    if result.refused:
        out.print(f"align refused {len(result.refused)} pair(s) on purpose (it will not write a pair it cannot verify; "
                  "this is the intended behaviour, not an error): " +
                  "; ".join(f"{pair_id}: {reason}" for pair_id, reason in result.refused), highlight=False,
                  soft_wrap=True)
    where = Table(title="outputs", show_header=False)
    for name, path in result.outputs.items():
        where.add_row(name, str(path))
    out.print(where)


def main() -> None:
    app()
