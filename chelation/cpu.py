"""What this machine's CPU is and whether it computes in bfloat16 natively: read once per process
from the operating system, no model or torch import needed."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# CPU feature flags that carry bfloat16 arithmetic in hardware (x86: AVX-512 BF16, AMX; Arm: BF16)
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# "0" or "1" overrides the detection (a machine whose flags lie, or a test of the other case)
BF16_ENV = "CHELATION_CPU_BF16"
_CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        text = _CPUINFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    """The CPU model and the number of logical CPUs this process may use, e.g.
    'Intel(R) Xeon(R) Processor x2': what a timing measured here is valid for."""
    info = _cpuinfo()
    name = info.get("model name") or info.get("Model") or platform.processor() \
        or platform.machine() or "unknown"
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} x{count}"


def native_bfloat16() -> bool:
    """Whether the CPU has bfloat16 arithmetic in hardware; without it, torch emulates bfloat16
    and CPU autocast is several times slower than float32. `CHELATION_CPU_BF16=0|1` overrides."""
    forced = os.environ.get(BF16_ENV)
    if forced is not None and forced.strip() != "":
        return forced.strip() not in ("0", "false", "no")
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return bool(flags & NATIVE_BF16_FLAGS)
