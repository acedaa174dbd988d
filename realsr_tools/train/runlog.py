"""The run's event log (``log.jsonl``, one JSON object per event, torn last lines tolerated) and its curve picture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence


def parse_event(line: str) -> dict[str, Any] | None:
    """One log line, or None for a line a killed run left half-written."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class RunLog:
    """The run's JSONL log (rank 0 writes); on resume, events after the resumed step are dropped."""

    def __init__(self, path: Path, *, enabled: bool, keep_until: int | None) -> None:
        self.path, self.enabled = path, enabled
        self.events: list[dict[str, Any]] = []
        if enabled and keep_until is not None and path.is_file():
            self.events = [e for e in map(parse_event, path.read_text().splitlines())
                           if e is not None and e.get("step", keep_until + 1) <= keep_until]
        if enabled:
            from ..pipeline.manifest import atomic_write_text

            atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in self.events))

    def write(self, **event: Any) -> None:
        if not self.enabled:
            return
        self.events.append(event)
        with open(self.path, "a") as stream:
            stream.write(json.dumps(event) + "\n")


def plot_curve(events: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Training loss and validation PSNR (with the bicubic level) against step, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [e for e in events if e["kind"] == "train"]
    val = [e for e in events if e["kind"] == "val"]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], color="tab:blue")
    ax_loss.set(xlabel="step", ylabel="training loss (mean since last point)", title="loss")
    ax_psnr.plot([e["step"] for e in val], [e["psnr"] for e in val], "o-", color="tab:red", label="model (EMA)")
    if val:
        ax_psnr.axhline(val[0]["bicubic_psnr"], color="grey", linestyle="--", label="bicubic")
        ax_psnr.legend()
    ax_psnr.set(xlabel="step", ylabel="PSNR (dB, RGB)", title="validation PSNR")
    from ..imaging import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
