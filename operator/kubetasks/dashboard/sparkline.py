"""Small graphs as inline SVG, drawn on the server (pure: numbers in, markup out)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape


def sparkline(
    values: Sequence[float | None],
    *,
    width: int = 120,
    height: int = 24,
    label: str = "",
    css: str = "spark",
) -> Markup:
    """A polyline of ``values`` (None: no sample) scaled to the box; the last value is the
    title. An empty series draws a flat line."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    top = max((v for _, v in points), default=0.0)
    span = max(len(values) - 1, 1)
    scale = (height - 2) / top if top > 0 else 0.0
    coords = (
        " ".join(
            f"{i * (width - 2) / span + 1:.1f},{height - 1 - v * scale:.1f}" for i, v in points
        )
        or f"1,{height - 1} {width - 1},{height - 1}"
    )
    last = points[-1][1] if points else 0
    title = f"{label}: {last:g} (max {top:g})" if label else f"{last:g}"
    return Markup(
        f'<svg class="{escape(css)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{coords}"/>'
        "</svg>"
    )


def rates(times: Sequence[float], counters: Sequence[int]) -> list[float | None]:
    """Per-minute rates between consecutive samples of a monotonic counter (a reset, e.g.
    after Redis lost its data, counts as None rather than a negative rate)."""
    out: list[float | None] = []
    for i in range(1, len(times)):
        dt, dv = times[i] - times[i - 1], counters[i] - counters[i - 1]
        out.append(dv * 60 / dt if dt > 0 and dv >= 0 else None)
    return out
