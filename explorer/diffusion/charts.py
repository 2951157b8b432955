"""Small self-contained SVG line charts for the CLI's reports (no plotting library needed; the pages use plotly).

A chart is a few series of (x, y) points, optionally with a y interval per point drawn as a band.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Series:
    name: str
    x: list[float]
    y: list[float]
    low: list[float] | None = None  # interval band (same length as y), optional
    high: list[float] | None = None
    axis: str = "left"  # "left" or "right" (a second y axis with its own range)
    dashed: bool = False
    extra: dict = field(default_factory=dict)


def _range(values: list[float], zero: bool) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if zero:
        lo = min(lo, 0.0)
    if hi == lo:
        hi = lo + 1.0
    pad = 0.05 * (hi - lo)
    return lo - (0 if zero and lo == 0 else pad), hi + pad


def line_chart_svg(series: list[Series], *, title: str, x_label: str, y_label: str, y2_label: str = "",
                   x_reversed: bool = False, width: int = 640, height: int = 360) -> str:
    """An SVG document: axes with 5 ticks each, one polyline (and band) per series, a legend."""
    left, right, top, bottom = 60, 60 if y2_label else 20, 40, 50
    pw, ph = width - left - right, height - top - bottom
    xs = [v for s in series for v in s.x]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1

    def ys(axis):
        vals = [v for s in series if s.axis == axis for v in s.y + (s.low or []) + (s.high or [])]
        return _range(vals, zero=True) if vals else (0.0, 1.0)

    ranges = {"left": ys("left"), "right": ys("right")}

    def px(x):
        f = (x - x0) / (x1 - x0)
        return left + (1 - f if x_reversed else f) * pw

    def py(y, axis):
        lo, hi = ranges[axis]
        return top + (1 - (y - lo) / (hi - lo)) * ph

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            'font-size="11">'),
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="13">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    for k in range(5):
        xv = x0 + k * (x1 - x0) / 4
        out.append(f'<text x="{px(xv):.1f}" y="{top + ph + 15}" text-anchor="middle">{xv:g}</text>')
        for axis, anchor, xpos in (("left", "end", left - 5), ("right", "start", left + pw + 5)):
            if axis == "right" and not y2_label:
                continue
            lo, hi = ranges[axis]
            yv = lo + k * (hi - lo) / 4
            out.append(f'<text x="{xpos}" y="{py(yv, axis) + 4:.1f}" text-anchor="{anchor}">{yv:.3g}</text>')
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + k * ph / 4:.1f}" y2="{top + k * ph / 4:.1f}" '
                   'stroke="#eee"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 12}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    if y2_label:
        out.append(f'<text transform="translate({width - 8} {top + ph / 2}) rotate(90)" '
                   f'text-anchor="middle">{escape(y2_label)}</text>')
    legend: list[str] = []
    for n, s in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        if s.low is not None and s.high is not None:
            upper = [f"{px(x):.1f},{py(h, s.axis):.1f}" for x, h in zip(s.x, s.high)]
            lower = [f"{px(x):.1f},{py(lo, s.axis):.1f}" for x, lo in reversed(list(zip(s.x, s.low)))]
            out.append(f'<polygon points="{" ".join(upper + lower)}" fill="{colour}" fill-opacity="0.15" '
                       'stroke="none"/>')
        points = " ".join(f"{px(x):.1f},{py(y, s.axis):.1f}" for x, y in zip(s.x, s.y))
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in zip(s.x, s.y):
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y, s.axis):.1f}" r="2.5" fill="{colour}"/>')
        ly = top + 12 + 14 * n
        legend.append(f'<line x1="{left + 8}" x2="{left + 28}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                      f'stroke-width="2"{dash}/>')
        axis_note = " (right axis)" if s.axis == "right" else ""
        legend.append(f'<text x="{left + 32}" y="{ly + 4}">{escape(s.name)}{axis_note}</text>')
    # the legend last, on a white box, so no line crosses its text
    out.append(f'<rect x="{left + 4}" y="{top + 3}" width="{min(pw - 8, 330)}" height="{14 * len(series) + 4}" '
               'fill="white" fill-opacity="0.85"/>')
    out += legend
    out.append("</svg>")
    return "\n".join(out)


def sweep_chart(summary: list[dict], guidance: str = "classifier") -> str:
    """The guidance trade-off: the judge's target rate (with interval) and FD_cnn / diversity against the scale s
    (``guidance="free"``: the classifier-free weight w)."""
    s = [row["scale"] for row in summary]
    series = [Series("judge names the target (pooled)", s, [r["rate"] for r in summary],
                     [r["ci95"][0] for r in summary], [r["ci95"][1] for r in summary])]
    if all("mean_fd" in r for r in summary):
        series.append(Series("mean FD_cnn to the class's test images", s,
                             [r["mean_fd"] for r in summary], axis="right"))
    series.append(Series("mean diversity (pairwise distance)", s, [r["mean_diversity"] for r in summary], axis="right",
                         dashed=True))
    free = guidance == "free"
    kind = "Classifier-free" if free else "Classifier"
    return line_chart_svg(series, title=f"{kind} guidance: fidelity vs diversity",
                          x_label="classifier-free weight w" if free else "guidance scale s",
                          y_label="top-1 rate of the target class", y2_label="judge-feature distance")


def branch_chart(report: dict) -> str:
    """Agreement of the branches with the original's class, and their spread, against t (T on the left)."""
    t = report["t"]
    series = [Series("agreement with the original's final class", t, report["agreement"]),
              Series("chance agreement Σp²", t, [report["chance_agreement"]] * len(t), dashed=True),
              Series("spread of the branches (judge features)", t, report["spread"], axis="right")]
    return line_chart_svg(series, title="What each step decides (branches from x_t)", x_label="timestep t",
                          y_label="agreement", y2_label="mean pairwise distance", x_reversed=True)
