"""Unit tests of bin/gen_keys (prime.cli.gen_keys) and the key-file loaders (prime.crypto.keys)."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from prime.cli import gen_keys
from prime.crypto import keys as keyfiles
from prime.crypto import threshold
from prime.crypto.keys import (
    load_client_signing_key,
    load_manifest,
    load_server_keys,
    load_signing_key,
    load_threshold_public,
    load_threshold_share,
    load_verify_keys,
)
from prime.errors import CryptoError, KeyFileError

ROOT = Path(__file__).resolve().parents[2]
BITS = "512"  # the dealer's minimum: fast, and the arithmetic does not depend on the size
SEED = "00c0ffee"
CLIENTS = 3


def _conf(folder: Path, k: int) -> Path:
    """A copy of the shipped conf/ with [system] k set; returns its def.toml."""
    folder.mkdir(parents=True)
    text = (ROOT / "conf" / "def.toml").read_text().replace("\nk = 0\n", f"\nk = {k}\n")
    (folder / "def.toml").write_text(text)
    shutil.copy(ROOT / "conf" / "address.config", folder / "address.config")
    return folder / "def.toml"


def _generate(conf: Path, out: Path, *extra: str, seed: str = SEED) -> int:
    return gen_keys.main(
        [
            "--conf",
            str(conf),
            "--out",
            str(out),
            "--bits",
            BITS,
            "--seed",
            seed,
            "--clients",
            str(CLIENTS),
            *extra,
        ]
    )


@pytest.fixture(scope="module", params=[(0, 4), (1, 6)], ids=["n4", "n6"])
def generated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, int]:
    """(def.toml, keys folder, N) for f=1 with k=0 (N=4) and k=1 (N=6), keys made once."""
    k, n = request.param
    base = tmp_path_factory.mktemp(f"keys_n{n}")
    conf = _conf(base / "conf", k)
    assert _generate(conf, base / "keys") == 0
    return conf, base / "keys", n


@pytest.fixture
def copy_of(generated: tuple[Path, Path, int], tmp_path: Path) -> tuple[Path, int]:
    """A private copy of the generated keys (modes kept) that a test may damage."""
    _, keys_dir, n = generated
    target = tmp_path / "keys"
    shutil.copytree(keys_dir, target)
    return target, n


# --- gen_keys -------------------------------------------------------------------------------


def test_files_exist_with_private_mode_0600(generated: tuple[Path, Path, int]) -> None:
    """gen_keys writes every file of the layout, private ones (seeds, shares) with mode 0600."""
    _, keys_dir, n = generated
    private = [keyfiles.server_key_path(keys_dir, i) for i in range(1, n + 1)]
    private += [keyfiles.client_key_path(keys_dir, c) for c in range(n + 1, n + 1 + CLIENTS)]
    private += [keyfiles.threshold_share_path(keys_dir, i) for i in range(1, n + 1)]
    private += [keyfiles.server_curve_key_path(keys_dir, i) for i in range(1, n + 1)]
    public = [keyfiles.server_pub_path(keys_dir, i) for i in range(1, n + 1)]
    public += [keyfiles.server_curve_pub_path(keys_dir, i) for i in range(1, n + 1)]
    public += [keyfiles.client_pub_path(keys_dir, c) for c in range(n + 1, n + 1 + CLIENTS)]
    public += [keyfiles.threshold_public_path(keys_dir), keyfiles.manifest_path(keys_dir)]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in public:
        assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0, path
    assert sorted(keyfiles.existing_key_files(keys_dir)) == sorted(private + public)
    assert not keyfiles.client_key_path(keys_dir, n + 1 + CLIENTS).exists()


def test_manifest_describes_the_keys(generated: tuple[Path, Path, int]) -> None:
    """The manifest records n, f, k, the threshold, the client range and the modulus size."""
    _, keys_dir, n = generated
    manifest = load_manifest(keys_dir)
    assert (manifest.n, manifest.f, manifest.k) == (n, 1, (n - 4) // 2)
    assert manifest.threshold == 2 * manifest.f + manifest.k + 1
    assert manifest.client_ids == range(n + 1, n + 1 + CLIENTS)
    assert manifest.modulus_bits == int(BITS) and manifest.public_exponent == 65537
    assert manifest.deterministic and manifest.created_utc.endswith("+00:00")


def test_loaded_keys_sign_and_verify(generated: tuple[Path, Path, int]) -> None:
    """Every loaded server and client key signs, its own verify key accepts, another's refuses."""
    _, keys_dir, n = generated
    verify_keys = load_verify_keys(keys_dir)
    assert sorted(verify_keys) == list(range(1, n + 1 + CLIENTS))
    signers = {i: load_signing_key(keys_dir, i) for i in range(1, n + 1)}
    signers |= {c: load_client_signing_key(keys_dir, c) for c in range(n + 1, n + 1 + CLIENTS)}
    message = b"prime test message"
    for identifier, signer in signers.items():
        signature = signer.sign(message)
        assert verify_keys[identifier].verify(message, signature)
        other = 1 if identifier != 1 else 2
        assert not verify_keys[other].verify(message, signature)
    assert len({key.public for key in verify_keys.values()}) == len(verify_keys)


def test_threshold_shares_from_files_combine(generated: tuple[Path, Path, int]) -> None:
    """Any 2f+k+1 threshold shares loaded from the files combine into a signature that the
    public key from its file verifies; fewer do not."""
    _, keys_dir, n = generated
    public = load_threshold_public(keys_dir)
    assert (public.players, public.n.bit_length()) == (n, int(BITS))
    shares = [load_threshold_share(keys_dir, i) for i in range(1, n + 1)]
    assert all(share.public == public for share in shares)
    message = b"view 2 | list | startSeq 1"
    signature_shares = [threshold.sign_share(s, message, nonce_seed=b"t") for s in shares]
    quorum = public.threshold
    signature = threshold.combine(public, message, signature_shares[-quorum:])
    assert threshold.verify(public, message, signature)
    with pytest.raises(CryptoError, match=f"need {quorum} valid shares"):
        threshold.combine(public, message, signature_shares[: quorum - 1])


def test_load_server_keys_bundles_and_cross_checks(generated: tuple[Path, Path, int]) -> None:
    """load_server_keys returns one server's keys and refuses keys made for another f, k."""
    _, keys_dir, n = generated
    k = (n - 4) // 2
    bundle = load_server_keys(keys_dir, 2, f=1, k=k)
    assert bundle.threshold_share.index == 2
    assert bundle.signing_key.verify_key == bundle.verify_keys[2]
    with pytest.raises(KeyFileError, match=r"manifest\.json: keys were generated for f = 1"):
        load_server_keys(keys_dir, 1, f=1, k=k + 1)
    with pytest.raises(KeyFileError, match=f"server {n + 1} is not in 1..{n}"):
        load_server_keys(keys_dir, n + 1, f=1, k=k)


def test_refuses_to_overwrite_without_force(
    generated: tuple[Path, Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """gen_keys into a folder with keys fails with a clear message and leaves the keys alone;
    with --force it replaces them (the same seed gives the same keys, another seed others)."""
    conf, keys_dir, n = generated
    target = tmp_path / "keys"
    shutil.copytree(keys_dir, target)
    before = keyfiles.server_key_path(target, 1).read_bytes()
    capsys.readouterr()
    assert _generate(conf, target, seed="01") == 2
    assert "--force" in capsys.readouterr().err
    assert keyfiles.server_key_path(target, 1).read_bytes() == before
    assert _generate(conf, target, "--force") == 0
    assert keyfiles.server_key_path(target, 1).read_bytes() == before  # deterministic
    assert _generate(conf, target, "--force", seed="01") == 0
    assert keyfiles.server_key_path(target, 1).read_bytes() != before
    assert stat.S_IMODE(keyfiles.server_key_path(target, 1).stat().st_mode) == 0o600
    load_server_keys(target, 1, f=1, k=(n - 4) // 2)


def test_force_removes_keys_of_a_larger_cluster(tmp_path: Path) -> None:
    """Regenerating N=4 keys over N=6 keys with --force leaves no stale server 5 or 6 files."""
    assert _generate(_conf(tmp_path / "c6", 1), tmp_path / "keys") == 0
    assert keyfiles.server_key_path(tmp_path / "keys", 6).exists()
    assert _generate(_conf(tmp_path / "c4", 0), tmp_path / "keys", "--force") == 0
    assert not keyfiles.server_key_path(tmp_path / "keys", 6).exists()
    assert not keyfiles.threshold_share_path(tmp_path / "keys", 5).exists()
    assert load_manifest(tmp_path / "keys").n == 4


def test_gen_keys_rejects_bad_arguments(tmp_path: Path) -> None:
    """An odd or too small --bits, a non-hex --seed and a bad config all stop gen_keys."""
    conf = _conf(tmp_path / "conf", 0)
    for bad in (["--bits", "511"], ["--bits", "256"], ["--seed", "xyz"], ["--clients", "-1"]):
        with pytest.raises(SystemExit) as caught:
            gen_keys.main(["--conf", str(conf), "--out", str(tmp_path / "k"), *bad])
        assert caught.value.code == 2
    conf.write_text(conf.read_text().replace("workers = 1", "workers = -1"))
    assert gen_keys.main(["--conf", str(conf), "--out", str(tmp_path / "k")]) == 2
    assert not (tmp_path / "k").exists()


# --- Loaders refuse bad files ---------------------------------------------------------------


def test_missing_key_file_is_named(copy_of: tuple[Path, int]) -> None:
    """A missing private key, public key or share raises KeyFileError naming the file."""
    keys_dir, n = copy_of
    keyfiles.server_key_path(keys_dir, 2).unlink()
    with pytest.raises(KeyFileError, match=r"server_2\.key: missing"):
        load_signing_key(keys_dir, 2)
    keyfiles.client_pub_path(keys_dir, n + 2).unlink()
    with pytest.raises(KeyFileError, match=rf"client_{n + 2}\.pub: missing"):
        load_verify_keys(keys_dir)
    keyfiles.threshold_share_path(keys_dir, 3).unlink()
    with pytest.raises(KeyFileError, match=r"share_3\.key: missing"):
        load_threshold_share(keys_dir, 3)
    keyfiles.manifest_path(keys_dir).unlink()
    with pytest.raises(KeyFileError, match=r"manifest\.json: missing"):
        load_verify_keys(keys_dir)


def test_wrong_size_key_files_are_named(copy_of: tuple[Path, int]) -> None:
    """A seed or public key of the wrong length raises KeyFileError naming the file and size."""
    keys_dir, _ = copy_of
    path = keyfiles.server_key_path(keys_dir, 1)
    path.write_bytes(path.read_bytes()[:31])
    with pytest.raises(KeyFileError, match=r"server_1\.key: wrong size: 31 bytes"):
        load_signing_key(keys_dir, 1)
    pub = keyfiles.server_pub_path(keys_dir, 2)
    pub.write_bytes(pub.read_bytes() + b"\0")
    with pytest.raises(KeyFileError, match=r"server_2\.pub: wrong size: 33 bytes"):
        load_verify_keys(keys_dir)


def test_mismatched_key_pair_is_named(copy_of: tuple[Path, int]) -> None:
    """A private key whose .pub belongs to another key raises KeyFileError."""
    keys_dir, _ = copy_of
    shutil.copyfile(keyfiles.server_pub_path(keys_dir, 2), keyfiles.server_pub_path(keys_dir, 1))
    with pytest.raises(KeyFileError, match=r"server_1\.key: does not match .*server_1\.pub"):
        load_signing_key(keys_dir, 1)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666])
def test_too_permissive_private_files_are_refused(copy_of: tuple[Path, int], mode: int) -> None:
    """A private key or share readable by group or others is refused, naming file and mode."""
    keys_dir, n = copy_of
    loaders: list[tuple[Path, Callable[[], object]]] = [
        (keyfiles.server_key_path(keys_dir, 1), lambda: load_signing_key(keys_dir, 1)),
        (
            keyfiles.client_key_path(keys_dir, n + 1),
            lambda: load_client_signing_key(keys_dir, n + 1),
        ),
        (keyfiles.threshold_share_path(keys_dir, 1), lambda: load_threshold_share(keys_dir, 1)),
    ]
    for path, load in loaders:
        os.chmod(path, mode)
        with pytest.raises(
            KeyFileError, match=rf"{path.name}: private key file has mode {mode:04o}"
        ):
            load()


def test_symlinked_key_is_refused(copy_of: tuple[Path, int]) -> None:
    """A private key that is a symbolic link is refused."""
    keys_dir, _ = copy_of
    path = keyfiles.server_key_path(keys_dir, 1)
    real = keys_dir / "elsewhere.key"
    path.rename(real)
    path.symlink_to(real)
    with pytest.raises(KeyFileError, match=r"server_1\.key: is a symbolic link"):
        load_signing_key(keys_dir, 1)


def test_corrupt_threshold_files_are_named(copy_of: tuple[Path, int]) -> None:
    """A corrupt threshold public key or share, or a share of another server, is named."""
    keys_dir, _ = copy_of
    keyfiles.threshold_public_path(keys_dir).write_text("{not json")
    with pytest.raises(KeyFileError, match=r"public\.json: corrupt"):
        load_threshold_public(keys_dir)
    share_1 = keyfiles.threshold_share_path(keys_dir, 1)
    share_1.write_bytes(share_1.read_bytes().replace(b'"secret": "', b'"secret": "1'))
    with pytest.raises(KeyFileError, match=r"share_1\.key: corrupt"):
        load_threshold_share(keys_dir, 1)
    share_1.unlink()
    shutil.copy2(keyfiles.threshold_share_path(keys_dir, 2), share_1)
    with pytest.raises(KeyFileError, match=r"share_1\.key: holds the share of server 2"):
        load_threshold_share(keys_dir, 1)


@pytest.mark.parametrize(
    ("replace", "reason"),
    [
        (('"n": ', '"n": 1'), "n = 1"),  # "n": 4 -> "n": 14
        (('"threshold": ', '"threshold": 9'), "threshold"),
        (('"format": "prime', '"format": "other'), "format"),
        (('"deterministic": true', '"deterministic": 1'), "deterministic"),
        (("{", "["), "not valid JSON"),
    ],
)
def test_corrupt_manifest_is_named(
    copy_of: tuple[Path, int], replace: tuple[str, str], reason: str
) -> None:
    """A manifest that does not parse or does not add up raises KeyFileError naming it."""
    keys_dir, _ = copy_of
    path = keyfiles.manifest_path(keys_dir)
    path.write_text(path.read_text().replace(*replace, 1))
    with pytest.raises(KeyFileError, match=r"manifest\.json: corrupt") as caught:
        load_manifest(keys_dir)
    assert reason in str(caught.value)


# --- CurveZMQ link keys ------------------------------------------------------------------------


def test_curve_link_keys_load_and_match(generated: tuple[Path, Path, int]) -> None:
    """gen_keys writes a Curve25519 pair per server beside its signing key; each
    loads, its public key is the one libzmq derives, and all N differ."""
    _, keys_dir, n = generated
    loaded = [keyfiles.load_curve_keys(keys_dir, i, n) for i in range(1, n + 1)]
    assert len({k.public for k in loaded}) == n
    for i, k in enumerate(loaded, start=1):
        assert k.peers[i] == k.public == keyfiles.curve_public_of(k.secret)
        assert k.peers == loaded[0].peers


def test_curve_key_that_does_not_match_its_pub_is_refused(copy_of: tuple[Path, int]) -> None:
    keys_dir, n = copy_of
    keyfiles.server_curve_pub_path(keys_dir, 2).chmod(0o644)
    other = keyfiles.server_curve_pub_path(keys_dir, 3).read_bytes()
    keyfiles.server_curve_pub_path(keys_dir, 2).unlink()
    keyfiles.write_public(keyfiles.server_curve_pub_path(keys_dir, 2), other)
    with pytest.raises(KeyFileError, match="server_2.curve_key: does not match"):
        keyfiles.load_curve_keys(keys_dir, 2, n)
    with pytest.raises(KeyFileError, match="two servers have the same curve_pub"):
        keyfiles.load_curve_keys(keys_dir, 1, n)


def test_curve_secret_readable_by_others_is_refused(copy_of: tuple[Path, int]) -> None:
    keys_dir, n = copy_of
    keyfiles.server_curve_key_path(keys_dir, 1).chmod(0o644)
    with pytest.raises(KeyFileError, match="server_1.curve_key: private key file has mode 0644"):
        keyfiles.load_curve_keys(keys_dir, 1, n)
