"""What the coordinate check's widest model needs in memory, and what the machine has free: a check sized from
`model.base_width` (base_width x 1, 2, 4, 8) can ask for tens of GB, and is refused before anything is allocated.

The need is a lower bound, from the parameter count alone: each parameter's fp32 weight and gradient and the
optimizer's state (Adam's two moments, SGD's momentum). Activations, the probe's copies of every layer's output and
the allocator's slack come on top, so a model refused here could not have trained; one let through may still not
fit, and then fails as it would have anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

# Bytes per parameter: fp32 weight + gradient (8), plus the optimizer's state per parameter.
BYTES_PER_PARAM = {"adam": 16, "adamw": 16, "sgd": 12}


def needed_bytes(params: int, optimizer: str) -> int:
    """The lower bound above for a model of `params` parameters trained with `optimizer`."""
    return params * BYTES_PER_PARAM.get(optimizer, 16)


def free_bytes(device: str) -> int | None:
    """Memory free for a new model on `device` ("cuda" or "cpu"); None where it cannot be told."""
    if device.startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info()[0])
        except (RuntimeError, AssertionError, ValueError):  # no CUDA build, no device: cannot tell
            return None
    known = [v for v in (_meminfo_available(), _cgroup_free()) if v is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    """Linux's estimate of the memory available to a new process without swapping."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # elsewhere (macOS, BSD): the free pages, where sysconf has them
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_free() -> int | None:
    """A container's (or Slurm job's) limit less its use: /proc/meminfo shows the whole host's memory."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max", or v1's huge number: no limit
            return max(0, int(limit) - usage)
    return None


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB"
