"""PNG plots of benchmark records, like the reference figures (needs matplotlib)."""

from __future__ import annotations

import os
import textwrap
from typing import Any

from pxexec.bench.common import Record, human_size, quantiles
from pxexec.errors import MissingDependencyError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "bench", "benchmark plots") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(records: list[Record], path: str, title: str) -> str:
    """Draw the figure that suits the records' workload; return the file written."""
    workload = records[0].workload
    if workload == "roundtrip":
        return roundtrip(records, path, title)
    if workload == "throughput":
        return throughput(records, path, title)
    return makespan(records, path, title)


def roundtrip(records: list[Record], path: str, title: str) -> str:
    """Time vs payload size (log-log) per arm, with the speed-up over plain below.

    Points are medians, error bars p10-p90; a point an arm failed is drawn as a red
    cross on the top edge, labelled "failed".
    """
    plt = _pyplot()
    series = sorted({(r.kind, r.mode) for r in records})
    arms = list(dict.fromkeys(r.arm for r in records))
    fig, axes = plt.subplots(2, len(series), figsize=(max(6.5, 4.5 * len(series)), 6.5),
                             squeeze=False, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    reps = 0
    for col, (kind, mode) in enumerate(series):
        chosen = [r for r in records if (r.kind, r.mode) == (kind, mode)]
        sizes = sorted({r.nbytes for r in chosen})
        medians: dict[str, list[float]] = {}
        top = axes[0][col]
        for index, arm in enumerate(arms):
            times = [[r.elapsed for r in chosen if r.arm == arm and r.nbytes == n
                      and not r.failed] for n in sizes]
            reps = max([reps, *(len(t) for t in times)])
            stats = [quantiles(t) for t in times]
            med = [s[1] * 1e3 for s in stats]
            low = [(s[1] - s[0]) * 1e3 for s in stats]
            high = [(s[2] - s[1]) * 1e3 for s in stats]
            medians[arm] = med
            top.errorbar(sizes, med, yerr=[low, high], marker="o", capsize=3, label=arm,
                         color=f"C{index}")
            failed = [n for n, t, in zip(sizes, times)
                      if not t and any(r.arm == arm and r.nbytes == n for r in chosen)]
            for n in failed:
                top.annotate(f"{arm}\nfailed", (n, 1.0), xycoords=("data", "axes fraction"),
                             ha="center", va="top", color="red", fontsize=8)
                top.plot([n], [1.0], marker="x", color="red", markersize=9,
                         transform=top.get_xaxis_transform(), clip_on=False)
        top.set(xscale="log", yscale="log", title=f"{kind}, {mode} output",
                ylabel="round trip (ms)")
        top.grid(True, which="both", alpha=0.3)
        bottom = axes[1][col]
        for index, arm in enumerate(arms[1:], start=1):
            ratio = [b / m for b, m in zip(medians[arms[0]], medians[arm])]
            bottom.plot(sizes, ratio, marker="o", label=arm, color=f"C{index}")
        bottom.axhline(1.0, color="grey", linewidth=1)
        bottom.set(xscale="log", xlabel="payload size", ylabel=f"speed-up over {arms[0]}")
        bottom.set_xticks(sizes, [human_size(n) for n in sizes])
        bottom.minorticks_off()
        bottom.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, plt, path, title,
                 f"Points: median of {reps} trip(s); error bars: p10-p90 (10th to 90th "
                 "percentile). Below: plain's median divided by the arm's (higher is faster).")


def throughput(records: list[Record], path: str, title: str) -> str:
    """Tasks per second, one bar group per (worker count, task size).

    Bars: tasks/s over all blocks; error bars: the p10-p90 of the per-block rates.
    """
    from pxexec.bench.throughput import tasks_per_second

    plt = _pyplot()
    arms = list(dict.fromkeys(r.arm for r in records))
    groups = sorted({(r.workers, r.nbytes) for r in records})
    fig, ax = plt.subplots(figsize=(max(6.5, 1.4 * len(groups) * len(arms) / 2 + 3), 4.5))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        xs = [x + (i - (len(arms) - 1) / 2) * width for x in range(len(groups))]
        chosen = [[r for r in records if r.arm == arm and (r.workers, r.nbytes) == g]
                  for g in groups]
        rates = [_rate(c) for c in chosen]
        spreads = [quantiles([tasks_per_second([r for r in c if r.rep == b])
                              for b in sorted({r.rep for r in c})]) if c and rate == rate
                   else (float("nan"),) * 3 for c, rate in zip(chosen, rates)]
        low = [max(0.0, rate - s[0]) if rate == rate else 0.0 for rate, s in zip(rates, spreads)]
        high = [max(0.0, s[2] - rate) if rate == rate else 0.0 for rate, s in zip(rates, spreads)]
        ax.bar(xs, [rate if rate == rate else 0.0 for rate in rates], width, label=arm,
               yerr=[low, high], capsize=3, color=f"C{i}")
        for x, rate, c in zip(xs, rates, chosen):
            if c and rate != rate:
                ax.annotate("failed", (x, 0), ha="center", va="bottom", color="red",
                            rotation=90, fontsize=8)
    ax.set_xticks(range(len(groups)),
                  [f"{w} worker(s)\n{human_size(n)} tasks" for w, n in groups])
    ax.set(ylabel="tasks/s")
    ax.margins(y=0.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="arm")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, plt, path, title,
                 "Bars: tasks per second over all blocks; error bars: p10-p90 of the "
                 "per-block rates.")


def _rate(records: list[Record]) -> float:
    from pxexec.bench.throughput import tasks_per_second

    if not records or any(r.failed for r in records):
        return float("nan")
    return tasks_per_second(records)


def makespan(records: list[Record], path: str, title: str) -> str:
    """Makespan per arm (median with p10-p90), the speed-up over plain above each bar."""
    plt = _pyplot()
    from pxexec.bench.apps import makespans

    by_arm = makespans(records)
    arms = list(by_arm)
    stats = [quantiles(by_arm[a]) for a in arms]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(arms) + 2), 4.5))
    med = [s[1] for s in stats]
    heights = [m if m == m else 0.0 for m in med]
    errors = [[s[1] - s[0] if s[1] == s[1] else 0.0 for s in stats],
              [s[2] - s[1] if s[1] == s[1] else 0.0 for s in stats]]
    bars = ax.bar(arms, heights, yerr=errors, capsize=4,
                  color=[f"C{i}" for i in range(len(arms))])
    for index, (bar, value, (_, _, p90)) in enumerate(zip(bars, med, stats)):
        x = bar.get_x() + bar.get_width() / 2
        if value != value:  # NaN: the arm failed
            ax.annotate("failed", (x, 0), ha="center", va="bottom", color="red")
            continue
        label = arms[0] if index == 0 else f"{med[0] / value:.2f}x"
        ax.annotate(label, (x, p90), xytext=(0, 4), textcoords="offset points",
                    ha="center", va="bottom", fontsize=9)  # above the error cap
    ax.set(ylabel="makespan (s)")
    ax.margins(y=0.15)
    ax.grid(True, axis="y", alpha=0.3)
    runs = max((len(v) for v in by_arm.values()), default=0)
    return _save(fig, plt, path, title,
                 f"Bars: median makespan of {runs} run(s); error bars: p10-p90; "
                 "labels: speed-up over plain (its median divided by the arm's).")


def _save(fig: Any, plt: Any, path: str, title: str, caption: str) -> str:
    width = fig.get_size_inches()[0]
    chars = max(40, int(width * 11))  # about 11 characters of a 12 pt title per inch
    fig.suptitle(textwrap.fill(title, chars), fontsize=12)
    fig.text(0.5, 0.005, textwrap.fill(caption, int(width * 14)), ha="center", va="bottom",
             fontsize=8, color="dimgrey")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # nothing clipped at the edges
    plt.close(fig)
    return path
