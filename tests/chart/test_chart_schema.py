"""Values the chart refuses, and the message a user gets.

values.schema.json encodes the invariants (one active operator unless peering priorities are
set, bundled xor external Redis, non-empty image tags, port ranges, no unknown keys); the
templates check what needs the release (namespace) or compares two numbers. Each case runs the
real `helm template` and asserts on its exit status and on the words of its error.
"""

from __future__ import annotations

import json

import pytest
from chart_helpers import CHART, helm, render, template_args

SCHEMA_ERROR = "values don't meet the specifications of the schema(s)"

REFUSED: dict[str, tuple[list[str], list[str]]] = {
    # name: (--set items, phrases the error must contain)
    "two operators without peering": (
        ["operator.replicas=2"],
        [SCHEMA_ERROR, "at '/operator/replicas': maximum: got 2, want 1",
         "at '/operator/peering/priority': got null, want integer"],
    ),
    "two operators with a peering name but no priority": (
        ["operator.replicas=3", "operator.peering.name=kt"],
        ["at '/operator/peering/priority': got null, want integer"],
    ),
    "neither bundled nor external Redis": (
        ["redis.enabled=false"],
        ["at '/redis/enabled': value must be true",
         "at '/redis/external/url': minLength: got 0, want 1"],
    ),
    "both bundled and external Redis": (
        ["redis.external.url=redis://elsewhere:6379/0"],
        ["at '/redis/external/url': maxLength", "at '/redis/enabled': value must be false"],
    ),
    "a Redis URL that is not redis:// or rediss://": (
        ["redis.enabled=false", "redis.external.url=http://redis:6379"],
        ["at '/redis/external/url'", "does not match pattern"],
    ),
    "a TLS CA with a plain redis:// URL": (
        ["redis.enabled=false", "redis.external.url=redis://r:6379/0",
         "redis.external.tls.caSecret=ca"],
        ["at '/redis/external/url': 'redis://r:6379/0' does not match pattern '^rediss://'"],
    ),
    "an empty operator image tag": (
        ["operator.image.tag="],
        ["at '/operator/image/tag': minLength: got 0, want 1"],
    ),
    "an empty worker image tag": (
        ["worker.image.tag="],
        ["at '/worker/image/tag': minLength: got 0, want 1"],
    ),
    "a malformed digest": (
        ["operator.image.digest=sha256:abc"],
        ["at '/operator/image/digest'", "does not match pattern"],
    ),
    "a metrics port out of range": (
        ["operator.metrics.port=70000"],
        ["at '/operator/metrics/port': maximum: got 70,000, want 65,535"],
    ),
    "a health port of zero": (
        ["operator.healthPort=0"],
        ["at '/operator/healthPort': minimum: got 0, want 1"],
    ),
    "a misspelt key": (
        ["operator.replica=1"],
        ["at '/operator': additional properties 'replica' not allowed"],
    ),
    "a watched namespace that is not a DNS label": (
        ["operator.watch.namespaces={Team_A}"],
        ["at '/operator/watch/namespaces/0'", "does not match pattern"],
    ),
    "all namespaces and a list of namespaces at once": (
        ["operator.watch.allNamespaces=true", "operator.watch.namespaces={kubetasks}"],
        [SCHEMA_ERROR, "at '/operator/watch/allNamespaces': value must be false",
         "at '/operator/watch/namespaces': maxItems: got 1, want 0"],
    ),
    "negative minReplicas": (
        ["workerPool.minReplicas=-1"],
        ["at '/workerPool/minReplicas': minimum: got -1, want 0"],
    ),
    "a queue weight of zero": (
        ["workerPool.queues[0].name=default", "workerPool.queues[0].weight=0"],
        ["at '/workerPool/queues/0/weight': minimum: got 0, want 1"],
    ),
    "both minAvailable and maxUnavailable": (
        ["operator.podDisruptionBudget.minAvailable=1"],
        ["at '/operator/podDisruptionBudget/maxUnavailable': got number, want null"],
    ),
    "an unknown appendfsync policy": (
        ["redis.appendfsync=sometimes"],
        ["at '/redis/appendfsync'"],
    ),
    # Checked by the templates (they need the release or compare two values):
    "minReplicas above maxReplicas": (
        ["workerPool.minReplicas=5", "workerPool.maxReplicas=2"],
        ["workerPool.minReplicas (5) must not exceed workerPool.maxReplicas (2)"],
    ),
    "the metrics and health ports equal": (
        ["operator.metrics.port=8080"],
        ["operator.metrics.port and operator.healthPort must differ (both are 8080)"],
    ),
    "a queue listed twice": (
        ["workerPool.queues[0].name=a", "workerPool.queues[1].name=a"],
        ['workerPool.queues lists queue "a" twice'],
    ),
    "the default pool in a namespace the operator does not watch": (
        ["operator.watch.namespaces={team-a}"],
        ['workerPool.create puts the default WorkerPool in namespace "kubetasks", which '
         'operator.watch.namespaces [team-a] does not include: add "kubetasks" to it, or set '
         "workerPool.create=false"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused(case: str) -> None:
    sets, phrases = REFUSED[case]
    result = helm(*template_args(sets=sets))
    assert result.returncode != 0, f"{case}: helm template accepted {sets}"
    for phrase in phrases:
        assert phrase in result.stderr, f"{case}: {phrase!r} not in:\n{result.stderr}"


def test_schema_can_be_bypassed_but_the_templates_still_refuse_two_operators() -> None:
    result = helm(*template_args(sets=["operator.replicas=2"]), "--skip-schema-validation")
    assert result.returncode != 0
    assert (
        "operator.replicas above 1 needs operator.peering.name and operator.peering.priority"
        in (result.stderr)
    )


def test_schema_can_be_bypassed_but_the_templates_still_refuse_two_watch_scopes() -> None:
    sets = ["operator.watch.allNamespaces=true", "operator.watch.namespaces={kubetasks,team-a}"]
    result = helm(*template_args(sets=sets), "--skip-schema-validation")
    assert result.returncode != 0
    assert (
        "operator.watch.allNamespaces and operator.watch.namespaces [kubetasks team-a] exclude "
        "each other" in result.stderr
    )


@pytest.mark.parametrize(
    "sets",
    [
        ["operator.replicas=2", "operator.peering.name=kt", "operator.peering.priority=10"],
        ["operator.replicas=0"],
        ["redis.enabled=false", "redis.external.url=rediss://r.example:6380/0",
         "redis.poolUsers.enabled=false"],
        ["operator.podDisruptionBudget.enabled=true", "operator.podDisruptionBudget.minAvailable=1",
         "operator.podDisruptionBudget.maxUnavailable=null"],
        ["operator.watch.namespaces={kubetasks,team-b}"],
        ["operator.watch.allNamespaces=true"],
        ["operator.watch.allNamespaces=true", "operator.watch.namespaces=null"],
        ["workerPool.minReplicas=3", "workerPool.maxReplicas=3"],
    ],
    ids=["peering", "paused", "external-tls-no-ca", "pdb-min", "namespaced", "all-namespaces",
         "all-namespaces-list-unset", "fixed-size-pool"],
)  # fmt: skip
def test_accepted(sets: list[str]) -> None:
    rendered = render(sets=sets)
    assert rendered.kinds("Deployment")


def test_schema_is_valid_json_with_descriptions_of_the_invariants() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    operator = schema["properties"]["operator"]
    assert "operator.replicas above 1 needs operator.peering.name" in operator["description"]
    assert "either the bundled Redis" in schema["properties"]["redis"]["description"]
