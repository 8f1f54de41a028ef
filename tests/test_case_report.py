"""The case report: `sigverify report` writes one self-contained HTML document (no request leaves it), with the
images and their hashes, the maps, the score among the validation scores, the likelihood ratio, the model's
identity and the limits; the service writes the same for a verification of its stored references."""
from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
from pathlib import Path

from sigverify.serving.verifier import Verifier

from conftest import cli, signer_files
from test_service import KEY, client, enrol, postgres, service, upload, verifier  # noqa: F401  (fixtures)


def test_sigverify_report_writes_a_self_contained_case_report(served_model, tmp_path, capsys):
    genuine, forged, _ = signer_files(served_model)
    out = tmp_path / "case.html"
    assert cli("report", "--model", str(served_model[3]), "--reference", *genuine[:3], "--questioned", forged[0],
               "--out", str(out), "--signer", "case 2026/17") == 0
    printed = json.loads(capsys.readouterr().out)
    expected = Verifier(served_model[3]).verify_files(genuine[:3], forged[0])
    page = out.read_text()
    assert printed["score"] == expected.score and printed["report"] == str(out)
    lr = expected.likelihood_ratio_json()
    assert html.escape(lr["verbal"]) in page and f"log10 {lr['log10_lr']:.2f}" in page and "ENFSI" in page
    assert f"{expected.score:.4f}" in page and "case 2026/17" in page
    for file in (*genuine[:3], forged[0]):  # every image, named by the hash of the bytes examined
        assert hashlib.sha256(Path(file).read_bytes()).hexdigest() in page
    assert page.count("<img") >= 2 * 4 + 1 + 2 * 3  # pages and model views, the score plot, 3 pairs of maps
    assert "Explanation maps" in page and "ink ratio" in page and "Limits of the method" in page
    assert not re.search(r"(src|href)=['\"]https?:", page)  # nothing to fetch: every image is inline
    # The model's identity: its id, its data and validation signers, its LR figures on its test signers.
    config = json.loads((served_model[3] / "config.json").read_text())
    tested = config["test_figures"]
    assert Verifier(served_model[3]).model.model_id in page and config["split"]["data"] in page
    assert ", ".join(map(str, config["split"]["val"])) in page
    assert f"Cllr {tested['cllr']:.3f} bits (Cllr-min {tested['cllr_min']:.3f})" in page


def test_a_folder_without_its_pytorch_weights_reports_without_maps_and_says_why(served_model, tmp_path, capsys,
                                                                                monkeypatch):
    """An ONNX-only copy of a folder (what a serving install needs) still verifies; the report and the app say
    which file the maps need instead of failing."""
    from streamlit.testing.v1 import AppTest
    from test_explain_and_share import PAGE, _uploads

    folder = tmp_path / "onnx-only"
    shutil.copytree(served_model[3], folder)
    (folder / "model.safetensors").unlink()
    genuine, forged, _ = signer_files(served_model)
    out = tmp_path / "case.html"
    assert cli("report", "--model", str(folder), "--reference", *genuine[:3], "--questioned", forged[0],
               "--out", str(out)) == 0
    printed = json.loads(capsys.readouterr().out)
    page = html.unescape(out.read_text())
    assert printed["score"] == Verifier(served_model[3]).verify_files(genuine[:3], forged[0]).score
    assert "no explanation maps: they need the folder's PyTorch weights" in page
    assert str(folder / "model.safetensors") in page and "ink ratio" not in page

    monkeypatch.setenv("SIGVERIFY_MODEL", str(folder))
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    at.file_uploader(key="references").set_value(_uploads(genuine[:3]))
    at.file_uploader(key="questioned").set_value(_uploads(forged[:1])[0])
    at.run()
    at.button[0].click().run()
    assert not at.exception and (at.success or at.error)
    assert any("PyTorch weights" in i.value and "model.safetensors" in i.value for i in at.info)


def test_the_service_reports_a_verification_of_stored_references(served_model, client):  # noqa: F811
    genuine, forged, _ = signer_files(served_model)
    enrol(client, "gina", genuine[:3])
    response = client.post("/signers/gina/report", files=upload([forged[0]], "file"))
    verified = client.post("/signers/gina/verify", files=upload([forged[0]], "file")).json()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert f"{verified['score']:.4f}" in page and html.escape(verified["likelihood_ratio"]["verbal"]) in page
    assert "keeps the references as embeddings" in page and "gina" in page
    for file in genuine[:3]:  # stored references listed by the hash of what was enrolled
        assert hashlib.sha256(Path(file).read_bytes()).hexdigest() in page
    assert client.post("/signers/nobody/report", files=upload([forged[0]], "file")).status_code == 404


def test_the_case_report_renders_in_a_real_browser(served_model, tmp_path):
    """Opened in headless Chromium with the network cut off: every image draws, nothing is requested."""
    from test_service_page import CHROMIUM, CHROMIUM_FLAGS, _browser_or_skip

    playwright_api = _browser_or_skip()
    genuine, forged, _ = signer_files(served_model)
    out = tmp_path / "case.html"
    assert cli("report", "--model", str(served_model[3]), "--reference", *genuine[:3], "--questioned", forged[0],
               "--out", str(out)) == 0
    requested = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.goto(out.as_uri())
        drawn = page.eval_on_selector_all("img", "imgs => imgs.map(img => img.complete && img.naturalWidth > 0)")
        title = page.title()
        page.screenshot(path=str(tmp_path / "case.png"), full_page=True)
        browser.close()
    assert drawn and all(drawn) and title == "Signature verification: case report"
    assert all(url.startswith(("file:", "data:")) for url in requested)
