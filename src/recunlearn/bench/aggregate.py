"""Result lines grouped for the report's tables and plots: one group per (suite, dataset, backbone, request),
means and spreads over seeds, and the noise floor of each group.

Spreads are sample standard deviations (ddof = 1) over the seeds. When the results hold several runs of the
same unit (a rerun after a code change, or an older file named beside a newer one), the newest line by date is
the one used, whatever the order of the files, and the report counts the lines it set aside.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

BATCH_ROLES = ("original", "reference", "method")
# A forgetting target "within X of Retrain" (evaluation.md): X, unless the retrains differ more among
# themselves (the noise floor).
TARGET_GAP = 0.02


@dataclass
class Group:
    suite: str
    dataset: str
    backbone: str
    request: str
    rows: list[dict]            # batch rows: the original, the reference and the methods, every seed
    retrains: list[dict]        # the noise-floor retrains

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.backbone} / {self.request}"


@dataclass
class StreamGroup:
    suite: str
    dataset: str
    backbone: str
    request: str
    parts: int
    rows: list[dict]

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.backbone} / {self.request}, stream of {self.parts}"


def unit_identity(row: dict) -> tuple:
    return (row["suite"], row["role"], row["dataset"], row["backbone"], row["request"], row["seed"],
            row["method"], row.get("retrain_seed"), (row.get("stream") or {}).get("parts"))


def latest(rows: list[dict]) -> list[dict]:
    """One line per unit identity (the newest by date; of equal dates, the last one read), in the order of
    first appearance."""
    keyed: dict[tuple, dict] = {}
    for row in rows:
        if row.get("schema") is None:   # not a harness line (older free-form records)
            continue
        key = unit_identity(row)
        if key not in keyed or str(row.get("date") or "") >= str(keyed[key].get("date") or ""):
            keyed[key] = row
    return list(keyed.values())


def superseded(rows: list[dict]) -> list[dict]:
    """The harness lines that `latest` sets aside: older runs of a unit that a newer line replaces."""
    kept = {id(row) for row in latest(rows)}
    return [row for row in rows if row.get("schema") is not None and id(row) not in kept]


def groups(rows: list[dict]) -> list[Group]:
    out: dict[tuple, Group] = {}
    for row in latest(rows):
        if row["role"] not in (*BATCH_ROLES, "noise_floor"):
            continue
        key = (row["suite"], row["dataset"], row["backbone"], row["request"])
        group = out.setdefault(key, Group(*key, [], []))
        (group.retrains if row["role"] == "noise_floor" else group.rows).append(row)
    return list(out.values())


def stream_groups(rows: list[dict]) -> list[StreamGroup]:
    out: dict[tuple, StreamGroup] = {}
    for row in latest(rows):
        if row["role"] == "stream":
            key = (row["suite"], row["dataset"], row["backbone"], row["request"], row["stream"]["parts"])
            out.setdefault(key, StreamGroup(*key, [])).rows.append(row)
    return list(out.values())


def methods(rows: list[dict]) -> list[str]:
    """Method labels: the original, then Retrain, then the others in the order they ran."""
    labels = list(dict.fromkeys(row["method"] for row in rows))
    first = [label for label in ("original", "retrain") if label in labels]
    return first + [label for label in labels if label not in first]


def by_method(rows: list[dict], label: str) -> list[dict]:
    return [row for row in rows if row["method"] == label]


def values(rows: list[dict], key: str, section: str = "metrics") -> np.ndarray:
    found = [row[section].get(key) for row in rows if row.get(section)]
    return np.array([v for v in found if v is not None], dtype=float)


def mean_std(rows: list[dict], key: str, section: str = "metrics") -> tuple[float, float, int]:
    """(mean, sample std, count) of a metric over rows (seeds); NaN when absent."""
    found = values(rows, key, section)
    found = found[np.isfinite(found)]
    if found.size == 0:
        return float("nan"), float("nan"), 0
    return float(found.mean()), float(found.std(ddof=1)) if found.size > 1 else float("nan"), int(found.size)


def noise_floor(group: Group) -> dict | None:
    """The spread between independent retrains on the same residual (evaluation.md rule 2): the largest
    |MIA AUC(retrain a) − MIA AUC(retrain b)| and the sample std of Recall@20; also the largest forget-rank
    difference and the lowest top-20 Jaccard of a retrain against the reference."""
    retrains = floor_retrains(group.retrains)
    if len(retrains) < 2:
        return None
    # a request without edges (a modality constraint) has utility only: its forgetting floors are NaN
    mia = [row["metrics"].get("mia_auc", float("nan")) for row in retrains]
    ranks = [row["metrics"].get("forget_rank_pct", float("nan")) for row in retrains]
    jaccard = [row["metrics"]["jaccard@20_vs_retrain"] for row in retrains
               if row["retrain_seed"] != row["reference_seed"] and "jaccard@20_vs_retrain" in row["metrics"]]
    return {"retrains": len(retrains), "seeds": sorted(row["retrain_seed"] for row in retrains),
            "request_seed": retrains[0]["seed"], "mia_auc": max_pairwise_gap(mia),
            "Recall@20_std": float(np.std([row["metrics"]["Recall@20"] for row in retrains], ddof=1)),
            "forget_rank": max_pairwise_gap(ranks), "jaccard": min(jaccard) if jaccard else float("nan")}


def floor_retrains(retrains: list[dict]) -> list[dict]:
    """The retrains of one request: the floor compares retrains of the same residual, so when the results
    hold floor retrains of several request seeds, those of the seed with the most (the lowest seed on a tie)."""
    by_seed: dict[int, list[dict]] = {}
    for row in retrains:
        by_seed.setdefault(row["seed"], []).append(row)
    return max(sorted(by_seed.items()), key=lambda item: len(item[1]), default=(None, []))[1]


def max_pairwise_gap(numbers: list) -> float:
    """The largest |a − b| over pairs of the measured values (None and NaN, a measure a row lacks, left out)."""
    found = [float(n) for n in numbers if n is not None and np.isfinite(n)]
    return max((abs(a - b) for a, b in itertools.combinations(found, 2)), default=float("nan"))


def tolerance(floor: float | None) -> float:
    """What "within X of Retrain" means: max(X, noise floor)."""
    return max(TARGET_GAP, floor) if floor is not None and np.isfinite(floor) else TARGET_GAP


def passes(rows: list[dict], floor: dict | None) -> dict[str, bool]:
    """Which forgetting measures the mean over `rows` meets, by the thresholds the report uses."""
    floor = floor or {}
    mia, _, _ = mean_std(rows, "mia_auc_gap")
    learned, _, _ = mean_std(rows, "mia_learned_auc_gap")
    over, _, _ = mean_std(rows, "over_forgetting")
    jaccard, _, _ = mean_std(rows, "jaccard@20_vs_retrain")
    return {"mia_auc_gap": abs(mia) <= tolerance(floor.get("mia_auc")),
            "mia_learned_auc_gap": abs(learned) <= tolerance(floor.get("mia_auc")),
            "over_forgetting": abs(over) <= tolerance(floor.get("forget_rank")),
            "jaccard@20_vs_retrain": bool(np.isfinite(floor.get("jaccard", np.nan)) and jaccard >= floor["jaccard"])}
