"""The ``sigverify`` command: ``sigverify --help`` lists the commands (``COMMANDS``)."""
from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import sys
import tempfile
import warnings

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
TRAINING_COMMANDS = (*LIGHTNING_COMMANDS, "data", "sweep", "export", "explain", "push")  # the rest runs on the serving install
# Commands of their own: "module:function" taking the remaining arguments, returning the exit code.
ENTRY_POINTS = {
    "data": "sigverify.data.commands:run_data_command",
    "sweep": "sigverify.sweep:main",
    "export": "sigverify.serving.commands:export_main",
    "verify": "sigverify.serving.commands:verify_main",
    "serve": "sigverify.serving.commands:serve_main",
    "explain": "sigverify.serving.explain:main",
    "push": "sigverify.serving.commands:push_main",
    "report": "sigverify.serving.commands:report_main",
    "app": "sigverify.app.launch:main",
}
COMMANDS = {
    "fit": "train a model: --config configs/lsc_plus.yaml [--config configs/presets/cpu_tiny.yaml] [--key value]",
    "validate": "figures on the validation signers only, for screening recipes (validate-<protocol>/)",
    "test": "report on the test signers at the threshold fixed on validation signers (test-<protocol>/)",
    "predict": "write the test signers' embeddings (<run>/predict/embeddings.npz)",
    "data": "data sets: import, info, synth, prepare, preview (one augmented training batch as a picture)",
    "sweep": "train and test every loss under identical settings, tables side by side (= make sweep)",
    "export": "a checkpoint as a self-contained model folder (ONNX, safetensors, threshold, model card)",
    "verify": "a questioned signature against reference signatures with an exported model, as JSON",
    "serve": "the verification service: HTTP API, web page, PostgreSQL + pgvector (embedded by default)",
    "explain": "explanation maps (Grad-CAM) of one comparison and their ink-attribution ratios",
    "report": "a case report of one verification (HTML): images, maps, score, likelihood ratio, model, limits",
    "push": "upload an exported model folder to the Hugging Face hub (when the network allows it)",
    "app": "the interactive app (Streamlit): upload references and a questioned signature, see the decision and maps",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: sigverify COMMAND [options]", "",
             "Writer-independent offline signature verification with PyTorch Lightning.", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    lines += ["", "`sigverify COMMAND --help` lists a command's options; configs and results: README.md."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    _log_to_console()
    command = argv[0] if argv else None
    if command in (None, "-h", "--help", "help"):
        print(usage())
        sys.exit(0 if command else 2)
    if command in TRAINING_COMMANDS and importlib.util.find_spec("torch") is None:
        print(f"sigverify {command} needs the training install: pip install 'sigverify[train]' "
              "(this one serves models only)", file=sys.stderr)
        sys.exit(2)
    if command in ENTRY_POINTS:
        module, function = ENTRY_POINTS[command].split(":")
        sys.exit(getattr(importlib.import_module(module), function)(argv[1:]))
    if command not in LIGHTNING_COMMANDS:
        print(f"sigverify: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    run_lightning(with_current_names(argv))


def with_current_names(argv: list[str]) -> list[str]:
    """``sigverify test ... --explain N`` is ``--report.explain.maps N``: maps of the N most confident test
    errors and the ink-attribution distribution in the report. Options under a name that has moved
    (``config.MOVED_SETTINGS``) are given their new one, with a warning."""
    from sigverify.config import MOVED_SETTINGS, moved_warning

    out, moved, args = [], [], iter(argv)
    for arg in args:
        key, sep, value = arg.partition("=")
        option, append = key.removesuffix("+"), "+" if key.endswith("+") else ""  # --key+ value appends to a list
        name = "report.explain.maps" if key == "--explain" else MOVED_SETTINGS.get(option[2:]) if key[:2] == "--" else None
        if name is None:
            out.append(arg)
            continue
        if key != "--explain":
            moved.append(option[2:])
        out += [f"--{name}{append}", value if sep else next(args, "")]
    if moved:
        logging.getLogger("sigverify").warning(moved_warning(moved, "command line"))
    return out


def _log_to_console() -> None:
    """sigverify's own INFO messages to stderr (Lightning configures its loggers itself)."""
    logger = logging.getLogger("sigverify")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def compose_config_args(argv: list[str]) -> list[str]:
    """Replace the ``--config FILE`` arguments by one composed, interpolated config (see sigverify.config).

    The composed file takes the place of the first ``--config``; other arguments keep their order,
    so command-line overrides after it still win. ``--vars.KEY VALUE`` sets a shared value before
    interpolation (e.g. ``--vars.name my_run`` moves the whole run folder).
    """
    from sigverify.config import compose

    rest, configs, variables, first = [], [], [], None
    args = iter(argv)
    for arg in args:
        key, _, inline = arg.partition("=")
        if key == "--config":
            configs.append(inline or next(args, None))
            first = len(rest) if first is None else first
        elif key.startswith("--vars."):
            variables.append(f"{key[2:]}={inline or next(args, '')}")
        else:
            rest.append(arg)
    if not configs:
        return rest
    if None in configs:
        raise SystemExit("error: --config needs a file")
    composed = compose(*configs, overrides=variables)  # before the file: a config not found leaves none behind
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="sigverify-config-", delete=False)
    handle.write(composed)
    handle.close()
    atexit.register(os.unlink, handle.name)  # read once, while LightningCLI parses
    return rest[:first] + ["--config", handle.name] + rest[first:]


def run_lightning(argv: list[str]) -> None:
    os.environ.setdefault("WANDB_MODE", "offline")  # W&B never needs an account or a network; `wandb sync` later
    from sigverify.training.cli import SigverifyCLI

    # The arguments go in composed (config files merged, interpolated); Lightning warns whenever
    # args= and sys.argv are both given, which is every command here.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    SigverifyCLI(args=compose_config_args(argv))


if __name__ == "__main__":
    main()
