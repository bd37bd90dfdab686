"""The web dashboard: see and steer the queues, as the people on call are allowed to.

An aiohttp application of server-rendered pages (jinja2 templates, inline SVG graphs drawn
here, a vendored htmx for refreshing parts of a page: no JavaScript build). It reads and acts
through the layers below it (:class:`~kubetasks.queue.inspector.Inspector` and
:class:`~kubetasks.queue.broker.Broker` for Redis, :mod:`kubetasks.k8s` for the resources
and for the reviews that decide, with Kubernetes RBAC, what each user may see and do).
"""
