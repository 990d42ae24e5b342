"""The app in a real browser (headless Debian Chromium, tiny random models): the page renders offline, a link or a
click captions a clip, and a bad upload shows an error naming the problem.

Needs `apt-get install -y chromium chromium-driver`; the interactive tests also need `pip install selenium`.
`EACAP_SCREENSHOT=docs/screenshot.png EACAP_LIVE_SCREENSHOT=docs/live.png pytest tests/test_app_browser.py` refreshes
the README's screenshots (with the shipped checkpoints instead of the tiny models, when they are there).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_examples

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"no {CHROMIUM}: apt-get install -y chromium chromium-driver")
REPO = Path(__file__).resolve().parent.parent
WIDTH = 1400


def chromium_flags(tmp_path: Path) -> list[str]:
    # No sandbox (root in a container), no GPU, and none of Chromium's own calls home (refused offline anyway).
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path}", f"--window-size={WIDTH},1000"]


@pytest.fixture(scope="module")
def served(app, tiny_checkpoints, tmp_path_factory):
    """(url, captioner): the app over tiny models. The shipped examples/ clips when there are some, so the
    screenshot shows the real example list; generated tones otherwise."""
    examples = REPO / "examples" if len(app.find_examples(REPO / "examples")) >= 2 else None
    examples = examples or write_examples(tmp_path_factory.mktemp("examples"))
    models = Path(tiny_checkpoints[0]).parent
    if os.environ.get("EACAP_SCREENSHOT") and (REPO / "checkpoints" / "student" / "config.json").is_file():
        models = REPO / "checkpoints"  # the README's screenshot shows the shipped models
    captioner = app.Captioner.from_folder(models, examples)
    demo = app.build_demo(captioner)
    app.launch(demo, server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url, captioner
    finally:
        demo.close()


def test_page_renders_offline(app, served, tmp_path):
    url, captioner = served
    flags = chromium_flags(tmp_path / "profile")

    def run(*args):
        return subprocess.run([str(CHROMIUM), *flags, "--virtual-time-budget=8000", *args, url],
                              capture_output=True, text=True, timeout=120)

    dom = run("--dump-dom").stdout
    assert app.TITLE in dom
    assert "Teacher caption" in dom and "Student caption" in dom
    assert "Caption with both models" in dom
    assert all(app.example_label(p) in dom for p in captioner.bank.examples)
    assert "No models yet" not in dom
    shot = tmp_path / "page.png"
    run(f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000  # a drawn page, not blank


def chromium_driver(flags: list[str]):
    """Selenium's Chrome on Debian's Chromium with `flags` (skips the test without selenium or the driver)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the interactive browser tests need selenium")
    if not CHROMEDRIVER.exists():
        pytest.skip(f"no {CHROMEDRIVER}: apt-get install -y chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in flags:
        options.add_argument(flag)
    # The driver is given explicitly, so Selenium Manager never tries to download one.
    return webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium_driver(chromium_flags(tmp_path_factory.mktemp("profile")))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser, condition, seconds: float = 90):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds, poll_frequency=0.2).until(lambda b: condition(b))


def captions(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    return [box.get_attribute("value") for box in browser.find_elements(By.CSS_SELECTOR, ".caption textarea")]


def test_example_link_shows_both_captions(served, browser, tmp_path):
    """`/?example=NAME` captions that example on load: the page shows what /compare computes for it."""
    url, captioner = served
    example = captioner.bank.examples[0]
    browser.get(f"{url}?example={example.stem}")
    wait_for(browser, lambda b: "fewer parameters" in b.page_source)
    expected = captioner.compare(str(example))
    assert captions(browser) == [expected["teacher"]["caption"], expected["student"]["caption"]]
    assert "top-1 match" in browser.page_source and example.name in browser.page_source

    # The whole page, for the README (EACAP_SCREENSHOT) or for a look at a failing run.
    for _ in range(3):  # a taller window can reflow the page; settle on a height that shows all of it
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(WIDTH, height + 120)
    shot = Path(os.environ.get("EACAP_SCREENSHOT") or tmp_path / "screenshot.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot))
    browser.set_window_size(WIDTH, 1000)


def test_click_example_then_bad_upload(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, captioner = served
    browser.get(url)
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "button.gallery-item"))
    browser.find_elements(By.CSS_SELECTOR, "button.gallery-item")[-1].click()  # one click: load and caption
    wait_for(browser, lambda b: all(captions(b)) and "fewer parameters" in b.page_source)
    expected = captioner.compare(str(captioner.bank.examples[-1]))
    assert captions(browser) == [expected["teacher"]["caption"], expected["student"]["caption"]]

    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"meeting notes, not audio")
    short = tmp_path / "click.wav"
    sf.write(short, np.zeros(400, dtype=np.float32) + 0.1, 8000)
    for path, message in ((bad, "notes.wav: not readable as audio"), (short, "click.wav: only 0.05 s of audio")):
        browser.get(url)
        upload = wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "input[type=file]"))
        upload[0].send_keys(str(path))
        wait_for(browser, lambda b: path.name in b.page_source or b.find_elements(By.CSS_SELECTOR, "audio"))
        browser.find_element(By.XPATH, "//button[contains(., 'Caption with both models')]").click()
        wait_for(browser, lambda b: message in b.page_source)
        assert "Traceback" not in browser.page_source


def test_timeline_tables_and_click_to_seek(served, browser, tmp_path):
    """A 40 s upload: the timeline button fills both segment tables, and clicking a row plays from its start."""
    from selenium.webdriver.common.by import By

    url, captioner = served
    path = tmp_path / "walk.flac"
    sf.write(path, np.concatenate([0.3 * np.sin(2 * np.pi * 300 * np.arange(16000 * 20) / 16000),
                                   np.zeros(16000 * 20)]).astype(np.float32), 16000)
    browser.get(url)
    upload = wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "input[type=file]"))
    upload[0].send_keys(str(path))
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#sound audio"))
    browser.find_element(By.XPATH, "//button[contains(., 'whole recording as a timeline')]").click()
    wait_for(browser, lambda b: "segments in" in b.page_source)
    expected = captioner.timeline(str(path), progress=lambda *a, **k: None)["student"]["segments"]
    cell = "#student-timeline [role=gridcell]"
    cells = wait_for(browser,
                     lambda b: [c for c in b.find_elements(By.CSS_SELECTOR, cell) if c.text][:3 * len(expected)])
    assert [c.text for c in cells[2::3]] == [s["text"] for s in expected]
    cells[3 * (len(expected) - 1)].click()  # the last segment's start
    wait_for(browser, lambda b: b.execute_script("return document.querySelector('#sound audio').currentTime") > 0,
             seconds=20)
    position = browser.execute_script("return document.querySelector('#sound audio').currentTime")
    assert position == pytest.approx(expected[-1]["start"], abs=1.0)


@pytest.fixture(scope="module")
def microphone_browser(tmp_path_factory):
    """A browser whose microphone plays a sound file: Chromium's fake media stream, permission granted."""
    folder = tmp_path_factory.mktemp("microphone")
    # A tone, then silence longer than a live window, over and over (Chromium loops the file): captions must change
    rate, seconds = 48000, 10
    tone_part = 0.4 * np.sin(2 * np.pi * 500 * np.arange(seconds * rate) / rate)
    sf.write(folder / "mic.wav", np.concatenate([tone_part, np.zeros(seconds * rate)]).astype(np.float32), rate,
             subtype="PCM_16")
    driver = chromium_driver(chromium_flags(folder / "profile") + [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={folder / 'mic.wav'}", "--autoplay-policy=no-user-gesture-required"])
    try:
        yield driver
    finally:
        driver.quit()


def test_live_captions_from_the_microphone(served, microphone_browser, tmp_path):
    """Open the live panel, record: captions from both models appear within a few hops and change as the sound
    does (a tone, then silence: `silence: no sound can be heard` once a whole window is quiet); stop ends it."""
    from selenium.webdriver.common.by import By

    url, _ = served
    browser = microphone_browser
    browser.get(url)
    header = wait_for(browser, lambda b: b.find_elements(By.XPATH, "//*[@id='live']//button[contains(., 'Live')]"))
    header[0].click()
    record = wait_for(browser, lambda b: [e for e in b.find_elements(By.CSS_SELECTOR, "#live-mic button")
                                          if "record" in (e.text + str(e.get_attribute("aria-label"))).lower()
                                          and e.is_displayed()])
    record[0].click()

    def live(b) -> tuple[str, str]:
        boxes = b.find_elements(By.CSS_SELECTOR, "#live-teacher textarea, #live-student textarea")
        return tuple(box.get_attribute("value") for box in boxes)

    first = wait_for(browser, lambda b: all(live(b)) and live(b), seconds=60)
    wait_for(browser, lambda b: live(b)[1] != first[1] and all(live(b)), seconds=60)
    assert "real-time factor" in browser.find_element(By.ID, "live-info").text
    history = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#live-history [role=gridcell]") if c.text]
    assert "student" in history and "teacher" in history
    browser.execute_script("document.getElementById('live').scrollIntoView()")
    browser.save_screenshot(str(os.environ.get("EACAP_LIVE_SCREENSHOT") or tmp_path / "live.png"))
    stop = [e for e in browser.find_elements(By.CSS_SELECTOR, "#live-mic button")
            if "stop" in (e.text + str(e.get_attribute("aria-label"))).lower() and e.is_displayed()]
    assert stop, "no stop button while recording"
    stop[0].click()
