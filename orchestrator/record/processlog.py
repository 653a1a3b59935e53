"""The processes' own logs (``logs/w1.log``, ``logs/merger.log``): how a line is stamped
when written, and when it was written once read back.

A line opens with its local date and time to the millisecond (``2026-12-03
01:40:17.123 [w1] [task] text``), so ``pd logs`` interleaves the logs and the run's events
as they happened, across midnight too, and shows the time of day alone. Lines an older
pd wrote are read as well: ``HH:MM:SS`` alone (dated from the line before, or the run's
start), and the merger's ``YYYY-MM-DD HH:MM:SS``. A line with no stamp (a traceback's)
goes with the line before it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable
from pathlib import Path

_FULL = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{3}))? ")
_CLOCK = re.compile(r"(\d\d):(\d\d):(\d\d) ")


def write(path: Path, who: str, task: str | None, text: str) -> None:
    """Append one line (``text`` may span several) to a process's log. A line the disk
    refuses is lost: a log never stops the process it records (its error handlers log)."""
    with contextlib.suppress(OSError), open(path, "a") as handle:
        handle.write(f"{stamp(time.time())} [{who}] [{task or '-'}] {text}\n")


def stamp(at: float) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm``, local time."""
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))}.{int(at % 1 * 1000):03d}"


def timed(lines: Iterable[str], start: float) -> list[tuple[float, str]]:
    """Each line with when it was written, and as ``pd logs`` shows it (``HH:MM:SS``
    first). ``start``: a time no later than the first line, the run's start, which dates
    a line of the time of day alone."""
    out: list[tuple[float, str]] = []
    last = start
    for line in lines:
        if full := _FULL.match(line):
            year, month, day, hour, minute, second = map(int, full.groups()[:6])
            at = _local(year, month, day, hour, minute, second) + int(full[7] or 0) / 1000
            line = f"{full[4]}:{full[5]}:{full[6]} {line[full.end() :]}"
        elif clock := _CLOCK.match(line):
            hour, minute, second = map(int, clock.groups())
            now = time.localtime(last)
            at = _local(now.tm_year, now.tm_mon, now.tm_mday, hour, minute, second)
            if at < last - 3600:  # earlier in the day than the line before: the next day
                at = _local(now.tm_year, now.tm_mon, now.tm_mday + 1, hour, minute, second)
        else:
            at = last
        out.append((at, line))
        last = at
    return out


def _local(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    """Seconds since the epoch of a local date and time (``day`` may run past the month's
    end: ``mktime`` carries it over)."""
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
