# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""SPICE displays (issue 25) on firmware-only VMs (no kernel: SeaBIOS only, about 1 s each):
the password sealed at rest, never in argv, set over QMP and proven with a real SPICE link
handshake (spice_client.py); ports claimed per host, also by two starts at once; bad
display and shared_dirs values refused with nothing left behind."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

import pytest
from helpers import cmdlines_containing, database_bytes, vm_list
from qemu_procs import kill_leftovers
from spice_client import LINK_OK, LINK_PERMISSION_DENIED, spice_link

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.qemu]

PASSWORD = "spice-Pw-0123456789"  # longer than VNC's 8 bytes: SPICE checks all of it
NEW_PASSWORD = "n3w spice pw"
VM = {"name": "spicy", "accel": "tcg", "memory_mb": 32, "stop_timeout": 0.5, "force": True}


@pytest.fixture
def env(db_url, monkeypatch):
    monkeypatch.delenv("INFINIVIRT_SECRET_KEY", raising=False)
    work = tempfile.mkdtemp(prefix="iv-spice")
    key_file = os.path.join(work, "keys", "secret.key")
    service = VmService.open(db_url, os.path.join(work, "run"), secret_key_file=key_file)
    yield service, db_url, work, key_file
    for vm in vm_list(service):
        service.ensure(dict(VM, name=vm["name"], state="absent"), False)
    service.close()
    leaked = kill_leftovers(work)
    shutil.rmtree(work, ignore_errors=True)
    assert leaked == [], "QEMU processes outlived their VM rows"


def ensure(service, check_mode=False, **params):
    return service.ensure(dict(VM, **params), check_mode)


def display_claims(service):
    return sorted((c["owner_name"], int(c["value"])) for c in service.store.list_host_claims(kind="display port"))


def test_spice_password_link_live_change_restart_and_no_leak(env):
    service, db_url, work, key_file = env
    graphics = {"type": "spice", "password": PASSWORD}
    started = ensure(service, state="running", graphics=graphics, video_model="qxl")
    port = started.vm["graphics"]["port"]
    assert started.vm["graphics"]["type"] == "spice" and 5900 <= port < 6000
    rec = records.load(service.store, "spicy")
    spice = service.engine.sessions.qmp(rec, "query-spice")
    assert spice["enabled"] and spice["port"] == port and spice["auth"] == "spice", spice
    assert display_claims(service) == [("spicy", port)], "the start claimed its port"
    peripherals = {p["name"] for p in service.engine.sessions.qmp(rec, "qom-list", {"path": "/machine/peripheral"})}
    assert {"video0", "tablet0"} <= peripherals, "a qxl card and the default USB tablet: %s" % peripherals

    assert spice_link("127.0.0.1", port, PASSWORD) == LINK_OK
    assert spice_link("127.0.0.1", port, "wrong") == LINK_PERMISSION_DENIED

    # The secret is nowhere in plain text: argv, database, results.
    assert cmdlines_containing(PASSWORD) == []
    assert PASSWORD.encode() not in database_bytes(db_url, work)
    assert PASSWORD not in repr(started.vm) + repr(started.diff) + repr(started.plan)

    # A new password reaches the running display at once (no restart).
    changed = ensure(service, state="running", graphics={"password": NEW_PASSWORD})
    assert changed.actions == ["update", "set_password"] and changed.vm["pid"] == started.vm["pid"]
    assert spice_link("127.0.0.1", port, PASSWORD) == LINK_PERMISSION_DENIED
    assert spice_link("127.0.0.1", port, NEW_PASSWORD) == LINK_OK

    # A restart reads the password back from the store and sets it again.
    restarted = ensure(service, state="restarted")
    new_port = restarted.vm["graphics"]["port"]
    assert spice_link("127.0.0.1", new_port, NEW_PASSWORD) == LINK_OK
    assert spice_link("127.0.0.1", new_port, "wrong") == LINK_PERMISSION_DENIED

    # video_model and usb_tablet are restart options: pending, by name, on a running VM.
    pending = ensure(service, state="running", video_model="bochs", usb_tablet=False)
    assert pending.plan["changes"] == {"video_model": "restart", "usb_tablet": "restart"}, pending.plan
    assert sorted(pending.vm["pending_restart"]) == ["usb_tablet", "video_model"]

    ensure(service, state="stopped")
    assert display_claims(service) == [], "a stop gives the port back"
    assert cmdlines_containing(NEW_PASSWORD) == []


@pytest.mark.both_backends  # the claims' serialization is the subject
def test_displays_started_at_once_get_different_free_ports(env):
    """Two SPICE VMs and a VNC one started at the same time: one pool of claimed ports, so
    a VNC start cannot take a port a SPICE start just claimed (VNC let QEMU bind any free
    port, to=99, before)."""
    service, db_url, work, _key = env
    busy = socket.socket()
    with contextlib.closing(busy):
        # Something else listens on the first free port of the range: the claims skip it.
        for port in range(5900, 6000):
            with contextlib.suppress(OSError):
                busy.bind(("127.0.0.1", port))
                break
        busy.listen(1)
        taken = busy.getsockname()[1]
        kinds = {"left": "spice", "right": "spice", "mid": "vnc"}
        for name, kind in kinds.items():
            ensure(service, name=name, state="stopped", graphics={"type": kind})
        results, errors = {}, []

        def start(name):
            own = VmService.open(db_url, os.path.join(work, "run"), secret_key_file=os.path.join(work, "keys", "k"))
            try:
                results[name] = own.ensure(dict(VM, name=name, state="running"), False).vm["graphics"]["port"]
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                own.close()

        threads = [threading.Thread(target=start, args=(n,)) for n in kinds]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert len(set(results.values())) == 3, results
        assert taken not in results.values(), "a port another program listens on is skipped"
        assert display_claims(service) == sorted(results.items())
        # Each display answers on its own port, without a password (loopback only).
        for name, port in results.items():
            if kinds[name] == "spice":
                assert spice_link("127.0.0.1", port, "") == LINK_OK
            else:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as vnc:
                    assert vnc.recv(12) == b"RFB 003.008\n"
        ensure(service, name="mid", state="stopped")
        assert "mid" not in dict(display_claims(service)), "the claim goes with the stop"


@pytest.mark.netns
def test_a_port_bound_after_its_claim_is_skipped_by_a_new_try(env):
    """A display in a network namespace is claimed without a probe (the port is the
    namespace's): a program listening there on 5900 makes QEMU fail to bind it, and the
    start tries again on the next port, leaving nothing of the failed try."""
    service, _db_url, work, _key = env
    netns = "ivport-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", netns], check=True)
    listener = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        listener = subprocess.Popen(  # noqa: S603
            ["ip", "netns", "exec", netns, sys.executable, "-c",
             "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1', 5900)); s.listen(); "
             "print('up', flush=True); time.sleep(300)"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert listener.stdout.readline().strip() == "up"
        for kind in ("vnc", "spice"):
            vm = ensure(service, name=kind + "ns", netns=netns, state="running", graphics={"type": kind}).vm
            assert vm["graphics"]["port"] == 5901, vm["graphics"]
            assert display_claims(service) == [(kind + "ns", 5901)]
            ensure(service, name=kind + "ns", state="absent")
        assert kill_leftovers(work) == []
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        subprocess.run(["ip", "netns", "del", netns], check=True)


def write_certs(cert_dir):
    """A CA and a server certificate for 127.0.0.1 signed by it, as QEMU's x509-dir wants them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, signer, ca):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            import ipaddress

            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("test CA", "test CA", ca_key, ca_key, True)
    server = cert("127.0.0.1", "test CA", server_key, ca_key, False)
    os.makedirs(cert_dir)
    pem = serialization.Encoding.PEM
    for name, data in (
        ("ca-cert.pem", ca.public_bytes(pem)),
        ("server-cert.pem", server.public_bytes(pem)),
        (
            "server-key.pem",
            server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ),
    ):
        with open(os.path.join(cert_dir, name), "wb") as fh:
            fh.write(data)
    return os.path.join(cert_dir, "ca-cert.pem")


def test_spice_over_tls_listens_on_its_tls_port_only(env):
    service, _db, work, _key = env
    cert_dir = os.path.join(work, "pki")
    ca_file = write_certs(cert_dir)
    graphics = {"type": "spice", "password": PASSWORD, "tls": {"cert_dir": cert_dir}}
    started = ensure(service, state="running", graphics=graphics)
    port = started.vm["graphics"]["port"]
    assert started.vm["graphics"]["tls"] == {"cert_dir": cert_dir}
    spice = service.engine.sessions.qmp(records.load(service.store, "spicy"), "query-spice")
    assert spice.get("tls-port") == port and "port" not in spice, spice
    context = ssl.create_default_context(cafile=ca_file)
    assert spice_link("127.0.0.1", port, PASSWORD, tls=context) == LINK_OK
    assert spice_link("127.0.0.1", port, "wrong", tls=context) == LINK_PERMISSION_DENIED
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        spice_link("127.0.0.1", port, PASSWORD)  # no plain SPICE on the TLS port


@pytest.mark.parametrize(
    "params,field,phrase",
    [
        ({"graphics": {"type": "vnc", "tls": {"cert_dir": "/etc"}}}, "graphics.tls", "needs graphics.type spice"),
        ({"graphics": {"type": "spice"}, "video_model": "none"}, "video_model", "no screen"),
        ({"graphics": {"type": "spice", "listen": "192.0.2.10"}}, "graphics.password", "is required"),
        ({"shared_dirs": [{"source": "/tmp", "tag": "t"}]}, "shared_dirs", "needs memory_shared"),
        ({"memory_shared": True, "shared_dirs": [{"source": "/proc/1", "tag": "t"}]}, "shared_dirs[0].source", "/proc"),
        (
            {"memory_shared": True, "shared_dirs": [{"source": "/tmp", "tag": "a"}, {"source": "/var", "tag": "a"}]},
            "shared_dirs[1].tag",
            "already the tag of shared_dirs[0]",
        ),
        (
            {"memory_shared": True, "shared_dirs": [{"source": "/tmp", "tag": "x" * 37}]},
            "shared_dirs[0].tag",
            "1 to 36",
        ),
        (
            {"memory_shared": True, "shared_dirs": [{"source": "/nonexistent/share", "tag": "t"}]},
            "shared_dirs[0].source",
            "does not exist",
        ),
    ],
)
def test_bad_display_and_share_input_changes_nothing(env, params, field, phrase):
    service, _db, work, key_file = env
    with pytest.raises(SpecError) as err:
        ensure(service, state="running", **params)
    assert err.value.field == field and phrase in str(err.value), str(err.value)
    assert vm_list(service) == [] and not os.path.exists(key_file)
    run_dir = os.path.join(work, "run")
    assert not os.path.isdir(run_dir) or [n for n in os.listdir(run_dir) if ".fs" in n] == []
