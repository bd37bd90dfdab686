"""One queue-name rule: the CRDs carry it, the broker checks it before it writes anything,
and a bad name that reached the queue registry anyway is dropped there, not tripped over."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from fixtures.redis import dump
from kubetasks.errors import InvalidQueueError
from kubetasks.queue import Broker, TaskMessage, keys
from kubetasks.queuename import MAX_QUEUE_NAME, QUEUE_NAME_PATTERN, is_queue_name

CRDS = Path(__file__).parents[2] / "crds"
NAMES = ["default", "a", "emails.high", "batch_2", "x" * 63, "Default", "x" * 64, "-a", "a-",
         "my queue!", "", "a:b", "{a}", "ü"]  # fmt: skip


def _queue_schemas() -> list[dict[str, Any]]:
    """Every schema of a queue name in the generated CRDs."""
    found: list[dict[str, Any]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if path.endswith((".queue", ".queues.items.name")) and node.get("type") == "string":
                found.append(node)
            for key, value in node.items():
                walk(value, f"{path}.{key}" if key != "properties" else path)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    for crd in sorted(CRDS.glob("*.yaml")):
        walk(yaml.safe_load(crd.read_text()), "")
    return found


def test_the_crds_carry_the_brokers_rule() -> None:
    schemas = _queue_schemas()
    # Task.spec.queue, PeriodicTask.spec.taskTemplate.spec.queue, WorkerPool.spec.queues[].name,
    # TaskSet.spec.template.spec.queue
    assert len(schemas) == 4, schemas
    for schema in schemas:
        assert (schema["pattern"], schema["maxLength"]) == (QUEUE_NAME_PATTERN, MAX_QUEUE_NAME)
        for name in NAMES:
            allowed = len(name) <= schema["maxLength"] and bool(re.match(schema["pattern"], name))
            assert allowed == is_queue_name(name), name


def test_a_message_for_an_invalid_queue_cannot_be_built() -> None:
    with pytest.raises(InvalidQueueError, match="'Default'"):
        TaskMessage(id="t1", handler="h", queue="Default")


async def test_enqueue_checks_every_queue_before_writing_anything(
    broker: Broker, raw: aioredis.Redis
) -> None:
    good = TaskMessage(id="t1", handler="h", queue="default")
    bad = TaskMessage(id="t2", handler="h", queue="default")
    # As a message built by code that skipped the check: the broker is the last guard.
    object.__setattr__(bad, "queue", "Default")
    with pytest.raises(InvalidQueueError, match="'Default'"):
        await broker.enqueue([good, bad])
    assert await dump(raw) == {}  # not even the registry, nor the valid message's queue
    await broker.enqueue([good])
    assert await raw.smembers(keys.QUEUES) == {"default/default"}


async def test_invalid_names_in_the_registry_are_dropped_not_served(
    broker: Broker, raw: aioredis.Redis
) -> None:
    # What older versions left behind: a queue registered before its name was checked, and
    # bare names of the layout before queues had namespaces.
    await raw.sadd(
        keys.QUEUES, "default/Default", "default/default", "default/my queue!", "Team/x",
        "default", "default/emails", "team-b/emails",
    )  # fmt: skip
    assert await broker.queues() == ["default", "emails"]
    assert await broker.all_queues() == [
        ("default", "default"), ("default", "emails"), ("team-b", "emails")
    ]  # fmt: skip
    assert await raw.smembers(keys.QUEUES) == {
        "default/default", "default/emails", "team-b/emails"
    }  # fmt: skip
    assert broker.evicted_queues == 4
    assert await broker.in_namespace("team-b").queues() == ["emails"]
    assert broker.evicted_queues == 4
