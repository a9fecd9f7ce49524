"""The gallery in a real browser: Debian's chromium driven by Playwright against a real `artkeep serve`.

Loads the gallery, searches, opens a work, copies its prompt, logs in and
uploads with progress, and checks that hostile metadata and a broken image
render as text. Screenshots go to tests/artifacts/ for a person to look at.
Needs /usr/bin/chromium and the playwright package (scripts/browser-setup).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHARED, ArtkeepCli
from tests.test_gallery import A1111, COMFY, FORGE, HOSTILE_NEGATIVE, broken_png, hostile_png, small_png

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
NOVELAI = SHARED / "fixtures" / "images" / "novelai_v45_curated.png"
STUDIES = 50  # small older works, so the grid has more than one page to scroll through
PAGE_SIZE = 48
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True}

if not CHROMIUM.exists() or shutil.which("chromium") is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs /usr/bin/chromium for the browser tests: run scripts/browser-setup")
    pytest.skip("no /usr/bin/chromium (run scripts/browser-setup)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="no playwright (run scripts/browser-setup)")
Page = sync_api.Page
Browser = sync_api.Browser
expect = sync_api.expect


class Daemon:
    def __init__(self, url: str, token: str, works: dict[str, str], cli: ArtkeepCli) -> None:
        self.url = url
        self.token = token
        self.works = works  # file name → work CID
        self.cli = cli


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """`artkeep serve` on a loopback port, holding works from real AI images, a hostile and a broken one.

    Fifty small studies are imported first, so they are older and the five named works lead the grid.
    """
    root = tmp_path_factory.mktemp("browser")
    cli = ArtkeepCli(root / "home")
    for number in range(STUDIES):
        small_png(root / "studies" / f"study{number:02}.png", number)
    studies = cli("import", root / "studies")
    assert studies.returncode == 0, studies
    art = root / "art"
    art.mkdir()
    for source in (COMFY, A1111, FORGE):
        shutil.copy(source, art / source.name)
    hostile_png(art / "hostile.png")
    broken_png(art / "broken.png")
    imported = cli("import", art, "--json")
    assert imported.returncode == 0, imported
    works = {Path(str(record["path"])).name: str(record["work"]) for record in imported.records()
             if "work" in record and "sidecar_of" not in record}
    token = cli("token", "create", "--name", "browser").out.strip()
    process = subprocess.Popen(cli.argv("serve", "--listen", "127.0.0.1:0", "--json"), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=cli.env())
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        yield Daemon(url, token, works, cli)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, daemon: Daemon) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=daemon.url)
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    yield opened
    context.close()


def shoot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def all_images_loaded(page: Page, selector: str) -> list[bool]:
    return list(page.eval_on_selector_all(selector,
                                          "images => images.map(i => i.complete && i.naturalWidth > 0)"))


def test_the_gallery_shows_every_work_on_a_desktop_and_a_phone(browser: Browser, daemon: Daemon,
                                                               page: Page) -> None:
    page.goto(daemon.url)
    page.wait_for_load_state("networkidle")
    cards = page.locator("#grid > li")
    assert cards.count() == PAGE_SIZE
    named = "#grid > li:nth-child(-n+5) img"
    assert len(all_images_loaded(page, named)) == 5 and all(all_images_loaded(page, named))  # placeholder too
    assert all(page.eval_on_selector_all("#grid img", "images => images.map(i => i.alt.length > 0)"))
    shoot(page, "gallery-desktop")
    # Scrolling to the end brings the older works in; the "Older works" link goes when none are left.
    page.locator("#next-page").scroll_into_view_if_needed()
    expect(cards).to_have_count(STUDIES + 5)
    expect(page.locator("#next-page")).to_have_count(0)
    # Keyboard first: the first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    phone = browser.new_context(**PHONE).new_page()
    phone.goto(daemon.url)
    phone.wait_for_load_state("networkidle")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    shoot(phone, "gallery-phone")
    phone.context.close()


def test_search_open_a_work_and_copy_its_prompt(browser: Browser, daemon: Daemon, page: Page) -> None:
    page.goto(daemon.url)
    page.fill("#q", "duck")
    page.keyboard.press("Enter")
    page.wait_for_url("**/?q=duck")
    cards = page.locator("#grid > li")
    assert cards.count() == 1
    cards.first.click()
    page.wait_for_url(f"**/works/{daemon.works['a1111_cropped.png']}")
    assert page.locator("#prompt").inner_text() == "photo of a duck"
    assert "valid, signed by this node" in page.locator("#signature-status").inner_text()
    page.get_by_role("button", name="Copy prompt").click()
    expect(page.locator("#announce")).to_contain_text("Copied")  # (wait_for_function would need eval: CSP)
    assert page.evaluate("navigator.clipboard.readText()") == "photo of a duck"
    page.get_by_role("button", name="Copy A1111 parameters").click()
    expect(page.locator("button[data-copy=infotext]")).to_have_text("Copied")
    assert "Seed: 235284042" in page.evaluate("navigator.clipboard.readText()")
    shoot(page, "work-desktop")
    phone = browser.new_context(**PHONE).new_page()
    phone.goto(page.url)
    phone.wait_for_load_state("networkidle")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shoot(phone, "work-phone")
    phone.context.close()


def test_log_in_and_upload_with_progress_then_read_the_report(daemon: Daemon, page: Page) -> None:
    page.goto(daemon.url + "/import")
    page.get_by_role("link", name="Log in", exact=True).last.click()
    page.fill("#token", daemon.token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/import")
    page.evaluate("""() => {
        window.progressSeen = [];
        const bar = document.getElementById('upload-progress');
        new MutationObserver(() => window.progressSeen.push(bar.hidden ? -1 : bar.value))
            .observe(bar, {attributes: true, childList: true, subtree: true});
    }""")
    page.set_input_files("#files", [str(NOVELAI), str(COMFY)])
    page.get_by_role("button", name="Import").click()
    summary = page.locator("#report-summary")
    summary.wait_for()
    assert summary.inner_text() == "2 new"  # a new source: the ComfyUI image gets a record of this upload too
    assert 100 in page.evaluate("window.progressSeen")  # the bar showed the upload going through
    assert page.locator("#report tbody tr").count() == 2
    shoot(page, "import-report")
    # The form is back under the report: the same image again is a duplicate, stored once.
    page.set_input_files("#files", [str(COMFY)])
    page.get_by_role("button", name="Import").click()
    expect(summary).to_have_text("1 duplicate")
    page.locator("#report a", has_text="open the work").click()
    page.wait_for_url("**/works/*")
    assert page.locator("#prompt").inner_text() == "masterpiece best quality girl"


def test_hostile_metadata_and_a_broken_image_render_as_text(daemon: Daemon, page: Page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(daemon.url + "/?q=lighthouse")
    page.locator("#grid a").first.click()
    page.wait_for_url(f"**/works/{daemon.works['hostile.png']}")
    page.wait_for_load_state("networkidle")
    assert "<script>window.__xss = 1</script>" in page.locator("#prompt").inner_text()
    assert page.locator("#negative-prompt").inner_text() == HOSTILE_NEGATIVE
    assert '<b onmouseover="window.__xss = 4">evil</b>' in page.locator(".pairs").first.inner_text()
    page.locator(".pairs").first.hover()
    assert page.evaluate("window.__xss") is None  # no injected script or handler ever ran
    assert page.locator("main script, main img[onerror], main b").count() == 0
    shoot(page, "hostile-work")
    page.goto(f"{daemon.url}/works/{daemon.works['broken.png']}")
    page.wait_for_load_state("networkidle")
    picture = page.locator("#picture")
    assert picture.evaluate("image => image.complete && image.naturalWidth === 0")  # cut-off bytes: no pixels
    assert "hatsune miku" in (picture.get_attribute("alt") or "")  # so its alt text stands in for it
    assert "hatsune miku" in page.locator("#prompt").inner_text()
    shoot(page, "broken-work")
    assert dialogs == []


def test_the_static_export_works_from_disk(browser: Browser, daemon: Daemon, tmp_path: Path) -> None:
    site = tmp_path / "site"
    run = daemon.cli("export", "--site", site)
    assert run.returncode == 0, run
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto((site / "index.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("#grid > li").count() == len(list((site / "works").glob("*.html")))
    assert page.evaluate("getComputedStyle(document.getElementById('grid')).display") == "grid"
    assert all(all_images_loaded(page, "#grid > li:nth-child(-n+5) img"))  # those in view (the rest are lazy)
    shoot(page, "site-index")
    page.locator("#grid a", has_text="a1111_cropped.png").click()
    page.wait_for_load_state("load")
    assert page.locator("#prompt").inner_text() == "photo of a duck"
    assert page.locator("#picture").evaluate("image => image.naturalWidth > 0")
    page.get_by_role("button", name="Copy prompt").wait_for()  # the script runs from disk too
    shoot(page, "site-work")
    context.close()
