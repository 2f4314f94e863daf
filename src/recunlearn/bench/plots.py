"""The report's PNG plots (matplotlib, Agg backend: no display needed), one panel per table.

- utility_vs_time.png: Recall@20 relative to Retrain against unlearn seconds (log scale), per method.
- mia_gap.png: the MIA AUC gap to Retrain per method, with the noise-floor band and the ±0.02 target.
- stream_utility.png: Recall@20 relative to Retrain along each sequential stream.
- total_cost.png: seconds to honour n requests, prepare + n × request against n × retrain.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from .aggregate import TARGET_GAP, Group, StreamGroup, by_method, mean_std, methods, noise_floor  # noqa: E402

REQUESTS = np.unique(np.geomspace(1, 1000, 60).round())


def write_plots(batch: list[Group], streams: list[StreamGroup], out: Path) -> list[Path]:
    written = []
    if batch:
        written += [_save(_panels(batch, utility_vs_time), out / "utility_vs_time.png"),
                    _save(_panels(batch, mia_gap), out / "mia_gap.png"),
                    _save(_panels(batch, total_cost), out / "total_cost.png")]
    if streams:
        written.append(_save(_panels(streams, stream_utility), out / "stream_utility.png"))
    return written


def utility_vs_time(ax, group: Group) -> None:
    for label in methods(group.rows):
        rows = by_method(group.rows, label)
        if rows[0]["role"] == "original":
            continue
        x, _, _ = mean_std(rows, "unlearn", "timings")
        y, dy, _ = mean_std(rows, "Recall@20_vs_retrain")
        if math.isfinite(x) and x > 0 and math.isfinite(y):
            ax.errorbar([x], [y], yerr=[0 if math.isnan(dy) else dy], marker="o", capsize=3, label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("unlearn seconds (log)")
    ax.set_ylabel("Recall@20 / Retrain")


def mia_gap(ax, group: Group) -> None:
    labels = [label for label in methods(group.rows)]
    stats = [mean_std(by_method(group.rows, label), "mia_auc_gap")[:2] for label in labels]
    ax.bar(range(len(labels)), [m for m, _ in stats], yerr=[0 if math.isnan(s) else s for _, s in stats],
           capsize=3, color="tab:blue")
    floor = noise_floor(group)
    if floor is not None:
        ax.axhspan(-floor["mia_auc"], floor["mia_auc"], color="tab:orange", alpha=0.25, label="noise floor")
    for level in (-TARGET_GAP, TARGET_GAP):
        ax.axhline(level, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("MIA AUC − Retrain's")


def total_cost(ax, group: Group) -> None:
    retrain, _, _ = mean_std(by_method(group.rows, "retrain"), "unlearn", "timings")
    if math.isfinite(retrain):
        ax.plot(REQUESTS, REQUESTS * retrain, color="black", label="retrain")
    for label in methods(group.rows):
        rows = by_method(group.rows, label)
        if rows[0]["role"] != "method":
            continue
        prepare, _, _ = mean_std(rows, "prepare", "timings")
        request, _, _ = mean_std(rows, "unlearn", "timings")
        if math.isfinite(prepare) and math.isfinite(request):
            ax.plot(REQUESTS, prepare + REQUESTS * request, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("requests")
    ax.set_ylabel("total seconds")


def stream_utility(ax, group: StreamGroup) -> None:
    for label in methods(group.rows):
        rows = by_method(group.rows, label)
        if label == "retrain":
            continue
        steps = [mark["step"] for mark in rows[0]["stream"]["checkpoints"]]
        ratios = [np.nanmean([_number(row["stream"]["checkpoints"][k]["metrics"].get("Recall@20_vs_retrain"))
                              for row in rows]) for k in range(len(steps))]
        ax.plot(steps, ratios, marker="o", label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(f"requests applied (of {group.parts})")
    ax.set_ylabel("Recall@20 / Retrain")


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _panels(groups: list, draw) -> plt.Figure:
    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False)
    for ax, group in zip(axes.flat, groups):
        draw(ax, group)
        ax.set_title(group.title, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    figure.tight_layout()
    return figure


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
