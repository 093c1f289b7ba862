"""The report page (hansprobe/report/html.py): self-contained HTML with plotly once, drawn in headless
Chromium where it is installed (CI installs it and requires it), its layout on a desktop and a phone.
The `runs` and `report` fixtures are session-wide, in conftest.py."""
import json
import os
import re
import shutil
import subprocess

import pytest

from hansprobe.report import QUESTIONS, write_report

from helpers import REPO, TINY_REPORT as SMALL


def test_report_html_is_self_contained_with_plotly_once(report):
    out, doc = report
    page = (out / "report.html").read_text()
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()[:2000]) == 1  # the library, embedded once
    assert page.count("<script type='text/javascript'>") == 1  # the library, once; figures are plain fragments
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]?(https?:)?//", page)  # nothing fetched
    for c in doc["checkpoints"]:  # one column each, in the verdict table too
        assert f"<th>{c['name']}</th>" in page
    for text in QUESTIONS.values():
        assert text in page


# --- headless Chromium -------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]


def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image, ImageStat

    if CHROMIUM is None:
        if os.environ.get("HANSPROBE_REQUIRE_CHROMIUM"):
            pytest.fail("HANSPROBE_REQUIRE_CHROMIUM is set but chromium is not on PATH (.ci/run installs it with apt-get)")
        pytest.skip("Chromium not installed: `apt-get install chromium` (Debian) to run the rendering test")
    out, _ = report
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'p1'}", "--virtual-time-budget=10000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    head = re.search(r"<html[^>]*>", dom.stdout)
    assert head, dom.stderr[-2000:]
    attrs = dict(re.findall(r'(data-[a-z-]+)="(\d+)"', head.group(0)))
    assert int(attrs["data-figures"]) > 0
    assert attrs["data-figures-drawn"] == attrs["data-figures"], "some figures did not draw"
    assert attrs["data-errors"] == "0", "a script on the page failed"
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'p2'}", "--window-size=1200,1600",
                    f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    stat = ImageStat.Stat(Image.open(shot).convert("L"))
    assert stat.stddev[0] > 10, "the screenshot is blank"


HARNESS = """<!DOCTYPE html><html><body style="margin:0">{frames}
<script>window.onload=function(){{var fs=document.querySelectorAll('iframe');
for(var k=0;k<fs.length;k++){{var h=fs[k].contentDocument.documentElement;
for(var i=0;i<h.attributes.length;i++)if(h.attributes[i].name.indexOf('data-')===0)
document.documentElement.setAttribute(fs[k].id+'-'+h.attributes[i].name,h.attributes[i].value);}}}};
</script></body></html>"""
FRAME = '<iframe id="{id}" src="{src}" style="width:{width}px;height:{height}px;border:0;display:block"></iframe>'


def render(pages: dict, tmp_path, artifacts) -> dict:
    """Every (name, width) -> page, each in an iframe of that width (headless Chromium's own window is
    at least 500 px wide): one browser run reads every page's layout measurements
    (report/html.py LAYOUT_SCRIPT), then one screenshot per page is taken, in parallel."""
    flags = [*FLAGS, "--allow-file-access-from-files"]
    frames = "".join(FRAME.format(id=f"f{i}", src=page.resolve().as_uri(), width=w, height=3000)
                     for i, ((_, w), page) in enumerate(pages.items()))
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.format(frames=frames))
    dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'pd'}", "--window-size=1400,3000",
                          "--virtual-time-budget=20000", "--dump-dom", harness.resolve().as_uri()],
                         capture_output=True, text=True, timeout=240)
    head = re.search(r"<html[^>]*>", dom.stdout)
    assert head, dom.stderr[-2000:]
    attrs = dict(re.findall(r'(f\d+-data-[a-z-]+)="([^"]*)"', head.group(0)))
    shots = []
    for i, ((name, w), page) in enumerate(pages.items()):
        one = tmp_path / f"shot-{i}.html"
        one.write_text(HARNESS.format(frames=FRAME.format(id="f", src=page.resolve().as_uri(), width=w, height=2400)))
        shots.append(subprocess.Popen([CHROMIUM, *flags, f"--user-data-dir={tmp_path / f'ps{i}'}",
                                       f"--window-size={max(w, 500)},2400", f"--screenshot={artifacts / f'report-{name}-{w}px.png'}",
                                       one.resolve().as_uri()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for proc in shots:
        assert proc.wait(timeout=240) == 0
    return {key: {k.split("-", 1)[1]: v for k, v in attrs.items() if k.startswith(f"f{i}-")}
            for i, key in enumerate(pages)}


def test_the_page_layout_holds_for_1_and_4_checkpoints_on_a_desktop_and_a_phone(runs, report, tmp_path):
    """No plot narrower than the page's minimum cell (or nearly a phone's whole width), no legend,
    colorbar or title over a plot area, no sideways scrolling of the page; screenshots are kept in
    tests/artifacts/."""
    if CHROMIUM is None:
        if os.environ.get("HANSPROBE_REQUIRE_CHROMIUM"):
            pytest.fail("HANSPROBE_REQUIRE_CHROMIUM is set but chromium is not on PATH (.ci/run installs it with apt-get)")
        pytest.skip("Chromium not installed: `apt-get install chromium` (Debian) to run the rendering test")
    from hansprobe.report.html import MIN_CELL

    artifacts = REPO / "tests" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    one = tmp_path / "one"
    write_report(one, [runs["teacher-forcing"]], SMALL)
    four, _ = report
    assert len(json.loads((four / "report.json").read_text())["checkpoints"]) == 4
    pages = {(f"{n}-checkpoints", w): out / "report.html" for n, out in (("1", one), ("4", four)) for w in (1400, 400)}
    for (name, width), m in render(pages, tmp_path, artifacts).items():
        where = f"{name} at {width} px: {m}"
        assert m["data-errors"] == "0" and m["data-figures-drawn"] == m["data-figures"] != "0", where
        assert int(m["data-viewport-width"]) == width, where
        assert m["data-overlaps"] == "0", where
        assert m["data-page-overflow"] == "0", where
        assert int(m["data-min-plot-width"]) >= min(MIN_CELL, width - 40), where  # a phone: nearly its whole width
        # a verdict cell shows the answer and one clause; the evidence is one click away (<details>)
        assert 0 < int(m["data-verdict-cell-chars"]) <= 160, where
    assert len(list(artifacts.glob("report-*px.png"))) >= 4
