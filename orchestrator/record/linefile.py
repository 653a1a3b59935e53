"""A text file the coordinator's loop appends lines to (the session's notes).

Opened on the first line and kept open (an open per line cost the loop time), written
out once per turn of the loop (``flush``), not once per line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO


class LineFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None

    def write(self, line: str) -> None:
        if self._handle is None:
            self._handle = open(self.path, "a")  # noqa: SIM115 - kept open, closed by close()
        self._handle.write(line + "\n")

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
