"""What a stage does with an output folder an earlier run left: refuse it, resume it, or replace it. One place.

Every stage that writes (align, crop, wash, lmdb, score) runs holding the folder's lock
(:func:`realsr_tools.pipeline.output.holds_output` / :func:`~realsr_tools.pipeline.output.output_lock`) and, once
its inputs are checked and before any work, calls :func:`prepare_stage_output` with only what is its own: its
name, the parameters a resumed run must share with the earlier one, the entries it owns in the folder and which
record keys hold its output files. In this order, the seam

1. refuses ``--out`` that is the source folder (or lies inside it, where the stage says so): :class:`ConfigError`;
2. refuses a folder holding another stage's manifest, or, when no manifest or journal of this stage is there,
   owned entries (``HR/``, ``LR/``, ...) that already hold files: no realsr run of this stage wrote them, and realsr
   deletes only what its own manifests list, so this holds even with ``--overwrite`` (:class:`OutputExistsError`);
3. removes the temporary files of writers that were killed (:func:`realsr_tools.imaging.files.remove_partials`;
   for ``policy="refuse"``, whose folder may hold anything, only those of the stage's own ``files``);
4. then, by the stage's ``policy``:

   - ``"resume"`` (align, crop, lmdb): with ``overwrite`` the earlier run's outputs (the files its records list,
     and whole entries the stage names in ``clear``), manifest and journal are deleted and nothing is resumed.
     Otherwise a resume is refused when the earlier run used other ``params`` (its manifest header, or after a
     kill the header its journal keeps beside it, and the ``record_params`` of each finished record) or read
     another source folder (the header's ``source``), with one message naming each difference (``size 64 -> 32``); the finished records
     (status ``ok``, every output file present) are returned in :attr:`StageOutput.done` for the stage to skip.
     The upstream manifest's sha256 is not compared here: every run of a stage rewrites its manifest (time,
     command line), so a resumed upstream run would make every downstream resume refuse. A stale input is
     refused where it is read (:func:`realsr_tools.pipeline.pairs.open_pairs`).
   - ``"replace"`` (wash): an earlier run of the stage is replaced; :meth:`StageOutput.clear` deletes it when the
     stage starts writing, so an interrupted run keeps the earlier outputs until then. The stage resumes from its
     own result cache, not from records.
   - ``"refuse"`` (score, whose outputs are named files and no manifest): ``files`` that exist are refused unless
     ``overwrite``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from ..errors import ConfigError, ManifestError, OutputExistsError
from .manifest import JOURNAL_HEADER_SUFFIX, JOURNAL_SUFFIX, MANIFEST_NAME, check_relative_path, \
    completed_records, previous_records, read_manifest

Policy = Literal["resume", "replace", "refuse"]


@dataclass(frozen=True)
class StageOutput:
    """An output folder prepared for a run of ``stage``; ``done`` holds the finished records to skip, by id."""

    out_dir: Path
    stage: str
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    clear_entries: tuple[str, ...] = ()
    output_keys: tuple[str, ...] = ()
    optional_keys: tuple[str, ...] = ()

    def clear(self) -> None:
        """Delete what an earlier run of this stage wrote here: the files its records list, the entries named
        ``clear``, its manifest and its journal. Nothing else in the folder is touched."""
        records = []
        if self.output_keys or self.optional_keys:
            try:
                records = previous_records(self.out_dir, self.stage)
            except ManifestError:
                pass  # a damaged manifest of our own: its whole entries still go below
        for record in records:
            for key in (*self.output_keys, *self.optional_keys):
                if record.get(key):
                    try:
                        (self.out_dir / check_relative_path(record[key], self.out_dir)).unlink(missing_ok=True)
                    except ManifestError:
                        continue  # never delete outside the folder
        for name in self.clear_entries:
            path = self.out_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        (self.out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        for suffix in (JOURNAL_SUFFIX, JOURNAL_HEADER_SUFFIX):
            (self.out_dir / (MANIFEST_NAME + suffix)).unlink(missing_ok=True)


def prepare_stage_output(out_dir: Path | str, stage: str, *, policy: Policy = "resume",
                         params: Mapping[str, Any] | None = None,
                         record_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
                         source: Path | str | None = None,
                         inside_source: bool = True, source_name: str = "source folder",
                         owned: Sequence[str] = (), output_keys: Sequence[str] = (),
                         optional_keys: Sequence[str] = (), clear: Sequence[str] = (),
                         files: Iterable[Path | str] = (), overwrite: bool = False) -> StageOutput:
    """Check, resume or clear ``out_dir`` for a run of ``stage``; see the module docstring for the steps.

    Parameters
    ----------
    out_dir : the stage's ``--out``; the caller holds its lock.
    stage : the stage's manifest name (``"align"``, ``"crop"``, ...).
    policy : ``"resume"``, ``"replace"`` or ``"refuse"`` (module docstring).
    params : the parameters a resumed run must share with the earlier one (compared with the earlier manifest
        header's ``params``; only these keys).
    record_params : the parameters one finished record was made with (e.g. crop's patch size from its box), also
        compared (a journal of an older realsr has no header beside it).
    source : the folder the stage reads: ``--out`` may not be it, and a resume from another source is refused.
    inside_source : whether ``out_dir`` may lie inside ``source`` (never ``source`` itself); ``source_name`` names
        ``source`` in that message.
    owned : entries of ``out_dir`` (folders) only this stage writes: files there that no manifest or journal of
        the stage accounts for make the folder foreign.
    output_keys : record keys holding the stage's output files (relative paths): a record is finished only when
        they all exist, and ``--overwrite`` deletes them.
    optional_keys : record keys holding files a record may or may not have (align's previews): ``--overwrite``
        deletes them too, but a record is finished without them.
    clear : entries deleted whole when an earlier run is cleared (databases, report folders).
    files : for ``policy="refuse"``, the output files a run would write.
    overwrite : the stage's ``--overwrite``.
    """
    from ..imaging.files import remove_partials
    from .output import holds_lock

    out_dir = Path(out_dir)
    if not holds_lock(out_dir):
        raise RuntimeError(f"{out_dir}: prepare_stage_output needs the output lock (decorate the stage function "
                           "with holds_output or enter output_lock first)")
    if source is not None:
        _check_not_source(out_dir, Path(source), inside_source=inside_source, source_name=source_name)
    output = StageOutput(out_dir, stage, clear_entries=tuple(clear), output_keys=tuple(output_keys),
                         optional_keys=tuple(optional_keys))
    if policy == "refuse":
        files = [Path(p) for p in files]
        existing = [str(p) for p in files if p.exists()]
        if existing and not overwrite:
            shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
            raise OutputExistsError(f"{shown} already exist(s); pass --overwrite to replace")
        _remove_partials_of(files)  # the folder may hold anything else: only the temporaries of our own files
        return output
    header = _earlier_header(out_dir, stage)
    ours = header is not None or (out_dir / (MANIFEST_NAME + JOURNAL_SUFFIX)).is_file()
    if not ours:
        foreign = [name for name in owned if _holds_files(out_dir / name)]
        if foreign:
            raise OutputExistsError(f"{out_dir}: {', '.join(name + '/' for name in foreign)} already hold(s) files "
                                    f"that no realsr {stage} run wrote; pick an empty --out")
    remove_partials(out_dir)
    if not ours or policy == "replace":
        return output
    if overwrite:
        output.clear()
        return output
    done = completed_records(out_dir, stage, output_keys)
    changed = _changes(header, params or {}, list(done.values()), record_params, source)
    if changed:
        what = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changed.items())
        raise OutputExistsError(f"{out_dir}: an earlier {stage} run here used other settings ({what}); pass "
                                "--overwrite to redo it or pick another --out")
    return replace(output, done=done)


def _check_not_source(out_dir: Path, source: Path, *, inside_source: bool, source_name: str) -> None:
    out, root = out_dir.resolve(), source.resolve()
    if out == root:
        raise ConfigError(f"{out_dir}: output folder is the {source_name}; pass another --out")
    if not inside_source and root in out.parents:
        raise ConfigError(f"{out_dir}: the output folder must lie outside the {source_name} {source}, or a re-run "
                          "would read its own outputs as input")


def _earlier_header(out_dir: Path, stage: str) -> dict[str, Any] | None:
    """The header of the manifest in ``out_dir``, else of a killed run's journal (None without either); another
    stage's output is refused."""
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        manifest = out_dir / (MANIFEST_NAME + JOURNAL_HEADER_SUFFIX)
    if not manifest.is_file():
        return None
    try:
        found = read_manifest(manifest)
    except ManifestError as exc:
        raise OutputExistsError(f"{out_dir}: holds a manifest realsr cannot read ({exc}); pick another --out") \
            from None
    if found.stage != stage:
        raise OutputExistsError(f"{out_dir}: holds the output of a realsr {found.stage} run, not {stage}; pick "
                                "another --out")
    return found.header


def _changes(header: Mapping[str, Any] | None, params: Mapping[str, Any], finished: list[dict[str, Any]],
             record_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None,
             source: Path | str | None) -> dict[str, tuple[Any, Any]]:
    """Each setting (or source) an earlier run used differently: ``{key: (then, now)}``."""
    changed: dict[str, tuple[Any, Any]] = {}
    if header is not None:
        old = header.get("params", {})
        changed |= {k: (old.get(k), v) for k, v in params.items() if k in old and old.get(k) != v}
        if source is not None and header.get("source") not in (None, str(Path(source).resolve())):
            changed["source"] = (header["source"], str(Path(source).resolve()))
    if record_params is not None:
        for record in finished:
            for key, value in record_params(record).items():
                if key in params and key not in changed and value is not None and value != params[key]:
                    changed[key] = (value, params[key])
    return changed


def _remove_partials_of(files: Iterable[Path]) -> None:
    """Delete the temporary files a killed :func:`~realsr_tools.imaging.atomic_output` left for ``files``
    (``.<stem>.<random>.partial<suffix>`` next to each), and nothing else."""
    from ..imaging.files import partials_of

    for path in files:
        for partial in partials_of(path):
            partial.unlink(missing_ok=True)


def _holds_files(path: Path) -> bool:
    """Whether ``path`` is a file, or a folder with anything in it."""
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()
