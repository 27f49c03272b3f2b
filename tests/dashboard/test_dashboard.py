"""The line dashboard: its HTTP API (read-only by default, tokens for actions, loopback), and the
page in headless Chromium (Debian's chromium + chromium-driver through selenium): live updates,
counters equal to the runtime's summary at the end, a rejected part opened, a screenshot saved."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import edgesentry
from edgesentry.bundle import Bundle
from edgesentry.errors import ConfigError
from edgesentry.line import LineRuntime, load_line_file
from edgesentry.line.dashboard import Dashboard, parse_address, read_tokens
from tests.line.helpers import base_images, is_loopback, wait_for, write_video

FRAMES = 45


def _line(tmp: Path, bundle: Path, threshold: float, realtime: bool) -> Path:
    images = base_images()
    for i, cam in enumerate(("top", "side")):
        write_video(tmp / f"{cam}.avi", images, fps=15, n=FRAMES, offset=2 * i)  # same parity: defect together
    path = tmp / "line.toml"
    path.write_text(f"""
[line]
name = "dash"
deadline_ms = 600000
status_interval_s = 0.2
[detectors.isstad]
bundle = "{bundle}"
backend = "onnxruntime"
[[cameras]]
id = "top"
detector = "isstad"
policy = "block"
source = {{ kind = "video", path = "top.avi", fps = 15, realtime = {str(realtime).lower()} }}
[[cameras]]
id = "side"
detector = "isstad"
policy = "block"
source = {{ kind = "video", path = "side.avi", fps = 15, realtime = {str(realtime).lower()} }}
[[stations]]
id = "st"
cameras = ["top", "side"]
rule = {{ kind = "max", threshold = {threshold} }}
[[triggers]]
station = "st"
kind = "free_run"
[drift]
reference = 20
window = 20
min_samples = 20
[outputs]
audit = "audit.jsonl"
""")
    return path


def _threshold(bundle: Path) -> float:
    det = edgesentry.load(bundle, backend="onnxruntime")
    ranked = sorted(float(det.predict(img).score) for img in base_images())
    return (ranked[2] + ranked[3]) / 2  # about half the parts are rejected


def _get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_addresses_and_tokens(tmp_path: Path, monkeypatch) -> None:
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080) and parse_address("[::1]:0") == ("::1", 0)
    for bad in ("8080", "host:99999", ":80", "a:b"):
        with pytest.raises(ConfigError, match="--dashboard"):
            parse_address(bad)
    monkeypatch.delenv("EDGESENTRY_DASHBOARD_TOKEN", raising=False)
    assert read_tokens(None) == {}
    (tmp_path / "t").write_text("alice:0123456789\nbob:abcdefghij\n")
    assert read_tokens(tmp_path / "t") == {"0123456789": "alice", "abcdefghij": "bob"}
    (tmp_path / "bad").write_text("alice:short\n")
    with pytest.raises(ConfigError, match="NAME:SECRET"):
        read_tokens(tmp_path / "bad")


def test_api_read_only_by_default_and_actions_with_a_token(isstad_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(isstad_bundle, bundle)
    runtime = LineRuntime(load_line_file(_line(tmp_path, bundle, 1e9, realtime=False)))
    dash = Dashboard(runtime, port=0, interval_s=0.1).start()
    try:
        assert is_loopback(dash.address[0])
        runtime.start()
        summary = runtime.join(300)
        assert summary is not None
        code, body = _get(dash.url + "api/state")
        state = json.loads(body)
        assert code == 200 and state["finished"] and state["summary"]["processed"] == summary["processed"]
        assert _get(dash.url + "api/frame/top.jpg")[1][:3] == b"\xff\xd8\xff"  # JPEG
        part = state["parts"]["st"][-1]
        code, body = _get(dash.url + f"api/part/{part['part']}")
        assert code == 200 and json.loads(body)["part_id"] == part["part_id"]
        cam, index, _ = part["frames"][0]
        assert _get(dash.url + f"api/part/{part['part']}/{cam}/{index}.jpg")[1][:3] == b"\xff\xd8\xff"
        assert _get(dash.url + "api/part/999999")[0] == 404
        assert _get(dash.url + "api/frame/..%2Fetc.jpg")[0] == 404
        body = json.dumps({"detector": "isstad"}).encode()
        assert _get(dash.url + "api/recalibrate", body)[0] == 403  # read-only: no tokens configured
        dash.tokens = {"0123456789": "alice"}
        assert _get(dash.url + "api/recalibrate", body, {"Authorization": "Bearer wrong-token"})[0] == 401
        before = (bundle / "meta.json").read_bytes()
        code, answer = _get(dash.url + "api/recalibrate", body, {"Authorization": "Bearer 0123456789"})
        done = json.loads(answer)
        assert code == 200 and done["version"] == 2 and done["who"] == "alice", done
        assert Bundle.open(done["bundle"]).meta["lineage"][-1]["who"] == "alice"
        assert (bundle / "meta.json").read_bytes() == before  # a new version, never in place
        assert json.loads(_get(dash.url + "api/state")[1])["actions"] == 1
    finally:
        dash.close()


def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("chromium / chromium-driver are not installed (scripts/services.sh installs them with apt-get)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1366,768"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_page_in_headless_chromium(isstad_bundle: Path, tmp_path: Path) -> None:
    browser = _chromium()
    runtime = LineRuntime(load_line_file(_line(tmp_path, isstad_bundle, _threshold(isstad_bundle), realtime=True)))
    dash = Dashboard(runtime, port=0, interval_s=0.2).start()
    try:
        from selenium.webdriver.common.by import By

        browser.get(dash.url)
        runtime.start()
        # live updates: the counters move while the line runs, without a reload
        wait_for(lambda: int(browser.find_element(By.ID, "total-processed").text or 0) > 0, 120, "a live update")
        seen_live = browser.execute_script("return document.body.dataset.finished") == "no"
        summary = runtime.join(300)
        assert summary is not None
        finished = "return document.body.dataset.finished"
        wait_for(lambda: browser.execute_script(finished) == "yes", 60, "the final state")
        assert seen_live and int(browser.execute_script("return document.body.dataset.updates")) >= 2
        for key in ("produced", "processed", "dropped", "failed"):
            assert int(browser.find_element(By.ID, f"total-{key}").text) == summary[key], key
        for cam, counters in summary["cameras"].items():
            card = browser.find_element(By.CSS_SELECTOR, f'.camera[data-camera="{cam}"]')
            for key in ("produced", "processed", "dropped", "failed"):
                assert int(card.find_element(By.CSS_SELECTOR, f'[data-counter="{key}"]').text) == counters[key]
            assert card.find_element(By.TAG_NAME, "img").get_attribute("naturalWidth") not in (None, "0")
        station = browser.find_element(By.CSS_SELECTOR, '.station[data-station="st"]')
        st = summary["stations"]["st"]
        for key in ("triggered", "accepted", "rejected"):
            assert int(station.find_element(By.CSS_SELECTOR, f'[data-counter="{key}"]').text) == st[key], key
        assert st["rejected"] > 0 and st["accepted"] > 0
        browser.find_element(By.ID, "rejected-only").click()
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.part")
        assert rows and all("reject" in r.get_attribute("class") for r in rows)
        rows[0].click()
        wait_for(lambda: browser.find_element(By.ID, "part-view").is_displayed(), 30, "the part view")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#part-frames img"), 30, "the part's frames")
        assert "reject" in browser.find_element(By.ID, "part-title").text
        loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
        wait_for(lambda: all(browser.execute_script(loaded, img)
                             for img in browser.find_elements(By.CSS_SELECTOR, "#part-frames img")), 30, "frame images")
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 1000
        print(f"\ndashboard screenshot: {shot}")
    finally:
        browser.quit()
        dash.close()
        runtime.stop(drain=False)
        runtime.join(30)


def test_line_run_serves_the_dashboard_on_loopback(isstad_bundle: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.line.helpers import free_port

    path = _line(tmp_path, isstad_bundle, 1e9, realtime=False)
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "edgesentry.cli", "line", "run", str(path), "--quiet",
                           "--dashboard", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"dashboard: http://127.0.0.1:{port}/" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "edgesentry.cli", "line", "run", str(path), "--dashboard", "nowhere"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "--dashboard 'nowhere': expected HOST:PORT" in bad.stderr
