"""The model card (``README.md`` of an exported model folder), in the Hugging Face hub's format: YAML
metadata, then what the model is for, how it was trained and validated, and what it must not be used for."""
from __future__ import annotations


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def model_card(config: dict, test_report: dict | None = None) -> str:
    threshold, protocol, pre = config["threshold"], config["protocol"], config["preprocess"]
    split, data = config["split"], config["training_config"]["data"]
    model = config["training_config"]["model"]
    lines = [
        "---",
        "library_name: sigverify",
        "license: apache-2.0",
        "pipeline_tag: image-feature-extraction",
        "tags: [signature-verification, metric-learning, onnx, sigverify]",
        "---",
        "",
        f"# Offline signature verifier ({config['backbone']}, {model.get('loss', '?')} loss)",
        "",
        "A writer-independent verifier exported by `sigverify export`: it embeds a scanned signature into a "
        f"{config['embedding_dim']}-d unit vector; a questioned signature is accepted as genuine when its score "
        "against the signer's enrolled references reaches the threshold below.",
        "",
        "## Use",
        "",
        "```bash",
        "sigverify verify --model THIS_FOLDER --reference r1.png r2.png r3.png --questioned q.png",
        "sigverify serve --model THIS_FOLDER",
        "```",
        "",
        f"Input: one grayscale signature image per file, preprocessed as in `config.json` (Otsu binarisation "
        f"{'on' if pre['binarize'] else 'off'}, crop to the ink, aspect-preserving resize to "
        f"{pre['height']}x{pre['width']}). `model.onnx` takes uint8 images [batch, 1, {pre['height']}, {pre['width']}] "
        "with the ink bright on black and returns unit-length embeddings.",
        "",
        "## Decision rule",
        "",
        f"- Protocol: **{protocol['name']}**"
        + (f" ({protocol['reduce']} similarity to the references, writer normalisation `{protocol['normalize']}`; "
           f"validated with {protocol['n_references_validated']} references per signer)"
           if protocol["name"] == "references" else " (cosine similarity of one reference and the questioned signature)"),
        f"- Threshold: **{threshold['value']:.4f}**, chosen on {threshold['n_validation_signers']} validation signers "
        f"({threshold['source']}); there: FRR {_percent(threshold['frr'])}, FAR (skilled forgeries) "
        f"{_percent(threshold['far_skilled'])}, FAR (other signers) {_percent(threshold['far_random'])}.",
        "- Confidence of a decision: the share of the validation signers' signatures of the other class that "
        "the score is on the far side of (accepted: 1 - FAR at the score; rejected: 1 - FRR at the score), read "
        "from `calibration.json`; about 1 - EER right at the threshold, not 0.5.",
        f"- Enrol {protocol['n_references_validated']} reference(s) per signer: the threshold and its rates hold "
        "for that number.",
        "",
        "## Evaluation",
        "",
    ]
    if test_report:
        lines += [
            f"On {test_report.get('n_signers', '?')} test signers never seen in training or validation, same "
            f"protocol: EER {_percent(test_report.get('eer'))} (a posteriori), AUC {test_report.get('auc', float('nan')):.3f}; "
            f"at this threshold FRR {_percent(test_report.get('frr'))}, FAR skilled {_percent(test_report.get('far_skilled'))}, "
            f"HTER {_percent(test_report.get('hter'))}. Shortcut floor (image statistics alone): "
            f"{_percent(test_report.get('image_statistics_eer'))} EER.",
        ]
    else:
        lines += ["No test report was found beside the checkpoint; run `sigverify test` on the run and re-export "
                  "to include its figures."]
    lines += [
        "",
        "## Training",
        "",
        f"- Data: `{data.get('root') or 'built-in synthetic set'}` (fingerprint `{split.get('data')}`): "
        f"{len(split.get('train', []))} training, {len(split.get('val', []))} validation and "
        f"{len(split.get('test', []))} test signers (lists in `config.json`, `split`).",
        f"- Network: timm `{config['backbone']}` from {'pretrained weights' if model.get('pretrained') else 'scratch'}, "
        f"projection head {config['head_hidden']} -> {config['embedding_dim']}; loss `{model.get('loss')}`.",
        f"- Checkpoint: `{config['checkpoint']['file']}` (epoch {config['checkpoint']['epoch']}); training config "
        f"sha256 `{config['training_config_sha256'][:16]}`.",
        f"- ONNX graph checked against PyTorch on {config['onnx']['checked_on']}: max difference "
        f"{config['onnx']['max_abs_difference_to_pytorch']:.1e}.",
        "",
        "## Limitations",
        "",
        "- Validated only on signers like those of its data set; a new population (script, scanner, pen) needs "
        "its own validation signers and a new threshold.",
        "- The threshold rests on a handful of validation signers; its error rates there are estimates.",
        "- A decision support for trained examiners, not a substitute for forensic examination.",
        "",
    ]
    return "\n".join(lines)
