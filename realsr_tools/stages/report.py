"""``realsr report DIR``: one self-contained HTML page to look at a stage's output.

``DIR/report/index.html`` holds the stage's summary (manifest header, counts by status and reason), a sortable
table of every item with its quality fields and its status or drop reason, and, for every pair whose images can be
read, an LR/HR view of the same place: the LR crop shown nearest-neighbour upscaled to the HR crop's size, side by
side or flickering between the two (click to switch, zoom buttons). Failed, dropped and skipped items come first.
The page uses no network: its script and style are inline, the crops are files under ``DIR/report/pairs/``
(LR as PNG at its own resolution, HR as JPEG quality 92).

For an align output written with ``--preview`` each pair also shows its preview (checkerboard, difference and the
independent verifier's tile shifts), and a pair align refused after its warp shows its preview alone: the picture
of why it was refused.

Where the crop is: the most textured square of the LR (largest mean gradient magnitude over a grid of windows of
:data:`WINDOW` LR pixels, half-overlapping), and the HR window ``scale`` times it, so an offset between the two is
visible where there is detail to see it.

Opening ``index.html#selftest`` runs a small self-test in the page (the table sorts, the flicker view switches
images, the first images decoded, no script errors) and writes its verdict into ``#selftest-result``; the tests
drive it in headless Chromium.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, RealsrError
from ..pipeline.manifest import MANIFEST_NAME, Manifest, atomic_write_text, read_manifest
from ..pipeline.output import holds_output
from ..train.runlog import parse_event

WINDOW = 96  # LR pixels on the side of the crop shown per pair
REPORT_DIR = "report"
STATUS_ORDER = {"failed": 0, "dropped": 1, "skipped": 2, "flat": 3, "ok": 4, "kept": 4}


@dataclass(frozen=True)
class ReportSummary:
    page: Path
    items: int
    pairs_shown: int
    not_shown: tuple[str, ...] = ()  # "<id>: why" for pairs whose images could not be read


def best_window(lr: np.ndarray, size: int = WINDOW) -> tuple[int, int, int]:
    """``(x, y, side)`` of the most textured ``side``-square of an ``H x W x 3`` image (side = min(size, H, W))."""
    h, w = lr.shape[:2]
    side = min(size, h, w)
    grey = lr.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    integral = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    step = max(1, side // 2)
    best, where = -1.0, (0, 0)
    g = side - 1  # the energy map is one pixel smaller
    for y in sorted({*range(0, h - side + 1, step), h - side}):
        for x in sorted({*range(0, w - side + 1, step), w - side}):
            total = integral[y + g, x + g] - integral[y, x + g] - integral[y + g, x] + integral[y, x]
            if total > best:
                best, where = float(total), (x, y)
    return where[0], where[1], side


@holds_output("folder")
def run_report(folder: Path | str, *, show_progress: bool = True) -> ReportSummary:
    """Write ``folder/report/index.html`` for the stage output in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    manifest, records, loader = _open(folder)
    header = manifest.header if isinstance(manifest, Manifest) else manifest
    out = folder / REPORT_DIR
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: (STATUS_ORDER.get(_status(r), 5), str(r.get("id"))))
    from ..pipeline.progress import track

    import cv2

    cards, refused, not_shown = [], [], []
    for record in track(records, description="report", enabled=show_progress):
        preview = _preview(record, folder)
        try:
            images = loader(record)
        except (RealsrError, OSError, ValueError, KeyError, cv2.error) as exc:  # listed on the page; the report goes on
            not_shown.append(f"{record.get('id')}: {exc}")
            continue
        if images is not None:
            cards.append(_card(record, *images, out) | {"preview": preview})
        elif preview:  # a pair align refused after its warp: no outputs, but the picture of why
            refused.append({"id": str(record["id"]), "status": _status(record), "reason": _reason(record),
                            "preview": preview})
    columns, rows = _table(records)
    header = header or {"stage": "HR/LR folder", "source": str(folder.resolve())}
    page = _page(folder, header, records, columns, rows, cards, not_shown, _other_files(out), refused)
    atomic_write_text(out / "index.html", page)
    return ReportSummary(page=out / "index.html", items=len(records), pairs_shown=len(cards),
                         not_shown=tuple(not_shown))


# ------------------------------------------------------------------------------------------------ reading


def _open(folder: Path):
    """(manifest, a header dict or None; records; loader) where loader(record) gives (lr, hr) pixels or None."""
    from ..imaging import read_pixels

    if not (folder / MANIFEST_NAME).is_file() and (folder / "config.json").is_file() \
            and (folder / "log.jsonl").is_file():
        return _train_run(folder)
    if not (folder / MANIFEST_NAME).is_file():
        from ..pipeline.pairs import open_pairs

        source = open_pairs(folder)  # an HR/+LR/ folder, or a clear error
        by_id = {p.id: p for p in source.pairs}
        records = [{"id": p.id, "status": "ok", "hr": f"HR/{p.hr.name}", "lr": f"LR/{p.lr.name}"}
                   for p in source.pairs]
        return None, records, lambda r: (read_pixels(by_id[r["id"]].lr), read_pixels(by_id[r["id"]].hr))
    manifest = read_manifest(folder)
    stage = manifest.stage
    if stage == "lmdb":
        return manifest, manifest.records, _lmdb_loader(folder)
    if stage == "wash":
        root = Path(manifest.header.get("source", folder))
        base = lambda r, key: root / PurePosixPath(r[key])  # noqa: E731 - wash records name source files
    else:
        base = lambda r, key: manifest.resolve(r[key])  # noqa: E731

    def load(record):
        if not record.get("lr") or not record.get("hr"):
            return None
        return read_pixels(base(record, "lr")), read_pixels(base(record, "hr"))

    return manifest, manifest.records, load


def _preview(record: dict[str, Any], folder: Path) -> str | None:
    """The page's link to the align preview a record lists (``preview/<id>.png``, with the verifier's tile shifts),
    when the file is there."""
    path = record.get("preview")
    if not path or not isinstance(path, str) or PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
        return None
    return f"../{path}" if (folder / path).is_file() else None


def _train_run(folder: Path):
    """A ``realsr train`` run folder: its resolved configuration and one row per logged event; no pairs."""
    import shutil

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        lines = (folder / "log.jsonl").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}: cannot read the training run's config.json / log.jsonl ({exc})") from None
    events = [event for event in map(parse_event, lines) if event is not None]  # a killed run's torn line: skipped
    if (folder / "curve.png").is_file():
        (folder / REPORT_DIR).mkdir(exist_ok=True)
        shutil.copyfile(folder / "curve.png", folder / REPORT_DIR / "curve.png")
    header = {"stage": "train", "source": config.get("config", {}).get("source"),
              "params": {k: config.get(k) for k in ("model", "model_options", "scale", "total_steps", "warmup",
                                                   "val_every", "device", "world_size")}
              | {k: config.get("config", {}).get(k) for k in ("batch", "patch", "lr", "max_minutes", "init")}}
    records = [{"id": f"{e.get('kind')}-{e.get('step')}", "status": "ok", **{k: v for k, v in e.items()
                                                                         if k != "kind"}} for e in events]
    return header, records, lambda record: None


def _lmdb_loader(folder: Path):
    import cv2
    import lmdb

    envs = {name: lmdb.open(str(folder / f"{name}.lmdb"), readonly=True, lock=False) for name in ("LR", "HR")}

    def load(record):
        if record.get("status") != "ok":
            return None
        out = []
        for name in ("LR", "HR"):
            with envs[name].begin() as txn:
                value = txn.get(str(record["id"]).encode("ascii"))
            if value is None:
                raise InputError(f"key missing from {name}.lmdb")
            out.append(cv2.cvtColor(cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED),
                                    cv2.COLOR_BGR2RGB))
        return tuple(out)

    return load


def _status(record: dict[str, Any]) -> str:
    status = str(record.get("status", "ok"))
    if status == "ok" and record.get("kept") is False:
        return "dropped"
    if status == "ok" and record.get("flat"):
        return "flat"
    return status


def _reason(record: dict[str, Any]) -> str:
    for key in ("error", "reason"):
        if record.get(key):
            return str(record[key])
    if record.get("reasons"):
        return "; ".join(map(str, record["reasons"]))
    return ""


# ------------------------------------------------------------------------------------------------ pictures


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _card(record: dict[str, Any], lr: np.ndarray, hr: np.ndarray, out: Path) -> dict[str, Any]:
    import cv2

    from ..imaging import atomic_output

    scale = max(1, round(hr.shape[0] / lr.shape[0]))
    x, y, side = best_window(lr)
    lr_crop = lr[y:y + side, x:x + side]
    hr_crop = hr[scale * y:scale * (y + side), scale * x:scale * (x + side)]
    name = _safe(str(record["id"]))
    files = {"lr": f"pairs/{name}.lr.png", "hr": f"pairs/{name}.hr.jpg"}
    for key, crop in (("lr", lr_crop), ("hr", hr_crop)):
        if crop.dtype == np.uint16:
            crop = (crop.astype(np.float32) / 257.0).round().astype(np.uint8)
        bgr = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, 92] if key == "hr" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
        with atomic_output(out / files[key]) as tmp:
            if not cv2.imwrite(str(tmp), bgr, params):
                raise InputError(f"could not write {out / files[key]}")
    return {"id": str(record["id"]), "status": _status(record), "reason": _reason(record), "scale": scale,
            "x": x, "y": y, "side": side, "lr_size": f"{lr.shape[1]}x{lr.shape[0]}",
            "hr_px": side * scale, **files}


def _other_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "index.html"
                  and not p.name.startswith("."))


# ------------------------------------------------------------------------------------------------ the table


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    """Scalar fields, with one level of nested dicts (``quality.rms``); lists and paths are left out."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, (int, float)) and not isinstance(inner, bool):
                    flat[f"{key}.{sub}"] = inner
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = value
    return flat


def _table(records: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    numeric: dict[str, None] = {}
    flats = [_flatten(r) for r in records]
    for flat in flats:
        for key in flat:
            numeric.setdefault(key, None)
    columns = ["id", "status", "reason", *numeric]
    rows = []
    for record, flat in zip(records, flats):
        values = [str(record.get("id")), _status(record), _reason(record)]
        for key in numeric:
            value = flat.get(key)
            values.append(None if value is None or (isinstance(value, float) and not math.isfinite(value))
                          else round(value, 4) if isinstance(value, float) else value)
        rows.append(values)
    return columns, rows


# ------------------------------------------------------------------------------------------------ the page


def _page(folder: Path, header: dict[str, Any], records: list[dict[str, Any]], columns: list[str],
          rows: list[list[Any]], cards: list[dict[str, Any]], not_shown: list[str], others: list[str],
          refused: Sequence[dict[str, Any]] = ()) -> str:
    from collections import Counter

    e = html.escape
    statuses = Counter(_status(r) for r in records)
    reasons = Counter(_reason(r) for r in records if _reason(r))
    facts = [("stage", header.get("stage")), ("folder", str(folder.resolve())), ("command", header.get("command")),
             ("created", header.get("created")), ("realsr", header.get("tool_version")),
             ("source", header.get("source")), ("parameters", json.dumps(header.get("params", {})))]
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts if v is not None)
    counts = ", ".join(f"{n} {e(s)}" for s, n in sorted(statuses.items(), key=lambda kv: STATUS_ORDER.get(kv[0], 5)))
    reason_rows = "".join(f"<li>{n} &times; {e(r)}</li>" for r, n in reasons.most_common(20))
    other = "".join(f'<li><a href="{e(name)}">{e(name)}</a>' + (f'<br><img class="figure" alt="{e(name)}" '
                                                                 f'src="{e(name)}">' if name.endswith(".png") else "")
                    + "</li>" for name in others)
    missing = "".join(f"<li>{e(text)}</li>" for text in not_shown)
    head = "".join(f'<th data-col="{i}" tabindex="0">{e(c)}</th>' for i, c in enumerate(columns))
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            text = "" if value is None else str(value)
            sort = "" if value is None or i < 3 else f' data-v="{value}"'
            cells.append(f"<td{sort}>{e(text)}</td>")
        body.append(f'<tr class="s-{e(row[1])}" data-id="{e(row[0])}">{"".join(cells)}</tr>')
    card_html = []
    for n, c in enumerate(cards):
        loading = "eager" if n < 3 else "lazy"
        card_html.append(
            f'<section class="pair s-{e(c["status"])}" id="pair-{e(c["id"])}" data-px="{c["hr_px"]}">'
            f'<h3>{e(c["id"])} <span class="badge">{e(c["status"])}</span> <small>{e(c["reason"])}</small></h3>'
            f'<p class="where">x{c["scale"]}; LR crop at x={c["x"]}, y={c["y"]}, {c["side"]} px of {c["lr_size"]} '
            f'(shown nearest-upscaled to the HR crop, {c["hr_px"]} px)</p>'
            '<div class="controls"><button data-act="side">side by side</button>'
            '<button data-act="flicker">flicker</button><button data-act="swap">switch</button>'
            '<button data-act="in">zoom +</button><button data-act="out">zoom &minus;</button>'
            '<span class="showing"></span></div>'
            '<div class="view side">'
            f'<figure class="lr"><img alt="LR {e(c["id"])}" src="{e(c["lr"])}" loading="{loading}">'
            '<figcaption>LR (nearest)</figcaption></figure>'
            f'<figure class="hr"><img alt="HR {e(c["id"])}" src="{e(c["hr"])}" loading="{loading}">'
            '<figcaption>HR</figcaption></figure></div>' + _preview_html(c, loading) + '</section>')
    for c in refused:
        card_html.append(
            f'<section class="refused s-{e(c["status"])}" id="pair-{e(c["id"])}">'
            f'<h3>{e(c["id"])} <span class="badge">{e(c["status"])}</span> <small>{e(c["reason"])}</small></h3>'
            + _preview_html(c, "lazy") + '</section>')
    title = f"realsr report: {header.get('stage')} ({folder.name})"
    pairs_shown = str(len(cards)) + (f"; {len(refused)} refused, shown by their align previews" if refused else "")
    return (TEMPLATE.replace("%TITLE%", e(title)).replace("%SUMMARY%", summary).replace("%COUNTS%", counts)
            .replace("%REASONS%", reason_rows or "<li>none</li>").replace("%OTHER%", other or "<li>none</li>")
            .replace("%MISSING%", f"<h3>Pairs whose images could not be read</h3><ul>{missing}</ul>" if missing
                     else "")
            .replace("%HEAD%", head).replace("%BODY%", "".join(body)).replace("%NPAIRS%", pairs_shown)
            .replace("%CARDS%", "".join(card_html)))


def _preview_html(card: dict[str, Any], loading: str) -> str:
    if not card.get("preview"):
        return ""
    e = html.escape
    return (f'<div class="preview"><img alt="align preview {e(card["id"])}" src="{e(card["preview"])}" '
            f'loading="{loading}"><p class="where">align preview: LR | HR checkerboard, 4 x the difference, and the '
            'independent verifier\'s tile shifts (arrows, magnified; dots where it could not measure)</p></div>')


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
#items th{cursor:pointer;background:#eee;position:sticky;top:0}#items th.asc::after{content:" \\25B2"}
#items th.desc::after{content:" \\25BC"}#items td[data-v]{text-align:right;font-variant-numeric:tabular-nums}
.tablewrap{max-height:60vh;overflow:auto;border:1px solid #ccc;display:inline-block}
tr.s-failed td,tr.s-dropped td{background:#fde8e8}tr.s-skipped td,tr.s-flat td{background:#fff6d6}
.pair{border-top:1px solid #ccc;margin-top:1em}.badge{font-size:80%;padding:0 .4em;border-radius:3px;background:#ddd}
.s-failed .badge,.s-dropped .badge{background:#f3b0b0}.view{overflow:auto;max-width:100%}
.view.side{display:flex;gap:8px}.view.flicker{position:relative}.view.flicker figure{position:absolute;top:0;left:0}
.view.flicker figure.hidden{visibility:hidden}figure{margin:0}figcaption{font-size:12px;color:#555}
.view img{image-rendering:pixelated;display:block}.where{color:#555;margin:.2em 0}
.showing{margin-left:1em;font-weight:bold}img.figure{max-width:min(100%,900px)}
.preview img{display:block;max-width:100%;margin-top:6px}
</style></head><body>
<h1>%TITLE%</h1>
<h2>Summary</h2><table class="facts">%SUMMARY%</table>
<p><b>Items:</b> %COUNTS%</p><h3>Reasons</h3><ul>%REASONS%</ul>
<h3>Other files in this folder</h3><ul>%OTHER%</ul>%MISSING%
<h2>Every item</h2><p>Click a column to sort; click a row to see its pair. Failed and dropped items first.</p>
<div class="tablewrap"><table id="items"><thead><tr>%HEAD%</tr></thead><tbody>%BODY%</tbody></table></div>
<h2>Pairs (%NPAIRS%)</h2>
<p>Each pair shows the same place in the LR (nearest-upscaled) and the HR. <b>Flicker</b> alternates them in place:
edges that jump mean misalignment. Click the picture (or <b>switch</b>) to flip by hand.</p>
%CARDS%
<script>
"use strict";
const realsr = {errors: []};
window.addEventListener("error", ev => realsr.errors.push(String(ev.message)));
function cellValue(row, col) {
  const td = row.cells[col];
  return td.hasAttribute("data-v") ? parseFloat(td.getAttribute("data-v")) : td.textContent;
}
function sortTable(col, dir) {
  const table = document.getElementById("items"), body = table.tBodies[0];
  const th = table.tHead.rows[0].cells[col];
  dir = dir || (th.classList.contains("asc") ? "desc" : "asc");
  for (const h of table.tHead.rows[0].cells) h.classList.remove("asc", "desc");
  th.classList.add(dir);
  const rows = Array.from(body.rows), sign = dir === "asc" ? 1 : -1;
  rows.sort((a, b) => {
    const x = cellValue(a, col), y = cellValue(b, col);
    const xe = x === "" || Number.isNaN(x), ye = y === "" || Number.isNaN(y);
    if (xe || ye) return xe - ye;  /* empty cells last either way */
    return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * sign;
  });
  for (const r of rows) body.appendChild(r);
}
for (const th of document.querySelectorAll("#items th")) {
  th.addEventListener("click", () => sortTable(Number(th.dataset.col)));
  th.addEventListener("keydown", ev => { if (ev.key === "Enter") sortTable(Number(th.dataset.col)); });
}
for (const tr of document.querySelectorAll("#items tbody tr")) {
  tr.addEventListener("click", () => {
    const card = document.getElementById("pair-" + tr.dataset.id);
    if (card) card.scrollIntoView();
  });
}
function showing(card) {
  const view = card.querySelector(".view");
  if (!view.classList.contains("flicker")) return "both";
  return card.querySelector("figure.lr").classList.contains("hidden") ? "HR" : "LR";
}
function flip(card) {
  const view = card.querySelector(".view");
  if (!view.classList.contains("flicker")) setMode(card, "flicker");
  else for (const f of view.querySelectorAll("figure")) f.classList.toggle("hidden");
  card.querySelector(".showing").textContent = showing(card);
}
function setMode(card, mode) {
  const view = card.querySelector(".view");
  clearInterval(card.timer);
  view.classList.remove("side", "flicker");
  view.classList.add(mode);
  const [lr, hr] = view.querySelectorAll("figure");
  lr.classList.remove("hidden"); hr.classList.toggle("hidden", mode === "flicker");
  view.style.height = mode === "flicker" ? (lr.offsetHeight + "px") : "";
  card.querySelector(".showing").textContent = showing(card);
}
function zoom(card, factor) {
  card.zoom = Math.min(16, Math.max(0.25, (card.zoom || 1) * factor));
  const px = Number(card.dataset.px) * card.zoom;
  for (const img of card.querySelectorAll(".view img")) { img.style.width = px + "px"; img.style.height = px + "px"; }
  if (card.querySelector(".view").classList.contains("flicker")) setMode(card, "flicker");
}
for (const card of document.querySelectorAll(".pair")) {
  zoom(card, 1);
  card.querySelector(".view").addEventListener("click", () => flip(card));
  card.querySelector(".controls").addEventListener("click", ev => {
    const act = ev.target.dataset && ev.target.dataset.act;
    if (act === "side") setMode(card, "side");
    if (act === "flicker") { setMode(card, "flicker"); card.timer = setInterval(() => flip(card), 500); }
    if (act === "swap") flip(card);
    if (act === "in") zoom(card, 2);
    if (act === "out") zoom(card, 0.5);
  });
}
function selfTest() {
  const problems = [];
  const table = document.getElementById("items"), heads = table.tHead.rows[0].cells;
  let col = 0, most = 1;  /* the numeric column with the most distinct values (else the id column) */
  for (let i = 3; i < heads.length; i++) {
    const distinct = new Set(Array.from(table.querySelectorAll(`tbody td:nth-child(${i + 1})[data-v]`))
      .map(td => td.getAttribute("data-v"))).size;
    if (distinct > most) { col = i; most = distinct; }
  }
  const values = () => Array.from(table.tBodies[0].rows).map(r => cellValue(r, col))
    .filter(v => v !== "" && !Number.isNaN(v));
  const ordered = (list, sign) => list.every((v, i) => i === 0 ||
    (typeof v === "number" ? (v - list[i - 1]) * sign >= 0 : String(v).localeCompare(String(list[i - 1])) * sign >= 0));
  heads[col].click();
  if (!ordered(values(), 1)) problems.push("ascending sort of column " + heads[col].textContent);
  heads[col].click();
  if (!ordered(values(), -1)) problems.push("descending sort of column " + heads[col].textContent);
  const card = document.querySelector(".pair");
  let flicker = "no pair";
  if (card) {
    for (const img of Array.from(card.querySelectorAll("img"))) {
      if (!img.complete || img.naturalWidth === 0) problems.push("image not decoded: " + img.getAttribute("src"));
    }
    setMode(card, "flicker");
    const first = showing(card);
    card.querySelector('[data-act="swap"]').click();
    const second = showing(card);
    if (!(first === "LR" && second === "HR")) problems.push(`flicker did not switch (${first} -> ${second})`);
    const visible = Array.from(card.querySelectorAll(".view figure")).filter(f => !f.classList.contains("hidden"));
    if (visible.length !== 1 || !visible[0].classList.contains("hr")) problems.push("flicker shows both or none");
    flicker = first + "->" + second;
    setMode(card, "side");
  }
  problems.push(...realsr.errors.map(m => "script error: " + m));
  const out = document.createElement("pre");
  out.id = "selftest-result";
  out.textContent = (problems.length ? "FAIL " + problems.join(" | ") : "PASS") +
    ` (sorted column ${heads[col].textContent}; flicker ${flicker}; rows ${table.tBodies[0].rows.length})`;
  document.body.appendChild(out);
}
if (location.hash === "#selftest") window.addEventListener("load", selfTest);
</script>
</body></html>
"""
