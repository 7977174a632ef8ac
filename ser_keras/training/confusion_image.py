"""A confusion matrix as a small RGB raster, for TensorBoard's image tab every epoch.

The paper-style figure (``evaluation.plots.confusion_figure``) goes through matplotlib's layout engine and
costs about half a second to render; drawn once per epoch and fold that was a fifth of a CPU
training run. This draws the same content (row-normalised % per cell, darker = higher, class
names on both axes, a title) straight onto a Pillow image in a few milliseconds. The run's final
``confusion_matrix.png`` still uses the matplotlib figure.
"""

from __future__ import annotations

import functools
import typing

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from ser_keras.metrics import row_normalized

CELL = 46  # pixels per matrix cell
PAD = 8
FONT_SIZE = 13


@functools.lru_cache(maxsize=None)
def _font(size: int):
    # Pillow's built-in scalable font: no font file on disk is needed.
    return ImageFont.load_default(size=size)


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def confusion_image(cm_counts, labels: typing.Sequence[str], title: str = "") -> np.ndarray:
    """`(height, width, 3)` uint8 image of the row-normalised confusion matrix `cm_counts`
    (rows = true class), cells annotated with their %, `labels` on both axes, `title` (may hold
    newlines) above."""
    percent = row_normalized(np.asarray(cm_counts))
    n = len(labels)
    title = title.replace("\u2014", "-")  # the built-in font has no em dash
    font, small = _font(FONT_SIZE), _font(FONT_SIZE - 2)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max(_text_size(probe, str(label), font)[0] for label in labels)
    title_lines = [line for line in title.split("\n") if line]
    line_height = _text_size(probe, "Ag", font)[1] + 4
    title_height = len(title_lines) * line_height + (PAD if title_lines else 0)

    axis_title = line_height + PAD  # "true" / "recognised" axis names
    left = axis_title + label_width + PAD
    top = PAD + title_height
    grid = n * CELL
    width = max(left + grid + PAD, max((_text_size(probe, t, font)[0] for t in title_lines), default=0) + 2 * PAD)
    height = top + grid + PAD + label_width + axis_title
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    for k, line in enumerate(title_lines):
        draw.text((PAD, PAD + k * line_height), line, fill="black", font=font)
    colours = (np.asarray(colormaps["Blues"](np.clip(percent, 0, 100) / 100.0))[..., :3] * 255).astype(np.uint8)
    for i in range(n):
        for j in range(n):
            x, y = left + j * CELL, top + i * CELL
            draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill=tuple(int(c) for c in colours[i, j]))
            text = f"{percent[i, j]:.1f}"
            w, h = _text_size(draw, text, small)
            draw.text((x + (CELL - w) / 2, y + (CELL - h) / 2 - 1), text, font=small,
                      fill="white" if percent[i, j] > 55 else "black")
    draw.rectangle((left - 1, top - 1, left + grid, top + grid), outline="black")

    for i, label in enumerate(labels):  # row labels, right-aligned left of the grid
        w, h = _text_size(draw, str(label), font)
        draw.text((left - PAD - w, top + i * CELL + (CELL - h) / 2 - 2), str(label), fill="black", font=font)
    # Column labels under the grid, reading upwards: drawn right-aligned on a strip whose row j
    # is column j, then turned a quarter anticlockwise (row j -> column j, text end at the top).
    strip = Image.new("RGB", (label_width, grid), "white")
    strip_draw = ImageDraw.Draw(strip)
    for j, label in enumerate(labels):
        w, h = _text_size(strip_draw, str(label), font)
        strip_draw.text((label_width - w, j * CELL + (CELL - h) / 2 - 2), str(label), fill="black", font=font)
    image.paste(strip.rotate(90, expand=True), (left, top + grid + PAD // 2))

    name = "recognised emotion"
    w, _ = _text_size(draw, name, font)
    draw.text((left + (grid - w) / 2, height - axis_title + 2), name, fill="black", font=font)
    name = "true emotion"
    w, h = _text_size(probe, name, font)
    side = Image.new("RGB", (w, h + 4), "white")
    ImageDraw.Draw(side).text((0, 0), name, fill="black", font=font)
    image.paste(side.rotate(90, expand=True), (PAD // 2, top + max(0, (grid - w) // 2)))
    return np.asarray(image, dtype=np.uint8)
