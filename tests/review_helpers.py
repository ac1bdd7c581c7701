"""A real review server in a subprocess, plain HTTP calls to it, and a headless Chromium."""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

#: The browser the page and report tests drive (Debian's package; .ci/run installs it).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def review_server(*args, timeout: float = 90):
    """``tfmssass review ARGS`` until the block ends; yields (address with token, process)."""
    proc = subprocess.Popen([sys.executable, "-m", "tfmssass.cli", "review", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            proc.kill()
            raise AssertionError(f"no address printed: {line!r} {proc.stderr.read()[-2000:]}")
        yield line, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def base(url: str) -> tuple[str, str]:
    """(server root, token) of a printed address."""
    root, token = url.split("/?token=")
    return root, token


def call(url: str, body=None, token: str | None = None) -> tuple[int, bytes]:
    """GET (or POST JSON) without raising on 4xx/5xx; returns (status, body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("X-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def api(root: str, token: str, path: str, body=None):
    status, data = call(f"{root}/api/{path}", body, token)
    assert status == 200, (path, status, data[:300])
    return json.loads(data)


@contextlib.contextmanager
def browser_page(width: int = 1500, height: int = 900):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
        finally:
            browser.close()
