"""Run a benchmark several times, each in a fresh process, and report the median of every figure.

    python -m benchmarks.repeat --runs 5 -- python -m benchmarks.train --backbone tf_efficientnetv2_b0

Each run's last stdout line must be its JSON object (every benchmark here ends that way). The last
line printed here is one JSON object: the median of each numeric figure, the figures that agreed in
every run (device, backbone, ...), and every run's numbers under ``runs``.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys


def last_json_line(output: str, command: list[str]) -> dict:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as error:
        raise SystemExit(f"{' '.join(command)}: its last line is not a JSON object ({error})") from None


def summarize(runs: list[dict]) -> dict:
    """Values shared by every run (settings such as the batch size) kept as they are; the median of
    numbers that vary, with every run's value; other values that vary listed per run."""
    summary: dict = {"runs": len(runs)}
    for key in runs[0]:
        values = [run.get(key) for run in runs]
        if all(v == values[0] for v in values):
            summary[key] = values[0]
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            summary[key] = round(statistics.median(values), 3)
            summary[f"{key}_all"] = values
        else:
            summary[f"{key}_all"] = values
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the benchmark command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.runs < 1:
        parser.error("give --runs >= 1 and a benchmark command after --")
    runs = []
    for i in range(args.runs):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            if done.returncode < 0:  # killed by a signal; SIGKILL is what the out-of-memory killer sends
                cause = " (most likely the kernel's out-of-memory killer: try a smaller size)" \
                    if done.returncode == -signal.SIGKILL else ""
                raise SystemExit(f"run {i + 1} of {' '.join(command)} was killed by signal "
                                 f"{signal.Signals(-done.returncode).name}{cause}")
            raise SystemExit(f"run {i + 1} of {' '.join(command)} failed (exit {done.returncode})")
        runs.append(last_json_line(done.stdout, command))
        print(f"run {i + 1}/{args.runs}: {json.dumps(runs[-1])}", flush=True)
    print(json.dumps(summarize(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
