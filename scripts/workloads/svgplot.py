"""A small SVG line chart: named series of (x, y) points, linear or logarithmic y axis, a legend."""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:g}"
    return f"{value:.3g}"


def line_chart(
    series: list[tuple[str, list[float], list[float]]],
    title: str,
    x_label: str,
    y_label: str,
    log_y: bool = False,
    x_ticks: list[float] | None = None,
    dashed: set[str] | None = None,
    width: int = 720,
    height: int = 420,
) -> str:
    """The SVG text of a line chart; `dashed` names series drawn with dashes."""
    dashed = dashed or set()
    left, right, top, bottom = 70, 200, 40, 55
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for _, sx, _ in series for x in sx]
    ys = [y for _, _, sy in series for y in sy if y is not None and (y > 0 or not log_y)]
    if not xs or not ys:
        raise ValueError("nothing to plot")
    x_low, x_high = min(xs), max(xs)
    if x_low == x_high:
        x_low, x_high = x_low - 1, x_high + 1
    if log_y:
        y_low = 10 ** math.floor(math.log10(min(ys)))
        y_high = 10 ** math.ceil(math.log10(max(ys)))
        if y_low == y_high:
            y_high *= 10
        y_ticks = []
        value = y_low
        while value <= y_high * 1.0001:
            y_ticks.append(value)
            value *= 10

        def y_pos(y: float) -> float:
            return top + plot_h * (1 - (math.log10(y) - math.log10(y_low)) / (math.log10(y_high) - math.log10(y_low)))
    else:
        y_low, y_high = 0.0, max(ys) * 1.08
        y_ticks = _ticks(y_low, y_high)

        def y_pos(y: float) -> float:
            return top + plot_h * (1 - (y - y_low) / (y_high - y_low))

    def x_pos(x: float) -> float:
        return left + plot_w * (x - x_low) / (x_high - x_low)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + plot_w / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for tick in y_ticks:
        y = y_pos(tick)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    for tick in x_ticks if x_ticks is not None else _ticks(x_low, x_high):
        x = x_pos(tick)
        out.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="black"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{_label(tick)}</text>')
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>'
    )
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 12}" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2})">{escape(y_label)}</text>'
    )
    for index, (name, sx, sy) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        points = [(x_pos(x), y_pos(y)) for x, y in zip(sx, sy) if y is not None and (y > 0 or not log_y)]
        dash = ' stroke-dasharray="6 4"' if name in dashed else ""
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in points:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>')
        legend_y = top + 10 + index * 20
        out.append(
            f'<line x1="{left + plot_w + 14}" y1="{legend_y}" x2="{left + plot_w + 40}" y2="{legend_y}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{left + plot_w + 46}" y="{legend_y + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def replace_section(path: str, marker: str, content: str) -> None:
    """Replaces the text between `<!-- marker:start -->` and `<!-- marker:end -->` in `path` (appends
    a new section at the end when the markers are missing)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    with open(path) as handle:
        text = handle.read()
    block = f"{start}\n{content.rstrip()}\n{end}"
    if start in text and end in text:
        before = text[: text.index(start)]
        after = text[text.index(end) + len(end) :]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as handle:
        handle.write(text)
