"""``sigverify verify``: one questioned signature against a signer's reference signatures, as JSON."""
from __future__ import annotations

import argparse
import json
import sys

from sigverify.data.errors import DataError
from sigverify.serving.model_dir import ModelDirError


def verify_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sigverify verify",
        description="Score a questioned signature against a signer's references with an exported model "
                    "(`sigverify export`); prints JSON with the decision, score, distance, confidence and threshold.")
    parser.add_argument("--model", required=True, help="an exported model folder")
    parser.add_argument("--reference", nargs="+", required=True, help="the signer's genuine reference images")
    parser.add_argument("--questioned", required=True, help="the image to verify")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    args = parser.parse_args(argv)
    try:
        from sigverify.serving.verifier import Verifier

        verifier = Verifier(args.model, args.threads)
        verdict = verifier.verify_files(args.reference, args.questioned)
    except (ModelDirError, DataError, ValueError, OSError) as err:
        print(f"sigverify verify: {err}", file=sys.stderr)
        return 1
    model = verifier.model.config
    print(json.dumps({**verdict.to_json(), "protocol": verifier.protocol, "references": list(args.reference),
                      "questioned": args.questioned, "threshold_source": model["threshold"]["source"],
                      "model": str(verifier.model.path)}, indent=1))
    return 0
