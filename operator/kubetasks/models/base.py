"""What every kubetasks resource model shares: camelCase names, docstrings as descriptions.

The models are the single source of the CRDs (``kubetasks.crdgen`` writes ``crds/`` from
them), so a field's attribute docstring is what ``kubectl explain`` shows, its constraints are
what the API server enforces, and ``cel()`` attaches the cross-field rules the API server
checks with CEL.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from kubetasks.queuename import MAX_QUEUE_NAME, QUEUE_NAME_PATTERN

#: Longest name of an object (DNS subdomain, RFC 1123).
MAX_NAME = 253
#: A DNS-1123 label: lower case alphanumerics and '-', at most 63 characters.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS-1123 subdomain, the form of most Kubernetes object names.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A ``dependsOn`` entry: a Task name, or ``taskset/<name>`` for a TaskSet (a chord).
DEPENDENCY = r"^(taskset/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Queue names: the broker's own rule (``kubetasks.queuename``), so the API server refuses
#: at admission exactly what Redis keys and worker ``--queues`` flags would refuse later.
QUEUE_NAME = QUEUE_NAME_PATTERN
MAX_QUEUE = MAX_QUEUE_NAME


#: An RFC 3339 time, as Kubernetes writes them (``2026-11-23T10:00:00Z``).
Timestamp = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]


#: Labels: at most 64, values as Kubernetes allows them (63 characters).
Labels = dict[str, Annotated[str, Field(max_length=63)]]
#: Annotations: at most 64, values up to 4 KiB each.
Annotations = dict[str, Annotated[str, Field(max_length=4096)]]


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry: a CEL rule and the message shown when it fails."""
    return {"rule": rule, "message": message, **extra}


#: Marks a field that holds any JSON value, kept as is by the API server.
ANY_JSON: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}


class Model(BaseModel):
    """Base of every resource model: camelCase in the resource, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
    )

    #: CEL rules for the object as a whole (cross-field checks).
    rules: ClassVar[list[dict[str, str]]] = []

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.rules:
            target["x-kubernetes-validations"] = list(cls.rules)
        return schema


class Condition(Model):
    """One observation of the object's state, in the shape every Kubernetes controller uses."""

    type: str = Field(max_length=64)
    """Kind of condition (for a Task: Queued, Running, Succeeded, Failed)."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = Field(default="", max_length=128)
    """One CamelCase word saying why the condition last changed."""
    message: str = Field(default="", max_length=2048)
    """Human-readable details of the last change."""
    last_transition_time: Timestamp | None = None
    """When the condition last changed (RFC 3339)."""


CONDITIONS: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
