"""The training and rules reports as PNG and JSON; needs only matplotlib (analyze_debug runs it on laptops)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import atomic

TRAINING_REPORT = "training_report"
RULES_REPORT = "rules_report"


def load_pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display in a training container
    from matplotlib import pyplot

    return pyplot


def confused_pairs(confusion: Sequence[Sequence[int]], labels: Sequence[str], top: int = 10) -> list[dict]:
    """The ``top`` most frequent mistakes, from a [true][predicted] count matrix."""
    mistakes = [(count, true, predicted) for true, row in enumerate(confusion)
                for predicted, count in enumerate(row) if count and true != predicted]
    mistakes.sort(key=lambda m: (-m[0], m[1], m[2]))
    return [{"true": labels[true], "predicted": labels[predicted], "count": count, "of": sum(confusion[true]),
             "rate": count / sum(confusion[true])} for count, true, predicted in mistakes[:top]]


def plot_steps(axes, losses: Mapping[str, tuple[Sequence[float], Sequence[float]]],
               gradients: Mapping[str, tuple[Sequence[float], Sequence[float]]],
               firings: Sequence[dict] = ()) -> None:
    """Loss by step on ``axes[0]``, gradient magnitudes on ``axes[1]``; each rule's first firing as a dashed line."""
    loss_ax, grad_ax = axes
    for label, (steps, values) in losses.items():
        loss_ax.plot(steps, values, label=label)
    for label, (steps, values) in gradients.items():
        grad_ax.plot(steps, values, label=label)
    grad_ax.set_yscale("log")
    for firing in {f["rule"]: f for f in reversed(firings)}.values():  # each rule's first firing
        for ax in axes:
            ax.axvline(firing["step"], linestyle="--", color="tab:red", alpha=0.7)
        loss_ax.annotate(firing["rule"], (firing["step"], 0.95), xycoords=("data", "axes fraction"),
                         rotation=90, va="top", ha="right", color="tab:red", fontsize=8)
    for ax, title in ((loss_ax, "loss"), (grad_ax, "gradient mean |value|")):
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=8)


def save(figure, path: Path) -> Path:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    load_pyplot().close(figure)
    atomic.write_bytes(path, buffer.getvalue(), durable=False)
    return path


def write_training_report(directory: Path, history: Sequence[dict], pairs: Sequence[dict], split: str) -> Path:
    """Per-epoch loss and accuracy, and the most-confused pairs of ``split``; returns the PNG."""
    atomic.write_json(directory / f"{TRAINING_REPORT}.json",
                      {"history": list(history), "confused_pairs": {"split": split, "pairs": list(pairs)}})
    figure, (loss_ax, acc_ax, pair_ax) = load_pyplot().subplots(1, 3, figsize=(16, 4.5))
    epochs = [r["epoch"] for r in history]
    for name in ("train", "valid"):
        rows = [(r["epoch"], r[name]) for r in history if name in r]
        if rows:
            loss_ax.plot([e for e, _ in rows], [m["loss"] for _, m in rows], marker="o", label=name)
            acc_ax.plot([e for e, _ in rows], [m["accuracy"] for _, m in rows], marker="o", label=name)
    loss_ax.set_yscale("log")
    for ax, title in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs)
        ax.legend()
    names = [f"{p['true']} → {p['predicted']}" for p in reversed(pairs)]
    pair_ax.barh(names, [p["count"] for p in reversed(pairs)], color="tab:orange")
    pair_ax.set_title(f"most-confused pairs ({split}: true → predicted)")
    pair_ax.set_xlabel("images")
    pair_ax.xaxis.get_major_locator().set_params(integer=True)
    pair_ax.tick_params(axis="y", labelsize=8)
    return save(figure, directory / f"{TRAINING_REPORT}.png")


def write_rules_report(directory: Path, report: dict) -> Path:
    """The in-training rules' outcomes and the series they judged; returns the PNG."""
    atomic.write_json(directory / f"{RULES_REPORT}.json", report)
    series = report["series"]
    figure, axes = load_pyplot().subplots(1, 2, figsize=(12, 4.5))
    plot_steps(
        axes,
        {f"train (mean per {report['interval_steps']} steps)": (series["step"], series["loss"])},
        {"smallest": (series["step"], series["grad_min"]), "largest": (series["step"], series["grad_max"])},
        report["firings"],
    )
    outcome = ", ".join(f"{name}: {'FIRED' if r['fired'] else 'ok'}" for name, r in report["rules"].items())
    figure.suptitle(f"rules ({report['action']}): {outcome}", fontsize=10)
    return save(figure, directory / f"{RULES_REPORT}.png")
