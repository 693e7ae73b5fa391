"""Unit tests of prime.config: the shipped files, the schema, every rejection and every rule."""

from __future__ import annotations

import dataclasses
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from prime import config
from prime.config import (
    RULES,
    SCHEMA,
    Config,
    default_config,
    format_config,
    load_config,
)
from prime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEF_TOML = ROOT / "conf" / "def.toml"
ADDRESS_CONFIG = ROOT / "conf" / "address.config"


# --- Helpers --------------------------------------------------------------------------------


def _copy_conf(tmp_path: Path) -> Path:
    """A private copy of conf/ to edit; returns the def.toml path."""
    folder = tmp_path / "conf"
    folder.mkdir()
    shutil.copy(DEF_TOML, folder / "def.toml")
    shutil.copy(ADDRESS_CONFIG, folder / "address.config")
    return folder / "def.toml"


def _set(def_path: Path, group: str, name: str, value: str) -> None:
    """Set ``name = value`` in [group]: replace the key's line, or add it under the header."""
    text = def_path.read_text()
    line = re.compile(rf"^{re.escape(name)} = .*$", re.MULTILINE)
    if line.search(text) and name != "n":
        text = line.sub(f"{name} = {value}", text, count=1)
    else:
        text = text.replace(f"[{group}]\n", f"[{group}]\n{name} = {value}\n", 1)
    def_path.write_text(text)


def _add(def_path: Path, group: str, name: str, value: str) -> None:
    """Add ``name = value`` right under the [group] header."""
    text = def_path.read_text()
    def_path.write_text(text.replace(f"[{group}]\n", f"[{group}]\n{name} = {value}\n", 1))


def _conf_with(tmp_path: Path, *settings: tuple[str, str, str]) -> Path:
    def_path = _copy_conf(tmp_path)
    for group, name, value in settings:
        _set(def_path, group, name, value)
    return def_path


def _rejects(def_path: Path, *fragments: str, address_path: Path | None = None) -> str:
    """load_config fails with one line that contains every fragment; returns the line."""
    with pytest.raises(ConfigError) as caught:
        load_config(def_path, address_path)
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def _groups(cfg: Config) -> dict[str, object]:
    return {group: getattr(cfg, group) for group in config.GROUPS}


# --- The shipped files ----------------------------------------------------------------------


def test_shipped_files_load_for_n4() -> None:
    """The shipped def.toml and address.config load as f=1, k=0: N = 4, quorum 3."""
    cfg = load_config(DEF_TOML)
    assert (cfg.f, cfg.k, cfg.n, cfg.quorum) == (1, 0, 4, 3)
    assert cfg.system.n == 4
    assert cfg.addresses == {i: ("127.0.0.1", 7100 + 10 * i) for i in range(1, 5)}
    assert cfg.client_ids == range(5, 155)
    assert cfg.address_path == str(ADDRESS_CONFIG)


def test_shipped_files_load_for_n6(tmp_path: Path) -> None:
    """With [system] k = 1 the same files give N = 6 and quorum 4, using address lines 5 and 6."""
    cfg = load_config(_conf_with(tmp_path, ("system", "k", "1")))
    assert (cfg.f, cfg.k, cfg.n, cfg.quorum) == (1, 1, 6, 4)
    assert sorted(cfg.addresses) == [1, 2, 3, 4, 5, 6]
    assert cfg.addresses[6] == ("127.0.0.1", 7160)


def test_default_config_equals_shipped_file() -> None:
    """default_config() (the schema's defaults) equals the shipped file group by group."""
    assert _groups(default_config()) == _groups(load_config(DEF_TOML))
    assert default_config().addresses == load_config(DEF_TOML).addresses


def test_shipped_file_sets_every_key_to_its_schema_default() -> None:
    """def.toml lists every schema key (only the optional n cross-check is commented out),
    each with the schema's default value and type."""
    document = tomllib.loads(DEF_TOML.read_text())
    assert list(document) == list(config.GROUPS)
    for key in SCHEMA:
        if key.name == "n":
            assert "n" not in document["system"]
            continue
        value = document[key.group][key.name]
        assert type(value) is key.kind and value == key.default, key
    listed = {(group, name) for group, table in document.items() for name in table}
    assert listed == {(key.group, key.name) for key in SCHEMA if key.name != "n"}


def test_every_key_in_def_toml_has_a_comment_above_it() -> None:
    """Each key line in def.toml directly follows a comment line (what it controls, its origin)."""
    lines = DEF_TOML.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            assert lines[number - 1].startswith("#"), f"line {number + 1}: {line}"


def test_schema_names_carry_units_or_are_flags() -> None:
    """Every numeric key but the dimensionless ones names its unit (docs/design.md section 8, "Names")."""
    unit = re.compile(r"_(us|ms|s|bytes|bps|bits|ordinals|messages|ticks|count|updates)(_|$)")
    dimensionless = {
        "f",
        "k",
        "n",
        "num_clients",
        "k_lat",
        "workers",
        "link_loss",
        "base_port",
        "max_po_in_flight",
        "threshold_public_exponent",
        "ping_history",
        "inbound_peer_vs_others_ratio",
        "inbound_class_vs_others_ratio",
    }
    for key in SCHEMA:
        if key.kind in (int, float) and key.name not in dimensionless:
            assert unit.search(key.name), key.name


def test_format_config_lists_every_key_and_parses_back() -> None:
    """format_config mentions every key with its comment and is TOML that reloads to the same values."""
    cfg = default_config(1, 1, max_po_in_flight=7)
    text = format_config(cfg)
    for key in SCHEMA:
        assert re.search(rf"^{key.name} = ", text, re.MULTILINE), key.name
        assert key.comment in text
    assert "[default 20]" in text  # a value that differs from the default says so
    assert "N = 3f+2k+1 = 6" in text and "6 127.0.0.1 7160..7169" in text
    document = tomllib.loads(text)
    for key in SCHEMA:
        assert document[key.group][key.name] == getattr(getattr(cfg, key.group), key.name)


# --- default_config -------------------------------------------------------------------------


def test_default_config_overrides_bare_and_qualified() -> None:
    """Overrides may name a key bare or as group.key, and N follows f and k."""
    cfg = default_config(2, 1, max_po_in_flight=5, **{"periodic.pre_prepare_period_us": 10_000})
    assert (cfg.n, cfg.quorum) == (9, 6)
    assert cfg.system.max_po_in_flight == 5
    assert cfg.periodic.pre_prepare_period_us == 10_000
    assert sorted(cfg.addresses) == list(range(1, 10))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"max_po_in_flight": 0}, "[system] max_po_in_flight = 0"),
        ({"bogus_key": 1}, "bogus_key"),
        ({"nogroup.f": 1}, "[nogroup]"),
        ({"clients_sign_updates": 1}, "wrong type"),
        ({"sig_debounce_view_change_us": 5000}, "sig_debounce_view_change_us"),
        ({"system.f": 2}, "given twice"),
    ],
)
def test_default_config_validates_like_a_file(overrides: dict[str, object], fragment: str) -> None:
    """default_config rejects bad overrides with the same one-line errors as a file."""
    with pytest.raises(ConfigError) as caught:
        default_config(1, 0, **overrides)
    assert fragment in str(caught.value) and config.SOURCE_DEFAULTS in str(caught.value)


def test_int_is_accepted_for_a_float_key(tmp_path: Path) -> None:
    """An integer where a float is expected is accepted and stored as a float."""
    cfg = load_config(_conf_with(tmp_path, ("system", "k_lat", "3")))
    assert cfg.system.k_lat == 3.0 and type(cfg.system.k_lat) is float


def test_missing_keys_take_schema_defaults(tmp_path: Path) -> None:
    """A def.toml that leaves out keys and whole groups gets the schema defaults for them."""
    def_path = _copy_conf(tmp_path)
    def_path.write_text("[system]\nf = 1\nk = 1\n")
    assert _groups(load_config(def_path)) == _groups(default_config(1, 1))


def test_explicit_matching_n_is_accepted(tmp_path: Path) -> None:
    """[system] n equal to 3f+2k+1 is a valid cross-check."""
    assert load_config(_conf_with(tmp_path, ("system", "n", "4"))).n == 4


# --- Rejections of def.toml -----------------------------------------------------------------


def test_rejects_n_not_3f_2k_1(tmp_path: Path) -> None:
    """[system] n that is not 3f+2k+1 is rejected, naming the file and n."""
    def_path = _conf_with(tmp_path, ("system", "n", "5"))
    _rejects(def_path, str(def_path), "[system] n = 5", "3f+2k+1 = 4")


def test_rejects_more_than_31_replicas(tmp_path: Path) -> None:
    """f and k that make N > 31 are rejected: replica bitmaps are 32-bit."""
    def_path = _conf_with(tmp_path, ("system", "f", "10"), ("system", "k", "1"))
    _rejects(def_path, str(def_path), "f = 10", "k = 1", "N = 3f+2k+1 = 33", "<= 31")


def test_rejects_unknown_key(tmp_path: Path) -> None:
    """A misspelt key is rejected with a suggestion."""
    def_path = _conf_with(tmp_path, ("periodic", "pre_prepare_period_usec", "1"))
    _rejects(
        def_path,
        str(def_path),
        "[periodic] pre_prepare_period_usec",
        "unknown key",
        "did you mean pre_prepare_period_us",
    )


def test_rejects_key_in_the_wrong_group(tmp_path: Path) -> None:
    """A known key under the wrong group is rejected, saying where it belongs."""
    def_path = _copy_conf(tmp_path)
    _add(def_path, "system", "po_tick_us", "2000")
    _rejects(def_path, str(def_path), "[system] po_tick_us", "it belongs in [periodic]")


def test_rejects_unknown_group(tmp_path: Path) -> None:
    """An unknown [group] is rejected, naming it."""
    def_path = _copy_conf(tmp_path)
    def_path.write_text(def_path.read_text() + "\n[sytem]\nf = 1\n")
    _rejects(def_path, str(def_path), "[sytem]", "unknown group", "did you mean [system]")


def test_rejects_key_outside_any_group(tmp_path: Path) -> None:
    """A key before the first [group] header is rejected, naming the key."""
    def_path = _copy_conf(tmp_path)
    def_path.write_text("workers = 2\n" + def_path.read_text())
    _rejects(def_path, str(def_path), "workers", "outside any group", "[networking]")


def test_rejects_group_that_is_not_a_table(tmp_path: Path) -> None:
    """A group name used as a plain key is rejected."""
    def_path = _copy_conf(tmp_path)
    def_path.write_text("system = 3\n")
    _rejects(def_path, str(def_path), "[system]", "must be a table, not an integer")


@pytest.mark.parametrize(
    ("group", "name", "value", "given"),
    [
        ("system", "f", "true", "a boolean"),  # TOML bool is not an int for us
        ("system", "use_erasure_codes", "1", "an integer"),
        ("system", "max_po_in_flight", "2.5", "a float"),
        ("periodic", "po_tick_us", '"2000"', "a string"),
        ("logging", "level", "3", "an integer"),
        ("networking", "link_loss", "[0.1]", "an array"),
    ],
)
def test_rejects_wrong_type(tmp_path: Path, group: str, name: str, value: str, given: str) -> None:
    """A value of the wrong type is rejected, naming the key, the type given and the type allowed."""
    def_path = _conf_with(tmp_path, (group, name, value))
    _rejects(def_path, str(def_path), f"[{group}] {name}", f"wrong type ({given})", "allowed:")


@pytest.mark.parametrize(
    ("group", "name", "value", "allowed"),
    [
        ("system", "max_po_in_flight", "0", "an integer in 1..100000"),
        ("system", "gc_lag_ordinals", "0", "an integer in 1..1000000"),
        ("networking", "link_loss", "1.5", "a number in 0.0..1.0"),
        ("networking", "base_port", "80", "an integer in 1024.."),
        ("throttling", "bandwidth_recon_bps", "0", "an integer in 1.."),
        ("throttling", "tokens_max_bits", "-5", "an integer in 1.."),
        ("cryptography", "threshold_modulus_bits", "256", "an integer in 512..8192"),
        ("logging", "level", '"loud"', 'one of "debug", "info", "warning", "error"'),
        ("networking", "client_ipc_dir", '""', "a string of 1..80 characters"),
    ],
)
def test_rejects_out_of_range(
    tmp_path: Path, group: str, name: str, value: str, allowed: str
) -> None:
    """A value outside its allowed range is rejected, naming the key and the range."""
    def_path = _conf_with(tmp_path, (group, name, value))
    _rejects(def_path, str(def_path), f"[{group}] {name} = ", "out of range", allowed)


def test_rejects_invalid_toml_with_its_line(tmp_path: Path) -> None:
    """Invalid TOML is rejected with the line number of the problem."""
    def_path = _copy_conf(tmp_path)
    def_path.write_text("[system]\nf = 1\nk = \n")
    _rejects(def_path, str(def_path), "invalid TOML", "line 3")


def test_rejects_missing_files(tmp_path: Path) -> None:
    """A missing def.toml or address file is named in the error."""
    _rejects(tmp_path / "nope.toml", "nope.toml", "no such file")
    def_path = _copy_conf(tmp_path)
    _rejects(
        def_path, "elsewhere.config", "no such file", address_path=tmp_path / "elsewhere.config"
    )


def test_rejects_non_utf8_file(tmp_path: Path) -> None:
    """A def.toml that is not UTF-8 is rejected, naming it."""
    def_path = _copy_conf(tmp_path)
    def_path.write_bytes(b"[system]\nf = 1 # \xff\n")
    _rejects(def_path, str(def_path), "cannot read")


# --- Rejections of address.config -----------------------------------------------------------


def _address_rejects(tmp_path: Path, text: str, *fragments: str) -> None:
    def_path = _copy_conf(tmp_path)
    address = def_path.parent / "address.config"
    address.write_text(text)
    _rejects(def_path, str(address), *fragments)


def test_rejects_missing_server_address(tmp_path: Path) -> None:
    """A server 1..N without a line in the address file is rejected, naming it."""
    _address_rejects(tmp_path, "1 127.0.0.1\n2 127.0.0.1\n3 127.0.0.1\n", "server 4", "missing")


def test_n6_needs_servers_5_and_6(tmp_path: Path) -> None:
    """With N = 6 an address file listing only servers 1..4 is rejected."""
    def_path = _conf_with(tmp_path, ("system", "k", "1"))
    (def_path.parent / "address.config").write_text(
        "".join(f"{i} 127.0.0.1\n" for i in range(1, 5))
    )
    _rejects(def_path, "address.config", "server 5", "missing", "1..6")


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        ("4 300.1.2.3", ("line 4: server 4", "bad ip '300.1.2.3'")),
        ("4 localhost", ("bad ip 'localhost'",)),
        ("4 127.0.0.1 70000", ("line 4: server 4", "bad port '70000'", "1..65526")),
        ("4 127.0.0.1 0", ("bad port '0'",)),
        ("4 127.0.0.1 x7", ("bad port 'x7'",)),
        ("x 127.0.0.1", ("line 4", "bad server id 'x'")),
        ("0 127.0.0.1", ("bad server id '0'", "1..31")),
        ("32 127.0.0.1", ("bad server id '32'",)),
        ("4", ("line 4", "malformed", "server_id ip [port]")),
        ("4 127.0.0.1 7140 extra", ("line 4", "malformed")),
        ("3 127.0.0.2", ("line 4: server 3", "listed twice (first on line 3)")),
    ],
)
def test_rejects_malformed_address_line(
    tmp_path: Path, line: str, fragments: tuple[str, ...]
) -> None:
    """A malformed address line (bad id, ip or port, wrong field count, duplicate id) is
    rejected, naming the file and the line."""
    text = "1 127.0.0.1\n2 127.0.0.1\n3 127.0.0.1\n" + line + "\n"
    _address_rejects(tmp_path, text, *fragments)


def test_rejects_overlapping_ports(tmp_path: Path) -> None:
    """Two servers on one ip whose ten-port ranges overlap are rejected."""
    text = "1 127.0.0.1 8000\n2 127.0.0.1 8005\n3 127.0.0.1\n4 127.0.0.1\n"
    _address_rejects(tmp_path, text, "server 2", "overlap server 1")


def test_address_file_details(tmp_path: Path) -> None:
    """Comments, blank lines, explicit ports, IPv6 and ignored ids above N are all accepted."""
    def_path = _copy_conf(tmp_path)
    (def_path.parent / "address.config").write_text(
        "# header\n\n1 10.0.0.1 9000  # first\n2 ::1\n  3 10.0.0.3\n4 10.0.0.4 9000\n9 10.0.0.9\n"
    )
    cfg = load_config(def_path)
    assert cfg.addresses == {
        1: ("10.0.0.1", 9000),
        2: ("::1", 7120),
        3: ("10.0.0.3", 7130),
        4: ("10.0.0.4", 9000),
    }


# --- Relationships (validate) ---------------------------------------------------------------

# (settings, key fragments in the message). Each row breaks exactly one rule of RULES.
RULE_CASES = [
    (
        [("cryptography", "sig_debounce_view_change_us", "2000")],
        ("[cryptography] sig_debounce_view_change_us = 2000", "sig_debounce_us = 1000"),
    ),
    (
        [("cryptography", "threshold_modulus_bits", "2049")],
        ("threshold_modulus_bits = 2049", "must be even"),
    ),
    (
        [("cryptography", "threshold_public_exponent", "65535")],
        ("threshold_public_exponent = 65535", "a prime > N"),
    ),
    (
        [("cryptography", "threshold_public_exponent", "3")],
        ("threshold_public_exponent = 3", "[system] n = 4"),
    ),
    (
        [("catchup", "catchup_epsilon_us", "1000000")],
        ("catchup_epsilon_us = 1000000", "catchup_period_us = 1000000"),
    ),
    (
        [("system", "po_request_bytes_max", "70000")],
        ("po_request_bytes_max = 70000", "message_bytes_max = 65536"),
    ),
    (
        [("system", "update_size_bytes", "8900")],
        ("update_size_bytes = 8900", "po_request_bytes_max = 9000"),
    ),
    (
        [
            ("system", "f", "8"),
            ("system", "message_bytes_max", "12000"),
            ("system", "po_request_bytes_max", "9000"),
            ("networking", "ring_slot_size_bytes", "70000"),
        ],
        ("[system] message_bytes_max = 12000, n = 25",),
    ),
    (
        [("networking", "ring_slot_size_bytes", "65536")],
        ("ring_slot_size_bytes = 65536", "message_bytes_max = 65536"),
    ),
    (
        [("networking", "ring_capacity_bytes", "100000")],
        ("ring_capacity_bytes = 100000", "ring_slot_size_bytes = 66560"),
    ),
    (
        [("throttling", "tokens_max_bits", "500000")],
        ("tokens_max_bits = 500000", "message_bytes_max = 65536"),
    ),
    ([("networking", "link_jitter_ms", "5.0")], ("link_jitter_ms = 5.0", "link_delay_ms = 0.0")),
    (
        [("networking", "client_ipc_dir", '"tmp/prime"')],
        ('client_ipc_dir = "tmp/prime"', "absolute"),
    ),
    (
        [("periodic", "retrans_period_us", "5000")],
        ("retrans_period_us = 5000", "po_tick_us = 2000", "po_job_spacing_ticks = 3"),
    ),
    (
        [("networking", "peer_queue_bytes", "1048576")],
        ("peer_queue_bytes = 1048576", "message_bytes_max = 65536"),
    ),
    (
        [("networking", "handshake_timeout_ms", "5000")],
        ("handshake_timeout_ms = 5000", "tcp_keepalive_idle_s = 4", "tcp_keepalive_interval_s = 1",
         "tcp_keepalive_probe_count = 4"),
    ),
]


@pytest.mark.parametrize(("settings", "fragments"), RULE_CASES)
def test_rejects_broken_relationship(
    tmp_path: Path, settings: list[tuple[str, str, str]], fragments: tuple[str, ...]
) -> None:
    """A file that breaks a relationship between keys is rejected, naming the file, the keys
    and the reason."""
    def_path = _conf_with(tmp_path, *settings)
    message = _rejects(def_path, str(def_path), *fragments)
    assert "(" in message and ")" in message  # the reason is given


def test_every_rule_has_a_rejection_case(tmp_path: Path) -> None:
    """RULE_CASES breaks every rule in RULES, so no relationship goes untested."""
    broken: set[str] = set()
    for index, (settings, _) in enumerate(RULE_CASES):
        folder = tmp_path / str(index)
        folder.mkdir()
        def_path = _conf_with(folder, *settings)
        try:
            load_config(def_path)
        except ConfigError as error:
            broken.update(rule.requirement for rule in RULES if rule.requirement in str(error))
    assert broken == {rule.requirement for rule in RULES}


def test_validate_checks_a_hand_built_config() -> None:
    """Config.validate() also rejects a Config built in code, naming the source."""
    cfg = default_config()
    bad = dataclasses.replace(
        cfg, catchup=dataclasses.replace(cfg.catchup, catchup_epsilon_us=2_000_000)
    )
    with pytest.raises(ConfigError, match=r"<defaults>: \[catchup\] catchup_epsilon_us = 2000000"):
        bad.validate()
    with pytest.raises(ConfigError, match="server 2: missing"):
        dataclasses.replace(cfg, addresses={1: ("127.0.0.1", 7110)}).validate()


def test_config_is_frozen() -> None:
    """Config and its groups are frozen, slotted dataclasses."""
    cfg = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.system.f = 2  # type: ignore[misc]
    assert not hasattr(cfg.system, "__dict__")
