"""The deployment record: which steps of `up` finished, with the names they produced.

It lets `up` report where a previous run stopped and `down` find the bucket a run created.
Ownership is still checked on AWS itself (the stack tag), so a lost or stale record can make
`down` do less, never delete something that is not ours.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"steps": {}}
        if path.is_file():
            self.data = json.loads(path.read_text())

    @property
    def steps(self) -> dict[str, Any]:
        return self.data.setdefault("steps", {})

    def record(self, step: str, **info: Any) -> None:
        self.steps[step] = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **info}
        self._save()

    def forget(self, step: str) -> None:
        if self.steps.pop(step, None) is not None:
            self._save()

    def get(self, step: str, key: str, default: Any = None) -> Any:
        return self.steps.get(step, {}).get(key, default)

    def clear(self) -> None:
        self.data = {"steps": {}}
        self.path.unlink(missing_ok=True)

    def _save(self) -> None:
        # Write to a temporary file then rename, so an interrupted run never leaves half a record.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.data, handle, indent=2, sort_keys=True)
        os.replace(tmp, self.path)
