"""``ser-keras predict --plot``: spectrogram, attention over time, per-window labels (PNG)."""

from __future__ import annotations

import pathlib

import numpy as np

from ser_keras.audio import load_audio
from ser_keras.config import FeatureConfig
from ser_keras.errors import SerKerasError
from ser_keras.features import frontend_ops

MAX_COLUMNS = 4000  # spectrogram columns drawn; longer recordings are pooled down to this


def _spectrogram(path, sample_rate: int, feature_config) -> tuple:
    """(log spectrogram (bins, columns) for display, seconds per column, top frequency in Hz)."""
    waveform = load_audio(path, sample_rate)
    params = frontend_ops.spectrogram_params(feature_config, sample_rate)
    spec = frontend_ops.raw_features(waveform, params)
    seconds_per_column = params.hop / sample_rate
    if spec.shape[0] > MAX_COLUMNS:
        factor = int(np.ceil(spec.shape[0] / MAX_COLUMNS))
        usable = spec.shape[0] // factor * factor
        spec = spec[:usable].reshape(-1, factor, spec.shape[1]).max(axis=1)
        seconds_per_column *= factor
    top_hz = feature_config.n_bins * sample_rate / feature_config.n_fft
    return spec.T, seconds_per_column, top_hz


def plot_result(result: dict, out_png, sample_rate: int, feature_config=None) -> pathlib.Path:
    """Draw one predict result (needs the audio at ``result['path']``) into `out_png`."""
    # The object API, not pyplot: the caller's matplotlib backend (a notebook's) is left alone.
    import matplotlib
    from matplotlib.figure import Figure

    feature_config = feature_config or FeatureConfig()
    spec, seconds_per_column, top_hz = _spectrogram(result["path"], sample_rate, feature_config)
    duration = max(result["duration_s"], seconds_per_column)
    labels = list(result["probabilities"])
    colours = {name: matplotlib.colormaps["tab10"](i % 10) for i, name in enumerate(labels)}

    fig = Figure(figsize=(10, 6.5), dpi=100)
    axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3, 0.9]})
    ax = axes[0]
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
              extent=[0, spec.shape[1] * seconds_per_column, 0, top_hz / 1000.0])
    ax.set_ylabel("kHz")
    label = result["label"]
    ax.set_title(f"{pathlib.Path(result['path']).name}: " + (
        "no speech" if label is None else f"{label} (p = {result['probabilities'][label]:.2f})"))

    ax = axes[1]
    att = result["attention"]
    starts = np.asarray(att["start_s"], float)
    weights = np.asarray(att["weights"], float)
    if len(starts):
        centres = starts + att["span_s"] / 2.0
        ax.step(centres, weights, where="mid", color="tab:blue")
        ax.fill_between(centres, weights, step="mid", alpha=0.3, color="tab:blue")
    ax.set_ylabel("attention")
    ax.set_ylim(bottom=0)

    ax = axes[2]
    for i, window in enumerate(result["windows"]):
        row = i % 2
        name = window["label"]
        ax.barh(row, window["end_s"] - window["start_s"], left=window["start_s"], height=0.8,
                color=colours.get(name, "grey"), alpha=0.8)
        text = "no speech" if name is None else f"{name} {window['probabilities'][name]:.2f}"
        ax.text((window["start_s"] + window["end_s"]) / 2, row, text, ha="center", va="center", fontsize=8)
    ax.set_yticks([])
    ax.set_ylabel("windows")
    ax.set_xlabel("time (s)")
    ax.set_xlim(0, duration)
    fig.tight_layout()
    out_png = pathlib.Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def plot_results(report: dict, target, feature_config=None) -> list:
    """`target` ending in .png: plot the first result there; otherwise `target` is a directory
    and every result gets ``<target>/<file stem>.png``. Returns the error lines (if any)."""
    target = pathlib.Path(target)
    results = report["results"]
    if target.suffix.lower() == ".png":
        jobs = [(results[0], target)] if results else []
    else:
        jobs, used = [], set()
        for result in results:
            stem = pathlib.Path(result["path"]).stem
            name, n = stem, 1
            while name in used:
                n += 1
                name = f"{stem}_{n}"
            used.add(name)
            jobs.append((result, target / f"{name}.png"))
    errors = []
    for result, out in jobs:
        try:
            plot_result(result, out, report["sample_rate"], feature_config)
        except (SerKerasError, OSError, ValueError) as exc:
            errors.append(f"{out}: {exc}")
    return errors
