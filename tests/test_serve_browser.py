"""The web page in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by selenium)
opens the page, uploads a photo, waits for the drawing and checks the page drew 68 points for the face.

Skips with the reason when Chromium, its driver or selenium is absent (`make test` installs them where apt-get
works). FACEALIGN_SCREENSHOT=PATH also saves the screenshot there (docs/serve-screenshot.png is made so).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extras are not installed (pip install 'facealign[serve]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from test_serve import LiveServer  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="headless Chromium not found (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)  # no driver download
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image
    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    # 1200 px: larger than the page's 900 px canvas limit, so the layout test sees a photo that must be fitted
    Image.fromarray(skimage_data.astronaut()).resize((1200, 1200)).save(path, quality=92)
    return path


def test_page_uploads_a_photo_and_draws_68_points(browser, photo, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from facealign.serve.app import create_app
    from facealign.serve.command import build_pool
    from facealign.serve.config import ServeConfig
    config = ServeConfig(model="fast", backend="onnx-int8")
    with LiveServer(create_app(build_pool(config), config)) as live:
        browser.get(live.url + "/")
        WebDriverWait(browser, 20).until(lambda d: "version" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 60).until(lambda d: d.execute_script("return window.facealign.state") in ("done",
                                                                                                        "error"))
        state = browser.execute_script("return window.facealign")
        assert state["state"] == "done", state["error"]
        assert len(state["faces"]) == 1 and state["pointsDrawn"] == 68
        rows = browser.find_elements(By.CSS_SELECTOR, "#faces tbody tr")
        assert len(rows) == 1 and float(rows[0].find_elements(By.TAG_NAME, "td")[1].text) >= 0.2
        assert browser.find_element(By.ID, "download").is_enabled()
        # the canvas really holds the photo and the drawing: the landmark colours are present in its pixels
        colours = browser.execute_script("""
            const c = document.getElementById('view'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const want = [[246, 195, 67], [224, 57, 138]];  // jaw and mouth colours
            return want.map(([r, g, b]) => { let n = 0; for (let i = 0; i < d.length; i += 4)
                if (Math.abs(d[i] - r) < 6 && Math.abs(d[i + 1] - g) < 6 && Math.abs(d[i + 2] - b) < 6) n++; return n; });
        """)
        assert min(colours) > 20, colours
        # issue 24: at 1200x900 the photo and the face table are both in view, without scrolling
        in_view = browser.execute_script("""
            const inside = (el) => { const r = el.getBoundingClientRect();
                return r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth; };
            return [inside(document.getElementById('view')), inside(document.querySelector('#faces tbody tr')),
                    innerWidth, innerHeight];""")
        assert in_view[:2] == [True, True], in_view
        shot = tmp_path / "serve-screenshot.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("FACEALIGN_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["FACEALIGN_SCREENSHOT"])


def test_a_failed_upload_clears_the_previous_result(browser, photo, tmp_path):
    """After a good photo, an unreadable file: the error shows and no face, table row or download remains."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from facealign.serve.app import create_app
    from facealign.serve.command import build_pool
    from facealign.serve.config import ServeConfig
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    config = ServeConfig(model="fast", backend="onnx-int8")
    with LiveServer(create_app(build_pool(config), config)) as live:
        browser.get(live.url + "/")
        state = lambda d: d.execute_script("return window.facealign.state")  # noqa: E731
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 60).until(lambda d: state(d) in ("done", "error"))
        assert state(browser) == "done" and browser.find_elements(By.CSS_SELECTOR, "#faces tbody tr")
        browser.find_element(By.ID, "file").send_keys(str(bad))
        WebDriverWait(browser, 60).until(lambda d: state(d) == "error")
        assert browser.find_element(By.ID, "status").text.startswith("Error:")
        assert browser.find_elements(By.CSS_SELECTOR, "#faces tbody tr") == []
        assert not browser.find_element(By.ID, "download").is_enabled()
        painted = browser.execute_script("""
            const c = document.getElementById('view'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;""")
        assert painted == 0  # the canvas holds nothing of the previous photo
