"""OPC UA: the line's own server (what a PLC or SCADA reads) and a writer into the PLC's server.

**Server** (``[outputs.opcua]``, asyncua), by default at ``opc.tcp://127.0.0.1:4840/edgesentry/``::

    Objects/
      <line name>/
        Stations/<station>/   PartId, PartSeq, Decision, Late, FailSafe, DecisionLatencyMs   (at the decision)
                              FinalPartId, Verdict, Score, Degraded, MissingCameras         (when the part is final)
                              Triggered, Decided, Accepted, Rejected, LateCount, FailSafeCount, Health
                              Trigger(PartId: String) -> PartSeq: Int64   (method; with an opcua trigger)
        Cameras/<camera>/     Health, Produced, Processed, Dropped, Failed

Every variable is read-only for clients. A PLC handshake: trigger (method, MQTT or HTTP), then
wait until ``FinalPartId`` (or ``PartId`` for the gate decision alone) equals the part, then read
``Decision``. ``Decision`` is what the gate acts on: the verdict, or the fail-safe when the
verdict was late or incomplete.

**Security.** ``security`` lists the endpoints offered: ``none`` (the default: no signing, no
encryption, anonymous access, on loopback only), ``Basic256Sha256_Sign`` and
``Basic256Sha256_SignAndEncrypt``, the latter two with ``certificate`` and ``private_key`` (PEM or
DER). Offer only the signed ones to refuse unsigned clients.

**Client writer** (``[outputs.opcua_client]``): at each decision, writes the part id, decision,
score and late flag into node ids of the PLC's own server (``nodes.<station>.decision = "ns=2;s=..."``),
from its own thread, reconnecting with backoff; a write that fails is counted as a sink error.
The user name and password (``password_file`` / ``password_env``) or certificate come from files
and the environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from edgesentry.errors import ConfigError

log = logging.getLogger("edgesentry.line")

DEFAULT_PORT = 4840
GATE_VARS = {"PartId": "String", "PartSeq": "Int64", "Decision": "String", "Late": "Boolean",
             "FailSafe": "Boolean", "DecisionLatencyMs": "Double"}
FINAL_VARS = {"FinalPartId": "String", "Verdict": "String", "Score": "Double", "Degraded": "Boolean",
              "MissingCameras": "String"}
COUNTER_VARS = {"Triggered": "UInt64", "Decided": "UInt64", "Accepted": "UInt64", "Rejected": "UInt64",
                "LateCount": "UInt64", "FailSafeCount": "UInt64", "Health": "String"}
CAMERA_VARS = {"Health": "String", "Produced": "UInt64", "Processed": "UInt64", "Dropped": "UInt64",
               "Failed": "UInt64"}
_DEFAULTS = {"String": "", "Int64": -1, "UInt64": 0, "Boolean": False, "Double": 0.0}


class _LoopThread:
    """An asyncio loop in a daemon thread; ``call(coro)`` from any thread."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float | None = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Any) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        if not self.thread.is_alive():
            self.loop.close()


def _policies(names: list[str]) -> list[Any]:
    from asyncua import ua

    table = {"none": ua.SecurityPolicyType.NoSecurity,
             "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
             "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt}
    return [table[n] for n in names]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class OpcUaServer:
    """The line's OPC UA server (see the module docstring).

    Args:
        line: the line's name (the top object).
        stations / cameras: their ids.
        host / port: where to listen (default 127.0.0.1:4840; port 0 picks a free port).
        on_trigger: ``on_trigger(station, part_id) -> part seq`` for the ``Trigger`` method of the
            stations listed in ``trigger_stations``.
    """

    def __init__(self, line: str, stations: list[str], cameras: list[str], *, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, namespace: str = "urn:edgesentry:line", security: list[str] | None = None,
                 certificate: str | os.PathLike | None = None, private_key: str | os.PathLike | None = None,
                 on_trigger: Callable[[str, str], int] | None = None, trigger_stations: tuple[str, ...] = ()):
        try:
            import asyncua  # noqa: F401
        except ImportError:
            raise ConfigError("the OPC UA output needs asyncua: pip install 'edgesentry[line]'") from None
        self.host = host
        self.port = _free_port(host) if port == 0 else port
        self.endpoint = f"opc.tcp://{host}:{self.port}/edgesentry/"
        self.security = security or ["none"]
        self._loop = _LoopThread("edgesentry-line-opcua")
        self._nodes: dict[tuple[str, str, str], Any] = {}  # (kind, id, name) -> node
        self._pending: list[Future] = []
        self.write_errors = 0
        try:
            self._loop.call(self._start(line, stations, cameras, namespace, certificate, private_key,
                                        on_trigger, trigger_stations))
        except BaseException as exc:
            self._loop.close()
            if isinstance(exc, OSError):
                raise ConfigError(f"cannot serve OPC UA on {host}:{self.port}: {exc}") from None
            raise

    async def _start(self, line: str, stations: list[str], cameras: list[str], namespace: str, certificate: Any,
                     private_key: Any, on_trigger: Any, trigger_stations: tuple[str, ...]) -> None:
        from asyncua import Server, ua, uamethod

        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"edgesentry line {line}")
        server.set_security_policy(_policies(self.security))
        if certificate is not None:
            await server.load_certificate(str(certificate))
            await server.load_private_key(str(private_key))
        idx = await server.register_namespace(namespace)
        root = await server.nodes.objects.add_object(idx, line)
        station_root = await root.add_object(idx, "Stations")
        camera_root = await root.add_object(idx, "Cameras")
        for sid in stations:
            obj = await station_root.add_object(idx, sid)
            for name, kind in {**GATE_VARS, **FINAL_VARS, **COUNTER_VARS}.items():
                self._nodes[("station", sid, name)] = await obj.add_variable(
                    idx, name, ua.Variant(_DEFAULTS[kind], getattr(ua.VariantType, kind)))
            if on_trigger is not None and sid in trigger_stations:
                def make(station: str) -> Any:
                    @uamethod
                    def trigger(parent: Any, part_id: str) -> Any:
                        return ua.Variant(int(on_trigger(station, part_id or None)), ua.VariantType.Int64)
                    return trigger
                await obj.add_method(idx, "Trigger", make(sid), [ua.VariantType.String], [ua.VariantType.Int64])
        for cid in cameras:
            obj = await camera_root.add_object(idx, cid)
            for name, kind in CAMERA_VARS.items():
                self._nodes[("camera", cid, name)] = await obj.add_variable(
                    idx, name, ua.Variant(_DEFAULTS[kind], getattr(ua.VariantType, kind)))
        self._idx = idx
        self._server = server
        await server.start()

    # ------------------------------------------------------------------- writing
    def write(self, kind: str, key: str, values: dict[str, Any]) -> None:
        """Write ``values`` (variable name -> value) of a station or camera; returns at once."""
        self._pending = [f for f in self._pending if not f.done() or self._count(f)]
        self._pending.append(self._loop.submit(self._write(kind, key, values)))

    def _count(self, future: Future) -> bool:
        if future.exception() is not None:
            self.write_errors += 1
            log.warning("OPC UA write failed: %s", future.exception())
        return False

    async def _write(self, kind: str, key: str, values: dict[str, Any]) -> None:
        from asyncua import ua

        table = {"station": {**GATE_VARS, **FINAL_VARS, **COUNTER_VARS}, "camera": CAMERA_VARS}[kind]
        for name, value in values.items():
            vtype = table[name]
            value = _DEFAULTS[vtype] if value is None else value
            await self._nodes[(kind, key, name)].write_value(ua.Variant(value, getattr(ua.VariantType, vtype)))

    def flush(self, timeout: float = 5.0) -> None:
        for future in self._pending:
            try:
                future.result(timeout)
            except Exception:  # noqa: BLE001 - counted below
                pass
            self._count(future)
        self._pending = []

    def close(self) -> dict[str, Any]:
        self.flush()
        try:
            self._loop.call(self._server.stop(), timeout=10)
        finally:
            self._loop.close()
        return {"endpoint": self.endpoint, "security": self.security, "write_errors": self.write_errors}


class OpcUaWriter:
    """Writes each decision into node ids of another OPC UA server (a PLC's), from its own thread."""

    def __init__(self, endpoint: str, nodes: dict[str, dict[str, str]], *, username: str | None = None,
                 password: str | None = None, security: str = "none", certificate: Any = None,
                 private_key: Any = None, timeout_s: float = 5.0, backoff_s: tuple[float, float] = (0.5, 10.0)):
        try:
            import asyncua  # noqa: F401
        except ImportError:
            raise ConfigError("the OPC UA client output needs asyncua: pip install 'edgesentry[line]'") from None
        self.endpoint, self.nodes, self.timeout_s, self.backoff_s = endpoint, nodes, timeout_s, backoff_s
        self._auth = (username, password)
        self._security = (security, certificate, private_key)
        self._loop = _LoopThread("edgesentry-line-opcua-client")
        self._queue: asyncio.Queue | None = None
        self.written = self.errors = 0
        self._client: Any = None
        self._task = self._loop.submit(self._run())

    async def _connect(self) -> Any:
        from asyncua import Client

        client = Client(self.endpoint, timeout=self.timeout_s)
        username, password = self._auth
        if username is not None:
            client.set_user(username)
            client.set_password(password or "")
        policy, cert, key = self._security
        if policy != "none":
            await client.set_security_string(f"{policy.split('_')[0]},{policy.split('_', 1)[1]},{cert},{key}")
        await client.connect()
        return client

    async def _run(self) -> None:
        from asyncua import ua

        self._queue = asyncio.Queue()
        failures = 0
        while True:
            item = await self._queue.get()
            if item is None:
                break
            station, values = item
            while True:
                try:
                    if self._client is None:
                        self._client = await self._connect()
                    for name, value in values.items():
                        node_id = self.nodes.get(station, {}).get(name)
                        if node_id is None:
                            continue
                        node = self._client.get_node(node_id)
                        vtype = await node.read_data_type_as_variant_type()
                        await node.write_value(ua.DataValue(ua.Variant(value, vtype)))
                    self.written += 1
                    failures = 0
                    break
                except Exception as exc:  # noqa: BLE001 - the PLC went away: reconnect, retry with backoff
                    failures += 1
                    await self._disconnect()
                    if failures > 3:
                        self.errors += 1
                        log.warning("OPC UA client %s: decision of station %s not written: %s", self.endpoint,
                                    station, exc)
                        break
                    first, longest = self.backoff_s
                    await asyncio.sleep(min(longest, first * 2 ** (failures - 1)))

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.disconnect()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def write(self, station: str, values: dict[str, Any]) -> None:
        while self._queue is None:
            threading.Event().wait(0.01)
        self._loop.loop.call_soon_threadsafe(self._queue.put_nowait, (station, values))

    def close(self, timeout_s: float = 10.0) -> dict[str, Any]:
        if self._queue is not None:
            self._loop.loop.call_soon_threadsafe(self._queue.put_nowait, None)
        try:
            self._task.result(timeout_s)
        except Exception:  # noqa: BLE001 - reported through the counters
            self._task.cancel()
        try:
            self._loop.call(self._disconnect(), timeout=5)
        finally:
            self._loop.close()
        return {"endpoint": self.endpoint, "written": self.written, "errors": self.errors}
