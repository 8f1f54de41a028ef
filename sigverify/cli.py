"""The ``sigverify`` command.

    sigverify fit|validate|test|predict --config configs/lsc_plus.yaml [--model.loss sct ...]
    sigverify data import|info|synth|prepare ...
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile

DATA_COMMAND = "data"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    _log_to_console()
    if argv[:1] == [DATA_COMMAND]:
        from sigverify.data.commands import run_data_command

        sys.exit(run_data_command(argv[1:]))
    run_lightning(argv)


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
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="sigverify-config-", delete=False)
    handle.write(compose(*configs, overrides=variables))
    handle.close()
    atexit.register(os.unlink, handle.name)  # read once, while LightningCLI parses
    return rest[:first] + ["--config", handle.name] + rest[first:]


def run_lightning(argv: list[str]) -> None:
    os.environ.setdefault("WANDB_MODE", "offline")  # W&B never needs an account or a network; `wandb sync` later
    from sigverify.training.cli import SigverifyCLI

    SigverifyCLI(args=compose_config_args(argv))


if __name__ == "__main__":
    main()
