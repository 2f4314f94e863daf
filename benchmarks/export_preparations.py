"""What each cached UnlearnRec preparation decided, as JSON lines: when it was prepared, its pre-training length,
the epoch that selection kept (with every check of the held-out probe) and the calibrated withdraw strength.

Result rows of the harness carry the same summary as `prepare_report`; this reads it back from the cache of
prepared states for rows recorded before they did, or for the full check history:

    .venv/bin/python benchmarks/export_preparations.py --since 2026-12-02T14:59 --out PATH.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recunlearn.bench.prepared import PROVENANCE_FILE
from recunlearn.train.cache import cache_root
from recunlearn.unlearn.base import STATE_FILE
from recunlearn.unlearn.unlearnrec.io import ENCODER_META


def preparations(root: Path, since: str):
    for path in sorted((root / "prepared").glob("unlearnrec-*")):
        if not (path / PROVENANCE_FILE).is_file():   # written last: an entry without it is incomplete
            continue
        provenance = json.loads((path / PROVENANCE_FILE).read_text())
        if provenance["date"] < since:
            continue
        config = json.loads((path / STATE_FILE).read_text())["config"]
        meta = json.loads((path / ENCODER_META).read_text())
        yield {"prepared": path.name, "date": provenance["date"], "seconds": provenance["seconds"],
               "load": provenance["load"], "machine": provenance["machine"], "epochs": config["epochs"],
               "selected_epoch": meta["pretraining"]["selected"]["epoch"], "checks": meta["pretraining"]["history"],
               "calibration": meta["calibration"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=None, help="the model cache (default: $RECUNLEARN_CACHE or ~/.cache/...)")
    parser.add_argument("--since", default="", help="only preparations stored at or after this ISO date-time (UTC)")
    parser.add_argument("--out", default=None, help="JSON lines file to write (default: standard output)")
    args = parser.parse_args()
    rows = sorted(preparations(cache_root(args.cache), args.since), key=lambda row: row["date"])
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
