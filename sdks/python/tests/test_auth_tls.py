"""Keys and TLS: a node with authentication on, and one serving TLS."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import supervisor_client as sv
from conftest import Node
from supervisor_client._proto.supervisor.v1 import auth_pb2


@pytest.fixture()
def auth_node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "data", {"SUPERVISOR_AUTH__ENABLED": "true"})
    yield n
    n.stop()


def test_calls_need_a_key_and_roles_are_enforced(auth_node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    admin_key = (auth_node.data_dir / "admin.key").read_text().strip()
    with sv.Client(auth_node.address) as anonymous:
        with pytest.raises(sv.Unauthenticated) as err:
            anonymous.stats()
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    with sv.Client(auth_node.address, token="svk_not_a_key") as forged:
        with pytest.raises(sv.Unauthenticated):
            forged.submit(type="testing", prompt="x")

    with sv.Client(auth_node.address, token=admin_key) as admin:
        me = admin.whoami()
        assert (me.role, me.auth_enabled) == ("admin", True)
        created = admin.auth.CreateKey(
            auth_pb2.CreateKeyRequest(role="viewer", name="sdk-viewer"), metadata=admin.metadata
        )
        task = admin.submit(type="testing", prompt="by the admin")
        assert admin.wait(task.id, timeout=60).status is sv.TaskStatus.SUCCEEDED

    # The key from the environment, as the CLI reads it.
    monkeypatch.setenv("SUPERVISOR_TOKEN", created.key)
    with sv.Client(auth_node.address) as viewer:
        assert viewer.whoami().role == "viewer"
        assert viewer.get(task.id).status is sv.TaskStatus.SUCCEEDED
        with pytest.raises(sv.PermissionDenied) as denied:
            viewer.submit(type="testing", prompt="a viewer may not")
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "viewer" in denied.value.message

    async def viewer_async() -> None:
        async with sv.AsyncClient(auth_node.address) as client:
            assert (await client.whoami()).role == "viewer"
            with pytest.raises(sv.PermissionDenied):
                await client.cancel(task.id)

    asyncio.run(viewer_async())


def make_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "node.pem", folder / "node.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_with_a_private_authority(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    node = Node(
        tmp_path / "data",
        {"SUPERVISOR_SERVER__TLS__CERT": str(cert), "SUPERVISOR_SERVER__TLS__KEY": str(key)},
    )
    try:
        with sv.Client(f"https://{node.address}", tls=sv.TLS(ca_file=str(cert))) as client:
            task = client.submit(type="testing", prompt="over TLS")
            assert client.wait(task.id, timeout=60).status is sv.TaskStatus.SUCCEEDED
        # Without the authority the node's certificate is not trusted.
        with sv.Client(f"https://{node.address}", timeout=5) as untrusting:
            with pytest.raises(sv.Unavailable):
                untrusting.stats()
        # Plain text to a TLS port does not get through either.
        with sv.Client(node.address, timeout=5) as plain:
            with pytest.raises(sv.SupervisorError):
                plain.stats()

        async def over_tls() -> None:
            async with sv.AsyncClient(f"https://{node.address}", tls=sv.TLS(ca_file=str(cert))) as client:
                assert (await client.stats()).total >= 1

        asyncio.run(over_tls())
    finally:
        node.stop()
