"""The hardware / software line every report carries, and the machine's concurrent load."""
from __future__ import annotations

import os
import platform
from datetime import date

import torch

from .. import __version__


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_identity(device: str = "cpu") -> str:
    """The machine line without the date: two timings are comparable only when this is identical. `device`: where
    the timed work ran (a GPU is named by its model)."""
    where = torch.device(device)
    named = "cpu" if where.type == "cpu" else f"{where.type} {torch.cuda.get_device_name(where)}"
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"device {named}, Python {platform.python_version()}, recunlearn {__version__}")


def machine_line(device: str = "cpu") -> str:
    return f"{machine_identity(device)}, {date.today().isoformat()}"


def load_average() -> float:
    """The 1-minute load average: how busy the machine was (the harness's own process counts too)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:   # not available on this platform
        return float("nan")


def versions() -> dict:
    return {"recunlearn": __version__, "torch": torch.__version__, "python": platform.python_version()}
