"""Open a realsr report page in headless Chromium and read the verdict of its built-in self-test."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import pytest


def browser_selftest(page):
    """Open page#selftest in headless Chromium; return (verdict text, console lines)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is needed for the report test: apt-get install chromium (.ci/run does)")
    run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri() + "#selftest"],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="selftest-result">([^<]*)</pre>', run.stdout)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return (html.unescape(found.group(1)) if found else f"no verdict in the page (rc {run.returncode})"), console
