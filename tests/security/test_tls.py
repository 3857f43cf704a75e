"""Transport: the aggregator serves HTTPS with a certificate made in the test, and clients trust
only the CA they are given.

A full encrypted round runs over HTTPS through the product's REST client; a client without the
CA (system CAs, or another CA) is refused at once with a typed :class:`TransportError`, not a
stack trace and not after minutes of retries; plain HTTP to the TLS port gets nowhere; ``serve``
refuses incomplete or unusable TLS settings before it starts.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from fedsparsify.cli import app as cli_app
from fedsparsify.clients.launcher import AggregatorProcess, start_aggregator
from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.clients.runtime import ClientRuntime
from fedsparsify.errors import AuthenticationError, ConfigError, TransportError
from tests.cli import run_cli
from tests.security.conftest import ADMIN_TOKEN
from tests.security.pki import Pki
from tests.security.rounds import ATOL, run_round

pytestmark = pytest.mark.e2e


def test_a_round_over_https(tls_server: AggregatorProcess, pki: Pki, work: Path) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    with (
        tls_server.admin() as admin,
        AggregatorClient(tls_server.url, verify=str(pki.ca)) as anonymous,
    ):
        result = run_round(admin, anonymous, work)
        assert admin.get_federation(result.federation_id)["state"] == "completed"
    for site in result.sites:
        np.testing.assert_allclose(result.averages[site.name], result.expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("trust", ["system CAs", "another CA"])
def test_a_client_without_the_ca_is_refused_at_once(
    tls_server: AggregatorProcess, other_pki: Pki, trust: str
) -> None:
    verify: str | bool = True if trust == "system CAs" else str(other_pki.ca)
    started = time.monotonic()
    with (
        AggregatorClient(tls_server.url, verify=verify, backoff_s=1.0) as client,
        pytest.raises(TransportError, match=r"certificate .* does not verify") as info,
    ):
        client.health()
    assert time.monotonic() - started < 1.0, "a certificate failure must not be retried"
    assert "--ca" in str(info.value)


def test_the_site_runtime_verifies_the_ca(
    tls_server: AggregatorProcess, pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    with tls_server.admin() as admin:
        fid = admin.create_federation({"name": "tls-runtime", "min_clients": 2, "quorum": 2})["id"]

    def runtime(verify: str | bool) -> ClientRuntime:
        return ClientRuntime(
            server=tls_server.url,
            federation_id=fid,
            enrollment_token="fse_irrelevant",
            data_loader=lambda shape: pytest.fail("no data before the server is trusted"),
            state_dir=tmp_path / "state",
            verify=verify,
        )

    with pytest.raises(TransportError, match="does not verify"):
        runtime(str(other_pki.ca))
    with pytest.raises(TransportError, match="does not verify"):
        runtime(True)
    with pytest.raises(ConfigError, match="CA bundle"):
        runtime(str(tmp_path / "missing-ca.pem"))
    # With the right CA the request goes through, and the server itself answers: wrong token.
    with pytest.raises(AuthenticationError):
        runtime(str(pki.ca))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, code=None)


def test_the_cli_verifies_with_ca_and_refuses_without(
    tls_server: AggregatorProcess, pki: Pki
) -> None:
    base = ("federation", "list", "--server", tls_server.url, "--admin-token", ADMIN_TOKEN)
    refused = _cli(*base)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "error:" in refused.stderr and "does not verify" in refused.stderr
    assert "Traceback" not in refused.stderr
    trusted = _cli(*base, "--ca", str(pki.ca))
    assert trusted.returncode == 0, trusted.stderr


def test_plain_http_to_the_tls_port_fails(tls_server: AggregatorProcess) -> None:
    plain = tls_server.url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/healthz", timeout=5.0)
    with (
        AggregatorClient(plain, retries=0, timeout_s=5.0) as client,
        pytest.raises(TransportError),
    ):
        client.health()
    with tls_server.admin() as admin:  # and the server is still serving HTTPS
        assert admin.health()["status"] == "ok"


def test_the_launcher_and_serve_refuse_half_a_tls_setup(
    tmp_path: Path, pki: Pki, other_pki: Pki
) -> None:
    with pytest.raises(ConfigError, match="both"):
        start_aggregator(tmp_path / "d", admin_token=ADMIN_TOKEN, tls_cert=pki.cert)
    runner = CliRunner()
    cases = {
        "only the certificate": (["--tls-cert", str(pki.cert)], "needs both"),
        "only the key": (["--tls-key", str(pki.key)], "needs both"),
        "missing file": (
            ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(pki.key)],
            "cannot read",
        ),
        "key of another certificate": (
            ["--tls-cert", str(pki.cert), "--tls-key", str(other_pki.key)],
            "not a PEM certificate and its",
        ),
        "not PEM": (["--tls-cert", str(pki.key), "--tls-key", str(pki.key)], "not a PEM"),
    }
    for name, (args, message) in cases.items():
        out = runner.invoke(cli_app, ["serve", "--data-dir", str(tmp_path / "never"), *args])
        assert out.exit_code == 2, (name, out.output)
        assert message in re.sub(r"[\s│╭╮╰╯─]+", " ", out.output), (name, out.output)
        assert out.exception is None or isinstance(out.exception, SystemExit), name
    assert not (tmp_path / "never").exists()


def test_sigterm_stops_a_tls_server_despite_idle_keep_alive_clients(
    tmp_path: Path, pki: Pki
) -> None:
    """Sites keep connections open between polls; a TLS server must still stop on SIGTERM
    (before the fix it waited ~30 s for each idle TLS connection's close_notify)."""
    server = start_aggregator(
        tmp_path / "data", admin_token=ADMIN_TOKEN, tls_cert=pki.cert, tls_key=pki.key, ca=pki.ca
    )
    try:
        with AggregatorClient(server.url, verify=str(pki.ca)) as idle:
            idle.health()
            started = time.monotonic()
            server.popen.terminate()
            server.popen.wait(timeout=9)
            assert time.monotonic() - started < 9
    finally:
        server.kill()
    assert "Application shutdown complete" in server.log_tail()
