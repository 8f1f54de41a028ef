"""``sigverify app --model MODEL_DIR [--port 8501]``: start the Streamlit app on an exported model."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from sigverify.commandline import command_parser
from sigverify.serving.model_dir import ModelDirError, read_model_dir

PAGE = Path(__file__).with_name("page.py")


def streamlit_command(model: str, port: int, address: str, headless: bool) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(PAGE), "--server.port", str(port),
            "--server.address", address, "--server.headless", str(headless).lower(),
            "--browser.gatherUsageStats", "false", "--", "--model", str(Path(model).resolve())]


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("sigverify app", __doc__)
    parser.add_argument("--model", required=True, help="an exported model folder (`sigverify export`)")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--address", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    parser.add_argument("--headless", action="store_true", help="do not open a browser")
    args = parser.parse_args(argv)
    try:
        read_model_dir(args.model)  # a wrong folder is reported here, not as a page full of errors
        import streamlit  # noqa: F401  (the app extra)
    except ModelDirError as err:
        print(f"sigverify app: {err}", file=sys.stderr)
        return 1
    except ImportError:
        print("sigverify app needs Streamlit: pip install 'sigverify[app]'", file=sys.stderr)
        return 2
    command = streamlit_command(args.model, args.port, args.address, args.headless)
    sys.stdout.flush()
    os.execv(command[0], command)  # streamlit takes this process's place: a stop signal reaches it directly
