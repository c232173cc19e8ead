"""Publishing commands to devices in the encoding each device last used."""

from __future__ import annotations

from typing import Any

from deviceagentd.core.metrics import Metrics
from deviceagentd.mqtt.codec import Encoding, content_type_of, encode
from deviceagentd.mqtt.link import MqttLink
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates


class MqttCommandPublisher:
    def __init__(self, link: MqttLink, topics: TopicTemplates, metrics: Metrics) -> None:
        self._link = link
        self._topics = topics
        self._metrics = metrics

    @property
    def is_connected(self) -> bool:
        return self._link.is_connected

    async def publish_command(self, product_id: str, device_id: str, body: dict[str, Any], encoding: str) -> None:
        kind: Encoding = "cbor" if encoding == "cbor" else "json"
        topic = self._topics.format(TopicKind.COMMAND, product_id, device_id)
        await self._link.publish(topic, encode(body, kind), qos=1, content_type=content_type_of(kind))
        self._metrics.messages_out.inc({"kind": "command"})
