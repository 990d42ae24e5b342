"""Figures for a `Comparison` or a `Gallery`, as matplotlib `Figure` objects.

Figures are built with `matplotlib.figure.Figure` directly, never `pyplot`: pyplot keeps every figure in a
global registry until it is closed, which leaks memory in a long-running app, and it needs a GUI backend.
Save one with `figure.savefig("timing.png")`; Gradio's `gr.Plot` takes it as it is.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .compare import Comparison, Gallery

STAGE_COLOURS = {"load": "#9e9e9e", "frontend": "#4c72b0", "encoder": "#dd8452", "decoder": "#55a868"}


def timing_figure(comparison: Comparison) -> Figure:
    """One horizontal bar per model, stacked by stage, in milliseconds."""
    fig = Figure(figsize=(7, 2.6), layout="constrained")
    ax = fig.add_subplot()
    runs = (comparison.student, comparison.teacher)  # teacher on top: it is the long bar people look for
    labels = [f"{run.role}\n{_count(run.parameters)} params" for run in runs]
    left = np.zeros(len(runs))
    for stage, colour in STAGE_COLOURS.items():
        widths = np.array([run.seconds.get(stage, 0.0) * 1000 for run in runs])
        ax.barh(labels, widths, left=left, color=colour, label=stage)
        left += widths
    for y, (run, end) in enumerate(zip(runs, left)):
        ax.text(end, y, f" {run.seconds['total'] * 1000:.0f} ms", va="center", fontsize=9)
    ax.set_xlim(0, left.max() * 1.2)
    ax.set_xlabel("wall time (ms); load is shared, total counts the model stages")
    pace = (f"{comparison.speedup:.1f}x faster" if comparison.speedup >= 1
            else f"{1 / comparison.speedup:.1f}x slower")
    ax.set_title(f"student {pace} than the teacher on {comparison.duration:.1f} s of audio")
    fig.legend(loc="outside lower center", fontsize=8, ncols=len(STAGE_COLOURS))
    return fig


def similarity_figure(comparison: Comparison) -> Figure:
    """Frame-by-frame cosine of the two encoders in the KD space (heatmap), and along time (curve)."""
    fig = Figure(figsize=(7, 6), layout="constrained")
    heat_ax, curve_ax = fig.subplots(2, 1, height_ratios=(3, 1.4))
    d = comparison.duration
    image = heat_ax.imshow(comparison.frame_cosine, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-1, vmax=1,
                           extent=(0, d, 0, d), interpolation="nearest")
    fig.colorbar(image, ax=heat_ax, label="cosine")
    heat_ax.set_xlabel("teacher frame time (s)")
    heat_ax.set_ylabel("student frame time (s)")
    heat_ax.set_title(f"encoder embeddings in the distillation space: clip cosine {comparison.clip_cosine:.2f}")

    curve_ax.plot(comparison.time_axis, comparison.time_cosine, marker="o", markersize=3, label="per frame")
    curve_ax.axhline(comparison.clip_cosine, color="grey", linestyle="--", linewidth=1, label="whole clip")
    curve_ax.set_xlim(0, d)
    curve_ax.set_ylim(-1.05, 1.05)
    curve_ax.set_xlabel("time (s)")
    curve_ax.set_ylabel("cosine")
    curve_ax.set_title("student vs teacher along time (teacher frames averaged onto the student's)", fontsize=10)
    curve_ax.legend(loc="lower right", fontsize=8)
    return fig


def logmel_figure(comparison: Comparison) -> Figure:
    """The student's 64-bin log-mel, with the clip's length and any warnings about it in the title."""
    fig = Figure(figsize=(7, 2.8), layout="constrained")
    ax = fig.add_subplot()
    n_mels = comparison.logmel.shape[0]
    image = ax.imshow(comparison.logmel, aspect="auto", origin="lower", cmap="magma",
                      extent=(0, comparison.duration, 0, n_mels))
    fig.colorbar(image, ax=ax, label="dB")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    title = f"{comparison.name}: {comparison.duration:.2f} s"
    if comparison.warnings:
        title += "\n" + "\n".join(f"warning: {w}" for w in comparison.warnings)
    ax.set_title(title, fontsize=10)
    return fig


def gallery_figure(gallery: Gallery) -> Figure:
    """The student-vs-teacher clip matrix; a bright diagonal means each student clip finds its own teacher clip."""
    n = len(gallery.names)
    size = min(12, 3 + 0.45 * n)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(gallery.matrix, cmap="viridis", vmin=-1, vmax=1)
    fig.colorbar(image, ax=ax, label="cosine")
    if n <= 10:  # beyond that the numbers would not fit in their cells
        for i, j in np.ndindex(n, n):
            ax.text(j, i, f"{gallery.matrix[i, j]:.2f}", ha="center", va="bottom", fontsize=7, color="white")
    best = gallery.matrix.argmax(axis=1)
    ax.scatter(best, np.arange(n), marker="x", color="red", s=30, label="best match")
    ax.set_xticks(range(n), gallery.names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), gallery.names, fontsize=8)
    ax.set_xlabel("teacher clip")
    ax.set_ylabel("student clip")
    ax.set_title(f"top-1 match {gallery.top1:.0%} (chance {1 / n:.0%})")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def _count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"
