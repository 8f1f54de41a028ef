"""``sigverify explain --model CKPT_OR_DIR REFERENCE QUESTIONED --out heat.png``: the explanation maps of one
comparison (both images, overlaid), their similarity and ink-attribution ratios as a JSON line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from torch import nn

from sigverify.commandline import command_parser
from sigverify.data.errors import DataError, DataProblems
from sigverify.data.preprocess import PreprocessConfig, preprocess_file
from sigverify.explain.attribution import METHODS, Explainer
from sigverify.explain.render import save_pair_figure
from sigverify.serving.verifier import likelihood_ratio_evidence


def load_network(path: str | Path) -> tuple[nn.Module, PreprocessConfig, dict]:
    """(the bare embedding network, its preprocessing, what the model says about decisions) of a
    checkpoint written by ``sigverify fit`` or a folder written by ``sigverify export``."""
    path = Path(path)
    if path.is_dir():
        from sigverify.serving.pretrained import SignatureModel

        model = SignatureModel.from_pretrained(str(path))
        # Decisions use the folder's scoring network (shift-averaged if exported so): its threshold's scale.
        return model.embedder, model.preprocess_config, {"protocol": model.folder.config.protocol.name,
                                                         "threshold": model.threshold, "model": model}
    from sigverify.models.checkpoint import TrainedCheckpoint

    checkpoint = TrainedCheckpoint.read(path, "checkpoint or model folder")
    return checkpoint.network(), checkpoint.datamodule().preprocess, {}


def explain_pair(model: str | Path, reference: str | Path, questioned: str | Path, out: str | Path,
                 method: str = "gradcam", layer: str | None = None) -> dict:
    network, preprocess, decision_info = load_network(model)
    images = np.stack([preprocess_file(reference, preprocess), preprocess_file(questioned, preprocess)])
    explainer = Explainer(network, preprocess.height, method, layer)
    maps = explainer.pairs(images[:1], images[1:])[0]
    result = {**maps.summary(), **explainer.describe(), "out": str(out), "reference": str(reference),
              "questioned": str(questioned), "map_size": list(maps.questioned.shape)}
    title = f"similarity {maps.similarity:.3f}"
    if decision_info.get("protocol") == "pairs":  # the threshold is for one reference against one questioned
        embeddings = decision_info["model"].embed(images)
        score = float(embeddings[0] @ embeddings[1])
        genuine = score >= decision_info["threshold"]
        result.update(score=score, threshold=decision_info["threshold"], decision="genuine" if genuine else "forgery",
                      likelihood_ratio=likelihood_ratio_evidence(decision_info["model"].folder.calibration, score))
        title += f" ({result['decision']}: score {score:.3f}, threshold {decision_info['threshold']:.3f})"
    elif decision_info:
        result["note"] = ("the model's threshold is for its references protocol: decide with `sigverify verify` "
                          "and several references; the maps explain this one comparison")
    save_pair_figure(maps, images[0], images[1], out, title)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("sigverify explain", __doc__)
    parser.add_argument("--model", required=True, help="a checkpoint (.ckpt) or an exported model folder")
    parser.add_argument("reference", help="a genuine signature of the signer (image file)")
    parser.add_argument("questioned", help="the signature to explain against it (image file)")
    parser.add_argument("--out", required=True, help="the picture to write (PNG)")
    parser.add_argument("--method", choices=METHODS, default="gradcam", help="Grad-CAM family method")
    parser.add_argument("--layer", help="the network module to explain (default: the deepest stage with a "
                                        "map at least 8 rows high); an unknown name lists the stages")
    args = parser.parse_args(argv)
    try:
        result = explain_pair(args.model, args.reference, args.questioned, args.out, args.method, args.layer)
    except (DataError, DataProblems, OSError, ValueError) as err:
        print(f"sigverify explain: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
