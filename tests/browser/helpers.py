"""Headless Chromium for the dashboard tests and the screenshot script: Debian's
`chromium` driven through its own `chromedriver`, so selenium never looks for (or
downloads) a driver or a browser."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not absent:
        return None
    return (
        f"{' and '.join(absent)} not found; install Debian's packages with "
        f"`apt-get install -y {' '.join(PACKAGES)}` (.ci/run does)"
    )


def try_install() -> None:
    """apt-get install the browser when we are root on Debian, as infra/redis.sh does for
    redis-server; does nothing otherwise, and never raises."""
    import os

    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=300, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *PACKAGES],
            env=env,
            timeout=600,
            check=False,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return


@contextmanager
def chromium(width: int = 1366, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium with its own profile, logging the page's console."""
    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        # No update checks, sync or other calls home: the tests run offline.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class _QuietHandler(WSGIRequestHandler):
    # The page polls every second; a log line per poll buries a failure's own output.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class ServedApp:
    """A Flask app on a real HTTP port (werkzeug, threaded), in a thread."""

    def __init__(self, app: Flask) -> None:
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ServedApp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
