"""The commands on exported models: ``sigverify export`` (a checkpoint to a model folder), ``verify`` (one
questioned signature against a signer's references, as JSON), ``serve`` and ``push``. Each parses its options
before importing what it runs, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from sigverify.commandline import command_parser
from sigverify.data.errors import DataError
from sigverify.serving.model_dir import ModelDirError, read_model_dir
from sigverify.serving.verifier import MAX_PIXELS, Verifier, read_image_file  # onnxruntime loads only with a model


def export_main(argv: list[str] | None = None) -> int:
    parser = command_parser("sigverify export", "A trained checkpoint as a self-contained model folder: ONNX and "
                            "safetensors weights, the operating threshold chosen on the run's validation signers, "
                            "their scores with the score-to-likelihood-ratio calibration fitted on them, and a model card.")
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by `sigverify fit`, or its run folder "
                                                      "(its best checkpoint)")
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--protocol", choices=("references", "pairs"), default="references",
                        help="how the served model scores a questioned signature (default: references, "
                             "with the run's writer normalisation)")
    parser.add_argument("--data", help="the training data's manifest.csv, if it moved since training "
                                       "(its validation signers fix the threshold)")
    parser.add_argument("--n-references", type=int, help="references per validation signer when the threshold "
                        "is chosen (default: the run's model.evaluation.n_references, lowered to what every "
                        "validation signer can enrol); enrol as many when serving")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    parser.add_argument("--scripts", help="the scripts of the training signatures, for the model card "
                                          "(e.g. 'Latin' for CEDAR, 'Bengali, Devanagari' for BHSig260)")
    args = parser.parse_args(argv)
    try:
        from sigverify.serving.export import export

        path = export(args.ckpt, args.out, args.protocol, args.data, args.overwrite, args.n_references, args.scripts)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"sigverify export: {err}", file=sys.stderr)
        return 1
    config = read_model_dir(path).config
    print(json.dumps({"model_dir": str(path), **asdict(config.threshold),
                      "n_references": config.protocol.n_references_validated}))
    return 0


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every command on an exported model takes."""
    parser = command_parser(prog, description)
    parser.add_argument("--model", required=True, help="an exported model folder (`sigverify export`)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="per image (default: %(default)s)")
    return parser


def verify_main(argv: list[str] | None = None) -> int:
    parser = _parser("sigverify verify", "Score a questioned signature against a signer's references with an "
                     "exported model; prints JSON with the decision, score, threshold, confidence and the likelihood ratio "
                     "(genuine vs skilled forgery, with its ENFSI verbal equivalent).")
    parser.add_argument("--reference", nargs="+", required=True, help="the signer's genuine reference images")
    parser.add_argument("--questioned", required=True, help="the image to verify")
    args = parser.parse_args(argv)
    try:
        verifier = Verifier(args.model, args.threads, args.max_pixels)
        verdict = verifier.verify_files(args.reference, args.questioned)
    except (ModelDirError, DataError, ValueError, OSError) as err:
        print(f"sigverify verify: {err}", file=sys.stderr)
        return 1
    print(json.dumps({**verdict.to_json(), "protocol": verifier.protocol, "references": list(args.reference),
                      "questioned": args.questioned, "threshold_source": verifier.model.config.threshold.source,
                      "model": str(verifier.model.path)}, indent=1))
    return 0


def serve_main(argv: list[str] | None = None) -> int:
    parser = _parser("sigverify serve", "The verification service: an HTTP API (OpenAPI at /docs) and a web page "
                     "at /, on PostgreSQL + pgvector. Without --db an embedded PostgreSQL runs under --data-dir.")
    parser.add_argument("--db", help="PostgreSQL DSN of a server with the vector extension (default: embedded)")
    parser.add_argument("--data-dir", default="sigverify-data", help="the embedded database's folder (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", help="the key writes need (default: $SIGVERIFY_API_KEY)")
    parser.add_argument("--no-auth", action="store_true", help="serve writes without a key (deliberately only)")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="request body limit (default: %(default)s)")
    args = parser.parse_args(argv)
    api_key = args.api_key or os.environ.get("SIGVERIFY_API_KEY") or None
    if api_key is not None and not api_key.isascii():
        print("sigverify serve: the API key must be ASCII (HTTP headers carry it as bytes)", file=sys.stderr)
        return 2
    if api_key is None and not args.no_auth:
        print("sigverify serve: set SIGVERIFY_API_KEY (or --api-key) for writes, or pass --no-auth to serve "
              "without one deliberately", file=sys.stderr)
        return 2
    try:
        import uvicorn

        from sigverify.serving.app import Limits, Settings, create_app
        from sigverify.serving.embedded import EmbeddedDatabase
        from sigverify.serving.store import SignatureStore, StoreError

        verifier = Verifier(args.model, args.threads, args.max_pixels)
        database = None if args.db else EmbeddedDatabase(args.data_dir)
        store = SignatureStore(args.db or database.dsn, verifier.model.model_id,
                               verifier.model.config.embedding_dim)
    except (ModelDirError, StoreError, ValueError, OSError, ImportError) as err:
        print(f"sigverify serve: {err}", file=sys.stderr)
        _stop(locals().get("database"))
        return 1
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    app = create_app(verifier, store, Settings(api_key=api_key, limits=limits), database)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for the previous
    # handler: make that an exit that runs the cleanup below (the default one would kill the process
    # and leave the embedded PostgreSQL running).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
        _stop(database)
    return 0


def _stop(database) -> None:
    """Stop the embedded PostgreSQL this process started (explicitly: its own exit hook does not run
    when uvicorn ends on a signal), unless another process still uses it."""
    if database is not None:
        database.close()


def report_main(argv: list[str] | None = None) -> int:
    parser = _parser("sigverify report", "A case report of one verification as one self-contained HTML file: the "
                     "images, the explanation maps, the score among the validation scores, the likelihood ratio with "
                     "its verbal equivalent, the model's identity and the limits of the method.")
    parser.add_argument("--reference", nargs="+", required=True, help="the signer's genuine reference images")
    parser.add_argument("--questioned", required=True, help="the image to verify")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--title", default="Signature verification: case report")
    parser.add_argument("--signer", help="the signer's name or id, printed in the report")
    parser.add_argument("--no-maps", action="store_true", help="leave out the explanation maps (they need torch)")
    args = parser.parse_args(argv)
    try:
        from sigverify.serving.case_report import case_from_images, render

        verifier = Verifier(args.model, args.threads, args.max_pixels)
        files = [(Path(p).name, read_image_file(p)) for p in (*args.reference, args.questioned)]
        case = case_from_images(verifier, files[:-1], files[-1], args.signer, maps=not args.no_maps)
        Path(args.out).write_text(render(verifier, case, args.title))
    except (ModelDirError, DataError, ValueError, OSError) as err:
        print(f"sigverify report: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"report": args.out, **case.verdict.to_json()}))
    return 0


def push_main(argv: list[str] | None = None) -> int:
    """``sigverify push MODEL_DIR --repo user/name``: the exported folder, checked, to a hub model repository."""
    parser = command_parser("sigverify push", push_main.__doc__)
    parser.add_argument("model_dir", help="an exported model folder (`sigverify export`)")
    parser.add_argument("--repo", required=True, help="the hub repository, user/name (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to push to (default: main)")
    parser.add_argument("--token", help="hub token (default: the one `hf auth login` stored, or HF_TOKEN)")
    parser.add_argument("--message", default="Upload signature verifier (sigverify export)")
    args = parser.parse_args(argv)
    try:
        from sigverify.serving.pretrained import push_model_dir

        url = push_model_dir(args.model_dir, args.repo, private=args.private, revision=args.revision,
                             token=args.token, message=args.message)
    except (ModelDirError, ValueError, OSError) as err:
        print(f"sigverify push: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"repo": args.repo, "url": url}))
    return 0
