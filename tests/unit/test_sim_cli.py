"""``bin/sim`` (``python -m prime.sim``) as a new user meets it: a bad flag gets one clear
line and exit status 2 (1 stays "the checker found a violation"), a run outside the fault
model says so, and the launcher works from any directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from prime.sim.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--f", "-1"], "f is 0..10"),
        (["--f", "11"], "N = 3f+2k+1 <= 31"),
        (["--partition", "9|1@0.1-0.2"], "--partition: replica 9 does not exist (replicas are 1..4"),
        (["--param", "bogus=3"], "--param: unknown key 'bogus'; known: catchup_epsilon_us"),
        (["--byz", "2:nope"], "--byz: unknown behaviour 'nope'; known: ack-junk, amnesia-edge, amnesia-equivocate, bad-parts"),
        (["--crash", "5@0.1"], "--crash: replica 5 does not exist"),
        (["--loss", "2"], "--loss 2.0: must be between"),
        (["--clients", "0"], "--clients 0: must be an integer from 1"),
    ],
)
def test_bad_flags_get_one_line_and_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv + ["--duration", "0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_a_run_outside_the_model_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--byz", "2:silent", "--crash", "3@0.1", "--duration", "0.3", "--json"])
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert "OUTSIDE THE FAULT MODEL" in err and summary["outside_model"]
    assert summary["liveness_checked"] is False and code == 0


def test_launcher_works_from_another_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "bin" / "sim"), "--duration", "0.3", "--json", "--seed", "5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["outside_model"] == "" and summary["throughput_ups"] > 0


def test_throughput_is_the_rate_of_replicas_that_did_not_jump(capsys: pytest.CaptureFixture[str]) -> None:
    """A replica restarted mid-run jumps (state transfer) and delivers less; the summary's
    throughput is what the others delivered, not that replica's smaller count."""
    assert main(["--f", "1", "--k", "1", "--restart", "4@0.5", "--duration", "1.5", "--json", "--seed", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    delivered = {int(r): v for r, v in summary["delivered"].items()}
    assert delivered[4] < max(delivered.values())
    assert summary["throughput_ups"] == round(max(delivered.values()) / 1.5, 1)


def test_a_replay_command_with_legacy_switches_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """A run with fixes switched off prints a replay command that runs as printed."""
    assert main(["--param", "legacy=H3,RB", "--duration", "0.3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["replay"].endswith("--param legacy=H3,RB")
    argv = summary["replay"].split()[1:]
    assert main(argv + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trace_sha256"] == summary["trace_sha256"]
    assert main(["--param", "legacy=H99", "--duration", "0.2"]) == 2
    assert "unknown item(s) H99" in capsys.readouterr().err


def test_clean_stop_flag_reaches_the_run_and_its_replay(capsys: pytest.CaptureFixture[str]) -> None:
    """``--clean-stop ID``: the restart of ID is clean (its exact record written first),
    and the replay command carries the flag; an id outside 1..N is refused in one line."""
    code = main(["--restart", "2@0.2", "--clean-stop", "2", "--duration", "0.4", "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["clean_stop"] == [2] and "--clean-stop 2" in summary["replay"], summary
    assert code == 0 or summary["outside_model"]
    assert main(["--clean-stop", "9", "--duration", "0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--clean-stop: replica 9 does not exist" in err[0], err
