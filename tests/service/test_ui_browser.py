"""The status page as a person sees it: served by a real uvicorn server on 127.0.0.1 and rendered by headless
Chromium (Debian's `chromium`; `make test-slow` installs it when missing)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest
import uvicorn

from recunlearn.service.api import create_app
from recunlearn.service.ledger import Erasure, open_ledger

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(settings):
    """The app without tokens (a browser started from the command line sends no header), on a real port."""
    settings = settings.model_copy(update={"require_tokens": False})
    ledger = open_ledger(settings.ledger_url())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, ledger), host="127.0.0.1", port=port,
                                          log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", ledger
    server.should_exit = True
    thread.join(10)
    ledger.dispose()


def test_chromium_shows_the_erasures_their_status_and_the_queue(server, tmp_path):
    import httpx2 as httpx

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Chromium is missing: `make test-slow` installs Debian's chromium package"
    base, ledger = server
    ids = [httpx.post(f"{base}/v1/erasures", json={"user": u}).json()["id"] for u in ("1", "2", "3")]
    with ledger.writing() as session:
        failed = session.get(Erasure, uuid.UUID(ids[2]))
        failed.status, failed.error = "failed", "the model could not be loaded"
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"]
    dom = subprocess.run([*args, "--dump-dom", f"{base}/ui"], capture_output=True, text=True, timeout=120).stdout
    screenshot = tmp_path / "ui.png"
    subprocess.run([*args, f"--screenshot={screenshot}", f"{base}/ui"], capture_output=True, timeout=120)
    assert "<h1>recunlearn erasure service</h1>" in dom
    assert all(i in dom for i in ids)
    assert 'id="queue-depth">2<' in dom                    # two pending, one failed
    assert '<td class="status-failed">failed' in dom and "the model could not be loaded" in dom
    assert "No model version is published yet." in dom
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000   # a rendered page, not a blank one
