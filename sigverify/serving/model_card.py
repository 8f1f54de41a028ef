"""The model card (``README.md`` of an exported model folder), in the Hugging Face hub's format: YAML
metadata, then what the model is for, how it was trained and validated, and what it must not be used for."""
from __future__ import annotations


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _interval(values, percent: bool = True) -> str:
    if not values or any(v is None for v in values):
        return "n/a"
    return " - ".join(_percent(v) if percent else f"{v:.3f}" for v in values)


def _weights(described: dict | None, model: dict) -> str:
    if described is None:  # exported before the starting weights were recorded
        return "pretrained (not recorded)" if model.get("pretrained") or model.get("weights_file") else "scratch"
    extra = [f"{key.replace('_', ' ')}: {described[key]}" for key in ("trained_on", "licence") if key in described]
    return described["source"] + (f" ({'; '.join(extra)})" if extra else "")


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
        r = test_report
        lines += [
            f"On {r.get('n_signers', '?')} test signers never seen in training or validation, same protocol, "
            "95 % intervals from a bootstrap over test signers:",
            "",
            "| figure | value | 95 % interval |",
            "|---|---|---|",
            f"| EER (a posteriori, threshold found on the test signers) | {_percent(r.get('eer'))} | {_interval(r.get('eer_ci95'))} |",
            f"| AUC | {r.get('auc', float('nan')):.3f} | {_interval(r.get('auc_ci95'), percent=False)} |",
            f"| HTER at this threshold | {_percent(r.get('hter'))} | {_interval(r.get('hter_ci95'))} |",
            f"| FRR / FAR skilled / FAR random at this threshold | {_percent(r.get('frr'))} / "
            f"{_percent(r.get('far_skilled'))} / {_percent(r.get('far_random'))} | |",
            f"| shortcut floor: EER of image statistics alone (ink amount, darkness, size) | "
            f"{_percent(r.get('image_statistics_eer'))} | |",
            "",
            "The shortcut floor is what a verifier reaches without looking at the signature's form; a model close "
            "to it may have learned a shortcut. `sigverify test --explain N` and `sigverify explain` show where "
            "its attribution falls.",
        ]
        floor = r.get("image_statistics_eer")
        if floor is not None and r.get("eer") is not None and r["eer"] > floor - 0.05:
            lines += ["", f"**Warning**: this model's EER ({_percent(r['eer'])}) is within 5 points of the shortcut "
                          f"floor ({_percent(floor)}) or above it: it may rest on ink amount, darkness or size rather "
                          "than the signature's form. Do not deploy it on this evidence."]
    else:
        lines += ["No test report was found beside the checkpoint; run `sigverify test` on the run and re-export "
                  "to include its figures."]
    lines += [
        "",
        "## Training",
        "",
        f"- Data: `{data.get('root') or 'built-in synthetic set'}` (fingerprint `{split.get('data')}`): "
        f"{len(split.get('train', []))} training, {len(split.get('val', []))} validation and "
        f"{len(split.get('test', []))} test signers (lists in `config.json`, `split`)"
        + (f"; training signers also from `{'`, `'.join(data['train_extra'])}` (training only)." if data.get("train_extra") else "."),
        f"- Network: timm `{config['backbone']}`, projection head {config['head_hidden']} -> {config['embedding_dim']}; "
        f"loss `{model.get('loss')}`.",
        f"- Starting weights: {_weights(config.get('starting_weights'), model)}.",
        f"- Checkpoint: `{config['checkpoint']['file']}` (epoch {config['checkpoint']['epoch']}); training config "
        f"sha256 `{config['training_config_sha256'][:16]}`.",
        f"- ONNX graph checked against PyTorch on {config['onnx']['checked_on']}: max difference "
        f"{config['onnx']['max_abs_difference_to_pytorch']:.1e}.",
        "",
        "## Limitations",
        "",
        "- Writer-independent: it compares a questioned signature with a person's references; it was never "
        "trained on the signers it verifies, and it does not identify writers.",
        "- Offline only: scanned or photographed signatures on paper, preprocessed as above; not pen-tablet "
        "(online) signatures, and not signatures cut from cluttered documents without cropping.",
        f"- Scripts seen in training: {config.get('scripts') or 'not stated at export (sigverify export --scripts)'}; "
        "other scripts are untested.",
        "- Validated only on signers like those of its data set; a new population (script, scanner, pen) needs "
        "its own validation signers and a new threshold.",
        "- The threshold rests on a handful of validation signers; its error rates there are estimates.",
        "- A decision support for trained examiners, not a substitute for forensic examination.",
        "",
    ]
    return "\n".join(lines)
