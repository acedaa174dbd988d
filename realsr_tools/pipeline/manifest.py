"""Stage manifests: the contract between realsr stages.

A stage writes ``<out_dir>/manifest.jsonl``: line 1 is the header (schema version, stage, tool version, command
line, parameters, creation time, upstream manifest path and sha256, and which record keys hold paths), then one
JSON object per item. Every path inside is relative to the manifest's folder, with forward slashes.

While a stage runs, finished records are appended to a journal (``manifest.jsonl.journal``) one line at a time, so
a killed run loses nothing, and the run's header beside it (``manifest.jsonl.journal-header``), so a resume after a
kill knows the settings it must share; :meth:`StageWriter.close` folds journal and earlier records into
``manifest.jsonl`` atomically (temporary file, then rename) and removes the journal and its header. :func:`completed_records` is the resume
primitive: the records whose status is ``ok`` and whose output files all exist (stages reach it through
:func:`realsr_tools.pipeline.resume.prepare_stage_output`, which also refuses a resume over other settings).

Reading validates the header, the expected stage and the schema version, and refuses absolute paths and paths
that climb out of the dataset (``..``): a manifest from someone else must not make realsr touch files outside it.
Record ids become file names downstream (``HR/<id>.png``), so every id must be a plain file-name component (no
``/``, ``\\``, ``..``, NUL, not empty, not starting with ``.``) and unique in its manifest (:func:`check_id`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .. import __version__
from ..errors import ManifestError
from ..imaging import atomic_output

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"
JOURNAL_SUFFIX = ".journal"
# The header of the run that writes a journal, beside it (the journal itself holds only records): what a resume
# after a kill compares its settings with.
JOURNAL_HEADER_SUFFIX = ".journal-header"
STAGES = ("align", "crop", "wash", "train", "lmdb")


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its header, its records and the folder its relative paths start from."""

    path: Path
    header: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def stage(self) -> str:
        return self.header["stage"]

    def resolve(self, relative: str) -> Path:
        """Turn a record's relative path into a real path under the manifest's folder (validated on read)."""
        return self.root / PurePosixPath(check_relative_path(relative, self.path))


def check_relative_path(value: Any, manifest_path: Path | str) -> str:
    """Refuse anything but a plain relative POSIX path that stays inside the dataset root."""
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{manifest_path}: path field must be a non-empty string, got {value!r}")
    posix = PurePosixPath(value)
    if "\\" in value or posix.is_absolute() or (len(value) > 1 and value[1] == ":"):
        raise ManifestError(f"{manifest_path}: refusing absolute or non-POSIX path {value!r}; manifest paths must "
                            "be relative to the manifest's folder, with forward slashes")
    if ".." in posix.parts:
        raise ManifestError(f"{manifest_path}: refusing path {value!r}, which leaves the dataset folder")
    return value


def check_id(value: Any, manifest_path: Path | str) -> str:
    """Refuse a record id that is not a plain file-name component: ids are used as file names by later stages."""
    if (not isinstance(value, str) or not value or value.startswith(".") or "/" in value or "\\" in value
            or "\x00" in value or (len(value) > 1 and value[1] == ":")):
        raise ManifestError(f"{manifest_path}: record id {value!r} is not a plain file name (ids name output files: "
                            "no '/', '\\', leading '.', not empty); re-run the stage that wrote this manifest")
    return value


def relative_path(path: Path | str, root: Path | str) -> str:
    """``path`` relative to ``root`` with forward slashes; it must lie inside ``root``."""
    rel = os.path.relpath(Path(path).resolve(), Path(root).resolve())
    posix = Path(rel).as_posix()
    return check_relative_path(posix, root)


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_header(stage: str, *, params: Mapping[str, Any], path_keys: Sequence[str] = (),
                upstream: Path | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Build a header; ``upstream`` is the manifest this stage read (its path is stored relative when possible)."""
    header: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "stage": stage,
        "tool": "realsr",
        "tool_version": __version__,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "params": _jsonable(dict(params)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "path_keys": list(path_keys),
        "upstream": None,
    }
    if upstream is not None:
        upstream = Path(upstream)
        where = os.path.relpath(upstream.resolve(), out_dir.resolve()) if out_dir else str(upstream.resolve())
        header["upstream"] = {"path": Path(where).as_posix(), "sha256": file_sha256(upstream)}
    return header


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def write_manifest(out_dir: Path | str, header: Mapping[str, Any], records: Iterable[Mapping[str, Any]], *,
                   name: str = MANIFEST_NAME) -> Path:
    """Write header and records to ``out_dir/manifest.jsonl`` (or ``name``) atomically."""
    out_dir = Path(out_dir)
    lines = [json.dumps(_jsonable(header), sort_keys=False)]
    lines += [json.dumps(_jsonable(record)) for record in records]
    return atomic_write_text(out_dir / name, "\n".join(lines) + "\n")


def atomic_write_text(path: Path, text: str) -> Path:
    """Write text through a temporary file in the same folder and a rename, so readers never see half a file."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
    return path


def manifest_path(location: Path | str) -> Path:
    location = Path(location)
    return location / MANIFEST_NAME if location.is_dir() else location


def read_manifest(location: Path | str, *, stage: str | Sequence[str] | None = None) -> Manifest:
    """Read and validate a manifest (a ``manifest.jsonl`` file or the folder holding one)."""
    path = manifest_path(location)
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here; run the stage that writes it first")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    if not lines:
        raise ManifestError(f"{path}: manifest is empty; re-run the stage that writes it")
    header = _parse_line(lines[0], path, 1)
    _validate_header(header, path, stage)
    records = [_parse_line(line, path, number) for number, line in enumerate(lines[1:], start=2)]
    _validate_paths(records, header["path_keys"], path)
    _validate_ids(records, path)
    return Manifest(path=path, header=header, records=records)


def _parse_line(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{number}: not valid JSON ({exc.msg}); the manifest is damaged") from None
    if not isinstance(value, dict):
        raise ManifestError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
    return value


def _validate_header(header: dict[str, Any], path: Path, stage: str | Sequence[str] | None) -> None:
    if header.get("tool") != "realsr" or "schema" not in header or "stage" not in header:
        raise ManifestError(f"{path}: first line is not a realsr manifest header")
    if header["schema"] != SCHEMA_VERSION:
        raise ManifestError(f"{path}: manifest schema {header['schema']!r} is not supported by realsr "
                            f"{__version__} (schema {SCHEMA_VERSION}); re-run the stage that wrote it")
    expected = (stage,) if isinstance(stage, str) else tuple(stage or ())
    if expected and header["stage"] not in expected:
        raise ManifestError(f"{path}: this is a '{header['stage']}' manifest, expected "
                            f"{' or '.join(repr(s) for s in expected)}; pass the output folder of that stage")
    keys = header.get("path_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ManifestError(f"{path}: header field 'path_keys' must be a list of strings")
    header.setdefault("path_keys", keys)


def _validate_paths(records: list[dict[str, Any]], keys: Sequence[str], path: Path) -> None:
    for record in records:
        for key in keys:
            if record.get(key) is not None:
                check_relative_path(record[key], path)


def _validate_ids(records: list[dict[str, Any]], path: Path) -> None:
    seen: set[str] = set()
    for record in records:
        value = check_id(record.get("id"), path)
        if value in seen:
            raise ManifestError(f"{path}: record id {value!r} occurs more than once (ids name output files and must "
                                "be unique); re-run the stage that wrote this manifest")
        seen.add(value)


def check_upstream(manifest: Manifest) -> None:
    """Refuse to go on when the upstream manifest changed since this one was written (DVC-style staleness)."""
    upstream = manifest.header.get("upstream")
    if not upstream:
        return
    where = (manifest.root / upstream["path"]).resolve()
    if not where.is_file():
        return  # moved or archived without its upstream: nothing to compare with
    now = file_sha256(where)
    if now != upstream["sha256"]:
        modified = datetime.fromtimestamp(where.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        raise ManifestError(f"{manifest.path}: its upstream {where} changed after it was written (sha256 "
                            f"{upstream['sha256'][:12]}... when this manifest was written {manifest.header.get('created')}"
                            f", {now[:12]}... now, file modified {modified}); re-run the '{manifest.stage}' stage "
                            f"into {manifest.root}")


@dataclass
class StageWriter:
    """Collect a stage's records with crash-safe journaling; ``close`` writes the final manifest atomically.

    Records from an earlier run (``keep``) are carried over, so a resumed run's manifest is complete. Records
    are keyed by ``id``: a newer record replaces an older one with the same id. ``order`` (a sort key of a record)
    fixes the order of :attr:`records` and of the manifest, so it does not depend on which item finished first
    (a stage passes the items' input order); the journal keeps arrival order. Temporary files of writers that
    were killed (:func:`realsr_tools.imaging.files.remove_partials`) are removed on opening and closing.
    """

    out_dir: Path
    header: dict[str, Any]
    keep: Iterable[Mapping[str, Any]] = ()
    order: Callable[[dict[str, Any]], Any] | None = None
    _records: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    _journal: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        from ..imaging.files import remove_partials

        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_partials(self.out_dir)
        for record in self.keep:
            self._records[str(record["id"])] = dict(record)
        self._journal = open(self.journal_path, "a", encoding="utf-8")
        write_manifest(self.out_dir, self.header, (), name=MANIFEST_NAME + JOURNAL_HEADER_SUFFIX)

    @property
    def journal_path(self) -> Path:
        return self.out_dir / (MANIFEST_NAME + JOURNAL_SUFFIX)

    def add(self, record: Mapping[str, Any]) -> None:
        if "id" not in record:
            raise ValueError("every manifest record needs an 'id'")
        check_id(record["id"], self.out_dir / MANIFEST_NAME)
        for key in self.header["path_keys"]:
            if record.get(key) is not None:
                check_relative_path(record[key], self.out_dir / MANIFEST_NAME)
        record = _jsonable(dict(record))
        self._records[str(record["id"])] = record
        self._journal.write(json.dumps(record) + "\n")
        self._journal.flush()

    @property
    def records(self) -> list[dict[str, Any]]:
        records = list(self._records.values())
        return records if self.order is None else sorted(records, key=self.order)

    def close(self) -> Path:
        from ..imaging.files import remove_partials

        self._journal.close()
        remove_partials(self.out_dir)
        path = write_manifest(self.out_dir, self.header, self.records)
        self.journal_path.unlink(missing_ok=True)
        (self.out_dir / (MANIFEST_NAME + JOURNAL_HEADER_SUFFIX)).unlink(missing_ok=True)
        return path

    def __enter__(self) -> StageWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        # Always fold what finished into a valid manifest, even when the batch was interrupted.
        self.close()


def previous_records(out_dir: Path | str, stage: str) -> list[dict[str, Any]]:
    """Records of an earlier (possibly interrupted) run in ``out_dir``: the manifest, then its journal."""
    out_dir = Path(out_dir)
    found: dict[str, dict[str, Any]] = {}
    manifest_file = out_dir / MANIFEST_NAME
    if manifest_file.is_file():
        manifest = read_manifest(manifest_file, stage=stage)
        keys = manifest.header["path_keys"]
        for record in manifest.records:
            found[str(record.get("id"))] = record
    else:
        keys = None
    journal = out_dir / (MANIFEST_NAME + JOURNAL_SUFFIX)
    if journal.is_file():
        for number, line in enumerate(journal.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed run may be cut short; that item is simply redone
            if isinstance(record, dict) and "id" in record:
                check_id(record["id"], journal)
                if keys:
                    _validate_paths([record], keys, journal)
                found[str(record["id"])] = record
    return list(found.values())


def completed_records(out_dir: Path | str, stage: str, output_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The resume primitive: earlier records with ``status == "ok"`` whose output files (``output_keys``) exist."""
    out_dir = Path(out_dir)
    done: dict[str, dict[str, Any]] = {}
    for record in previous_records(out_dir, stage):
        if record.get("status", "ok") != "ok":
            continue
        outputs = [record.get(key) for key in output_keys]
        try:
            if all(out is not None and (out_dir / check_relative_path(out, out_dir)).exists() for out in outputs):
                done[str(record["id"])] = record
        except ManifestError:
            continue
    return done


def iter_ok(manifest: Manifest) -> Iterator[dict[str, Any]]:
    """Records a downstream stage should use: status ``ok`` (or none) and not dropped by wash."""
    for record in manifest.records:
        if record.get("status", "ok") == "ok" and record.get("kept", True):
            yield record
