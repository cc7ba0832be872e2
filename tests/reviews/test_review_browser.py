"""The review page in a real browser: Debian's headless Chromium driven through
chromium-driver (``.ci/run`` installs both). Plays an item's audio to its end, answers
with the keyboard, reloads mid-review, finishes, and checks the journal, the tables and
the summary. Never skipped: without the browser the test fails."""

import json
import time

import pytest

from test_review import truth, write_season
from utils.synthetic import make_recording

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


HOSTILE = '<img src=x onerror="window.pwned=1">'       # a class name from an input table


@pytest.fixture
def page(tmp_path):
    import review
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    write_season(tmp_path)
    make_recording(str(tmp_path / "recordings" / "site3" / "c.wav"), 4.0, 16000, [], seed=4)
    (tmp_path / "predictions" / "site3").mkdir()
    (tmp_path / "predictions" / "site3" / "c.Table.1.selections.txt").write_text(
        f"Selection\tBegin Time (s)\tEnd Time (s)\tSound type\n1\t1.0\t1.5\t{HOSTILE}\n")
    args = review.build_parser().parse_args(["--predictions", str(tmp_path / "predictions"), "--recordings",
                                             str(tmp_path / "recordings"), "--out", str(tmp_path / "out"),
                                             "--per_class", "3", "--bins", "1", "--seed", "2", "--port", "0",
                                             "--context", "0.2"])
    opened = review.open_review(args)
    opened.learner = Counting()                        # the status line of an active learner
    server, address = review.serve_in_thread(opened)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver, address, opened, tmp_path
    driver.quit()
    server.shutdown()


class Counting:
    """Stands for an active learner: its status changes with every answer."""

    def __init__(self):
        self.count = 0

    def answered(self):
        self.count += 1

    def status(self):
        return f"learner: {self.count} answer(s) seen"


def current_item(driver):
    return driver.execute_script("return current && current.item")


def wait_for(condition, seconds=20):
    end = time.time() + seconds
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_review_in_the_browser(page):
    from selenium.webdriver.common.action_chains import ActionChains

    driver, address, review, folder = page
    session = review.session
    planned = sum(len(p.queue) for p in session.plans.values())
    driver.get(address)
    first = wait_for(lambda: current_item(driver))
    assert "<kbd>c</kbd> correct" in driver.page_source                   # the keys are shown on the page
    progress = driver.find_element("id", "progress")
    assert HOSTILE in progress.text and not progress.find_elements("tag name", "img")   # text, not HTML
    assert driver.execute_script("return window.pwned") is None
    assert wait_for(lambda: driver.execute_script("return document.getElementById('spectrogram').naturalWidth")) > 0
    for width, height in ((360, 760), (1600, 1000)):                     # a phone and a wide screen
        driver.set_window_size(width, height)
        wait_for(lambda: driver.execute_script("return window.innerWidth") <= width)
        inside = driver.execute_script(
            "const w = window.innerWidth; const out = [];"
            "for (const e of document.querySelectorAll('button:not([hidden]), #spectrogram, #progress, #audio, header'))"
            "  if (e.offsetParent !== null && e.getBoundingClientRect().right > w + 1) out.push(e.id || e.tagName);"
            "return [document.documentElement.scrollWidth <= w, out];")
        assert inside == [True, []], (width, inside)                        # nothing sticks out sideways
        driver.save_screenshot(str(folder / f"page_{width}.png"))
    played = driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; const audio = document.getElementById('audio');"
        "audio.onended = () => done(['ended', audio.duration]); audio.onerror = () => done(['error', 0]);"
        "audio.currentTime = 0; audio.play().catch((e) => done(['refused', String(e)]));")
    assert played[0] == "ended" and played[1] > 0.5
    answers, reloaded = {}, False
    while True:
        item = wait_for(lambda: current_item(driver) or (driver.find_element("id", "done").is_displayed() and "done"))
        if item == "done":
            break
        unit = session.units[item]
        verdict = truth(unit)
        keys = {"correct": "c", "wrong": "w"}.get(verdict.split(":")[0])
        if keys:
            ActionChains(driver).send_keys(keys).perform()
        else:                                              # another class: o, type it, Enter
            ActionChains(driver).send_keys("o").perform()
            wait_for(lambda: driver.find_element("id", "other-box").is_displayed())
            ActionChains(driver).send_keys(verdict.split(":")[1]).send_keys("\ue007").perform()
        answers[item] = verdict
        wait_for(lambda: current_item(driver) != item or driver.find_element("id", "done").is_displayed())
        wait_for(lambda: driver.find_element("id", "learner").text == f"learner: {review.learner.count} answer(s) "
                 "seen" and review.learner.count >= len(answers))          # the status line follows every answer
        if len(answers) == 2 and not reloaded:           # closing the tab mid-review loses nothing
            driver.refresh()
            reloaded = True
            wait_for(lambda: current_item(driver) or driver.find_element("id", "done").is_displayed())
    assert first in answers and len(answers) == planned
    journal = [json.loads(line) for line in open(folder / "out" / "review_journal.jsonl")]
    assert {e["item"]: (e["decision"] if e["decision"] != "other" else "other:" + e["label"]) for e in journal} \
        == answers
    rows = [line.split("\t") for path in (folder / "out" / "tables").rglob("*.selections.txt")
            for line in path.read_text().splitlines()[1:]]
    assert sum(1 for r in rows if r[10] in ("yes", "no")) == planned
    driver.get(address + "summary")
    assert "Review summary" in driver.page_source and "<svg" in driver.page_source
    assert HOSTILE in driver.find_element("tag name", "body").text and driver.execute_script("return window.pwned") \
        is None and "threshold for precision" not in driver.page_source          # none asked for: none shown
    summary = json.loads((folder / "out" / "review_summary.json").read_text())
    assert sum(c["reviewed"] for c in summary["classes"].values()) == planned
