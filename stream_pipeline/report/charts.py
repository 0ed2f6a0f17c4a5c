"""The report's charts as PNG files (matplotlib, Agg canvas: no display, no pyplot state)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from stream_pipeline.report.data import CLASS_ORDER, IN, OUT

CLASS_COLORS = {"car": "#3b82f6", "truck": "#f59e0b", "bus": "#10b981", "motorcycle": "#ef4444"}
BRAND_COLOR, UNKNOWN_COLOR = "#2563eb", "#9ca3af"
IN_COLOR, OUT_COLOR = "#16a34a", "#dc2626"
# Timeline bins (seconds): the smallest giving at most 40 bins over the run.
BIN_CHOICES = (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    figure.savefig(path)
    return path


def _style():
    """Fonts big enough to read when the chart is shrunk to a phone's width."""
    import matplotlib

    return matplotlib.rc_context({"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 11,
                                  "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10})


def _no_data(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, color="#6b7280", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])


def _brand_chart(brands: Counter, path: Path, title: str = "Vehicles per brand") -> Path:
    """Horizontal bars, most frequent first; `unknown` (no decision) last, in grey."""
    known = sorted(((b, n) for b, n in brands.items() if b != "unknown"), key=lambda item: (-item[1], item[0]))
    rows = known + ([("unknown", brands["unknown"])] if brands.get("unknown") else [])
    figure = _figure(7.0, max(2.2, 0.34 * len(rows) + 1.0))
    axes = figure.add_subplot()
    if not rows:
        _no_data(axes, "no vehicles")
    else:
        labels = [b for b, _ in rows][::-1]
        values = [n for _, n in rows][::-1]
        colors = [UNKNOWN_COLOR if b == "unknown" else BRAND_COLOR for b in labels]
        bars = axes.barh(labels, values, color=colors)
        axes.bar_label(bars, padding=3)
        axes.set_xlabel("vehicles")
        axes.margins(x=0.12)
        axes.spines[["top", "right"]].set_visible(False)
    axes.set_title(title, loc="left")
    return _save(figure, path)


def pick_bin(duration_s: float) -> int:
    for seconds in BIN_CHOICES:
        if duration_s / seconds <= 40:
            return seconds
    return BIN_CHOICES[-1]


def _timeline_chart(vehicles: list[dict], duration_s: float, path: Path) -> Path:
    """Vehicles per minute by class over stream time (stacked bars, by first sighting)."""
    figure = _figure(7.0, 3.0)
    axes = figure.add_subplot()
    if not vehicles:
        _no_data(axes, "no vehicles")
    else:
        duration_s = max(duration_s, max(v.get("first_seen_s") or 0.0 for v in vehicles), 1.0)
        width = pick_bin(duration_s)
        bins = int(duration_s // width) + 1
        classes = [c for c in CLASS_ORDER if any(v.get("class") == c for v in vehicles)]
        classes += sorted({v.get("class", "?") for v in vehicles} - set(classes))
        bottom = [0.0] * bins
        starts = [i * width for i in range(bins)]
        for vehicle_class in classes:
            counts = [0] * bins
            for v in vehicles:
                if v.get("class", "?") == vehicle_class:
                    counts[min(bins - 1, int((v.get("first_seen_s") or 0.0) // width))] += 1
            # The last bin may be cut short by the end of the run: its rate is over what it covers.
            rate = [c * 60.0 / max(1.0, min(width, duration_s - start)) for c, start in zip(counts, starts)]
            axes.bar(starts, rate, width=width * 0.9, bottom=bottom, align="edge", label=vehicle_class,
                     color=CLASS_COLORS.get(vehicle_class, "#6b7280"))
            bottom = [b + r for b, r in zip(bottom, rate)]
        axes.set_xlabel(f"stream time (s), {width}-s bins")
        axes.set_ylabel("vehicles / min")
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        axes.set_ylim(0, max(bottom) * 1.15 or 1)
        axes.spines[["top", "right"]].set_visible(False)
    axes.set_title("Vehicles per minute by class", loc="left")
    return _save(figure, path)


def _zone_chart(zones: dict[str, dict], path: Path) -> Path:
    """Per line / zone: vehicles in and out (grouped bars)."""
    names = list(zones)
    figure = _figure(7.0, max(2.2, 0.6 * len(names) + 1.0))
    axes = figure.add_subplot()
    if not names:
        _no_data(axes, "no lines or zones configured")
    else:
        positions = list(range(len(names)))[::-1]
        height = 0.38
        ins = axes.barh([p + height / 2 for p in positions], [zones[n][IN] for n in names], height, label="in", color=IN_COLOR)
        outs = axes.barh([p - height / 2 for p in positions], [zones[n][OUT] for n in names], height, label="out", color=OUT_COLOR)
        axes.bar_label(ins, padding=3)
        axes.bar_label(outs, padding=3)
        axes.set_yticks(positions, names)
        axes.set_xlabel("vehicles")
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        axes.margins(x=0.12)
        axes.spines[["top", "right"]].set_visible(False)
    axes.set_title("Line and zone counts", loc="left")
    return _save(figure, path)


def brand_chart(brands: Counter, path: Path, title: str = "Vehicles per brand") -> Path:
    with _style():
        return _brand_chart(brands, path, title)


def timeline_chart(vehicles: list[dict], duration_s: float, path: Path) -> Path:
    with _style():
        return _timeline_chart(vehicles, duration_s, path)


def zone_chart(zones: dict[str, dict], path: Path) -> Path:
    with _style():
        return _zone_chart(zones, path)
