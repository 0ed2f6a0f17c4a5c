"""The report pages: one self-contained HTML file per run (styles inline, images under
`report/` beside it, no script, no network) that reads on a phone as on a desktop."""

from __future__ import annotations

from html import escape

from stream_pipeline.report.data import IN, OUT, RunData

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;background:#f3f4f6}
main{max-width:1100px;margin:0 auto;padding:16px}
h1{font-size:1.4rem;margin:.2rem 0 .2rem;word-break:break-all}
h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
.muted{color:#6b7280;font-size:.9rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:10px;margin:14px 0}
.card{background:#fff;border-radius:10px;padding:10px 12px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card b{display:block;font-size:1.4rem}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:12px}
figure{margin:0;background:#fff;border-radius:10px;padding:8px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
.scroll{overflow-x:auto;background:#fff;border-radius:10px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;width:100%}
th,td{padding:6px 8px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:middle}
th{background:#f9fafb;font-size:.85rem;color:#374151;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td img{display:block;max-width:120px;max-height:90px;border-radius:4px}
.brand{font-weight:600}
.unknown{color:#9ca3af;font-weight:400}
.tag{display:inline-block;background:#eef2ff;color:#3730a3;border-radius:6px;padding:0 6px;margin:1px;font-size:.8rem;white-space:nowrap}
.tag.out{background:#fef2f2;color:#991b1b}
.tag.in{background:#f0fdf4;color:#166534}
.error{background:#fef2f2;color:#991b1b;border-radius:10px;padding:10px 12px}
a{color:#1d4ed8}
@media (max-width:640px){
 main{padding:10px}
 table.vehicles thead{display:none}
 table.vehicles,table.vehicles tbody,table.vehicles tr,table.vehicles td{display:block;width:100%}
 table.vehicles tr{display:grid;grid-template-columns:1fr 1fr;gap:2px 10px;padding:10px;border-bottom:6px solid #f3f4f6}
 table.vehicles td{border:0;padding:2px 0}
 table.vehicles td.thumb{grid-row:span 1}
 table.vehicles td.num{text-align:left}
 table.vehicles td[data-label]:not(.thumb)::before{content:attr(data-label) ": ";color:#6b7280;font-size:.8rem}
 td img{max-width:100%;max-height:180px}
}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = float(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours)}:{int(minutes):02d}:{secs:04.1f}" if hours else f"{int(minutes):02d}:{secs:04.1f}"


def _img(src: str | None, alt: str) -> str:
    if not src:
        return "<span class=\"muted\">–</span>"
    return f"<img src=\"{escape(src)}\" alt=\"{escape(alt)}\">"


def _cards(items: list[tuple[str, str]]) -> str:
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card\"><b>{escape(value)}</b><span class=\"muted\">{escape(label)}</span></div>" for label, value in items
    ) + "</div>"


def _zone_tables(zones: dict[str, dict]) -> str:
    parts = []
    for name, zone in zones.items():
        rows = [("all vehicles", {IN: zone[IN], OUT: zone[OUT]})]
        rows += [(f"class: {c}", v) for c, v in sorted(zone["by_class"].items(), key=lambda i: -(i[1][IN] + i[1][OUT]))]
        rows += [(f"brand: {b}", v) for b, v in sorted(zone["by_brand"].items(), key=lambda i: (i[0] == "unknown", -(i[1][IN] + i[1][OUT]), i[0]))]
        labels = ("in", "out") if zone.get("type") == "line" else ("entered", "left")
        body = "".join(
            f"<tr><td>{escape(label)}</td><td class=\"num\">{v.get(IN, 0)}</td><td class=\"num\">{v.get(OUT, 0)}</td></tr>"
            for label, v in rows
        )
        parts.append(
            f"<h3>{escape(name)} <span class=\"muted\">({escape(zone.get('type', 'line'))})</span></h3>"
            f"<div class=\"scroll\"><table class=\"zone\"><thead><tr><th></th><th class=\"num\">{labels[0]}</th>"
            f"<th class=\"num\">{labels[1]}</th></tr></thead><tbody>{body}</tbody></table></div>"
        )
    return "".join(parts)


def _vehicle_rows(run: RunData, thumbs: dict[int, tuple[str | None, str | None]]) -> str:
    rows = []
    for v in run.vehicles:
        track = v.get("track_id")
        vehicle_img, badge_img = thumbs.get(track, (None, None))
        brand = v.get("brand", "unknown")
        brand_html = f"<span class=\"brand{' unknown' if brand == 'unknown' else ''}\">{escape(str(brand))}</span>"
        tags = "".join(
            f"<span class=\"tag {escape(str(p.get('direction')))}\">{escape(str(p.get('zone')))} {escape(str(p.get('direction')))}</span>"
            for p in v.get("zones") or ()
        ) or "<span class=\"muted\">–</span>"
        rows.append(
            "<tr>"
            f"<td class=\"thumb\" data-label=\"vehicle\">{_img(vehicle_img, f'vehicle {track}')}</td>"
            f"<td class=\"thumb\" data-label=\"badge\">{_img(badge_img, f'badge {track}')}</td>"
            f"<td class=\"num\" data-label=\"track\">{escape(str(track))}</td>"
            f"<td data-label=\"brand\">{brand_html}</td>"
            f"<td class=\"num\" data-label=\"confidence\">{float(v.get('brand_confidence') or 0):.2f}</td>"
            f"<td data-label=\"class\">{escape(str(v.get('class', '?')))}</td>"
            f"<td class=\"num\" data-label=\"first seen\">{clock(v.get('first_seen_s'))}</td>"
            f"<td class=\"num\" data-label=\"last seen\">{clock(v.get('last_seen_s'))}</td>"
            f"<td data-label=\"lines / zones\">{tags}</td>"
            "</tr>"
        )
    return "".join(rows)


def run_page(run: RunData, charts: dict[str, str], thumbs: dict[int, tuple[str | None, str | None]], index_link: str | None = None) -> str:
    brands = run.brand_counts()
    decided = sum(n for b, n in brands.items() if b != "unknown")
    ended = run.ended
    status = ended.get("status")
    if not ended:
        state = "incomplete (no end record: the run was cut short)"
    elif status == "error":
        state = f"stopped by an error: {ended.get('error')}"
    else:
        state = {"end": "complete", "max-frames": "stopped at --max-frames", "quit": "quit from the window",
                 "interrupted": "interrupted"}.get(ended.get("reason"), str(ended.get("reason")))
        if ended.get("truncated"):  # the file could not be decoded to its end
            state = f"truncated file: decoding stopped after {ended.get('frames')} frames" if ended.get("reason") == "end" \
                else f"{state}; truncated file"
    head = [f"<h1>{escape(run.title)}</h1>",
            f"<div class=\"muted\">{escape(run.source)} · started {escape(str(run.started.get('wall_time', '–')))} · {escape(state)}</div>"]
    if index_link:
        head.insert(0, f"<div class=\"muted\"><a href=\"{escape(index_link)}\">← all videos</a></div>")
    if status == "error":
        head.append(f"<p class=\"error\">{escape(str(ended.get('error')))}</p>")
    cards = _cards([
        ("vehicles", str(len(run.vehicles))),
        ("with a brand", str(decided)),
        ("stream time", clock(run.duration_s)),
        ("frames", str(ended.get("frames", "–"))),
        ("processing FPS", str(ended.get("fps", "–"))),
    ])
    figures = "".join(
        f"<figure><img src=\"{escape(src)}\" alt=\"{escape(alt)}\"></figure>"
        for key, alt in (("brands", "vehicles per brand"), ("timeline", "vehicles per minute by class"), ("zones", "line and zone counts"))
        if (src := charts.get(key))
    )
    zones = run.zone_counts()
    zone_html = f"<h2>Lines and zones</h2>{_zone_tables(zones)}" if zones else ""
    table = (
        "<h2>Vehicles</h2><div class=\"scroll\"><table class=\"vehicles\"><thead><tr>"
        "<th>vehicle</th><th>badge</th><th class=\"num\">track</th><th>brand</th><th class=\"num\">confidence</th>"
        "<th>class</th><th class=\"num\">first seen</th><th class=\"num\">last seen</th><th>lines / zones</th>"
        f"</tr></thead><tbody>{_vehicle_rows(run, thumbs)}</tbody></table></div>"
    )
    if not run.vehicles:
        table += "<p class=\"muted\">No vehicles were recorded.</p>"
    body = "\n".join([*head, cards, f"<div class=\"charts\">{figures}</div>", zone_html, table,
                      "<p class=\"muted\">Built from events.jsonl by stream-pipeline.</p>"])
    return _page(f"{run.title} – stream-pipeline report", body)


def index_page(runs: list[tuple[RunData, str]], brand_chart: str | None) -> str:
    # serve's folders are cameras, named as in the cameras file; a folder input's are videos
    cameras = bool(runs) and all(run.camera for run, _ in runs)
    unit, units = ("camera", "cameras") if cameras else ("video", "videos")
    rows = []
    for run, link in runs:
        brands = run.brand_counts()
        known = sorted(((b, n) for b, n in brands.items() if b != "unknown"), key=lambda i: (-i[1], i[0]))
        top = ", ".join(f"{b} {n}" for b, n in known[:4])
        zones = run.zone_counts()
        zone_text = "; ".join(f"{name}: in {z[IN]} / out {z[OUT]}" for name, z in zones.items()) or "–"
        state = run.ended.get("status", "incomplete")
        if run.ended.get("truncated"):
            state = f"{state} (truncated file)"
        rows.append(
            f"<tr><td data-label=\"{unit}\"><a href=\"{escape(link)}\">{escape(run.camera if cameras else run.title)}</a></td>"
            f"<td class=\"num\" data-label=\"vehicles\">{len(run.vehicles)}</td>"
            f"<td class=\"num\" data-label=\"with a brand\">{sum(n for b, n in brands.items() if b != 'unknown')}</td>"
            f"<td class=\"num\" data-label=\"stream time\">{clock(run.duration_s)}</td>"
            f"<td data-label=\"brands\">{escape(top) or '–'}</td>"
            f"<td data-label=\"lines / zones\">{escape(zone_text)}</td>"
            f"<td data-label=\"run\">{escape(str(state))}</td></tr>"
        )
    total = sum(len(run.vehicles) for run, _ in runs)
    failed = sum(run.ended.get("status") == "error" for run, _ in runs)
    failed_text = f" ({failed} failed)" if failed else ""
    body = (
        f"<h1>Runs</h1><div class=\"muted\">{len(runs)} {unit if len(runs) == 1 else units}{failed_text} · {total} vehicles</div>"
        + (f"<div class=\"charts\"><figure><img src=\"{escape(brand_chart)}\" alt=\"vehicles per brand, all {units}\"></figure></div>" if brand_chart else "")
        + f"<h2>{units.capitalize()}</h2><div class=\"scroll\"><table class=\"vehicles index\"><thead><tr><th>{unit}</th><th class=\"num\">vehicles</th>"
        "<th class=\"num\">with a brand</th><th class=\"num\">stream time</th><th>brands</th><th>lines / zones</th><th>run</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    return _page("stream-pipeline runs", body)
