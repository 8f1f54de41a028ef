"""The benchmark scripts run end to end at toy size and end with their JSON line; repeat takes medians."""
import json
import sys

import pytest

from benchmarks import infer, repeat



def test_repeat_reports_medians_and_every_run(tmp_path, capsys):
    counter = tmp_path / "n"
    # Each run reads and bumps a counter, so the three runs report 10, 30 and 20 images/s.
    script = tmp_path / "bench.py"
    script.write_text(
        "import json, pathlib\n"
        f"p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1))\n"
        "print('warming up'); print(json.dumps({'device': 'cpu', 'batch': 64, 'img_s': [10.0, 30.0, 20.0][n]}))\n")
    assert repeat.main(["--runs", "3", "--", sys.executable, str(script)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["img_s"] == 20.0 and summary["img_s_all"] == [10.0, 30.0, 20.0]
    assert summary["device"] == "cpu" and summary["runs"] == 3
    assert summary["batch"] == 64 and "batch_all" not in summary  # a setting every run shares stays as it is


@pytest.mark.parametrize("code, message", [("raise SystemExit(3)", r"failed \(exit 3\)"), ("print('no json')", "not a JSON")])
def test_repeat_names_a_broken_benchmark(code, message):
    with pytest.raises(SystemExit, match=message):
        repeat.main(["--runs", "2", "--", sys.executable, "-c", code])


def test_infer_benchmark_runs_at_toy_size(synth_manifest, capsys, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    infer.main(["--backbone", "test_efficientnet", "--height", "32", "--width", "64", "--batch", "16", "--steps", "2",
                "--workers", "0", "--repeat", "2", "--manifest", str(synth_manifest)])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["repeat"] == 2 and figures["bare_img_s"] > 0 and figures["predict_img_s"] > 0
    assert figures["ratio"] == pytest.approx(figures["predict_img_s"] / figures["bare_img_s"], rel=0.01)
    assert not any(cwd.iterdir())  # nothing left in the working directory (a split.json was)
