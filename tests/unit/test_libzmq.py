"""The libzmq we run on cannot be aborted by a peer (native/libzmq, prime/net/libzmq.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prime.net import libzmq

TESTS = Path(__file__).resolve().parents[1]


def test_the_loaded_libzmq_is_the_patched_build() -> None:
    assert libzmq.fix_level() >= libzmq.FIX_LEVEL_REQUIRED, libzmq.problem()
    assert libzmq.problem() is None


def test_a_peer_that_fills_its_pipe_pings_and_resets_cannot_abort_the_reader() -> None:
    """A raw ZMTP peer fills a ROUTER's pipe (RCVHWM 4), sends a PING behind 50 frames
    and 50 more, and resets the connection. Reading the pipe then made libzmq 4.3.4 and
    4.3.5 as released decode the PING on the failed connection and abort the process
    (exit 134, ``Assertion failed: !_io_error``). Run in a child process, as an abort
    would take pytest with it."""
    run = subprocess.run([sys.executable, str(TESTS / "rawzmtp.py")], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-500:]}"
    assert run.stdout.startswith("survived, read "), run.stdout
    assert int(run.stdout.split()[-1]) >= 4  # it did read the frames queued before the reset


def test_the_daemon_refuses_an_unpatched_libzmq_with_one_line(monkeypatch, tmp_path, capsys) -> None:
    """Without the mark, ``bin/prime`` stops at start-up (exit 2, nothing forked) with one
    line naming the key that overrides it; with the key set it goes on."""
    from prime.cli import prime as cli

    keys = tmp_path / "keys"
    made = subprocess.run([str(TESTS.parent / "bin" / "gen_keys"), "--out", str(keys), "--bits", "512",
                           "--seed", "05", "--clients", "0"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    from prime.proc.localcluster import _free_base_port

    plain = f'[networking]\nbase_port = {_free_base_port(4)}\nlink_security = "none"\n'
    conf = tmp_path / "def.toml"
    conf.write_text(plain)
    (tmp_path / "address.config").write_text("1 127.0.0.1\n2 127.0.0.1\n3 127.0.0.1\n4 127.0.0.1\n")
    started: list[int] = []
    monkeypatch.setattr(cli, "run_replica", lambda cfg, me, *rest: started.append(me) or 0)
    monkeypatch.setattr(libzmq, "fix_level", lambda: 0)
    argv = ["-i", "1", "--conf", str(conf), "--keys", str(keys)]
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "lacks Prime's patch" in lines[0], lines
    assert "libzmq_unpatched_ok" in lines[0] and started == []
    conf.write_text(plain + "libzmq_unpatched_ok = true\n")
    assert cli.main(argv) == 0 and started == [1]
