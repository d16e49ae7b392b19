"""What happened to every file of a conversion, for the person who has to fix the raw data.

A dataset of thousands of images always has a few broken ones; the conversion must not stop for them, but the
user must be able to find each one by name and know why it was left out (or kept with a warning).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ERROR = "error"  # the sample is left out of this task
WARNING = "warning"  # the sample is kept; the user should know


@dataclass
class TaskReport:
    task: str
    dataset: str
    found: int = 0
    split_rule: str = ""
    issues: list[dict] = field(default_factory=list)
    converted: dict[str, str] = field(default_factory=dict)  # id -> split
    targets: dict[str, object] = field(default_factory=dict)  # id -> class index or mask path, for the datalist
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class name -> n
    leakage: list[dict] = field(default_factory=list)
    split_file: dict = field(default_factory=dict)

    def add(self, severity: str, sample_id: str, file: Path | str | None, cause: str) -> None:
        self.issues.append({"severity": severity, "id": sample_id, "file": str(file) if file else "", "cause": cause})

    @property
    def errors(self) -> list[dict]:
        return [i for i in self.issues if i["severity"] == ERROR]

    def split_counts(self) -> dict[str, int]:
        counts = Counter(self.converted.values())
        return {s: counts.get(s, 0) for s in ("training", "validation", "test")}

    def as_dict(self) -> dict:
        return {
            "task": self.task,
            "dataset": self.dataset,
            "found": self.found,
            "converted": len(self.converted),
            "left_out": len({i["id"] for i in self.errors}),
            "splits": self.split_counts(),
            "classes": {s: dict(sorted(c.items())) for s, c in self.class_counts.items()},
            "split_rule": self.split_rule,
            "split_file": self.split_file,
            "leakage": self.leakage,
            "issues": self.issues,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=1) + "\n")

    def summary_line(self) -> dict:
        return {"converted": len(self.converted), **self.split_counts(), "issues": len(self.issues)}

    def render(self, max_rows: int = 25) -> str:
        s = self.split_counts()
        lines = [
            f"{self.task}: {self.found} found, {len(self.converted)} converted, "
            f"{len({i['id'] for i in self.errors})} left out | training {s['training']}, "
            f"validation {s['validation']}, test {s['test']}",
            f"  split: {self.split_rule}",
        ]
        if self.split_file.get("missing_from_file") or self.split_file.get("missing_from_data"):
            lines.append(
                f"  split file {self.split_file.get('path')}: {len(self.split_file.get('missing_from_file', []))} ids "
                f"in the data but not in the file (left out), {len(self.split_file.get('missing_from_data', []))} "
                "ids in the file but not in the data"
            )
        if self.leakage:
            kinds = Counter(f["kind"] for f in self.leakage)
            lines.append(f"  LEAKAGE: {', '.join(f'{n} {k} pair(s)' for k, n in kinds.items())} across splits")
            for f in self.leakage[:max_rows]:
                lines.append(f"    {f['kind']:<15} {f['ids'][0]} ({f['splits'][0]}) ~ {f['ids'][1]} ({f['splits'][1]})")
        if self.issues:
            width = min(max(len(i["id"]) for i in self.issues), 32)
            lines.append(f"  {'severity':<8} {'id':<{width}} cause  [file]")
            for i in self.issues[:max_rows]:
                lines.append(f"  {i['severity']:<8} {i['id'][:width]:<{width}} {i['cause']}  [{i['file']}]")
            if len(self.issues) > max_rows:
                lines.append(f"  ... {len(self.issues) - max_rows} more in conversion_report.json")
        return "\n".join(lines)
