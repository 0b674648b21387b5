#!/usr/bin/env python3
"""Render the fault-injection results (the JSON lines tests/faults writes to $REELFORGE_FAULT_RESULTS) as the
table of docs/reliability.md.

    REELFORGE_FAULT_RESULTS=/tmp/faults.jsonl REELFORGE_FAULT_TRIALS=5 REELFORGE_FAULT_OUTAGE_S=30 \\
        .venv/bin/pytest tests/faults -q
    .venv/bin/python scripts/fault-report.py /tmp/faults.jsonl --write docs/reliability.md \\
        --command "REELFORGE_FAULT_TRIALS=5 REELFORGE_FAULT_OUTAGE_S=30 .venv/bin/pytest tests/faults"

Without --write it prints the table. With it, the text between the two marker lines of the file is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

BEGIN = "<!-- fault-results:begin (scripts/fault-report.py writes this part) -->"
END = "<!-- fault-results:end -->"
COUNTS = ("trials", "accepted", "completed", "lost", "duplicated")


def load(path: Path) -> list[dict[str, object]]:
    """One row per scenario; rows of a scenario that ran more than once (several test runs appended to the
    same file) are summed."""
    merged: dict[str, dict[str, object]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        into = merged.setdefault(row["scenario"], {**row, **{k: 0 for k in COUNTS}, "seconds": 0.0, "passed": True,
                                                    "notes": []})
        into["notes"] = [*into["notes"], *row.get("notes", [])]  # type: ignore[misc]
        for key in COUNTS:
            into[key] = int(into[key]) + int(row[key])  # type: ignore[call-overload]
        into["seconds"] = float(into["seconds"]) + float(row["seconds"])  # type: ignore[arg-type]
        into["passed"] = bool(into["passed"]) and bool(row["passed"])
    return sorted(merged.values(), key=lambda r: int(str(r["scenario"])))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores ({model}), {memory_kb / 2**20:.0f} GiB, {platform.system()} {platform.release()}"


def render(rows: list[dict[str, object]], measured: datetime, command: str | None) -> str:
    lines = [
        f"Measured {measured:%Y-%m-%d %H:%M} UTC on {machine()}, no GPU"
        + (f", with: `{command}`" if command else "") + ".",
        "",
        "| # | fault | trials | accepted | completed | lost | duplicated | test | seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in rows:
        verdict = "passed" if row["passed"] else "**failed**"
        lines.append(f"| {row['scenario']} | {row['fault']} | " + " | ".join(str(row[k]) for k in COUNTS)
                     + f" | {verdict} | {float(row['seconds']):.0f} |")  # type: ignore[arg-type]
    notes = [f"- {row['scenario']}: {note}" for row in rows for note in row.get("notes", [])]  # type: ignore[attr-defined]
    if notes:
        lines += ["", "Notes the trials recorded:", "", *notes]
    return "\n".join(lines)


def write(doc: Path, table: str) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{doc} has no {BEGIN!r} ... {END!r} markers to write between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the JSON-lines file of REELFORGE_FAULT_RESULTS")
    parser.add_argument("--write", type=Path, default=None, help="the Markdown file to update (docs/reliability.md)")
    parser.add_argument("--command", default=None, help="the command that produced the results, for the record")
    args = parser.parse_args()
    measured = datetime.fromtimestamp(args.results.stat().st_mtime, tz=UTC)
    table = render(load(args.results), measured, args.command)
    if args.write:
        write(args.write, table)
    else:
        print(table)


if __name__ == "__main__":
    main()
