"""End to end in a real headless browser: Debian's chromium driven by selenium, against the console
(``streamlit run ui/app.py``) and the service, both real subprocesses.

Skips LOUDLY (see ``conftest.pytest_terminal_summary``) when chromium, chromedriver or selenium are absent;
``.ci/run`` installs them and sets ``TITRATE_REQUIRE_BROWSER=1``, under which their absence fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import free_port
from tests.ui.conftest import ROOT, Service, note_browser_skip

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
DOCS_SCREENSHOT = ROOT / "docs" / "console.png"


def _require_browser() -> None:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (Python package)")
    if missing:
        reason = (f"!!! BROWSER TEST SKIPPED: {', '.join(missing)} not installed "
                  "(apt-get install -y chromium chromium-driver; pip install selenium) !!!")
        if os.environ.get("TITRATE_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure, never a skip
            pytest.fail(reason)
        note_browser_skip(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser_tools() -> None:
    _require_browser()


@pytest.fixture(scope="module")
def console_url(browser_tools: None, live_service: Service) -> Iterator[str]:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="titrate-console-", suffix=".log")[1])
    env = {**os.environ, "TITRATE_API_URL": live_service.url, "TITRATE_API_KEY": live_service.admin_key}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "ui" / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(console_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1440,2200",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager (which would try the network) never runs.
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _settled(driver: object, timeout: float = 20) -> None:
    """Wait for the Streamlit script run to finish (the running indicator gone, nothing stale)."""
    from selenium.webdriver.support.ui import WebDriverWait

    time.sleep(0.3)
    WebDriverWait(driver, timeout).until(lambda d: not d.find_elements(
        "css selector", '[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"], '
                        '[data-testid="stSkeleton"]'))
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "return !document.querySelector('[data-stale=\"true\"]')"))


def _wait_text(driver: object, text: str, timeout: float = 30) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element("tag name", "body").text,
                                         message=f"'{text}' never appeared")


def _type(driver: object, label: str, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element("css selector", f'input[aria-label="{label}"]')
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(value + Keys.ENTER)
    _settled(driver)


def test_create_an_experiment_in_the_browser_and_find_it(browser: object, console_url: str,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    shots = tmp_path_factory.mktemp("console-screenshots")
    driver = browser
    driver.get(f"{console_url}/new")
    _wait_text(driver, "If we …")
    _settled(driver)
    for label, value in (("Key", "e2e-exp"), ("Name", "E2E ranker"), ("Owner", "selenium"),
                         ("If we …", "serve the e2e ranker"), ("because …", "a browser said so")):
        _type(driver, label, value)
    _wait_text(driver, "serve the e2e ranker")
    driver.save_screenshot(str(shots / "1-new-experiment.png"))

    button = driver.find_element("xpath", "//button[.//*[normalize-space(text())='Create experiment']]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    _wait_text(driver, "Created experiment e2e-exp")
    driver.save_screenshot(str(shots / "2-created.png"))

    driver.get(console_url)
    _wait_text(driver, "e2e-exp — E2E ranker (draft)")
    _settled(driver)
    driver.save_screenshot(str(shots / "3-experiments.png"))

    link = driver.find_element("xpath", "//a[.//*[contains(text(), 'e2e-exp — E2E ranker')]]")
    link.click()
    _wait_text(driver, "E2E ranker · e2e-exp")
    _wait_text(driver, "If we serve the e2e ranker, then conversion will increase because a browser said so.")
    _settled(driver)
    driver.save_screenshot(str(shots / "4-experiment.png"))

    driver.get(f"{console_url}/experiment?key=live-exp")
    _wait_text(driver, "Relative lift with confidence intervals")
    _settled(driver)
    time.sleep(1.0)  # vega renders the charts after the script run
    driver.save_screenshot(str(shots / "5-live-experiment.png"))
    if os.environ.get("TITRATE_UPDATE_SCREENSHOT") == "1":  # refresh the README's picture on request only
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shots / "5-live-experiment.png", DOCS_SCREENSHOT)

    for name in ("1-new-experiment", "2-created", "3-experiments", "4-experiment", "5-live-experiment"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
    print(f"screenshots in {shots}")
