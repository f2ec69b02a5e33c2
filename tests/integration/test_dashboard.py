"""The dashboard (`dockertask ui`) and the HTML report (`show --html`), in Debian's headless Chromium, on the
record of real runs: what a person sees, not what the server returns."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

PROGRAM = textwrap.dedent('''
    from dockertask import Resources, map_task, task

    @task
    def score(x: int) -> int:
        print(f"scoring {x}")
        if x == 2:
            print("<script>alert('pwned')</script>")
            raise ValueError(f"cannot score {x}: <b>bold</b>")
        return x

    @task(limits=Resources(mem="64Mi"))
    def hog() -> None:
        blocks = []
        while True:
            blocks.append(bytearray(8 << 20))

    map_task(score, min_success_ratio=0.5)(x=[0, 1, 2, 3])
    try:
        hog()
    except Exception as exc:
        print(type(exc).__name__)
''')

SLOW = textwrap.dedent('''
    from dockertask import task

    @task
    def slow() -> None:
        import time
        for i in range(24):
            print(f"line {i}", flush=True)
            time.sleep(0.5)

    slow()
''')


def _env(db: Path) -> dict[str, str]:
    return {**os.environ, "DOCKERTASK_RUNS_DB": str(db), "PYTHONPATH": str(ROOT)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A record holding one real run: a map with a failing item (which prints markup), and an OOM call."""
    base = tmp_path_factory.mktemp("dash")
    db = base / "runs.db"
    program = base / "program.py"
    program.write_text(PROGRAM)
    done = subprocess.run([sys.executable, str(program)], env=_env(db), capture_output=True, text=True, timeout=300,
                          cwd=base)
    assert done.returncode == 0 and "TaskOOMError" in done.stdout, done.stderr
    return db


@pytest.fixture(scope="module")
def ui(recorded: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dockertask", "ui", "--port", str(port)], env=_env(recorded),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's Chromium, headless, through Debian's chromedriver (nothing downloaded). Its temporary files
    go under pytest's own directory: Chromium leaves a directory for its singleton socket in $TMPDIR."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver; "
                    "./dev.sh test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    scratch = tmp_path_factory.mktemp("chromium")
    options.add_argument(f"--user-data-dir={scratch / 'profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": str(scratch)}),
                              options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: Any, name: str, tmp_path: Path) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    if os.environ.get("DOCKERTASK_SCREENSHOTS"):  # how the README's pictures were made
        driver.save_screenshot(str(Path(os.environ["DOCKERTASK_SCREENSHOTS"]) / f"{name}.png"))


def _run_id(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0])


def test_the_runs_list_and_a_run_show_what_failed_and_when(browser: Any, ui: str, recorded: Path,
                                                          tmp_path: Path) -> None:
    """The list shows the run with its failed count; the run shows the failed item's error, one timeline bar
    per call, and the OOM call's memory bar at its limit; task output and errors are text, never markup."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    browser.get(ui + "/")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-run='{_run_id(recorded)}']")
    assert row.find_elements(By.TAG_NAME, "td")[-1].text == "2"  # the map item and the OOM call
    _shot(browser, "runs", tmp_path)
    row.find_element(By.TAG_NAME, "a").click()
    assert browser.find_element(By.ID, "count-failed").text == "2"
    failed = browser.find_element(By.CSS_SELECTOR, "#calls tr.failed td.error")
    assert failed.text == "ValueError: cannot score 2: <b>bold</b>"  # escaped: the tags are text
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.timeline g.call-bar")
    calls = browser.find_elements(By.CSS_SELECTOR, "#calls tbody tr")
    assert len(bars) == len(calls) == 5  # 4 map items and the OOM call
    # Each bar's accessible name is its <title>: the call, its status and its times.
    labels = [b.find_element(By.TAG_NAME, "title").get_attribute("textContent") for b in bars]
    assert any(label.startswith("score[2]") and "failed" in label for label in labels)
    oom = next(r for r in calls if "(OOM)" in r.text)
    memory = oom.find_element(By.CSS_SELECTOR, "div.mem")
    assert float(memory.get_attribute("data-pct")) >= 90, memory.get_attribute("aria-label")
    assert "of its 64.0 MiB limit" in memory.get_attribute("aria-label")
    _shot(browser, "run", tmp_path)
    oom.find_element(By.TAG_NAME, "a").click()
    assert "yes" in browser.find_element(By.CSS_SELECTOR, "table.attempts tbody tr").text  # OOM: yes
    _shot(browser, "call", tmp_path)
    browser.back()
    browser.find_element(By.CSS_SELECTOR, "#calls tr.failed a").click()
    assert "<script>alert('pwned')</script>" in browser.find_element(By.ID, "output").text
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - the script never ran
    assert not [s for s in browser.find_elements(By.TAG_NAME, "script") if "pwned" in s.get_attribute("innerHTML")]


CONTRAST = r"""
function lum(c) {
  var v = c.match(/[0-9.]+/g).slice(0, 3).map(function (x) { x = x / 255;
    return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
  return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
}
function bg(el) {
  for (; el; el = el.parentElement) {
    var c = getComputedStyle(el).backgroundColor;
    if (c && c !== "transparent" && !/rgba\(.*, 0\)$/.test(c)) { return c; }
  }
  return "rgb(255, 255, 255)";
}
var worst = [];
document.querySelectorAll("body *").forEach(function (el) {
  var own = Array.prototype.some.call(el.childNodes, function (n) { return n.nodeType === 3 && n.textContent.trim(); });
  if (!own || el.closest("svg") || !el.getClientRects().length) { return; }
  var a = lum(getComputedStyle(el).color), b = lum(bg(el));
  var ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) { worst.push(el.tagName + " '" + el.textContent.trim().slice(0, 30) + "' " + ratio.toFixed(2)); }
});
return worst;
"""


def test_pages_are_usable_narrow_by_keyboard_and_readable(browser: Any, ui: str, recorded: Path) -> None:
    """Each page: every text passes WCAG AA contrast (4.5:1); at 400 px wide nothing spills sideways (tables
    scroll in their own box); the keyboard reaches the links."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run_id = _run_id(recorded)
    with sqlite3.connect(recorded) as conn:
        call_id = conn.execute("SELECT call_id FROM calls WHERE status = 'failed' LIMIT 1").fetchone()[0]
    for path in ("/", f"/runs/{run_id}", f"/calls/{run_id}/{call_id}"):
        browser.set_window_size(1280, 800)
        browser.get(ui + path)
        assert browser.execute_script(CONTRAST) == [], path
        browser.set_window_size(400, 800)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - "
                                          "document.documentElement.clientWidth;")
        assert overflow <= 1, (path, overflow)
    browser.set_window_size(1280, 800)
    browser.get(ui + f"/runs/{run_id}")
    body = browser.find_element(By.TAG_NAME, "body")
    reached = set()
    for _ in range(8):
        body.send_keys(Keys.TAB) if not reached else browser.switch_to.active_element.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        reached.add((active.tag_name, active.get_attribute("href") or ""))
    assert any(f"/calls/{run_id}/" in href for tag, href in reached if tag == "a"), reached


def test_a_running_call_s_output_grows_without_a_reload(browser: Any, tmp_path: Path) -> None:
    """While a call runs, its page appends the lines it prints, and the run's page turns to succeeded when it
    ends; neither page is ever reloaded."""
    from selenium.webdriver.common.by import By

    db = tmp_path / "runs.db"
    program = tmp_path / "slow.py"
    program.write_text(SLOW)
    proc = subprocess.Popen([sys.executable, str(program)], env=_env(db), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "dockertask", "ui", "--port", str(port)], env=_env(db),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        call_id = None
        while time.monotonic() < deadline and call_id is None:
            time.sleep(0.5)
            if db.exists():
                with sqlite3.connect(db) as conn:
                    row = conn.execute("SELECT run_id, call_id FROM calls WHERE status = 'running'").fetchone()
                    n = conn.execute("SELECT COUNT(*) FROM output").fetchone()[0]
                if row and n >= 2:
                    run_id, call_id = row
        assert call_id is not None, "the call never started printing"
        browser.get(f"http://127.0.0.1:{port}/calls/{run_id}/{call_id}")
        browser.execute_script("window.__stillHere = true;")
        first = browser.find_element(By.ID, "output").text.count("line ")
        time.sleep(4)
        later = browser.find_element(By.ID, "output").text.count("line ")
        assert later >= first + 4, (first, later)
        assert browser.execute_script("return window.__stillHere === true;")
        _shot(browser, "call-live", tmp_path)
        browser.get(f"http://127.0.0.1:{port}/runs/{run_id}")
        browser.execute_script("window.__stillHere = true;")

        def text(element_id: str) -> str:  # read in one step: the live view may swap the element meanwhile
            return str(browser.execute_script(f"return document.getElementById('{element_id}').textContent.trim();"))

        assert text("count-running") == "1"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and text("run-status") == "running":
            time.sleep(0.5)
        assert (text("run-status"), text("count-running"), text("count-succeeded")) == ("succeeded", "0", "1")
        assert browser.execute_script("return window.__stillHere === true;")
    finally:
        proc.kill()
        proc.wait(30)  # reaped: gc sees its process gone
        server.terminate()
        server.wait(10)
        subprocess.run([sys.executable, "-m", "dockertask", "gc"], env=_env(db), capture_output=True, timeout=120)


def test_the_html_report_opens_offline_with_everything_in_it(browser: Any, recorded: Path, tmp_path: Path) -> None:
    """`show RUN --html FILE`: one file; opened with the network disabled it shows the run, its timeline
    and the failed calls' errors and output; it names nothing to fetch."""
    from selenium.webdriver.common.by import By

    report = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "dockertask", "show", _run_id(recorded), "--html", str(report)],
                          env=_env(recorded), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "http://" not in text and "https://" not in text and "<script src" not in text
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                "downloadThroughput": 0, "uploadThroughput": 0})
    try:
        browser.get(report.as_uri())
        assert browser.find_element(By.ID, "count-failed").text == "2"
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.timeline g.call-bar")) == 5
        sections = browser.find_elements(By.CSS_SELECTOR, "section[id^='call-']")
        assert any("cannot score 2" in s.text and "scoring 2" in s.text for s in sections)
        _shot(browser, "report", tmp_path)
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                                    "downloadThroughput": -1, "uploadThroughput": -1})


def test_a_run_of_10000_calls_opens_in_under_a_second(browser: Any, tmp_path: Path) -> None:
    """A large map's run: the page (its first page of calls, its timeline) is there in under a second."""
    from selenium.webdriver.common.by import By

    from dockertask.runs import store

    db = tmp_path / "runs.db"
    conn = store.connect(db)
    now = time.time()
    conn.execute("INSERT INTO runs (id, name, started, ended, status, command, host, pid) VALUES "
                 "('big', 'big', ?, ?, 'failed', '[]', 'elsewhere', 1)", (now, now + 600))
    rows = [("big", f"c{i:015}", "m", "m.t", f"x={i}", i, now + i * 0.05, now + i * 0.05 + 0.4,
             "failed" if i % 97 == 0 else "succeeded") for i in range(10_000)]
    conn.executemany("INSERT INTO calls (run_id, call_id, parent, task, inputs, map_index, started, ended, status) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO attempts (run_id, call_id, attempt, exit_code, peak_memory) VALUES (?, ?, 1, 0, ?)",
                     [(r[0], r[1], 5_000_000 + i) for i, r in enumerate(rows)])
    conn.close()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "dockertask", "ui", "--port", str(port)], env=_env(db),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        time.sleep(1.5)
        browser.get(f"http://127.0.0.1:{port}/runs/big")  # the first request warms the server
        start = time.perf_counter()
        browser.get(f"http://127.0.0.1:{port}/runs/big")
        took = time.perf_counter() - start
        assert browser.find_element(By.ID, "count-failed").text == str(len(range(0, 10_000, 97)))
        print(f"10,000-call run page: {took:.2f} s")
        assert took < 1.0, f"{took:.2f} s"
    finally:
        server.terminate()
        server.wait(10)
