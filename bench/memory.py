"""Memory of a process tree and of the machine, sampled while something runs."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, grandchildren...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rollup(pids: list[int]) -> dict[str, int]:
    """Summed kB of Rss, Pss and private (USS) memory of ``pids`` (smaps_rollup)."""
    totals = {"Rss": 0, "Pss": 0, "Private": 0}
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            key = parts[0].rstrip(":") if parts else ""
            if key in ("Rss", "Pss"):
                totals[key] += int(parts[1])
            elif key in ("Private_Clean", "Private_Dirty"):
                totals["Private"] += int(parts[1])
    return totals


def machine_used_kb() -> int:
    """MemTotal - MemAvailable: what the whole machine uses (everyone's processes)."""
    info = {line.split(":")[0]: int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()}
    return info["MemTotal"] - info["MemAvailable"]


@dataclass
class Peak:
    processes: int = 0
    rss_kb: int = 0
    pss_kb: int = 0
    private_kb: int = 0
    machine_kb: int = 0


class Sampler:
    """Samples a process tree (at its largest PSS) and the machine (at its peak)."""

    def __init__(self, root: int | None = None, every_s: float = 1.0) -> None:
        self.root = root or os.getpid()
        self.every_s = every_s
        self.peak = Peak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        pids = descendants(self.root)
        totals = rollup(pids)
        if totals["Pss"] > self.peak.pss_kb:
            self.peak.processes, self.peak.rss_kb = len(pids), totals["Rss"]
            self.peak.pss_kb, self.peak.private_kb = totals["Pss"], totals["Private"]
        self.peak.machine_kb = max(self.peak.machine_kb, machine_used_kb())

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def mb(kb: int) -> str:
    return f"{kb / 1024:,.0f} MB"
