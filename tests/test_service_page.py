"""The web page, clicked through in headless Chromium (Debian's, driven by Playwright): create a signer,
enrol references, verify a questioned signature, and see the decision, the scores and the images; a stale
verdict cleared, an uncalibrated one flagged; and the API docs rendered offline.

Needs /usr/bin/chromium (`make test` installs it where it can); without it the test is skipped, unless
SIGVERIFY_REQUIRE_BROWSER=1 (CI) makes that a failure."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager

import pytest

from sigverify.serving.app import Settings, create_app
from sigverify.serving.store import SignatureStore
from sigverify.serving.verifier import Verifier

from conftest import signer_files
from service_helpers import LiveServer, fresh_database
from test_service import postgres  # noqa: F401  (the session's database server)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    if CHROMIUM is None:
        if os.environ.get("SIGVERIFY_REQUIRE_BROWSER") == "1":
            pytest.fail("no chromium on this machine (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api")


@contextmanager
def page_on_a_service(postgres, served_model, database: str):  # noqa: F811
    """A Chromium page opened on the service (API key ``page-key``), and the service's verifier."""
    playwright_api = _browser_or_skip()
    verifier = Verifier(served_model[3], threads=1)
    store = SignatureStore(fresh_database(postgres, database), verifier.model.model_id,
                           verifier.model.config.embedding_dim, timeout=2)
    try:
        with LiveServer(create_app(verifier, store, Settings(api_key="page-key"))) as live, \
                playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.goto(live.url)
            page.wait_for_function("document.getElementById('model').textContent.includes('threshold')")
            yield page, verifier
            browser.close()
    finally:
        store.close()


def test_the_page_enrols_and_verifies(postgres, served_model, tmp_path):  # noqa: F811
    genuine, forged, _ = signer_files(served_model)
    with page_on_a_service(postgres, served_model, "page") as (page, verifier):
        expected = verifier.verify_files(genuine[:3], forged[0])
        page.fill("#apikey", "page-key")
        page.fill("#new-signer", "page-signer")
        page.click("#create-signer")
        page.wait_for_function("document.getElementById('message').textContent.includes('created')")
        page.set_input_files("#references", genuine[:3])
        page.click("#enrol")
        page.wait_for_function("document.getElementById('message').textContent.includes('3 reference(s) enrolled')")
        page.set_input_files("#questioned", forged[0])
        page.click("#verify")
        page.wait_for_selector("#result", state="visible")
        decision = page.text_content("#decision")
        figures = page.text_content("#figures")
        evidence = page.text_content("#evidence")
        calibration_shown = page.is_visible("#calibration")
        page.wait_for_function("(img => img.complete && img.naturalWidth > 0)(document.getElementById('questioned-image'))")
        questioned_width = page.eval_on_selector("#questioned-image", "img => img.naturalWidth")
        page.wait_for_function("[...document.querySelectorAll('#reference-images img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)")
        references_shown = page.eval_on_selector_all("#reference-images img", "imgs => imgs.length")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert not calibration_shown  # 3 references, as validated
    assert evidence.startswith("Likelihood ratio ") and f": {expected.likelihood_ratio_json()['verbal']}" in evidence
    assert "likelihood ratio (genuine vs skilled forgery)" in figures
    assert decision.startswith("Genuine" if expected.genuine else "Forgery")
    assert f"{expected.score:.4f}" in figures and f"{expected.threshold:.4f}" in figures
    assert questioned_width > 0 and references_shown == 3
    assert (tmp_path / "page.png").stat().st_size > 0


def test_a_wrong_key_shows_the_error_on_the_page(postgres, served_model):  # noqa: F811
    with page_on_a_service(postgres, served_model, "page_key") as (page, _):
        page.fill("#apikey", "wrong")
        page.fill("#new-signer", "x")
        page.click("#create-signer")
        page.wait_for_function("document.getElementById('message').className === 'error'")
        message = page.text_content("#message")
    assert "API key" in message


def test_the_page_flags_an_uncalibrated_verdict_and_never_shows_a_stale_one(postgres, served_model, tmp_path):  # noqa: F811
    genuine, forged, _ = signer_files(served_model)
    not_an_image = tmp_path / "scan.png"
    not_an_image.write_text("not an image")
    with page_on_a_service(postgres, served_model, "page_stale") as (page, verifier):
        validated = verifier.validated_references
        page.fill("#apikey", "page-key")
        page.fill("#new-signer", "few")
        page.click("#create-signer")
        page.wait_for_function("document.getElementById('message').textContent.includes('created')")
        page.set_input_files("#references", genuine[:validated - 1])  # one reference fewer than validated
        page.click("#enrol")
        page.wait_for_function("document.getElementById('message').textContent.includes('enrolled')")
        page.set_input_files("#questioned", forged[0])
        page.click("#verify")
        page.wait_for_selector("#result", state="visible")
        decision, warning = page.text_content("#decision"), page.text_content("#calibration")
        evidence = page.text_content("#evidence")
        warning_shown = page.is_visible("#calibration")
        page.set_input_files("#questioned", genuine[-1])  # another file: the verdict on screen is stale
        hidden_on_new_file = page.is_hidden("#result") and not page.text_content("#decision")
        page.click("#verify")
        page.wait_for_selector("#result", state="visible")
        # the same file and signer, and the service fails (as when its database is down): the verdict goes too
        page.route("**/verify", lambda route: route.fulfill(status=503, content_type="application/json",
                                                            body=json.dumps({"detail": "the database is unavailable"})))
        page.click("#verify")
        page.wait_for_function("document.getElementById('message').className === 'error'")
        hidden_on_failure = page.is_hidden("#result") and not page.text_content("#decision")
        page.unroute("**/verify")
        page.set_input_files("#questioned", str(not_an_image))
        page.click("#verify")  # fails: no verdict may stay on screen under the error
        page.wait_for_function("document.getElementById('message').className === 'error'")
        error = page.text_content("#message")
        hidden_on_error = page.is_hidden("#result") and not page.get_attribute("#questioned-image", "src")
        # enrolling more references, or creating another signer, makes a verdict on screen stale too
        page.set_input_files("#questioned", forged[0])
        page.click("#verify")
        page.wait_for_selector("#result", state="visible")
        page.set_input_files("#references", genuine[validated - 1:validated])
        page.click("#enrol")
        page.wait_for_function("document.getElementById('message').textContent.includes('enrolled')")
        hidden_on_enrol = page.is_hidden("#result")
        page.click("#verify")
        page.wait_for_selector("#result", state="visible")
        calibrated_now = "(uncalibrated)" not in page.text_content("#decision")
        scale = page.text_content("#figures")
        page.fill("#new-signer", "other")
        page.click("#create-signer")
        page.wait_for_function("document.getElementById('message').textContent.includes('created')")
        hidden_on_new_signer = page.is_hidden("#result")
    assert "(uncalibrated)" in decision and warning_shown and "uncalibrated: the LR calibration holds" in evidence
    assert f"{validated - 1} reference(s)" in warning and f"validated with {validated} references" in warning
    assert hidden_on_new_file and hidden_on_failure and hidden_on_error and "scan.png" in error
    assert hidden_on_enrol and calibrated_now and hidden_on_new_signer and "ENFSI" in scale


def test_the_api_docs_render_offline(postgres, served_model):  # noqa: F811
    """/docs draws every operation with no request leaving the machine (Swagger UI's files are served locally)."""
    with page_on_a_service(postgres, served_model, "page_docs") as (page, _):
        base = page.url.rstrip("/")
        outside = []

        def local_only(route):
            if route.request.url.startswith(base):
                return route.continue_()
            outside.append(route.request.url)
            return route.abort()

        page.route("**/*", local_only)
        page.goto(f"{base}/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        operations = page.eval_on_selector_all(".swagger-ui .opblock", "blocks => blocks.length")
        title = page.text_content(".swagger-ui .title")
    assert operations >= 12 and "sigverify" in title
    assert outside == []
