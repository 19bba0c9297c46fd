"""End to end in a real headless browser: Debian's chromium driven by selenium, against the console
(``streamlit run ui/app.py`` with nothing but a port: the shipped ``ui/.streamlit/config.toml`` keeps it headless,
on 127.0.0.1 and without usage statistics; a fresh HOME, stdin closed) and the service, both real subprocesses.
People sign in through the page with their own keys; the audit log names the key that acted.

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
from tests.ui.conftest import ROOT, Service, experiment_body, note_browser_skip

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
def console_url(browser_tools: None, live_service: Service,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="titrate-console-", suffix=".log")[1])
    home = tmp_path_factory.mktemp("console-home")  # no ~/.streamlit: nothing remembered from an earlier run
    env = {k: v for k, v in os.environ.items() if k != "TITRATE_API_KEY"}
    env.update({"TITRATE_API_URL": live_service.url, "HOME": str(home)})
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "ui" / "app.py"), "--server.port", str(port)],
            cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
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


def _click(driver: object, xpath: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    element = WebDriverWait(driver, 30).until(lambda d: d.find_element("xpath", xpath),
                                              message=f"nothing matches {xpath}")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()
    _settled(driver)


def _nav(driver: object, title: str) -> None:
    """Open a page from the sidebar navigation (in the same browser session: a reload would sign out)."""
    _click(driver, f"//a[@data-testid='stSidebarNavLink'][.//*[normalize-space(text())='{title}']]")


def _link(driver: object, text: str) -> None:
    """Follow a page link of the page body whose text contains ``text``."""
    _click(driver, f"//a[not(@data-testid='stSidebarNavLink')][.//*[contains(normalize-space(text()), '{text}')]]")


def _button(driver: object, label: str) -> list[object]:
    return list(driver.find_elements("xpath", f"//button[.//*[normalize-space(text())='{label}']]"))


def _body(driver: object) -> str:
    return str(driver.find_element("tag name", "body").text)


def _sign_in(driver: object, console_url: str, key: str, name: str) -> None:
    """Load the console (a new session: nobody signed in) and sign in through the page."""
    driver.get(console_url)
    _wait_text(driver, "Sign in to titrate")
    _settled(driver)
    field = driver.find_element("css selector", 'input[aria-label="API key"]')
    assert field.get_attribute("type") == "password"
    field.click()
    field.send_keys(key)
    _click(driver, "//button[.//*[normalize-space(text())='Sign in']]")
    _wait_text(driver, f"signed in as {name}")
    _settled(driver)


@pytest.fixture(scope="module")
def people(live_service: Service) -> dict[str, dict[str, str]]:
    """An admin and an analyst key of their own for the browser, with the actor each is audited as."""
    found = {}
    with live_service.client() as http:
        for role in ("admin", "analyst"):
            created = http.post("/v1/keys", json={"role": role, "name": f"browser-{role}"}).raise_for_status().json()
            with live_service.client(created["key"]) as own:
                found[role] = {"key": created["key"], **own.get("/v1/keys/me").raise_for_status().json()}
    return found


def test_create_an_experiment_in_the_browser_and_find_it(browser: object, console_url: str,
                                                         people: dict[str, dict[str, str]],
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    shots = tmp_path_factory.mktemp("console-screenshots")
    driver = browser
    _sign_in(driver, console_url, people["admin"]["key"], "browser-admin")
    _nav(driver, "New experiment")
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

    _nav(driver, "Experiments")
    _wait_text(driver, "e2e-exp — E2E ranker (draft)")
    _settled(driver)
    driver.save_screenshot(str(shots / "3-experiments.png"))

    link = driver.find_element("xpath", "//a[.//*[contains(text(), 'e2e-exp — E2E ranker')]]")
    link.click()
    _wait_text(driver, "E2E ranker · e2e-exp")
    _wait_text(driver, "If we serve the e2e ranker, then conversion will increase because a browser said so.")
    _settled(driver)
    driver.save_screenshot(str(shots / "4-experiment.png"))

    _nav(driver, "Experiments")
    _link(driver, "live-exp — ")
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


def test_sign_in_roles_and_the_audit_row_in_the_browser(browser: object, console_url: str, live_service: Service,
                                                        people: dict[str, dict[str, str]]) -> None:
    """Before sign-in nothing shows or acts; an analyst sees the review but cannot ship; an admin ships through
    the page and the audit row names the admin's key; the key is in no cookie, storage or URL, and a reload
    forgets it."""
    driver = browser
    with live_service.client() as http:
        http.post("/v1/experiments", json=experiment_body("browser-ship-exp")).raise_for_status()
        http.post("/v1/experiments/browser-ship-exp/start").raise_for_status()

    # nobody signed in: a page's URL shows the sign-in page and nothing else
    driver.get(f"{console_url}/review?key=browser-ship-exp")
    _wait_text(driver, "Sign in to titrate")
    _settled(driver)
    body = _body(driver)
    assert "Decision" not in body
    assert "browser-ship-exp" not in body
    assert not _button(driver, "Ship v2")
    assert not _button(driver, "Start")
    assert not driver.find_elements("css selector", '[data-testid="stSidebarNavLink"]')

    # the analyst: the review, no way to ship
    _sign_in(driver, console_url, people["analyst"]["key"], "browser-analyst")
    _link(driver, "browser-ship-exp — ")
    _wait_text(driver, "browser-ship-exp")
    assert "needs the 'admin' role" in _body(driver)
    assert not _button(driver, "Pause")
    assert not _button(driver, "Stop")
    _link(driver, "Review")
    _wait_text(driver, "Decision:")
    _wait_text(driver, "needs the 'admin' role")
    assert not _button(driver, "Ship v2")
    assert not _button(driver, "Roll back")
    _click(driver, "//button[.//*[normalize-space(text())='Sign out']]")
    _wait_text(driver, "Sign in to titrate")

    # the admin ships through the page
    _sign_in(driver, console_url, people["admin"]["key"], "browser-admin")
    _link(driver, "browser-ship-exp — ")
    _link(driver, "Ship / roll back")
    _wait_text(driver, "Decision:")
    reason = driver.find_element("xpath", "//textarea[starts-with(@aria-label, 'Override justification')]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", reason)
    reason.click()
    reason.send_keys("shipped from the browser by its admin")
    driver.find_element("tag name", "h1").click()  # the text area sends its value when it loses focus
    _settled(driver)
    _click(driver, "//button[.//*[normalize-space(text())='Ship v2']]")
    _wait_text(driver, "Shipped v2.")

    with live_service.client() as http:
        rows = http.get("/v1/experiments/browser-ship-exp/audit").raise_for_status().json()
    shipped = [a for a in rows if a["action"] == "experiment.ship"]
    assert [a["actor"] for a in shipped] == [people["admin"]["actor"]]
    assert shipped[0]["actor"].startswith("browser-admin (")
    assert shipped[0]["reason"] == "shipped from the browser by its admin"

    # the key lives in the server-side session only: no cookie, no storage, no URL; a reload forgets it
    stored = driver.execute_script(
        "return document.cookie + JSON.stringify(Object.assign({}, localStorage)) "
        "+ JSON.stringify(Object.assign({}, sessionStorage)) + window.location.href")
    for person in people.values():
        assert person["key"] not in stored
    driver.refresh()
    _wait_text(driver, "Sign in to titrate")


def test_bandit_page_and_segments_in_the_browser(browser: object, console_url: str,
                                                 people: dict[str, dict[str, str]], contextual_experiment: str,
                                                 segmented: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Issue 17: the bandit page leads with the stratified estimates (the pooled ones a labelled secondary view),
    the segment section flags the opposite-moving country; both screenshotted; no "Deploy" button anywhere."""
    shots = tmp_path_factory.mktemp("console-screenshots-issue17")
    driver = browser
    _sign_in(driver, console_url, people["analyst"]["key"], "browser-analyst")
    assert not driver.find_elements("css selector", '[data-testid="stAppDeployButton"]')
    assert not _button(driver, "Deploy")

    _link(driver, f"{contextual_experiment} — ")
    _wait_text(driver, "Relative lift with confidence intervals (primary metric: stratified estimates)")
    _wait_text(driver, "Pooled (naive) estimates — biased under adaptive allocation")
    _wait_text(driver, "Weights per platform")
    _settled(driver)
    time.sleep(1.0)  # vega renders the charts after the script run
    driver.save_screenshot(str(shots / "6-bandit.png"))

    _nav(driver, "Experiments")
    _link(driver, f"{segmented} — ")
    _wait_text(driver, "Segments moving opposite to the overall effect")
    _wait_text(driver, "country=DE")
    heading = driver.find_element("xpath", "//h3[.//*[normalize-space(text())='Segments'] or "
                                           "normalize-space(text())='Segments']")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)
    _settled(driver)
    time.sleep(1.0)
    driver.save_screenshot(str(shots / "7-segments.png"))
    assert not driver.find_elements("css selector", '[data-testid="stAppDeployButton"]')
    if os.environ.get("TITRATE_UPDATE_SCREENSHOT") == "1":  # the README's bandit picture, on request only
        shutil.copyfile(shots / "6-bandit.png", DOCS_SCREENSHOT.with_name("console-bandit.png"))

    for name in ("6-bandit", "7-segments"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
    print(f"screenshots in {shots}")
