"""Outputs of the line runtime beyond ``edgesentry.stream``'s sinks: webhooks with a spool on disk,
the OPC UA server and the OPC UA client writer. The JSON Lines audit log and MQTT reuse
``edgesentry.stream.sinks`` (``JsonlSink(key="part")``, ``MqttSink``)."""

from __future__ import annotations

from edgesentry.line.outputs.webhook import WebhookSink, read_token

__all__ = ["WebhookSink", "read_token"]
