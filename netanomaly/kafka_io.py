"""Small Kafka client helpers (kafka-python): topic creation, JSON produce, bounded consume."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from netanomaly.exceptions import InfraError


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 1, timeout_s: float = 30.0) -> None:
    """Create the topics that do not exist yet (replication factor 1) and wait until they do."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    wanted = sorted(set(topics))
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="netanomaly-admin", request_timeout_ms=10000)
    except KafkaError as e:
        raise InfraError(f"cannot reach Kafka at {bootstrap} ({e}); is it running? try `netanomaly kafka start`") from e
    try:
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        if missing:
            try:
                admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
            except TopicAlreadyExistsError:
                pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if set(wanted) <= set(admin.list_topics()):
                return
            time.sleep(0.2)
        raise InfraError(f"topics {missing} were not created within {timeout_s:.0f} s")
    finally:
        admin.close()


def json_producer(bootstrap: str, **kwargs: Any):
    """A producer of JSON values with optional string keys; non-finite floats are written as NaN."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        value_serializer=lambda v: v if isinstance(v, bytes) else json.dumps(v).encode(),
        key_serializer=lambda k: None if k is None else k.encode(),
        linger_ms=kwargs.pop("linger_ms", 20),
        batch_size=kwargs.pop("batch_size", 256 * 1024),
        acks=kwargs.pop("acks", "all"),
        **kwargs,
    )


def consume(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Any]], bool],
    timeout_s: float,
    decode_json: bool = True,
) -> list[Any]:
    """Read ``topic`` from the beginning until ``until(records)`` holds or ``timeout_s`` passes.

    Returns the records read so far either way; the caller asserts on them.
    """
    from kafka import KafkaConsumer

    ensure_topics(bootstrap, [topic])  # subscribing to a topic that does not exist yet would not see it for minutes
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(json.loads(m.value) if decode_json else m.value for m in batch)
            if until(records):
                break
    finally:
        consumer.close()
    return records


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0, decode_json: bool = True) -> list[Any]:
    """Every record now in ``topic`` (all partitions, from the beginning up to the current end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise InfraError(f"reading {topic} did not reach its end offsets within {timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(json.loads(m.value) if decode_json else m.value for m in batch)
        return records
    finally:
        consumer.close()
