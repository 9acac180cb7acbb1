"""PNG plots of benchmark records, like the reference figures (needs matplotlib)."""

from __future__ import annotations

import os
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
    """Time vs payload size (log-log) per arm, with the speed-up over plain below."""
    plt = _pyplot()
    series = sorted({(r.kind, r.mode) for r in records})
    arms = list(dict.fromkeys(r.arm for r in records))
    fig, axes = plt.subplots(2, len(series), figsize=(4.5 * len(series), 6.5), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for col, (kind, mode) in enumerate(series):
        chosen = [r for r in records if (r.kind, r.mode) == (kind, mode)]
        sizes = sorted({r.nbytes for r in chosen})
        medians: dict[str, list[float]] = {}
        for index, arm in enumerate(arms):
            stats = [quantiles([r.elapsed for r in chosen if r.arm == arm and r.nbytes == n])
                     for n in sizes]
            med = [s[1] * 1e3 for s in stats]
            low = [(s[1] - s[0]) * 1e3 for s in stats]
            high = [(s[2] - s[1]) * 1e3 for s in stats]
            medians[arm] = med
            axes[0][col].errorbar(sizes, med, yerr=[low, high], marker="o", capsize=3, label=arm,
                                  color=f"C{index}")
        axes[0][col].set(xscale="log", yscale="log", title=f"{kind}, {mode} output",
                         ylabel="round trip (ms)")
        axes[0][col].grid(True, which="both", alpha=0.3)
        for index, arm in enumerate(arms[1:], start=1):
            ratio = [b / m for b, m in zip(medians[arms[0]], medians[arm])]
            axes[1][col].plot(sizes, ratio, marker="o", label=arm, color=f"C{index}")
        axes[1][col].axhline(1.0, color="grey", linewidth=1)
        axes[1][col].set(xscale="log", xlabel="payload (bytes)",
                         ylabel=f"speed-up over {arms[0]}")
        axes[1][col].set_xticks(sizes, [human_size(n) for n in sizes])
        axes[1][col].grid(True, alpha=0.3)
    axes[0][0].legend()
    return _save(fig, plt, path, title)


def throughput(records: list[Record], path: str, title: str) -> str:
    """Tasks per second, one bar group per (worker count, task size)."""
    plt = _pyplot()
    arms = list(dict.fromkeys(r.arm for r in records))
    groups = sorted({(r.workers, r.nbytes) for r in records})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(groups) + 2), 4))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        rates = [_rate([r for r in records if r.arm == arm and (r.workers, r.nbytes) == g])
                 for g in groups]
        ax.bar([x + (i - (len(arms) - 1) / 2) * width for x in range(len(groups))], rates,
               width, label=arm)
    ax.set_xticks(range(len(groups)), [f"{w} worker(s)\n{human_size(n)}" for w, n in groups])
    ax.set(ylabel="tasks/s")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, plt, path, title)


def _rate(records: list[Record]) -> float:
    from pxexec.bench.throughput import tasks_per_second

    if not records or any(r.failed for r in records):
        return float("nan")
    return tasks_per_second(records)


def makespan(records: list[Record], path: str, title: str) -> str:
    """Makespan per arm (median with p10-p90), the speed-up over plain on each bar."""
    plt = _pyplot()
    from pxexec.bench.apps import makespans

    by_arm = makespans(records)
    arms = list(by_arm)
    stats = [quantiles(by_arm[a]) for a in arms]
    fig, ax = plt.subplots(figsize=(1.6 * len(arms) + 2, 4))
    med = [s[1] for s in stats]
    bars = ax.bar(arms, med, yerr=[[s[1] - s[0] for s in stats], [s[2] - s[1] for s in stats]],
                  capsize=4, color=[f"C{i}" for i in range(len(arms))])
    for bar, value in zip(bars, med):
        if value != value:  # NaN: the arm failed
            ax.annotate("failed", (bar.get_x() + bar.get_width() / 2, 0), ha="center",
                        va="bottom")
            continue
        ax.annotate(f"{med[0] / value:.2f}x", (bar.get_x() + bar.get_width() / 2, value),
                    ha="center", va="bottom")
    ax.set(ylabel="makespan (s)")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, plt, path, title)


def _save(fig: Any, plt: Any, path: str, title: str) -> str:
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
