"""The Streamlit page of ``sigverify app``: upload a signer's references and a questioned signature; see
the decision, where the score falls among the validation signers' scores, and the explanation maps.

Decisions come from the exported ONNX model (``Verifier``, as ``sigverify verify`` and the service
make them); the maps from its PyTorch twin (``model.safetensors``), when torch is installed.
The model folder: ``--model DIR`` after ``--`` on the streamlit command line, or ``SIGVERIFY_MODEL``.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import numpy as np
import streamlit as st

from sigverify.data.errors import DataError
from sigverify.serving.case_report import MAX_MAPS, distribution_figure, folder_explainer
from sigverify.serving.model_dir import ModelDirError


def model_folder() -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model")
    return parser.parse_known_args(sys.argv[1:])[0].model or os.environ.get("SIGVERIFY_MODEL")


def folder_stamp(folder: str) -> float:
    """Changes when the folder is exported again (--overwrite): the cached model is then reloaded."""
    try:
        return max(p.stat().st_mtime for p in Path(folder).iterdir())
    except (OSError, ValueError):
        return 0.0


@st.cache_resource(max_entries=2)  # a re-exported folder replaces the old model rather than piling up
def load_verifier(folder: str, stamp: float):
    from sigverify.serving.verifier import Verifier

    return Verifier(folder)


@st.cache_resource(max_entries=2)
def load_explainer(folder: str, stamp: float):
    """(the maps' explainer, a lock for it, None), or (None, None, the reason) when torch, grad-cam or the
    folder's PyTorch weights are missing. One explainer serves every session; the lock keeps their maps apart."""
    explainer, problem = folder_explainer(folder)
    return explainer, threading.Lock() if explainer is not None else None, problem and f"explanation maps: {problem}"


def read_uploads(verifier, files) -> np.ndarray:
    """Uploaded files, decoded and preprocessed; a bad one stops with an error naming it."""
    return np.stack([verifier.read(f.getvalue(), f.name).model_view for f in files])


def show_verdict(verifier, verdict) -> None:
    text = (f"**{'Genuine' if verdict.genuine else 'Forgery'}**: score {verdict.score:.4f} against threshold "
            f"{verdict.threshold:.4f}; confidence {100 * verdict.confidence:.1f} %")
    (st.success if verdict.genuine else st.error)(text)
    lr = verdict.likelihood_ratio_json()
    if lr is not None:
        st.markdown(f"Likelihood ratio **{lr['lr']:.3g}** (log10 {lr['log10_lr']:.2f}): {lr['verbal']}"
                    + (f" ({lr['note']})" if lr["note"] else "") + ". Verbal scale: ENFSI (2015).")
    if verdict.n_references != verdict.n_references_validated:
        st.warning(f"{verdict.n_references} reference(s) given; the threshold was validated with "
                   f"{verdict.n_references_validated}: its error rates hold for that number.")
    st.caption(f"At this score, on the validation signers: FAR {100 * verdict.far_at_score:.1f} % of skilled "
               f"forgeries score as high, FRR {100 * verdict.frr_at_score:.1f} % of genuine signatures score lower.")
    st.pyplot(distribution_figure(verifier, verdict.score))  # a Figure of its own: nothing for pyplot to close


def show_maps(folder: str, references: np.ndarray, questioned: np.ndarray, names: list[str]) -> None:
    explainer, lock, problem = load_explainer(folder, folder_stamp(folder))
    if explainer is None:
        st.info(problem)
        return
    from sigverify.explain.render import overlay

    st.subheader("Explanation maps")
    st.caption(f"{explainer.method} on `{explainer.layer_name}`: what drives each similarity. Ink ratio: the share "
               f"of positive attribution within {explainer.reach} px of a stroke; low values mean the model looks "
               "at the paper, not the signature.")
    n = min(MAX_MAPS, len(references))
    with lock:
        pairs = explainer.pairs(references[:n], np.repeat(questioned[None], n, 0))
    for reference, name, pair in zip(references, names, pairs):
        left, right = st.columns(2)
        left.image(overlay(reference, pair.reference), caption=f"{name} (ink ratio {pair.reference_ink_ratio:.2f})",
                   width="stretch")
        right.image(overlay(questioned, pair.questioned), width="stretch",
                    caption=f"questioned vs {name}: similarity {pair.similarity:.3f}, ink ratio {pair.questioned_ink_ratio:.2f}")


def main() -> None:
    st.set_page_config(page_title="sigverify", layout="centered")
    st.title("Signature verification")
    folder = model_folder()
    if not folder:
        st.error("No model: start with `sigverify app --model MODEL_DIR` (or set SIGVERIFY_MODEL).")
        return
    try:
        verifier = load_verifier(folder, folder_stamp(folder))
    except (ModelDirError, OSError) as err:
        st.error(f"Cannot load the model: {err}")
        return
    st.caption(f"Model `{folder}`: {verifier.protocol} protocol, threshold {verifier.model.threshold:.4f}, validated "
               f"with {verifier.validated_references} reference(s) per signer.")
    references = st.file_uploader("Reference signatures (genuine, of one signer)", accept_multiple_files=True,
                                  type=["png", "jpg", "jpeg", "tif", "tiff", "bmp"], key="references")
    questioned = st.file_uploader("Questioned signature", type=["png", "jpg", "jpeg", "tif", "tiff", "bmp"],
                                  key="questioned")
    if not st.button("Verify", type="primary", disabled=not (references and questioned)):
        return
    try:
        images = read_uploads(verifier, [*references, questioned])
        embeddings = verifier.embed(images)
        verdict = verifier.verdict(embeddings[-1], embeddings[:-1])
    except (DataError, ValueError) as err:
        st.error(str(err))
        return
    show_verdict(verifier, verdict)
    show_maps(folder, images[:-1], images[-1], [f.name for f in references])


main()
