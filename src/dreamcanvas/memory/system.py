"""The memory a run may use: what a new allocation can get now, and the machine's physical memory.

The kernel's ``MemAvailable`` (``MemFree + Cached`` on kernels before 3.14), or the headroom of the process's
cgroup when that is lower (v2 and v1, any limited level above the process); free physical pages from
``sysconf`` where there is no /proc. Only small files under /proc and /sys/fs/cgroup are read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_NO_LIMIT = 1 << 60
"""cgroup v1 writes "no limit" as a page-rounded 2**63 - 1."""


def available_memory() -> int:
    """Bytes a new allocation can get now: the kernel's MemAvailable, or the cgroup's headroom if lower.

    A container's limit is what its out-of-memory killer enforces, whatever the host has free. The cgroup's
    own page cache (inactive files) counts as free, as MemAvailable counts it.
    """
    candidates = [size for size in (_meminfo_available(), *_cgroup_headroom()) if size is not None]
    if not candidates:
        candidates = [_sysconf_available()]
    return max(1, min(candidates))


def total_memory() -> int:
    """Physical memory in bytes (MemTotal), for messages and sanity checks."""
    value = _read_meminfo().get("MemTotal")
    if value is not None:
        return value
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _sysconf_available()


def _read_meminfo() -> dict[str, int]:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[name] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return values


def _meminfo_available() -> int | None:
    values = _read_meminfo()
    if "MemAvailable" in values:
        return values["MemAvailable"]
    if "MemFree" in values:  # kernels before 3.14
        return values["MemFree"] + values.get("Cached", 0)
    return None


def _sysconf_available() -> int:
    """Free physical pages where there is no /proc (macOS has no SC_AVPHYS_PAGES: then a quarter of RAM)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 10**9


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, names: Iterable[str]) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    stats = dict(line.split(maxsplit=1) for line in lines if " " in line)
    return next((int(stats[name]) for name in names if stats.get(name, "").strip().isdigit()), 0)


def _cgroup_folders(mount: Path, inner: str) -> list[Path]:
    """This process's cgroup folder and its ancestors up to the mount (a limit anywhere above applies too).

    Inside a container the mount often is the process's own cgroup already, named differently in
    /proc/self/cgroup; then only the mount itself exists.
    """
    folder = mount / inner.lstrip("/")
    if not folder.is_dir():
        return [mount] if mount.is_dir() else []
    chain = [folder]
    while folder != mount and mount in folder.parents:
        folder = folder.parent
        chain.append(folder)
    return chain


def _cgroup_headroom(cgroup_file: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> list[int]:
    """``limit - (usage - inactive page cache)`` of every limited cgroup level above this process, v2 and v1."""
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return []
    headrooms = []
    for line in lines:
        _, controllers, inner = [*line.split(":", 2), "", ""][:3]
        if controllers == "":  # cgroup v2, unified hierarchy
            files, mount = ("memory.max", "memory.current", ["inactive_file"]), root
        elif "memory" in controllers.split(","):  # cgroup v1
            files, mount = ("memory.limit_in_bytes", "memory.usage_in_bytes", ["total_inactive_file"]), root / "memory"
        else:
            continue
        limit_name, usage_name, cache_names = files
        for folder in _cgroup_folders(mount, inner):
            limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
            if limit is not None and usage is not None and limit < _NO_LIMIT:
                cache = _stat_value(folder / "memory.stat", cache_names)
                headrooms.append(max(limit - usage + cache, 0))
    return headrooms
