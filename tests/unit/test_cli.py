"""End-to-end tests of the launchers bin/gen_keys and bin/prime, run as subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GEN_KEYS = str(ROOT / "bin" / "gen_keys")
PRIME = str(ROOT / "bin" / "prime")
TIMEOUT_S = 60


def _run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONOPTIMIZE"}
    environment.update(env or {})
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=ROOT,
        env=environment,
        check=False,
    )


def _conf(folder: Path, k: int) -> Path:
    """A copy of the shipped conf/ with [system] k set; returns its def.toml."""
    folder.mkdir(parents=True)
    text = (ROOT / "conf" / "def.toml").read_text().replace("\nk = 0\n", f"\nk = {k}\n")
    (folder / "def.toml").write_text(text)
    shutil.copy(ROOT / "conf" / "address.config", folder / "address.config")
    return folder / "def.toml"


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(("k", "n"), [(0, 4), (1, 6)], ids=["n4", "n6"])
def test_gen_keys_then_check_config(tmp_path: Path, k: int, n: int) -> None:
    """bin/gen_keys makes keys for N = 4 or 6 and bin/prime --check-config accepts every server,
    printing the effective configuration; a second gen_keys without --force is refused."""
    conf, keys = _conf(tmp_path / "conf", k), tmp_path / "keys"
    made = _run(
        GEN_KEYS,
        "--conf",
        str(conf),
        "--out",
        str(keys),
        "--bits",
        "512",
        "--seed",
        "ab",
        "--clients",
        "2",
    )
    assert made.returncode == 0, made.stderr
    assert f"wrote {n} server and 2 client key pairs" in made.stdout
    assert "safe prime" in made.stderr  # the dealer's progress
    for server in (1, n):
        checked = _run(
            PRIME, "-i", str(server), "--conf", str(conf), "--keys", str(keys), "--check-config"
        )
        assert checked.returncode == 0, checked.stderr
        assert checked.stderr == ""
        assert f"\nn = {n} " in checked.stdout and "[suspect_leader]" in checked.stdout
        assert f"ok for server {server}" in checked.stdout
        assert f"#   {n} 127.0.0.1 {7100 + 10 * n}..{7109 + 10 * n}" in checked.stdout
    again = _run(GEN_KEYS, "--conf", str(conf), "--out", str(keys), "--bits", "512")
    assert again.returncode == 2 and "--force" in _one_line(again.stderr)


def test_check_config_without_id_uses_the_shipped_files() -> None:
    """bin/prime --check-config alone validates conf/def.toml and address.config and exits 0."""
    checked = _run(PRIME, "--check-config")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("# Prime effective configuration")
    assert "N = 3f+2k+1 = 4 replicas" in checked.stdout


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    """A bad value in def.toml makes bin/prime exit 2 with one stderr line naming file and key."""
    conf = _conf(tmp_path / "conf", 0)
    conf.write_text(conf.read_text().replace("max_po_in_flight = 20", "max_po_in_flight = 0"))
    checked = _run(PRIME, "-i", "1", "--conf", str(conf), "--check-config")
    assert checked.returncode == 2 and checked.stdout == ""
    line = _one_line(checked.stderr)
    assert str(conf) in line and "[system] max_po_in_flight = 0" in line and "1..100000" in line


def test_bad_address_file_exits_2(tmp_path: Path) -> None:
    """A missing server in the address file makes bin/prime exit 2 naming the file."""
    conf = _conf(tmp_path / "conf", 1)
    (conf.parent / "address.config").write_text("1 127.0.0.1\n2 127.0.0.1\n")
    checked = _run(PRIME, "--conf", str(conf), "--check-config")
    assert checked.returncode == 2
    line = _one_line(checked.stderr)
    assert "address.config" in line and "server 3: missing" in line


def test_missing_keys_and_bad_id_exit_2(tmp_path: Path) -> None:
    """A server id outside 1..N or a keys folder without keys makes bin/prime exit 2, one line."""
    bad_id = _run(PRIME, "-i", "5", "--check-config")
    assert bad_id.returncode == 2 and "-i 5 is not a server; allowed: 1..4" in _one_line(
        bad_id.stderr
    )
    no_keys = _run(PRIME, "-i", "1", "--keys", str(tmp_path), "--check-config")
    assert no_keys.returncode == 2 and "manifest.json: missing" in _one_line(no_keys.stderr)


def test_run_needs_an_id_and_valid_keys(tmp_path: Path) -> None:
    """Without -i, or with keys made for another configuration, bin/prime stops at once
    with one line and exit 2 (the daemon itself is tested in tests/e2e)."""
    keys = tmp_path / "keys"
    made = _run(GEN_KEYS, "--out", str(keys), "--bits", "512", "--seed", "01", "--clients", "0")
    assert made.returncode == 0
    missing_id = _run(PRIME)
    assert missing_id.returncode == 2 and "-i ID is required" in missing_id.stderr
    wrong_id = _run(PRIME, "-i", "9", "--keys", str(keys))
    assert wrong_id.returncode == 2 and "-i 9 is not a server" in _one_line(wrong_id.stderr)


def test_refuses_python_optimize() -> None:
    """bin/prime refuses to run with asserts stripped (PYTHONOPTIMIZE or python -O)."""
    ran = _run(PRIME, "--check-config", env={"PYTHONOPTIMIZE": "1"})
    assert ran.returncode == 2 and "refusing to run under python -O" in _one_line(ran.stderr)
    ran = _run(
        sys.executable,
        "-O",
        "-m",
        "prime.cli.prime",
        "--check-config",
        env={"PYTHONPATH": str(ROOT)},
    )
    assert ran.returncode == 2 and "python -O" in ran.stderr


def test_help_explains_the_options() -> None:
    """--help of both launchers exits 0 and documents the options."""
    prime_help = _run(PRIME, "--help")
    assert prime_help.returncode == 0
    for option in ("-i ID", "--conf", "--address", "--keys", "--check-config"):
        assert option in prime_help.stdout
    keys_help = _run(GEN_KEYS, "--help")
    assert keys_help.returncode == 0
    for option in ("--conf", "--address", "--out", "--force", "--bits", "--seed", "--clients"):
        assert option in keys_help.stdout


def test_run_refuses_keys_the_daemon_does_not_implement(tmp_path: Path) -> None:
    """A def.toml asking the daemon for something only the simulator does (the delay
    attack, say) stops start-up with one line naming the file and the key, exit 2."""
    keys = tmp_path / "keys"
    made = _run(GEN_KEYS, "--out", str(keys), "--bits", "512", "--seed", "01", "--clients", "0")
    assert made.returncode == 0
    conf = tmp_path / "def.toml"
    conf.write_text("[attacks]\ndelay_attack = true\n")
    (tmp_path / "address.config").write_text("1 127.0.0.1\n2 127.0.0.1\n3 127.0.0.1\n4 127.0.0.1\n")
    ran = _run(PRIME, "-i", "1", "--conf", str(conf), "--keys", str(keys))
    assert ran.returncode == 2
    assert f"{conf}: [attacks] delay_attack = true is not implemented" in _one_line(ran.stderr)
    assert len(ran.stderr.strip().splitlines()) == 1


def test_curve_links_need_the_link_keys(tmp_path: Path) -> None:
    """link_security = "curve" (the default) with a keys folder lacking a server's CURVE
    secret stops start-up with one line naming the file; "none" does not need it."""
    keys = tmp_path / "keys"
    made = _run(GEN_KEYS, "--out", str(keys), "--bits", "512", "--seed", "02", "--clients", "0")
    assert made.returncode == 0
    (keys / "servers" / "server_1.curve_key").unlink()
    conf = tmp_path / "def.toml"
    conf.write_text("")
    (tmp_path / "address.config").write_text("1 127.0.0.1\n2 127.0.0.1\n3 127.0.0.1\n4 127.0.0.1\n")
    ran = _run(PRIME, "-i", "1", "--conf", str(conf), "--keys", str(keys), "--check-config")
    assert ran.returncode == 2
    assert "server_1.curve_key: missing" in _one_line(ran.stderr)
    conf.write_text('[networking]\nlink_security = "none"\n')
    ran = _run(PRIME, "-i", "1", "--conf", str(conf), "--keys", str(keys), "--check-config")
    assert ran.returncode == 0, ran.stderr


def test_a_port_in_use_stops_start_up_with_one_line_naming_it(tmp_path: Path) -> None:
    """Another program on one of replica 1's peer ports: bin/prime exits 2 at once with
    one line naming that address, before any process is forked; the sockets layer, should
    the port be taken between that check and the bind, says the same (no traceback)."""
    import socket

    from prime.config import load_config
    from prime.errors import StartupError
    from prime.net import sockets
    from prime.proc.localcluster import _free_base_port

    keys = tmp_path / "keys"
    made = _run(GEN_KEYS, "--out", str(keys), "--bits", "512", "--seed", "03", "--clients", "0")
    assert made.returncode == 0
    base = _free_base_port(4)
    conf = tmp_path / "def.toml"
    conf.write_text(f'[networking]\nbase_port = {base}\nlink_security = "none"\n')
    (tmp_path / "address.config").write_text("1 127.0.0.1\n2 127.0.0.1\n3 127.0.0.1\n4 127.0.0.1\n")
    taken = base + 10 + 2  # replica 1's port for peer 3
    with socket.socket() as other:
        other.bind(("127.0.0.1", taken))
        other.listen()
        ran = _run(PRIME, "-i", "1", "--conf", str(conf), "--keys", str(keys))
        assert ran.returncode == 2
        line = _one_line(ran.stderr)
        assert f"127.0.0.1:{taken}" in line and "in use" in line and "base_port" in line
        import zmq

        ctx = zmq.Context()
        try:
            with pytest.raises(StartupError, match=f"127.0.0.1:{taken} .*port for peer 3"):
                sockets.peer_routers(ctx, load_config(conf), 1)
        finally:
            ctx.term()
