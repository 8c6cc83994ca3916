# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Secrets at rest: AES-256-GCM tokens, key ids, key files, rotation."""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import os
import stat

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import (
    DEFAULT_KEY_FILE,
    KEY_ENV,
    MAX_PLAINTEXT_BYTES,
    SecretBox,
    SecretError,
    decode_key,
    encode_key,
    key_id,
    load_or_create_key,
    mask,
    rotate,
    token_key_id,
)

CONTEXT = "0b7c1f0e-3c1d-4a53-9a7e-6b0f8d1f2a11/graphic_password"
PLAINTEXT = "Corr3ct-H0rse!"
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


@pytest.fixture
def box():
    return SecretBox(KEY_A)


def flip(token: str, index: int) -> str:
    """The token with one character changed into another legal character of its field."""
    char = token[index]
    alphabet = (
        "0123456789abcdef"
        if char in "0123456789abcdef" and token.count(":", 0, index) == 1
        else "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    )
    if char not in alphabet:  # ':', '=' or the version: any other character
        return token[:index] + ("x" if char != "x" else "y") + token[index + 1 :]
    return token[:index] + alphabet[(alphabet.index(char) + 1) % len(alphabet)] + token[index + 1 :]


# ------------------------------------------------------------------------------ tokens


def test_round_trip(box):
    token = box.encrypt(PLAINTEXT, CONTEXT)
    assert box.decrypt(token, CONTEXT) == PLAINTEXT
    assert SecretBox(KEY_A).decrypt(token, CONTEXT) == PLAINTEXT  # a new box from the same key


@pytest.mark.parametrize("plaintext", ["", "x", "pässwort ✓", "a" * 4096, "with:colons:and\nnewline"])
def test_round_trip_of_any_text(box, plaintext):
    assert box.decrypt(box.encrypt(plaintext, CONTEXT), CONTEXT) == plaintext


def test_token_format_is_versioned_and_names_the_key(box):
    token = box.encrypt(PLAINTEXT, CONTEXT)
    version, kid, nonce, sealed = token.split(":")
    assert version == "iv1"
    assert kid == hashlib.sha256(b"infinivirt-key-id" + KEY_A).hexdigest()[:16] == box.key_id == key_id(KEY_A)
    assert token_key_id(token) == kid
    assert len(base64.b64decode(nonce)) == 12
    assert len(base64.b64decode(sealed)) == len(PLAINTEXT) + 16
    assert token.isascii() and "\n" not in token
    assert KEY_A.hex() not in token and encode_key(KEY_A) not in token


def test_two_encryptions_of_the_same_plaintext_differ(box):
    tokens = {box.encrypt(PLAINTEXT, CONTEXT) for _n in range(50)}
    assert len(tokens) == 50
    assert len({t.split(":")[2] for t in tokens}) == 50  # a fresh nonce every time


def test_the_token_does_not_contain_the_plaintext(box):
    secret = "hunter2hunter2hunter2"
    token = box.encrypt(secret, CONTEXT)
    encodings = [
        secret,
        secret.lower(),
        secret.encode().hex(),
        base64.b64encode(secret.encode()).decode(),
        base64.urlsafe_b64encode(secret.encode()).decode(),
    ]
    for needle in encodings:
        assert needle not in token
    # Nor any 4-character piece of it (what a grep for part of the password would try).
    pieces = {secret[i : i + 4] for i in range(len(secret) - 3)}
    assert not [p for p in pieces if p in token]
    # And not in the decoded ciphertext bytes either.
    raw = base64.b64decode(token.split(":")[3])
    assert secret.encode() not in raw and b"hunter" not in raw


def test_wrong_key_names_both_key_ids_and_not_the_plaintext(box):
    token = box.encrypt(PLAINTEXT, CONTEXT)
    other = SecretBox(KEY_B)
    with pytest.raises(SecretError) as err:
        other.decrypt(token, CONTEXT)
    message = str(err.value)
    assert box.key_id in message and other.key_id in message
    assert "encrypted with key id %s but the loaded key is %s" % (box.key_id, other.key_id) in message
    assert PLAINTEXT not in message
    assert KEY_A.hex() not in message and KEY_B.hex() not in message
    assert encode_key(KEY_A) not in message and encode_key(KEY_B) not in message
    assert isinstance(err.value, InfinivirtError)


def test_wrong_context_fails_authentication(box):
    token = box.encrypt(PLAINTEXT, CONTEXT)
    for other in (
        "0b7c1f0e-3c1d-4a53-9a7e-6b0f8d1f2a12/graphic_password",
        CONTEXT.replace("graphic_password", "spice_password"),
        "",
        CONTEXT + " ",
    ):
        with pytest.raises(SecretError, match="failed authentication") as err:
            box.decrypt(token, other)
        assert PLAINTEXT not in str(err.value)


def test_every_flipped_character_is_refused(box):
    token = box.encrypt("a secret of some length", CONTEXT)
    version_kid = len("iv1:") + 16
    for index in range(len(token)):
        tampered = flip(token, index)
        assert tampered != token
        with pytest.raises(SecretError) as err:
            box.decrypt(tampered, CONTEXT)
        assert "a secret of some length" not in str(err.value)
        if index > version_kid and token[index] != ":":
            assert "failed authentication" in str(err.value) or "malformed" in str(err.value), index


@pytest.mark.parametrize("index", [0, 5, 11, -1])
def test_a_flipped_ciphertext_bit_fails_authentication(box, index):
    token = box.encrypt(PLAINTEXT, CONTEXT)
    head, sealed_b64 = token.rsplit(":", 1)
    sealed = bytearray(base64.b64decode(sealed_b64))
    sealed[index] ^= 0x01
    tampered = head + ":" + base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(SecretError, match="failed authentication"):
        box.decrypt(tampered, CONTEXT)


def test_a_flipped_nonce_bit_fails_authentication(box):
    token = box.encrypt(PLAINTEXT, CONTEXT)
    version, kid, nonce_b64, sealed = token.split(":")
    nonce = bytearray(base64.b64decode(nonce_b64))
    nonce[0] ^= 0x80
    tampered = ":".join([version, kid, base64.b64encode(bytes(nonce)).decode(), sealed])
    with pytest.raises(SecretError, match="failed authentication"):
        box.decrypt(tampered, CONTEXT)


def test_non_canonical_base64_is_refused(box):
    """The unused low bits of the last base64 character must not give a second spelling."""
    token = box.encrypt("abcd", CONTEXT)  # 20 bytes sealed: "xxx=", the last x has 2 unused bits
    head, sealed_b64 = token.rsplit(":", 1)
    assert sealed_b64.endswith("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = sealed_b64[-2]
    twin = sealed_b64[:-2] + alphabet[alphabet.index(last) ^ 1] + "="
    assert base64.b64decode(twin) == base64.b64decode(sealed_b64)  # same bytes, other text
    with pytest.raises(SecretError, match="malformed"):
        box.decrypt(head + ":" + twin, CONTEXT)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "iv1",
        "plain-password",
        "iv1:::",
        "iv2:0123456789abcdef:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==",
        "iv1:0123456789ABCDEF:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==",
        "iv1:0123456789abcde:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==",
        "iv1:0123456789abcdef:AAAA:AAAAAAAAAAAAAAAAAAAAAA==",
        "iv1:0123456789abcdef:AAAAAAAAAAAAAAAA:AAAA",
        "iv1:0123456789abcdef:AAAAAAAAAAAAAAA*:AAAAAAAAAAAAAAAAAAAAAA==",
        "iv1:0123456789abcdef:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==:extra",
        "iv1:0123456789abcdef:AAAAAAAAAAAAAAAA:ÄAAAAAAAAAAAAAAAAAAAAA==",
        None,
        42,
        b"iv1:0123456789abcdef:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==",
    ],
)
def test_malformed_tokens_are_refused(box, token):
    with pytest.raises(SecretError) as err:
        box.decrypt(token, CONTEXT)
    if isinstance(token, str) and token:
        assert "plain-password" not in str(err.value)


def test_a_pasted_plaintext_is_not_echoed(box):
    with pytest.raises(SecretError) as err:
        box.decrypt("my:clear:text:password", CONTEXT)
    assert "clear" not in str(err.value) and "password" not in str(err.value).replace("graphic_password", "")


@pytest.mark.parametrize("key", [b"", b"x" * 31, b"x" * 33, "x" * 32, None])
def test_a_key_must_be_32_bytes(key):
    with pytest.raises(SecretError, match="32 bytes"):
        SecretBox(key)


def test_repr_hides_the_key(box):
    assert repr(box) == "SecretBox(key_id=%s)" % box.key_id
    assert KEY_A.hex() not in repr(box) and str(KEY_A) not in repr(box)


def test_mask():
    assert mask("s3cret") == "********"
    assert mask("") == ""
    assert mask(None) is None


# ------------------------------------------------------------------------------ rotation


def test_rotate_re_encrypts_for_the_new_key():
    old, new = SecretBox(KEY_A), SecretBox(KEY_B)
    pairs = [(old.encrypt("pw-%d" % i, "vm%d/graphic_password" % i), "vm%d/graphic_password" % i) for i in range(5)]
    rotated = rotate(pairs, old, new)
    assert len(rotated) == 5
    for i, token in enumerate(rotated):
        context = "vm%d/graphic_password" % i
        assert token_key_id(token) == new.key_id
        assert new.decrypt(token, context) == "pw-%d" % i
        with pytest.raises(SecretError, match="encrypted with key id %s" % new.key_id):
            old.decrypt(token, context)
    assert rotate([], old, new) == []


def test_rotate_is_all_or_nothing():
    old, new = SecretBox(KEY_A), SecretBox(KEY_B)
    stranger = SecretBox(bytes(32))
    produced = []

    def pairs():  # a generator, so a partial result would have been built before the failure
        yield old.encrypt("one", "vm1/graphic_password"), "vm1/graphic_password"
        yield old.encrypt("two", "vm2/graphic_password"), "vm2/graphic_password"
        produced.append("bad")
        yield stranger.encrypt("three", "vm3/graphic_password"), "vm3/graphic_password"
        yield old.encrypt("four", "vm4/graphic_password"), "vm4/graphic_password"

    result = None
    with pytest.raises(SecretError) as err:
        result = rotate(pairs(), old, new)
    assert result is None and produced == ["bad"]
    message = str(err.value)
    assert "item 2" in message and "vm3/graphic_password" in message and stranger.key_id in message
    assert "three" not in message and "one" not in message


def test_rotate_refuses_a_token_moved_to_another_context():
    old, new = SecretBox(KEY_A), SecretBox(KEY_B)
    token = old.encrypt("pw", "vm1/graphic_password")
    with pytest.raises(SecretError, match="failed authentication"):
        rotate([(token, "vm2/graphic_password")], old, new)


def test_rotate_can_be_repeated_after_a_crash_before_the_key_swap():
    old, new = SecretBox(KEY_A), SecretBox(KEY_B)
    first = rotate([(old.encrypt("pw", "c"), "c")], old, new)
    again = rotate([(first[0], "c")], old, new)  # already under the new key: verified, re-sealed
    assert new.decrypt(again[0], "c") == "pw"


# ------------------------------------------------------------------------------ keys


def test_default_key_file():
    assert DEFAULT_KEY_FILE == "/var/lib/infinivirt/secret.key"


def test_key_file_is_created_0600_with_a_32_byte_key(tmp_path):
    path = tmp_path / "new" / "deeper" / "secret.key"
    key = load_or_create_key(str(path), env={})
    assert isinstance(key, bytes) and len(key) == 32
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert base64.b64decode(path.read_text().strip()) == key
    assert path.read_text().endswith("\n")
    for directory in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert os.listdir(path.parent) == ["secret.key"]  # no temporary file left behind
    assert load_or_create_key(str(path), env={}) == key  # read back, not regenerated
    assert SecretBox(key).decrypt(SecretBox(key).encrypt("x", "c"), "c") == "x"


def test_key_file_creation_ignores_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        load_or_create_key(str(tmp_path / "d" / "k"), env={})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "k").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700


def write_key_file(path, mode=0o600, text=None):
    path.write_text(text if text is not None else encode_key(KEY_A) + "\n")
    os.chmod(path, mode)
    return str(path)


def test_an_existing_key_file_is_read(tmp_path):
    assert load_or_create_key(write_key_file(tmp_path / "k"), env={}) == KEY_A
    assert load_or_create_key(write_key_file(tmp_path / "ro", 0o400), env={}) == KEY_A
    urlsafe = base64.urlsafe_b64encode(KEY_B).decode().rstrip("=")
    assert load_or_create_key(write_key_file(tmp_path / "u", text=urlsafe), env={}) == KEY_B


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700, 0o660, 0o1600])
def test_a_key_file_with_bits_beyond_0600_is_refused(tmp_path, mode):
    path = write_key_file(tmp_path / "k", mode)
    with pytest.raises(SecretError) as err:
        load_or_create_key(path, env={})
    message = str(err.value)
    assert path in message and "%04o" % mode in message and "0600" in message
    assert encode_key(KEY_A) not in message


def test_a_symlinked_key_file_is_refused(tmp_path):
    real = write_key_file(tmp_path / "real.key")
    link = tmp_path / "secret.key"
    os.symlink(real, link)
    with pytest.raises(SecretError, match="symlink") as err:
        load_or_create_key(str(link), env={})
    assert str(link) in str(err.value)
    dangling = tmp_path / "dangling.key"
    os.symlink(tmp_path / "absent", dangling)
    with pytest.raises(SecretError, match="symlink"):
        load_or_create_key(str(dangling), env={})
    assert not (tmp_path / "absent").exists()  # never created through the link


def test_a_key_file_owned_by_someone_else_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root can give a file away")  # root on this machine and in CI
    path = write_key_file(tmp_path / "k")
    os.chown(path, 12345, -1)
    with pytest.raises(SecretError, match="owned by uid 12345") as err:
        load_or_create_key(path, env={})
    assert path in str(err.value)


def test_a_key_file_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SecretError, match="not a regular file"):
        load_or_create_key(str(fifo), env={})
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(SecretError, match="not a regular file"):
        load_or_create_key(str(directory), env={})


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("\n", "empty"),
        ("not base64 at all!", "not valid base64"),
        (base64.b64encode(b"x" * 16).decode(), "16 bytes"),
        (base64.b64encode(b"x" * 64).decode(), "64 bytes"),
    ],
)
def test_a_key_file_with_a_bad_key_is_refused(tmp_path, text, reason):
    path = write_key_file(tmp_path / "k", text=text)
    with pytest.raises(SecretError, match=reason) as err:
        load_or_create_key(path, env={})
    assert path in str(err.value)


def test_the_environment_key_wins(tmp_path):
    path = tmp_path / "k"
    env = {KEY_ENV: encode_key(KEY_B)}
    assert load_or_create_key(str(path), env=env) == KEY_B
    assert not path.exists()  # no key file is made when the environment has the key
    urlsafe = base64.urlsafe_b64encode(KEY_B).decode()
    assert "-" in urlsafe or "_" in urlsafe
    assert load_or_create_key(None, env={KEY_ENV: urlsafe + "\n"}) == KEY_B
    assert load_or_create_key(None, env={KEY_ENV: urlsafe.rstrip("=")}) == KEY_B
    assert load_or_create_key(write_key_file(path), env=env) == KEY_B


@pytest.mark.parametrize(
    "value, reason",
    [
        ("", "empty"),
        ("%%%not-base64%%%", "not valid base64"),
        ("AAAA", "3 bytes"),
        (base64.b64encode(b"k" * 31).decode(), "31 bytes"),
        ("ÄÖÜ", "not valid base64"),
    ],
)
def test_a_bad_environment_key_is_refused(tmp_path, value, reason):
    with pytest.raises(SecretError, match=reason) as err:
        load_or_create_key(str(tmp_path / "k"), env={KEY_ENV: value})
    assert KEY_ENV in str(err.value)
    if value:
        assert value not in str(err.value)
    assert not (tmp_path / "k").exists()  # no silent fallback to a new key file


def test_decode_key_never_echoes_its_input():
    with pytest.raises(SecretError) as err:
        decode_key(base64.b64encode(b"s" * 31).decode(), "somewhere")
    assert base64.b64encode(b"s" * 31).decode() not in str(err.value)


def test_an_uncreatable_key_directory_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SecretError, match="key"):
        load_or_create_key(str(blocker / "sub" / "secret.key"), env={})


def _race(path, barrier, queue):
    barrier.wait()
    try:
        queue.put(load_or_create_key(path, env={}).hex())
    except Exception as exc:  # reported, not swallowed
        queue.put("error: %r" % exc)


@pytest.mark.parametrize("round_", range(10))
def test_processes_racing_to_create_the_key_file_all_get_the_same_key(tmp_path, round_):
    ctx = multiprocessing.get_context("fork")
    path = str(tmp_path / "state" / "secret.key")
    barrier = ctx.Barrier(8)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(path, barrier, queue)) for _n in range(8)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=30) for _n in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert len(set(results)) == 1, results
    assert not results[0].startswith("error")
    key = bytes.fromhex(results[0])
    assert len(key) == 32
    assert load_or_create_key(path, env={}) == key
    assert os.listdir(os.path.dirname(path)) == ["secret.key"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_largest_plaintext_seals_and_opens_and_a_larger_one_is_refused(box):
    # decrypt refuses tokens over 1 MiB of text: encrypt must not make one.
    biggest = "\u20ac" * (MAX_PLAINTEXT_BYTES // 3)  # 3 bytes each in UTF-8
    assert box.decrypt(box.encrypt(biggest, CONTEXT), CONTEXT) == biggest
    with pytest.raises(SecretError, match="more than one token holds"):
        box.encrypt("x" * (MAX_PLAINTEXT_BYTES + 1), CONTEXT)
