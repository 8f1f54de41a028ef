"""The case report of one verification: a single self-contained HTML file an examiner can file or print
(``sigverify report``; the service's ``POST /signers/{id}/report``).

It holds what the verification rests on: the images (as decoded, and as the model sees them) with their
SHA-256, the explanation maps (when the images and the PyTorch weights are at hand), the score placed on the
validation signers' genuine and forgery scores, the likelihood ratio with its verbal equivalent and bounds,
the model's identity (its id, training data, validation signers, figures on its test signers) and the limits
of the method in plain words. Everything is inline (images as data URIs); nothing is fetched when it opens.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import sigverify
from sigverify.serving.model_dir import ModelConfig
from sigverify.serving.verifier import DecodedImage, Verdict, Verifier

if TYPE_CHECKING:  # torch and cv2 (the training install): imported in folder_explainer only
    from sigverify.explain.attribution import Explainer

MAX_MAPS = 3  # explanation maps per report (one per reference): each costs a backward pass


@dataclass
class Case:
    verdict: Verdict
    questioned: DecodedImage
    references: list[DecodedImage]
    signer: str | None = None
    maps: list = field(default_factory=list)  # explain.attribution.PairMaps, questioned vs each reference
    maps_note: str | None = None  # why there are none


def case_from_images(verifier: Verifier, references: list[tuple[str, bytes]], questioned: tuple[str, bytes],
                     signer: str | None = None, maps: bool = True) -> Case:
    """Decode, embed and decide as ``sigverify verify`` does; then the maps, if asked and possible."""
    refs = [verifier.read(data, name) for name, data in references]
    query = verifier.read(questioned[1], questioned[0])
    embeddings = verifier.embed(np.stack([*(r.model_view for r in refs), query.model_view]))
    case = Case(verifier.verdict(embeddings[-1], embeddings[:-1]), query, refs, signer)
    if maps:
        case.maps, case.maps_note = explanation_maps(verifier, case)
    return case


def explanation_maps(verifier: Verifier, case: Case) -> tuple[list, str | None]:
    """Grad-CAM maps of the questioned signature against the first references ([], and why, when torch,
    grad-cam or the folder's PyTorch weights are missing)."""
    explainer, problem = folder_explainer(verifier.model.path)
    if explainer is None:
        return [], f"no explanation maps: {problem}"
    refs = [r.model_view for r in case.references[:MAX_MAPS]]
    return explainer.pairs(np.stack(refs), np.repeat(case.questioned.model_view[None], len(refs), 0)), None


def folder_explainer(folder: str | Path) -> tuple[Explainer, None] | tuple[None, str]:
    """(the maps' explainer of an exported model folder, None), or (None, why) when the training install (torch,
    grad-cam) or the folder's PyTorch weights are missing: a serving install verifies without them."""
    try:
        import pytorch_grad_cam  # noqa: F401  (the maps import it only when they are drawn: fail here instead)

        from sigverify.explain.attribution import Explainer
        from sigverify.serving.pretrained import SignatureModel
    except ImportError as err:
        return None, f"they need the training install (pip install 'sigverify[train]'): {err}"
    try:
        model = SignatureModel.from_pretrained(str(folder))
    except (OSError, ValueError) as err:  # ModelDirError is a ValueError
        return None, f"they need the folder's PyTorch weights: {err}"
    return Explainer(model.embedder, model.preprocess_config.height), None


def distribution_figure(verifier: Verifier, score: float):
    """The validation signers' genuine and skilled-forgery scores, the threshold, and this score (matplotlib)."""
    # A Figure of its own, not pyplot's: the service draws reports from several threads at once, and pyplot's
    # figure registry is not thread-safe.
    from matplotlib.figure import Figure

    calibration = verifier.model.calibration
    fig = Figure(figsize=(6, 2.6))
    ax = fig.subplots()
    bins = np.linspace(min(calibration.skilled.min(), calibration.genuine.min(), score),
                       max(calibration.skilled.max(), calibration.genuine.max(), score), 40)
    ax.hist(calibration.genuine, bins=bins, alpha=0.6, density=True, label="validation genuine", color="tab:green")
    ax.hist(calibration.skilled, bins=bins, alpha=0.6, density=True, label="validation skilled forgeries",
            color="tab:red")
    ax.axvline(verifier.model.threshold, color="black", linestyle="--", label="threshold")
    ax.axvline(score, color="tab:blue", linewidth=2.5, label="this signature")
    ax.set_xlabel("score")
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig  # closed by the caller once drawn


def _png(image: np.ndarray) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _figure_png(figure) -> str:
    from sigverify.evaluation.figure import save_figure

    return "data:image/png;base64," + base64.b64encode(save_figure(figure, io.BytesIO(), format="png").getvalue()).decode()


def _e(value) -> str:
    return html.escape(str(value))


def _row(name: str, value: str) -> str:
    return f"<tr><th>{_e(name)}</th><td>{value}</td></tr>"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _lr(value: float) -> str:
    if value < 1:
        return f"1/{_lr(1 / value)}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def render(verifier: Verifier, case: Case, title: str = "Signature verification: case report") -> str:
    """The report as one HTML document."""
    v, config = case.verdict, verifier.model.config
    lr = v.likelihood_ratio_json()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    decision = "consistent with a genuine signature" if v.genuine else "consistent with a forgery"
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class=meta>Written {now} by sigverify {_e(sigverify.__version__)} with model "
             f"<code>{_e(verifier.model.model_id)}</code>" + (f"; signer <code>{_e(case.signer)}</code>" if case.signer
                                                              else "") + ".</p>"]
    # -- the finding
    parts.append("<h2>Finding</h2>")
    if lr is not None:
        parts.append(f"<p class=finding>The likelihood ratio is <b>{_lr(lr['lr'])}</b> (log10 {lr['log10_lr']:.2f}): "
                     f"the comparison gives <b>{_e(lr['verbal'])}</b>.</p>")
        for note in v.range_notes():  # an uncalibrated count is said once, below
            parts.append(f"<p class=warn>{_e(note)}.</p>")
    parts.append(f"<p>At the operating threshold the questioned signature is <b>{decision}</b> (score {v.score:.4f}, "
                 f"threshold {v.threshold:.4f}, chosen on {config.threshold.n_validation_signers} validation "
                 f"signers: {_e(config.threshold.source)}).</p>")
    if not v.calibrated:
        parts.append(f"<p class=warn>Uncalibrated: {v.n_references} reference(s) were used; the threshold, its error "
                     f"rates and the likelihood ratio were validated with {v.n_references_validated}.</p>")
    table = [_row("score / threshold", f"{v.score:.4f} / {v.threshold:.4f}"),
             _row("validation skilled forgeries scoring as high (FAR at this score)", _percent(v.far_at_score)),
             _row("validation genuine signatures scoring lower (FRR at this score)", _percent(v.frr_at_score)),
             _row("similarity to each reference", ", ".join(f"{s:.3f}" for s in v.similarities))]
    if lr is not None:
        low, high = (10.0 ** b for b in lr["bounds_log10"])
        table += [_row("likelihood ratio: genuine vs skilled forgery", f"{_lr(lr['lr'])} (log10 {lr['log10_lr']:.2f})"),
                  _row("range the validation data support", f"{_lr(low)} to {_lr(high)} (at most as many as the "
                       "validation comparisons behind it, either way)"),
                  _row("verbal scale", "ENFSI Guideline for Evaluative Reporting in Forensic Science (2015)")]
    parts.append("<table>" + "".join(table) + "</table>")
    parts.append("<h2>The score among the validation signers' scores</h2>"
                 f"<img class=plot alt='score distributions' src='{_figure_png(distribution_figure(verifier, v.score))}'>")
    # -- the material
    parts.append("<h2>The signatures</h2><table><tr><th>role</th><th>file</th><th>SHA-256</th><th>as received</th>"
                 "<th>as the model sees it</th></tr>")
    for role, sig in (("questioned", case.questioned), *(("reference", r) for r in case.references)):
        page = f"<img class=sig alt='' src='{_png(sig.page)}'>" if sig.page is not None else "not kept (stored as an embedding)"
        view = f"<img class=sig alt='' src='{_png(255 - sig.model_view)}'>" if sig.model_view is not None else ""
        parts.append(f"<tr><td>{role}</td><td>{_e(sig.name)}</td><td class=hash><code>{_e(sig.sha256)}</code></td>"
                     f"<td>{page}</td><td>{view}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>Explanation maps</h2>")
    if case.maps:
        from sigverify.explain.render import overlay

        parts.append("<p>Grad-CAM maps of each similarity: warm colours drive it. The ink ratio is the share of the "
                     "positive attribution within a few pixels of a stroke; a low one means the model looked at the "
                     "paper, not the signature.</p>")
        for ref, pair in zip(case.references, case.maps):
            parts.append(f"<figure><img class=sig alt='' src='{_png(overlay(ref.model_view, pair.reference))}'>"
                         f"<img class=sig alt='' src='{_png(overlay(case.questioned.model_view, pair.questioned))}'>"
                         f"<figcaption>{_e(ref.name)} and the questioned signature: similarity {pair.similarity:.3f}, "
                         f"ink ratio {pair.reference_ink_ratio:.2f} / {pair.questioned_ink_ratio:.2f}</figcaption></figure>")
    else:
        parts.append(f"<p>{_e(case.maps_note or 'none')}.</p>")
    parts += [_model_section(config, verifier.model.model_id), _limits_section(config)]
    return _page(title, "\n".join(parts))


def _model_section(config: ModelConfig, model_id: str) -> str:
    threshold, split, data = config.threshold, config.split, config.training_config.get("data", {})
    weights = config.starting_weights or {}
    tested = config.test_figures or {}
    rows = [_row("model id (SHA-256 of its model.onnx, shortened)", f"<code>{_e(model_id)}</code>"),
            _row("network", _e(f"{config.backbone}, {config.embedding_dim}-d embedding; starting weights: "
                                 f"{weights.get('source', 'not recorded')}"
                                 + (f" ({weights['licence']})" if weights.get("licence") else ""))),
            _row("training data", _e(f"{data.get('root') or 'built-in synthetic set'}: {len(split.get('train', []))} "
                                     f"training, {len(split.get('val', []))} validation, {len(split.get('test', []))} "
                                     "test signers, disjoint"
                                     + (f"; data set fingerprint {split['data']}" if split.get("data") else ""))),
            _row("validation signers", _e(", ".join(map(str, split.get("val", []))) or "not recorded")),
            _row("threshold and likelihood ratios fitted on", _e(f"{threshold.n_validation_signers} validation signers "
                                                                 f"({threshold.n_genuine_scores} genuine and "
                                                                 f"{threshold.n_skilled_scores} skilled-forgery scores); "
                                                                 f"there FRR {_percent(threshold.frr)}, FAR "
                                                                 f"{_percent(threshold.far_skilled)}"))]
    if tested:
        rows.append(_row("on its test signers (never seen in training or validation)", _e(
            f"{tested.get('n_signers')} signers: EER {_percent(tested.get('eer'))}, HTER at this threshold "
            f"{_percent(tested.get('hter'))}"
            + (f", Cllr {tested['cllr']:.3f} bits (Cllr-min {tested['cllr_min']:.3f}), misleading evidence "
               f"{_percent(tested['misleading_genuine'])} of genuine / {_percent(tested['misleading_forgery'])} of "
               "forgeries" if tested.get("cllr") is not None else "")
            + f"; image statistics alone: EER {_percent(tested.get('image_statistics_eer'))}")))
    else:
        rows.append(_row("on its test signers", "no test report was exported with this model"))
    return "<h2>The model</h2><table>" + "".join(rows) + "</table>"


def _limits_section(config: ModelConfig) -> str:
    return "<h2>Limits of the method</h2><ul>" + "".join(f"<li>{_e(item)}</li>" for item in (
        "The system compares the questioned signature with the given references of the same person; it does not "
        "say who wrote it, and it was never trained on this person.",
        "Its figures hold for signatures like those it was validated on: "
        f"{config.scripts or 'the scripts of its training data'}, scanned on paper. Another population "
        "(script, scanner, pen, photographs) needs its own validation before these numbers apply.",
        "The likelihood ratio weighs two propositions only: a genuine signature of this person, or a skilled "
        "forgery of it. Disguised signatures, tracings and other writers' genuine signatures are not modelled.",
        "The threshold and the likelihood ratios rest on a limited number of validation signers; they are estimates, "
        "and the ratio is capped at what that many comparisons can support.",
        "This report supports a trained forensic document examiner; it does not replace their examination.")) + "</ul>"


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 980px; margin: 1rem auto; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.1rem; border-bottom: 1px solid #ccc; margin-top: 1.6rem; }}
table {{ border-collapse: collapse; margin: 0.5rem 0; }}
td, th {{ border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; font-size: 0.9rem; vertical-align: top; }}
.finding {{ font-size: 1.1rem; }} .warn {{ border-left: 4px solid #e65100; background: #fff3e0; padding: 0.4rem 0.6rem; }}
.meta {{ color: #555; font-size: 0.85rem; }} img.sig {{ max-width: 300px; max-height: 150px; border: 1px solid #ccc; }}
img.plot {{ max-width: 100%; }} figure {{ display: inline-block; margin: 0.4rem; }} code {{ font-size: 0.8rem; }}
td.hash {{ word-break: break-all; max-width: 9rem; font-size: 0.75rem; }} td img.sig {{ max-width: 240px; }}
@media print {{ body {{ max-width: none; }} h2 {{ break-after: avoid; }} tr, figure {{ break-inside: avoid; }} }}
</style></head>
<body>
{body}
</body></html>
"""
