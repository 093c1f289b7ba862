"""Writing the report: report.json and the report.html drawn from it, switched together after each
checkpoint under a lock on the output directory (a killed run keeps every checkpoint it finished),
and reading them back with the check that the page was drawn from that very JSON."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from hansprobe.errors import CheckpointError, ConfigError
from hansprobe.report.run import build_report
from hansprobe.report.settings import ReportSettings

SHA_META = re.compile(r'<meta name="hansprobe-report-json-sha256" content="([0-9a-f]{64})">')


def publish_report(out_dir: str | Path, paths: list[str | Path], settings: ReportSettings = ReportSettings(),
                   progress: bool | str = False) -> Iterator[dict]:
    """build_report's reports so far, each written to out_dir (report.json + report.html, switched
    together) before it is yielded, holding a lock on out_dir for the whole run so that two reports
    cannot interleave their files. The CLI loops over it and prints each checkpoint's verdicts."""
    from hansprobe.checkpoint import run_lock

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory to write report.html and report.json into")
    built = build_report(paths, settings, progress)  # checks every input before the lock is taken
    drawn = {}  # each figure's HTML, drawn once though the page is rewritten after every checkpoint
    with run_lock(out_dir):
        for report in built:
            _publish(out_dir, report, drawn)
            yield report


def write_report(out_dir: str | Path, paths: list[str | Path], settings: ReportSettings = ReportSettings(),
                 progress: bool | str = False) -> dict:
    """Measure and write the whole report (publish_report to its end); returns report.json's dict."""
    report = None
    for report in publish_report(out_dir, paths, settings, progress):
        pass
    return report["json"]


def _publish(out_dir: Path, built: dict, drawn: dict | None = None) -> None:
    from hansprobe.checkpoint import publish_together
    from hansprobe.report.html import render_html

    data = (json.dumps(built["json"], sort_keys=True, indent=1) + "\n").encode()
    # The page carries the hash of the JSON it was drawn from, and both are switched together.
    page = render_html(built["json"], built["checkpoints"], json_sha256=hashlib.sha256(data).hexdigest(),
                       drawn=drawn)
    # a user's text that is not UTF-8 (a surrogate escape the names did not catch) is escaped, never fatal
    publish_together(out_dir, {"report.json": data, "report.html": page.encode("utf-8", "backslashreplace")})


def read_report(out_dir: str | Path) -> dict:
    """report.json of a report directory, after checking that report.html was drawn from these very
    bytes (an interrupted write is first finished or discarded, `checkpoint.recover_staging`)."""
    import json

    from hansprobe.checkpoint import recover_staging, run_lock

    from hansprobe.storage import STAGING_PREFIX

    out_dir = Path(out_dir)
    if any(out_dir.glob(STAGING_PREFIX + "*")) or any(out_dir.glob(".*.tmp")):
        with run_lock(out_dir):
            recover_staging(out_dir)
    try:
        data = (out_dir / "report.json").read_bytes()
        page = (out_dir / "report.html").read_text(encoding="utf-8")
    except OSError as e:
        raise CheckpointError(f"{out_dir} is not a complete report directory ({e.strerror}: {e.filename}); "
                              "run hansprobe report again") from None
    m = SHA_META.search(page)
    if not m or m.group(1) != hashlib.sha256(data).hexdigest():
        raise CheckpointError(f"{out_dir}/report.html and report.json come from different report runs; run "
                              "hansprobe report again")
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{out_dir}/report.json is not valid JSON ({e}); run hansprobe report again") from None

