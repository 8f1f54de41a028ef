"""``sigverify data ...``: import layouts, inspect a manifest, generate synthetic signatures, build the cache."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

from sigverify.commandline import command_parser
from sigverify.data.cache import default_cache_root, prepare
from sigverify.data.errors import DataError, DataProblems
from sigverify.data.importers import FORGERY_PATTERN, LAYOUTS, import_cedar, import_folders, import_layout
from sigverify.data.manifest import read_manifest, signer_warnings, summarize
from sigverify.data.preprocess import PreprocessConfig
from sigverify.data.synth import SYNTHETIC_DEFAULTS, synthesize_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("sigverify data", __doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", help="write a manifest.csv for a known layout")
    imp.add_argument("layout", choices=["cedar", "folders", *sorted(LAYOUTS)])
    imp.add_argument("root", help="the data set's folder")
    imp.add_argument("--out", help="manifest path (default: ROOT/manifest.csv)")
    imp.add_argument("--forgery-pattern", default=FORGERY_PATTERN,
                     help="folders layout: regex matching forgery file names")

    info = sub.add_parser("info", help="counts, images per signer, and problems of a manifest")
    info.add_argument("manifest")
    info.add_argument("--check", action="store_true", help="also decode and preprocess every image")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")

    synth = sub.add_parser("synth", help="generate the built-in synthetic signatures")
    synth.add_argument("--out", required=True)
    synth.add_argument("--signers", type=int, default=SYNTHETIC_DEFAULTS["signers"])
    synth.add_argument("--genuine", type=int, default=SYNTHETIC_DEFAULTS["genuine"])
    synth.add_argument("--forgeries", type=int, default=SYNTHETIC_DEFAULTS["forgeries"])
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=0)
    synth.add_argument("--style", default="classic", choices=["classic", "skilled"],
                       help="skilled: forgeries that follow the genuine trajectory with a forger's errors")

    prep = sub.add_parser("prepare", help="build (or reuse) the preprocessed cache of a manifest")
    prep.add_argument("manifest")
    prep.add_argument("--height", type=int, default=PreprocessConfig.height)
    prep.add_argument("--width", type=int, default=PreprocessConfig.width)
    prep.add_argument("--cache-dir", default=None)
    prep.add_argument("--on-bad", choices=["raise", "skip"], default="raise")
    prep.add_argument("--workers", type=int, default=0)

    # Parsed by sigverify.data.preview (it takes --config files and any --data.* override, as fit does).
    sub.add_parser("preview", add_help=False,
                   help="draw one augmented training batch as the model sees it: --config ... --out batch.png")
    return parser


def run_data_command(argv: list[str]) -> int:
    try:
        if argv[:1] == ["preview"] and not {"-h", "--help"} & set(argv[1:2]):
            from sigverify.data.preview import run_preview

            return run_preview(argv[1:])
        if argv[:1] == ["preview"]:
            from sigverify.data.preview import preview_parser

            preview_parser().print_help()
            return 0
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (DataError, DataProblems, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _import(args) -> int:
    if args.layout == "cedar":
        path = import_cedar(args.root, args.out)
    elif args.layout == "folders":
        path = import_folders(args.root, args.forgery_pattern, args.out)
    else:
        path = import_layout(args.root, args.layout, args.out)
    print(f"wrote {path}")
    return _print_summary(read_manifest(path), as_json=False)


def _info(args) -> int:
    records = read_manifest(args.manifest)
    problems = [str(DataError(r.path, "file not found")) for r in records if not r.path.is_file()]
    if args.check:
        try:
            prepare(records, PreprocessConfig(), on_bad="raise")
        except DataProblems as err:
            problems = [str(p) for p in err.problems]
    return _print_summary(records, as_json=args.json, problems=problems)


def _print_summary(records, as_json: bool, problems: list[str] = ()) -> int:
    summary = summarize(records)
    summary["warnings"] = signer_warnings(records)
    summary["problems"] = list(problems)
    if as_json:
        print(json.dumps(summary, indent=1))
        return 1 if problems else 0
    ips = summary["images_per_signer"]
    print(f"signers: {summary['signers']}")
    print(f"images: {summary['images']} ({summary['genuine']} genuine, {summary['forgery']} forgery)")
    print(f"images per signer: min {ips['min']}, median {ips['median']}, max {ips['max']}")
    per_signer = Counter((r.signer, r.label) for r in records)
    shapes = Counter((per_signer[(s, 'genuine')], per_signer[(s, 'forgery')]) for s in {r.signer for r in records})
    for (g, f), n in sorted(shapes.items()):
        print(f"  {n} signer(s) with {g} genuine + {f} forgeries")
    for w in summary["warnings"]:
        print(f"warning: {w}")
    for p in summary["problems"]:
        print(f"problem: {p}")
    print(f"problems: {len(summary['problems'])}")
    return 1 if problems else 0


def _synth(args) -> int:
    start = time.perf_counter()
    path = synthesize_dataset(args.out, args.signers, args.genuine, args.forgeries, args.seed, args.workers, args.style)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    return _print_summary(read_manifest(path), as_json=False)


def _prepare(args) -> int:
    records = read_manifest(args.manifest)
    config = PreprocessConfig(height=args.height, width=args.width)
    start = time.perf_counter()
    prepared = prepare(records, config, args.cache_dir or default_cache_root() / "preprocessed", on_bad=args.on_bad,
                       workers=args.workers)
    state = "reused" if prepared.reused else "built"
    print(f"cache {state}: {prepared.path} ({len(prepared.records)} images of 1x{config.height}x{config.width}, "
          f"{prepared.images.nbytes / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    for p in prepared.skipped:
        print(f"skipped: {p}")
    return 0


COMMANDS = {"import": _import, "info": _info, "synth": _synth, "prepare": _prepare}
