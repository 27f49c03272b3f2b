"""Outputs on their own: the webhook spool (order, restarts, rejection, bound), the OPC UA server's
security policies, the OPC UA client writer into another server (a PLC stand-in)."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from edgesentry.errors import ConfigError
from edgesentry.line.outputs.webhook import WebhookSink, read_token

from .helpers import WebhookReceiver, free_port, wait_for


def _records(n: int, start: int = 0) -> list[dict]:
    return [{"part": i, "part_id": f"P{i}", "decision": "accept"} for i in range(start, start + n)]


def test_webhook_spool_survives_a_restart_and_replays_in_order(tmp_path: Path) -> None:
    receiver = WebhookReceiver()  # not started: the receiver is down
    sink = WebhookSink(receiver.url, tmp_path / "spool", backoff_s=(0.01, 0.05), run="r1")
    for rec in _records(5):
        sink.write(rec, None, None)
    facts = sink.close(timeout_s=0.3)
    assert facts["delivered"] == 0 and facts["spooled"] == 5 and facts["failures"] > 0
    receiver.start()
    try:
        sink = WebhookSink(receiver.url, tmp_path / "spool", backoff_s=(0.01, 0.05), run="r2")
        for rec in _records(3, start=5):
            sink.write(rec, None, None)
        facts = sink.close(timeout_s=10)
    finally:
        receiver.stop()
    assert facts["replayed"] == 5 and facts["delivered"] == 8 and facts["spooled"] == 0
    assert receiver.received == _records(8)  # in order, each once, across the restart
    assert not list((tmp_path / "spool").glob("*.json"))


def test_webhook_rejected_record_does_not_block_the_rest(tmp_path: Path) -> None:
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body["part"])
            self.send_response(422 if body["part"] == 1 else 200)
            self.end_headers()

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/", tmp_path / "spool", max_spool=3,
                           backoff_s=(0.01, 0.05))
        for rec in _records(3):
            sink.write(rec, None, None)
        facts = sink.close(timeout_s=10)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [0, 1, 2] and facts["delivered"] == 2 and facts["rejected"] == 1
    assert [p.name for p in (tmp_path / "spool" / "rejected").iterdir()] == ["000000000001.json"]


def test_webhook_spool_is_bounded(tmp_path: Path) -> None:
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/", tmp_path / "spool", max_spool=2, backoff_s=(1, 1))
    sink.write(_records(1)[0], None, None)
    sink.write(_records(1, 1)[0], None, None)
    with pytest.raises(RuntimeError, match="spool .* is full"):
        sink.write(_records(1, 2)[0], None, None)
    assert sink.close(timeout_s=0)["refused"] == 1


def test_webhook_token_from_environment_or_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "abc")
    assert read_token(token_env="HOOK_TOKEN", token_file=None, what="w") == "abc"
    (tmp_path / "tok").write_text("xyz\nignored\n")
    assert read_token(token_env=None, token_file=tmp_path / "tok", what="w") == "xyz"
    monkeypatch.delenv("HOOK_TOKEN")
    with pytest.raises(ConfigError, match="HOOK_TOKEN is not set"):
        read_token(token_env="HOOK_TOKEN", token_file=None, what="w")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key, cert = folder / "key.pem", folder / "cert.der"
    call = setup_self_signed_certificate(key, cert, "urn:edgesentry:line", "127.0.0.1",
                                         [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                                         {"commonName": "edgesentry test"})
    if inspect.isawaitable(call):
        asyncio.run(call)
    return cert, key


def test_opcua_server_offers_only_the_configured_policies(tmp_path: Path) -> None:
    pytest.importorskip("asyncua")
    from asyncua.sync import Client

    from edgesentry.line.outputs.opcua import OpcUaServer

    cert, key = _self_signed(tmp_path)
    server = OpcUaServer("l", ["st"], ["cam"], port=0, security=["Basic256Sha256_SignAndEncrypt"],
                         certificate=cert, private_key=key)
    try:
        client = Client(server.endpoint, timeout=10)
        endpoints = client.connect_and_get_server_endpoints()
        policies = {e.SecurityPolicyUri.rsplit("#", 1)[-1] for e in endpoints}
        modes = {e.SecurityMode.name for e in endpoints}
        assert policies == {"Basic256Sha256"} and modes == {"SignAndEncrypt"}
        assert server.endpoint.startswith("opc.tcp://127.0.0.1:")
        client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
        client.connect()
        try:
            idx = client.get_namespace_index("urn:edgesentry:line")
            node = client.nodes.objects.get_child([f"{idx}:l", f"{idx}:Stations", f"{idx}:st", f"{idx}:Decision"])
            server.write("station", "st", {"Decision": "reject"})
            server.flush()
            assert node.read_value() == "reject"
        finally:
            client.disconnect()
    finally:
        server.close()


def test_opcua_client_writes_decisions_into_another_server() -> None:
    pytest.importorskip("asyncua")
    from asyncua import ua
    from asyncua.sync import Server

    from edgesentry.line.outputs.opcua import OpcUaWriter

    port = free_port()
    plc = Server()
    plc.set_endpoint(f"opc.tcp://127.0.0.1:{port}/plc/")
    idx = plc.register_namespace("urn:plc")
    gate = plc.nodes.objects.add_object(idx, "Gate")
    decision = gate.add_variable(ua.NodeId("gate.decision", idx), "Decision", "")
    part = gate.add_variable(ua.NodeId("gate.part", idx), "Part", "")
    late = gate.add_variable(ua.NodeId("gate.late", idx), "Late", False)
    for node in (decision, part, late):
        node.set_writable()
    plc.start()
    try:
        writer = OpcUaWriter(f"opc.tcp://127.0.0.1:{port}/plc/", {"st": {
            "decision": f"ns={idx};s=gate.decision", "part_id": f"ns={idx};s=gate.part",
            "late": f"ns={idx};s=gate.late"}})
        writer.write("st", {"part_id": "P9", "decision": "reject", "late": True, "score": 0.7})
        wait_for(lambda: writer.written == 1, 20, "the write into the PLC")
        facts = writer.close()
        assert (decision.read_value(), part.read_value(), late.read_value()) == ("reject", "P9", True)
        assert facts["errors"] == 0
    finally:
        plc.stop()
