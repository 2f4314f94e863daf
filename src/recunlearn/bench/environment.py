"""The hardware / software line every report carries."""
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


def machine_line() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"device cpu, Python {platform.python_version()}, recunlearn {__version__}, {date.today().isoformat()}")


def versions() -> dict:
    return {"recunlearn": __version__, "torch": torch.__version__, "python": platform.python_version()}
