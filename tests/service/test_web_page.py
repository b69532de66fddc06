"""The page at ``/`` in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, ``selenium``): upload a
file, watch the asynchronous jobs, see the slices of the chosen model beside the classical method with their
labels and stage times, change window/level, download DICOM. Screenshots go to ``test-artifacts/web/``. The page
fetches nothing from outside the server."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.service.test_api import simulate
from tests.service.test_e2e_http import ready_server

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "web"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WAIT_S = 180


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ready_server(tmp_path_factory.mktemp("web-server")) as running:
        yield running


def test_the_page_and_its_assets_come_from_the_server_alone(server):
    page = httpx.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(asset.startswith("/") for asset in assets), assets  # no CDN, no other host
    for asset in ("/web/app.js", "/web/app.css"):
        served = httpx.get(server.url + asset, timeout=10)
        assert served.status_code == 200 and "http://" not in served.text and "https://" not in served.text
    choices = httpx.get(server.url + "/v1/choices", timeout=10).json()
    assert choices["artifacts"][:2] == ["auto", "classical"] and "l1-wavelet" in choices["methods"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("Debian chromium and chromium-driver are not installed (make test installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def _screenshot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_upload_progress_images_and_download_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    scan = simulate(tmp_path / "radial.h5", "radial", matrix=96, coils=8, acceleration=4)
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "artifact")).options) >= 3)
    _screenshot(browser, "1-loaded")
    browser.find_element(By.ID, "file").send_keys(str(scan))
    assert "radial.h5" in browser.find_element(By.ID, "file-name").text
    Select(browser.find_element(By.ID, "method")).select_by_value("l1-wavelet")
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs li"))
    _screenshot(browser, "2-progress")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#panels canvas")) == 2
               or d.find_element(By.ID, "error").is_displayed())
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(By.ID, "error").text
    states = [item.get_attribute("data-state") for item in browser.find_elements(By.CSS_SELECTOR, "#jobs li")]
    assert states == ["succeeded", "succeeded"]
    panels = browser.find_elements(By.CSS_SELECTOR, ".panel")
    assert "demo-ncpdnet-radial" in panels[0].text and "classical:l1-wavelet" in panels[1].text
    assert "inference" in panels[0].find_element(By.CSS_SELECTOR, ".timings").text
    canvas = panels[0].find_element(By.TAG_NAME, "canvas")
    assert canvas.get_attribute("data-slices") == "1" and int(canvas.get_attribute("width")) == 96
    bright = ("const c = arguments[0].getContext('2d').getImageData(0, 0, 96, 96).data;"
              "let s = 0; for (let i = 0; i < c.length; i += 4) s += c[i]; return s / (c.length / 4);")
    before = browser.execute_script(bright, canvas)
    assert before > 5  # an image, not a black square
    browser.execute_script("const w = document.getElementById('window'); w.value = 64;"
                           "w.dispatchEvent(new Event('input'));")
    assert browser.execute_script(bright, canvas) > before  # a narrower window brightens the image
    _screenshot(browser, "3-images")
    browser.find_element(By.ID, "download-dicom").click()
    status = browser.find_element(By.ID, "download-state")
    wait.until(lambda d: status.get_attribute("data-bytes") or d.find_element(By.ID, "error").is_displayed())
    assert int(status.get_attribute("data-bytes")) > 1000 and status.get_attribute("data-filename").endswith(".zip")
    wait.until(lambda d: list(browser.downloads.glob("*.zip")))
    _screenshot(browser, "4-downloaded")
