"""Text requests over MQTT (SPEC §2): `*_in` → the agent → one reply on the matching `*_out`.

Requests are queued (bounded) and answered by a few workers, so a flood of requests waits
its turn instead of starving device traffic, which ingest handles synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from deviceagentd.agent.runner import Agent, TurnRequest, apology, collect_reply
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.clock import Clock, iso_ms
from deviceagentd.core.errors import CoreError
from deviceagentd.core.metrics import Metrics
from deviceagentd.mqtt.codec import DecodeError, Encoding, content_type_of, decode, encode
from deviceagentd.mqtt.link import MqttLink
from deviceagentd.mqtt.rejects import RejectReporter
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates

log = logging.getLogger("deviceagentd.agent.mqtt")

BUSY_REPLY = "The gateway is busy answering other requests; please try again in a moment."


@dataclass(frozen=True)
class TextJob:
    kind: TopicKind
    product_id: str
    device_id: str
    prompt: str
    session_id: str
    metadata: dict[str, Any]
    request_id: str | int | None
    encoding: Encoding


def default_session_id(product_id: str, device_id: str) -> str:
    return f"session-default:{product_id}:{device_id}" if device_id else f"session-default:{product_id}"


class TextRequests:
    def __init__(self, agent: Agent, catalog: Catalog, link: MqttLink, topics: TopicTemplates, metrics: Metrics,
                 rejects: RejectReporter, clock: Clock, concurrency: int, queue_limit: int,
                 max_payload_bytes: int) -> None:
        self._agent = agent
        self._catalog = catalog
        self._link = link
        self._topics = topics
        self._metrics = metrics
        self._rejects = rejects
        self._clock = clock
        self._concurrency = concurrency
        self._queue: asyncio.Queue[TextJob] = asyncio.Queue(maxsize=queue_limit)
        self._max_payload = max_payload_bytes
        self._replied = metrics.messages_out.labels(kind="text_reply")

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, kind: TopicKind, product_id: str, device_id: str, payload: bytes,
               content_type: str | None) -> None:
        """Check and queue one request (called synchronously from ingest)."""
        who = f"{product_id}/{device_id}" if device_id else product_id
        try:
            job = self._parse(kind, product_id, device_id, payload, content_type)
        except _BadRequest as exc:
            self._rejects.reject("text_request", exc.reason, who, exc.detail)
            return
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._rejects.reject("text_request", "queue_full", who,
                                 f"{self._queue.maxsize} requests already waiting; answered busy")
            with contextlib.suppress(CoreError):
                self._link.publish_now(*self._reply(job, BUSY_REPLY))

    def _parse(self, kind: TopicKind, product_id: str, device_id: str, payload: bytes,
               content_type: str | None) -> TextJob:
        if product_id not in self._catalog:
            raise _BadRequest("unknown_product", f"product {product_id!r} is not configured on this gateway")
        try:
            body, encoding = decode(payload, content_type, self._max_payload)
        except DecodeError as exc:
            raise _BadRequest(exc.reason, exc.detail) from exc
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _BadRequest("missing_prompt", "a text request needs a non-empty string `prompt`")
        try:
            self._agent.check_message(prompt)
        except CoreError as exc:
            raise _BadRequest("bad_prompt", exc.message) from exc
        session_id = body.get("sessionId")
        if session_id is not None and (not isinstance(session_id, str) or not session_id or len(session_id) > 128):
            raise _BadRequest("bad_session_id", "sessionId must be a string of 1 to 128 characters")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise _BadRequest("bad_metadata", "metadata must be an object")
        request_id = body.get("requestId")
        if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
            raise _BadRequest("bad_request_id", "requestId must be a string or an integer")
        return TextJob(kind, product_id, device_id, prompt, session_id or default_session_id(product_id, device_id),
                       metadata or {}, request_id, encoding)

    async def run(self) -> None:
        """Answer queued requests with `concurrency` workers until cancelled."""
        workers = [asyncio.create_task(self._work(), name=f"text-request-{i}") for i in range(self._concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._answer(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad turn must not kill the worker
                log.exception("text request on %s/%s failed", job.product_id, job.device_id)
            finally:
                self._queue.task_done()

    async def _answer(self, job: TextJob) -> None:
        request = TurnRequest(
            message=job.prompt,
            session_id=job.session_id,
            product_id=job.product_id if job.device_id else None,
            device_id=job.device_id or None,
            wait_if_busy=True,
        )
        try:
            _, text = await collect_reply(self._agent, request)
        except CoreError as exc:
            text = apology(job.prompt, exc.message)
        topic, payload, content_type = self._reply(job, text)
        try:
            await self._link.publish(topic, payload, qos=1, content_type=content_type)
            self._replied.inc()
        except CoreError as exc:
            log.warning("reply to %s not sent: %s", topic, exc.message)

    def _reply(self, job: TextJob, text: str) -> tuple[str, bytes, str]:
        now = iso_ms(self._clock.wall_ms())
        metadata: dict[str, Any] = {**job.metadata, "timestamp": now}
        if job.request_id is not None:
            metadata["requestId"] = job.request_id
        body: dict[str, Any] = {"sessionId": job.session_id, "text": text, "metadata": metadata, "timestamp": now}
        if job.request_id is not None:
            body["requestId"] = job.request_id
        out = TopicKind.DEVICE_OUT if job.kind is TopicKind.DEVICE_IN else TopicKind.PRODUCT_OUT
        topic = self._topics.format(out, job.product_id, job.device_id)
        return topic, encode(body, job.encoding), content_type_of(job.encoding)


class _BadRequest(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
