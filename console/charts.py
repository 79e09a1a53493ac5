"""Small SVG charts drawn on the server: a time series as bars with its axis labels, and
paired horizontal bars (traffic beside cost). Pure functions of their numbers; sizes and
colours are SVG attributes and CSS classes (no style attribute, which the content
security policy refuses), and each chart carries a title and a text summary for screen
readers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from markupsafe import Markup

WIDTH = 600
HEIGHT = 140
AXIS_LEFT = 56
AXIS_BOTTOM = 18
BAR_ROW = 22
BAR_LABEL = 180


def _plain(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def series_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    shown: Callable[[float], str] = _plain,
    css_class: str = "series",
) -> Markup:
    """A bar per time bucket, the peak and the first and last bucket's labels."""
    peak = max(values, default=0) or 1
    inner_w, inner_h = WIDTH - AXIS_LEFT, HEIGHT - AXIS_BOTTOM
    slot = inner_w / max(len(values), 1)
    bars = []
    for i, value in enumerate(values):
        height = inner_h * value / peak
        bars.append(
            f'<rect class="bar" x="{AXIS_LEFT + i * slot + 1:.1f}" y="{inner_h - height:.1f}" '
            f'width="{max(slot - 2, 1):.1f}" height="{height:.1f}">'
            f"<title>{escape(labels[i])}: {escape(shown(value))}</title></rect>"
        )
    total = sum(values)
    summary = f"{title}: total {shown(total)}, peak {shown(max(values, default=0))}"
    first, last = (labels[0], labels[-1]) if labels else ("", "")
    return Markup(  # noqa: S704 - every value in it is escaped above
        f'<svg class="chart {css_class}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(summary)}" preserveAspectRatio="none">'
        f"<title>{escape(summary)}</title>"
        f'<line class="axis" x1="{AXIS_LEFT}" y1="{inner_h}" x2="{WIDTH}" y2="{inner_h}"/>'
        f'<text class="tick" x="{AXIS_LEFT - 4}" y="10" text-anchor="end">'
        f"{escape(shown(max(values, default=0)))}</text>"
        f'<text class="tick" x="{AXIS_LEFT - 4}" y="{inner_h}" text-anchor="end">0</text>'
        f'<text class="tick" x="{AXIS_LEFT}" y="{HEIGHT - 4}">{escape(first)}</text>'
        f'<text class="tick" x="{WIDTH}" y="{HEIGHT - 4}" text-anchor="end">{escape(last)}</text>'
        + "".join(bars)
        + "</svg>"
    )


def paired_bars(
    title: str,
    rows: Sequence[tuple[str, float, float]],
    *,
    left: Callable[[float], str] = _plain,
    right: Callable[[float], str] = _plain,
) -> Markup:
    """One row per name: a bar for its share of the first figure (traffic), one for the
    second (cost), each scaled to its own largest."""
    peak_a = max((a for _, a, _ in rows), default=0) or 1
    peak_b = max((b for _, _, b in rows), default=0) or 1
    half = (WIDTH - BAR_LABEL) / 2 - 8
    height = max(len(rows), 1) * BAR_ROW + 20
    parts = [
        f'<text class="tick" x="{BAR_LABEL}" y="12">calls</text>',
        f'<text class="tick" x="{BAR_LABEL + half + 16}" y="12">cost (USD)</text>',
    ]
    for i, (name, a, b) in enumerate(rows):
        y = 20 + i * BAR_ROW
        wa, wb = half * a / peak_a, half * b / peak_b
        parts.append(
            f'<text class="label" x="{BAR_LABEL - 6}" y="{y + 14}" text-anchor="end">'
            f"{escape(name[:28])}</text>"
            f'<rect class="bar calls" x="{BAR_LABEL}" y="{y + 3}" width="{wa:.1f}" height="14">'
            f"<title>{escape(name)}: {escape(left(a))} calls</title></rect>"
            f'<rect class="bar cost" x="{BAR_LABEL + half + 16}" y="{y + 3}" width="{wb:.1f}" '
            f'height="14"><title>{escape(name)}: {escape(right(b))} USD</title></rect>'
        )
    summary = f"{title}: " + "; ".join(f"{n} {left(a)} calls, {right(b)} USD" for n, a, b in rows)
    return Markup(  # noqa: S704 - every value in it is escaped above
        f'<svg class="chart pairs" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(summary)}"><title>{escape(summary)}</title>'
        + "".join(parts)
        + "</svg>"
    )
