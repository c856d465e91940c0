"""The page in a real browser: headless Chromium (Debian's chromium and chromium-driver) driven by
Selenium against the server on the demo data. Screenshots go to test-artifacts/."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from epiformer.demo.synthetic_genome import CELL_TYPES
from epiformer.server import STATIC_DIR

from .helpers import make_model_app

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
IGV_JS = STATIC_DIR / "vendor" / "igv.min.js"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="Chromium is not installed here: apt-get install chromium chromium-driver "
                              "(make test installs them when it runs as root)"),
]

TRACK_FEATURES = """
const done = arguments[arguments.length - 1];
(async () => {
  const browser = window.epiformerBrowser;
  if (!browser) return done(null);
  const frame = browser.referenceFrameList[0];
  const out = [];
  for (const track of browser.findTracks(t => t.type === "wig")) {
    const features = await track.getFeatures(frame.chr, frame.start, frame.end, frame.bpPerPixel);
    out.push([track.name, features.filter(f => f.value > 0).length]);
  }
  done(out);
})().catch(err => done("error: " + err));
"""


@pytest.fixture(scope="module")
def site(precomputed, tmp_path_factory):
    if not IGV_JS.is_file():
        pytest.fail(f"{IGV_JS} is missing: make install puts igv.js there")
    app = make_model_app(precomputed, tmp_path_factory.mktemp("hub"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    app.config["PREDICTOR"].close()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync", "--disable-default-apps"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_script_timeout(60)
    yield browser
    browser.quit()


MERGED_FEATURES = """
const [name, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const browser = window.epiformerBrowser;
  const frame = browser.referenceFrameList[0];
  const [merged] = browser.findTracks(t => t.name === name && t.type === "merged");
  if (!merged) return done([]);
  const out = [];
  for (const track of merged.tracks) {
    const features = await track.getFeatures(frame.chr, frame.start, frame.end, frame.bpPerPixel);
    out.push([track.name, features.length]);
  }
  done(out);
})().catch(() => done([]));
"""


def wait_for(driver, script: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = driver.execute_async_script(script)
        if result is not None:
            return result
        time.sleep(0.3)
    pytest.fail("the page did not get ready in time")


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_page_shows_every_track_from_this_server_only(site, driver):
    driver.get(f"{site}/")
    tracks = wait_for(driver, TRACK_FEATURES)
    assert not isinstance(tracks, str), tracks
    assert [name for name, _ in tracks] == list(CELL_TYPES)
    assert all(count > 0 for _, count in tracks), f"every cell-type track has data: {tracks}"
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "page_tracks.png"))
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    outside = [u for u in requested_urls(driver) if not u.startswith((site, "data:", "blob:"))]
    assert outside == [], f"requests left the server's origin: {outside}"
    summary = driver.find_element("id", "summary").text
    assert "8 predicted tracks" in summary
    assert not driver.find_element("id", "specificity-toggle").is_displayed(), "no specificity tracks here"
    links = {a.text: a.get_attribute("href") for a in driver.find_elements("css selector", "#links a")}
    assert links["Open in UCSC"].startswith("https://genome.ucsc.edu/cgi-bin/hgTracks?genome=demo&hubUrl=")
    assert links["Open in IGV desktop"].startswith("http://localhost:60151/load?")


def test_locus_search_updates_the_url(site, driver):
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{site}/?locus=chr2:100001-120000")
    wait_for(driver, TRACK_FEATURES)
    box = driver.find_element("id", "locus")
    assert box.get_attribute("value").startswith("chr2:100")
    box.clear()
    box.send_keys("chr1:200,001-210,000", Keys.ENTER)
    deadline = time.monotonic() + 20
    while "chr1" not in driver.current_url and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "locus=chr1%3A200" in driver.current_url
    wait_until(lambda: box.get_attribute("value").startswith("chr1:200"))   # igv.js has reported the move
    box.clear()
    box.send_keys("chrNope:1-5", Keys.ENTER)
    deadline = time.monotonic() + 10
    while not driver.find_element("id", "locus-error").text and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Cannot go to chrNope:1-5" in driver.find_element("id", "locus-error").text
    outside = [u for u in requested_urls(driver) if not u.startswith((site, "data:", "blob:"))]
    assert outside == [], f"an unknown name is not looked up elsewhere: {outside}"


def test_igv_opens_the_served_single_file_hub(site, driver):
    driver.get(f"{site}/")
    wait_for(driver, TRACK_FEATURES)
    loaded = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const browser = window.epiformerBrowser;
        browser.loadGenome({url: arguments[0] + "/hub/hub.txt"})
          .then(genome => done({id: genome.id, chroms: genome.chromosomeNames.length,
                                tracks: browser.findTracks(t => t.type === "wig")
                                               .map(t => [t.name, t.config.autoscaleGroup || null, t.url])}))
          .catch(err => done({error: String(err)}));
    """, site)
    assert "error" not in loaded, loaded
    assert loaded["id"] == "demo" and loaded["chroms"] == 3
    assert [name for name, _, _ in loaded["tracks"]] == list(CELL_TYPES), "the hub's tracks replace the page's"
    assert all(group is None and "/hub/tracks/" in url for _, group, url in loaded["tracks"])
    driver.save_screenshot(str(ARTIFACTS / "page_hub.png"))


def base_at(site: str, chrom: str, pos: int | str) -> str:
    """The reference base at ``pos`` (1-based), or the bases of a span "start-end"."""
    import urllib.request

    span = pos if isinstance(pos, str) else f"{pos}-{pos}"
    with urllib.request.urlopen(f"{site}/api/sequence?region={chrom}:{span}") as response:
        return json.loads(response.read())["sequence"]


def track_names(driver) -> list[str]:
    return driver.execute_script("return window.epiformerBrowser.findTracks(t => t.type === 'wig' || t.type === 'merged').map(t => t.name)")


def wait_until(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail("the page did not show the result in time")


def test_variant_panel_scores_compares_and_keeps_the_view_in_the_url(site, driver):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    ref = base_at(site, "chr1", 150_001)
    first = f"chr1:150001:{ref}:{'A' if ref != 'A' else 'C'}"
    driver.get(f"{site}/?locus=chr1:145001-155000")
    wait_for(driver, TRACK_FEATURES)
    cells = Select(driver.find_element("id", "variant-cells"))
    cells.deselect_all()
    cells.select_by_value("MGC")
    cells.select_by_value("OPC")
    box = driver.find_element("id", "variant")
    box.send_keys(first, Keys.ENTER)
    card = wait_until(lambda: driver.find_elements("css selector", f'.card[data-variant="{first}"]'))[0]
    rows = card.find_elements("css selector", "tbody tr")
    assert [r.find_elements("tag name", "td")[0].text for r in rows] == list(CELL_TYPES)
    expected = sorted(f"{cell} {kind} {first}" for cell in ("MGC", "OPC") for kind in ("ref/alt", "diff"))
    wait_until(lambda: sorted(n for n in track_names(driver) if n.endswith(first)) == expected)
    overlaid = driver.execute_async_script(MERGED_FEATURES, f"MGC ref/alt {first}")
    assert [name for name, _ in overlaid] == ["MGC ref", "MGC alt"], "reference and alternate in one track"
    assert all(count > 0 for _, count in overlaid), overlaid
    second_ref = base_at(site, "chr1", 150_101)
    second = f"chr1 150101 {second_ref} {'G' if second_ref != 'G' else 'T'}"
    box.clear()
    box.send_keys(second, Keys.ENTER)
    wait_until(lambda: len(driver.find_elements("css selector", ".card")) == 2)
    wait_until(lambda: len([n for n in track_names(driver) if "150101" in n]) == 4)
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "page_variants.png"))
    assert "variants=chr1%3A150001" in driver.current_url and "tracks=OPC%2CMGC" in driver.current_url
    assert "." not in driver.current_url.split("locus=")[1].split("&")[0], "whole-base loci in the URL"
    link = driver.current_url
    box.clear()
    box.send_keys("chr1:150001:T:T", Keys.ENTER)
    message = wait_until(lambda: driver.find_element("id", "variant-error").text)
    assert "the same" in message
    driver.get(link)
    wait_until(lambda: len(driver.find_elements("css selector", ".card")) == 2)
    assert len([n for n in track_names(driver) if n.endswith(first)]) == 4, "a link reproduces the view"
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "/api/variants" not in e["message"]]
    assert errors == [], errors


def test_edit_panel_predicts_edited_and_pasted_sequences(site, driver):
    ref = base_at(site, "chr2", 100_101)
    driver.get(f"{site}/")
    wait_for(driver, TRACK_FEATURES)
    driver.find_element("id", "edit-region").send_keys("chr2:100,001-101,000")
    driver.find_element("id", "edit-list").send_keys(f"100101:{ref}:{'A' if ref != 'A' else 'C'}")
    driver.find_element("css selector", "#edit-form button").click()
    names = wait_until(lambda: [n for n in track_names(driver) if "chr2:100,001-101,000" in n] or None)
    assert any(n.startswith("HIP edited") for n in names) and any(n.startswith("HIP reference") for n in names)
    driver.find_element("id", "edit-list").send_keys("\n100101:N:A")
    driver.find_element("css selector", "#edit-form button").click()
    assert "reference mismatch" in wait_until(lambda: driver.find_element("id", "edit-error").text)
    driver.find_element("id", "edit-sequence").send_keys("ACGT" * 300)
    driver.find_element("css selector", "#edit-form button").click()
    card = wait_until(lambda: [c for c in driver.find_elements("css selector", "#edit-results .card")
                               if "Pasted sequence (1200 bp)" in c.text])[0]
    assert len(card.find_elements("css selector", "tr")) == 1 + len(CELL_TYPES)
    assert len(card.find_elements("css selector", "svg polyline")) == len(CELL_TYPES), "each track is drawn"


LAYOUT_SIZES = [(1024, 768), (1400, 850), (2560, 1440)]   # a small laptop, a laptop, a 27-inch screen

CONTROLS_OUTSIDE_THE_WINDOW = """
const width = document.documentElement.clientWidth;
const outside = [];
for (const el of document.querySelectorAll("input, select, textarea, button, section, .panels, #igv")) {
  if (!el.getClientRects().length || getComputedStyle(el).visibility === "hidden") continue;   // not shown
  const box = el.getBoundingClientRect();
  if (box.left < 0 || box.right > width) {
    const text = (el.textContent || el.placeholder || "").trim().replace(/\\s+/g, " ").slice(0, 40);
    const name = el.id ? `#${el.id}` : `<${el.tagName.toLowerCase()}> "${text}"`;
    outside.push(`${name} spans ${Math.round(box.left)}-${Math.round(box.right)} px`);
  }
}
return {width, scrollWidth: document.documentElement.scrollWidth, outside};
"""


def resize_viewport(driver, width: int, height: int):
    """Make the page's viewport (window.innerWidth x innerHeight) width x height: set_window_size sets the
    outer size, so the window's own frame is added to it."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.set_window_size(width, height)
    frame_x, frame_y = driver.execute_script(
        "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]")
    if frame_x or frame_y:
        driver.set_window_size(width + frame_x, height + frame_y)
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return [window.innerWidth, window.innerHeight]") == [width, height],
        f"the viewport did not become {width} x {height}")


def test_every_control_fits_the_window_from_a_small_laptop_to_a_large_screen(site, driver):
    from selenium.webdriver.support.ui import WebDriverWait

    original = driver.get_window_size()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        for width, height in LAYOUT_SIZES:
            resize_viewport(driver, width, height)
            driver.get(f"{site}/")
            WebDriverWait(driver, 60).until(lambda d: d.execute_async_script(TRACK_FEATURES),
                                            "the page did not get ready in time")
            driver.save_screenshot(str(ARTIFACTS / f"page_layout_{width}x{height}.png"))
            layout = driver.execute_script(CONTROLS_OUTSIDE_THE_WINDOW)
            assert layout["outside"] == [], f"at {width} px wide, outside the window: {layout['outside']}"
            assert layout["scrollWidth"] <= layout["width"], \
                f"at {width} px wide the page scrolls sideways: {layout['scrollWidth']} px > {layout['width']} px"
    finally:
        driver.set_window_size(original["width"], original["height"])


def test_clicking_a_track_fills_in_the_variant(site, driver):
    """igv.js reports a click on a track as a "trackclick" event with its genomic location (the
    tracks live in igv's shadow DOM, so the event is fired as igv fires it)."""
    import re

    driver.get(f"{site}/?locus=chr1:150001-150200")
    wait_for(driver, TRACK_FEATURES)
    driver.execute_script("""
        const browser = window.epiformerBrowser;
        const track = browser.findTracks(t => t.type === "wig")[0];
        browser.fireEvent("trackclick", [track, [], 150049.6]);
    """)
    value = wait_until(lambda: driver.find_element("id", "variant").get_attribute("value"), timeout=20)
    match = re.fullmatch(r"chr1:(\d+):([ACGTN]):", value)
    assert match and int(match.group(1)) == 150_050, value
    assert match.group(2) == base_at(site, "chr1", 150_050)
    assert driver.switch_to.active_element.get_attribute("id") == "variant", "focus moves to the variant box"


def test_mutagenesis_panel_draws_a_heatmap_per_cell_type_and_scores_a_clicked_square(site, driver):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    driver.get(f"{site}/?locus=chr1:149001-151000")
    wait_for(driver, TRACK_FEATURES)
    driver.find_element("id", "ism-view").click()
    region = driver.find_element("id", "ism-region")
    start, end = (int(x) for x in region.get_attribute("value").split(":")[1].split("-"))
    assert end - start + 1 == 100 and start <= 150_001 <= end, "the view's centre, 100 bp"
    cells = Select(driver.find_element("id", "variant-cells"))
    cells.deselect_all()
    cells.select_by_value("MGC")
    cells.select_by_value("OPC")
    region.clear()
    region.send_keys("chr1:150,001-150,030", Keys.ENTER)
    tables = wait_until(lambda: driver.find_elements("css selector", ".card.ism table.heatmap"))
    assert [t.get_attribute("data-target") for t in tables] == ["OPC", "MGC"], "one heatmap per chosen cell type"
    reference = base_at(site, "chr1", "150001-150030").upper()
    squares = tables[1].find_elements("css selector", "td[data-variant]")
    assert len(squares) == 3 * sum(b in "ACGT" for b in reference), "every substitution, none at the reference"
    variant = squares[7].get_attribute("data-variant")
    chrom, pos, ref, alt = variant.split(":")
    assert ref == reference[int(pos) - 150_001] and alt != ref
    squares[7].click()
    card = wait_until(lambda: driver.find_elements("css selector", f'.card[data-variant="{variant}"]'))[0]
    rows = card.find_elements("css selector", "tbody tr")
    assert [r.find_elements("tag name", "td")[0].text for r in rows] == list(CELL_TYPES), "scored in the variant panel"
    expected = sorted(f"{cell} {kind} {variant}" for cell in ("OPC", "MGC") for kind in ("ref/alt", "diff"))
    wait_until(lambda: sorted(n for n in track_names(driver) if n.endswith(variant)) == expected)
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "page_mutagenesis.png"))
    driver.find_element("id", "ism-region").clear()
    driver.find_element("id", "ism-region").send_keys("chr1:150,001-151,500", Keys.ENTER)
    message = wait_until(lambda: driver.find_element("id", "ism-error").text)
    assert "at most 1,000" in message


@pytest.fixture(scope="module")
def interpreted_site(precomputed, demo_data, tmp_path_factory):
    """A site over a copy of the precompute folder with contribution tracks, serving the demo's annotation."""
    from epiformer.inference.settings import InferenceSettings, ModelSetOptions
    from epiformer.interpret.interpret_job import InterpretOptions, interpret_job

    folder = shutil.copytree(precomputed, tmp_path_factory.mktemp("interpreted") / "pc")
    shutil.copy(precomputed.parent / "model.pth.tar", folder.parent / "model.pth.tar")   # where make_model_app looks
    bed = folder.parent / "regions.bed"
    bed.write_text("chr1\t149800\t150300\n")
    interpret_job(ModelSetOptions((str(precomputed.parent / "model.pth.tar"),)), demo_data / "genome.fa",
                  InferenceSettings(device="cpu", conservation=str(demo_data / "conservation.bw")), folder, bed,
                  options=InterpretOptions(progress=False), log=lambda _: None)
    app = make_model_app(folder, folder.parent / "hub", annotation=str(demo_data / "annotation.bed"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    app.config["PREDICTOR"].close()


FEATURES_OF = """
const [type, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const browser = window.epiformerBrowser;
  if (!browser) return done(null);
  const frame = browser.referenceFrameList[0];
  const out = [];
  for (const track of browser.findTracks(t => t.type === type)) {
    const features = await track.getFeatures(frame.chr, frame.start, frame.end, frame.bpPerPixel);
    out.push([track.name, features.length]);
  }
  done(out.length ? out : null);
})().catch(() => done(null));
"""


def test_the_page_shows_the_annotation_and_the_chosen_cell_types_contributions(interpreted_site, driver):
    driver.get_log("browser")                    # earlier tests' messages (the driver is shared) are not this page's
    driver.get(f"{interpreted_site}/?locus=chr1:149001-151000&tracks=MGC,OPC")
    wait_for(driver, TRACK_FEATURES)
    annotation = wait_until(lambda: driver.execute_async_script(FEATURES_OF, "annotation"))
    assert annotation[0][0] == "annotation.bed" and annotation[0][1] > 0, annotation
    def contributions_loaded():
        named = dict(driver.execute_async_script(FEATURES_OF, "wig") or [])
        return named if {"MGC contrib", "OPC contrib"} <= set(named) else None

    wigs = wait_until(contributions_loaded)
    assert wigs["MGC contrib"] > 0 and wigs["OPC contrib"] > 0 and "HIP contrib" not in wigs, wigs
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "page_interpretation.png"))
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


@pytest.fixture(scope="module")
def specific_site(precomputed, tmp_path_factory):
    """A site over a copy of the precompute folder merged again with its specificity tracks."""
    from epiformer.precompute import merge_tracks

    folder = shutil.copytree(precomputed, tmp_path_factory.mktemp("specific") / "pc")
    shutil.copy(precomputed.parent / "model.pth.tar", folder.parent / "model.pth.tar")   # where make_model_app looks
    merge_tracks(folder, progress=False, specificity=True)
    app = make_model_app(folder, folder.parent / "hub")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    app.config["PREDICTOR"].close()


def test_the_specificity_checkbox_shows_where_each_cell_type_differs(specific_site, driver):
    driver.get_log("browser")
    driver.get(f"{specific_site}/?locus=chr1:149001-151000")
    wait_for(driver, TRACK_FEATURES)
    box = driver.find_element("id", "show-specificity")
    assert box.is_displayed() and not box.is_selected()
    assert not [n for n in track_names(driver) if n.endswith(" specificity")], "off until asked for"
    box.click()
    wanted = {f"{cell} specificity" for cell in CELL_TYPES}

    def loaded():
        named = dict(driver.execute_async_script(FEATURES_OF, "wig") or [])
        return named if wanted <= set(named) else None

    wigs = wait_until(loaded)
    assert all(wigs[name] > 0 for name in wanted), wigs
    wait_until(lambda: "specificity=1" in driver.current_url)
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "page_specificity.png"))
    driver.get(driver.current_url)
    wait_until(loaded)                                          # a link keeps them
    assert driver.find_element("id", "show-specificity").is_selected()
    driver.find_element("id", "show-specificity").click()
    wait_until(lambda: not [n for n in track_names(driver) if n.endswith(" specificity")])
    wait_until(lambda: "specificity=0" in driver.current_url)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
