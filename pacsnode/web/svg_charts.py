"""Charts of the programme report, drawn on the server as SVG text.

No chart CDN and no JavaScript library: the workspace's Content-Security-Policy allows no
script, and the programme office prints and archives these pages. A chart is a function of
its numbers only (same numbers, same bytes), so a test can check what a bar says. Every
label is escaped: institution names and modalities come from DICOM headers, which anyone who
can store a study writes. Styling is by presentation attributes (``fill=``), which the CSP's
``style-src 'self'`` leaves alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

FONT = "WenQuanYi Zen Hei, sans-serif"
BAR = "#2b6cb0"
EMPTY = "#bbbbbb"
MAX_BARS = 60  # a chart with more groups shows the first ones and says how many it left out
LABEL_CHARS = 24


@dataclass(frozen=True)
class Bar:
    """One group: its label, its value (None = nothing to measure, e.g. no decision), and the
    text printed at the end of the bar (the value as users read it, e.g. ``50.0% (1/2)``)."""

    label: str
    value: float | None
    text: str


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def bar_chart(chart_id: str, title: str, bars: list[Bar], maximum: float | None = None,
              none_text: str = "-") -> Markup:
    """Horizontal bars, one per group, scaled to ``maximum`` (1.0 for rates; the largest value
    when None). A bar without a value is drawn as an empty grey outline with ``none_text``."""
    shown = bars[:MAX_BARS]
    top = maximum if maximum else max([b.value or 0.0 for b in shown] + [1e-9])
    label_w, plot_w, row_h, pad = 190, 360, 24, 28
    height = pad + row_h * max(1, len(shown)) + 10
    width = label_w + plot_w + 150
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             f'font-family="{FONT}" font-size="13">',
             f'<title>{escape(title)}</title>',
             f'<text x="0" y="16" font-weight="bold">{escape(title)}</text>']
    for i, bar in enumerate(shown):
        y = pad + i * row_h
        length = 0.0 if bar.value is None else max(0.0, min(1.0, bar.value / top)) * plot_w
        parts.append(f'<g class="bar" data-label="{escape(bar.label)}" data-value="'
                     f'{"" if bar.value is None else round(bar.value, 4)}">')
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{escape(_short(bar.label))}</text>')
        if bar.value is None:
            parts.append(f'<rect x="{label_w}" y="{y + 4}" width="{plot_w}" height="{row_h - 8}" fill="none" '
                         f'stroke="{EMPTY}" stroke-dasharray="4 3"/>')
        else:
            parts.append(f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{row_h - 8}" fill="{BAR}"/>')
        parts.append(f'<text x="{label_w + length + 6:.1f}" y="{y + 16}">'
                     f'{escape(none_text if bar.value is None else bar.text)}</text></g>')
    if not shown:
        parts.append(f'<text x="{label_w}" y="{pad + 16}" fill="#666">{escape(none_text)}</text>')
    if len(bars) > MAX_BARS:
        parts.append(f'<text x="0" y="{height - 2}" fill="#666">+{len(bars) - MAX_BARS}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def column_chart(chart_id: str, title: str, bars: list[Bar], none_text: str = "-") -> Markup:
    """Vertical columns of a rate (0..1) over time, oldest left: the recognition rate per
    month or day. A period with decisions but none on an eligible prior shows ``none_text``."""
    shown = bars[-MAX_BARS:]
    widest = max([len(_short(b.label)) for b in shown] + [4])
    col_w, plot_h, top_pad, left = max(48, min(120, 11 * widest + 12)), 180, 30, 40
    width = left + col_w * max(1, len(shown)) + 20
    height = top_pad + plot_h + 50
    base = top_pad + plot_h
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             f'font-family="{FONT}" font-size="12">',
             f'<title>{escape(title)}</title>',
             f'<text x="0" y="16" font-weight="bold" font-size="13">{escape(title)}</text>',
             f'<line x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#444"/>']
    for fraction in (0.5, 1.0):
        y = base - fraction * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{int(fraction * 100)}%</text>')
    for i, bar in enumerate(shown):
        x = left + i * col_w + 6
        h = 0.0 if bar.value is None else max(0.0, min(1.0, bar.value)) * plot_h
        parts.append(f'<g class="bar" data-label="{escape(bar.label)}" data-value="'
                     f'{"" if bar.value is None else round(bar.value, 4)}">')
        parts.append(f'<rect x="{x}" y="{base - h:.1f}" width="{col_w - 12}" height="{h:.1f}" fill="{BAR}"/>')
        parts.append(f'<text x="{x + (col_w - 12) / 2:.1f}" y="{base - h - 4:.1f}" text-anchor="middle">'
                     f'{escape(none_text if bar.value is None else bar.text)}</text>')
        parts.append(f'<text x="{x + (col_w - 12) / 2:.1f}" y="{base + 16}" text-anchor="middle" font-size="11">'
                     f'{escape(_short(bar.label))}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))
