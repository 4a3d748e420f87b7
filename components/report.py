"""The evaluation report: one self-contained HTML page (images embedded as PNG data URIs).

Self-contained so that the page is one file, written atomically, that opens
anywhere (``reports/index.html``; no server, no neighbouring files). The
building blocks here know nothing about the pipeline: figures, metric tables,
caption rows with attention heat maps, and :func:`render_page` that puts
named sections together.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from components.data.ptb import ptb_tokenize

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.px { image-rendering: pixelated; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; text-align: center; }
.caption-row { border-bottom: 1px solid #ddd; padding: 0.8em 0; display: flex; gap: 1.2em; }
.generated { font-weight: bold; } .refs { margin: 0.3em 0; padding-left: 1.2em; color: #444; }
.attn figure { margin: 0 0.3em 0 0; } .attn figcaption { font-family: monospace; }
.note { color: #666; font-size: 0.9em; }
.tables { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
td { max-width: 26em; overflow-wrap: anywhere; }
"""


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of the page: an anchor id, a heading and its HTML body."""

    id: str
    title: str
    body: str


def png_data_uri(image: Image.Image) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure(image: Image.Image, caption: str, *, scale: int = 1) -> str:
    """An ``<img>`` (shown ``scale`` times its size, pixels kept sharp) with a caption."""
    return (f'<figure><img class="px" src="{png_data_uri(image)}" width="{image.width * scale}" '
            f'height="{image.height * scale}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _cell(value: object) -> str:
    if value is None:
        return '<td class="num">n/a</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>' if math.isfinite(value) else f'<td class="num">{value}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value)) or "none"
    return f"<td>{html.escape(str(value))}</td>"


def metrics_table(metrics: Mapping[str, object], *, title: str = "") -> str:
    """A two-column table of metric name and value (None as ``n/a``; nested dicts flattened)."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            rows += [f"<tr><th>{html.escape(f'{key}.{k}')}</th>{_cell(v)}</tr>" for k, v in value.items()]
        else:
            rows.append(f"<tr><th>{html.escape(key)}</th>{_cell(value)}</tr>")
    head = f"<caption>{html.escape(title)}</caption>" if title else ""
    return f"<table>{head}{''.join(rows)}</table>"


def _hot(w: np.ndarray) -> np.ndarray:
    """The "hot" colour map: (H, W) in [0, 1] -> (H, W, 3) in [0, 255], black → red → yellow → white."""
    return np.stack([np.clip(3 * w, 0, 1), np.clip(3 * w - 1, 0, 1), np.clip(3 * w - 2, 0, 1)], axis=-1) * 255


def heat_overlay(image: np.ndarray, weights: np.ndarray) -> Image.Image:
    """The image blended 50/50 with a heat map of the attention (bilinear-upsampled, min-max scaled).

    Args:
        image: uint8 ``(H, W, 3)``.
        weights: ``(P,)`` attention over a square ``g x g`` grid (``P = g * g``), row-major.
    """
    g = math.isqrt(len(weights))
    if g * g != len(weights):
        raise ValueError(f"attention over {len(weights)} positions is not a square grid")
    grid = Image.fromarray(np.asarray(weights, dtype=np.float32).reshape(g, g), mode="F")
    w = np.asarray(grid.resize((image.shape[1], image.shape[0]), Image.BILINEAR))  # (H, W)
    w = (w - w.min()) / max(float(w.max() - w.min()), 1e-12)
    blended = 0.5 * image.astype(np.float32) + 0.5 * _hot(w)
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), mode="RGB")


def caption_row(image: np.ndarray, generated: str, references: Sequence[str], *, image_id: int,
                attention: np.ndarray | None = None, notes: str = "", scale: int = 3) -> str:
    """One test image: the picture, the generated caption against its references, and per-word attention.

    Args:
        image: uint8 ``(H, W, 3)``.
        generated: The model's caption.
        references: The human (or synthetic) references.
        image_id: Shown under the picture.
        attention: ``(L, P)`` weights, one row per generated word (attention models), or None.
        notes: Extra HTML under the references (e.g. the semantic check).
        scale: Display magnification of the (small) images.
    """
    picture = figure(Image.fromarray(image, mode="RGB"), f"image {image_id}", scale=scale)
    refs = "".join(f"<li>{html.escape(r)}</li>" for r in references)
    text = (f'<div><div class="generated">{html.escape(generated)}</div>'
            f'<ul class="refs">{refs}</ul>{notes}')
    if attention is not None:
        words = ptb_tokenize(generated)  # the decoder's tokens again (man's -> man 's), one per attention step
        maps = [figure(heat_overlay(image, attention[t]), word, scale=2)
                for t, word in enumerate(words[: len(attention)])]
        text += f'<div class="attn">{"".join(maps)}</div>'
    return f'<div class="caption-row">{picture}{text}</div></div>'


def render_page(title: str, sections: Sequence[Section], *, intro: str = "") -> str:
    """The whole HTML document: title, a table of contents, then each section."""
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="note">{intro}</p><nav>{nav}</nav>{body}</body></html>\n')
