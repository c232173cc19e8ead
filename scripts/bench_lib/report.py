"""Results: one row per number, printed as a table and optionally saved as JSON."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass
class Row:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None  # None: information only, no target
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: ""}[self.ok]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    mode: str = "full"
    duration_s: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def missed(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "mode": self.mode,
            "duration_s": round(self.duration_s, 1),
            "machine": machine(),
            "rows": [_clean(asdict(r) | {"verdict": r.verdict}) for r in self.rows],
            "notes": self.notes,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")

    def table(self) -> str:
        header = ("metric", "value", "baseline", "ratio", "target", "result")
        lines = [
            (r.name, fmt(r.value, r.unit), fmt(r.baseline, r.unit), fmt(r.ratio, "x"), r.target, r.verdict)
            for r in self.rows
        ]
        widths = [max(len(str(col)) for col in column) for column in zip(header, *lines, strict=True)]
        out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
        out.append("  ".join("-" * w for w in widths))
        out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        for row in self.rows:
            if row.note:
                out.append(f"  * {row.name}: {row.note}")
        out += [f"  - {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        out = ["| metric | value | baseline | ratio | target | result |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            cells = (r.name, fmt(r.value, r.unit), fmt(r.baseline, r.unit), fmt(r.ratio, "x"), r.target, r.verdict)
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(out)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit == "x":
        return f"{value:.2f}"
    magnitude = abs(value)
    if unit in ("", "count"):
        text = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
    elif magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3f}".rstrip("0").rstrip(".") if magnitude < 1 else f"{value:.2f}"
    return f"{text} {unit}".strip() if unit not in ("", "count") else text


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """NaN is not JSON: an unmeasured number becomes null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
