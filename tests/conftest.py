pytest_plugins = [
    "fixtures.redis",
    "fixtures.controlplane",
    "fixtures.operator",
    "fixtures.proxy",
    "fixtures.realnode",
    "fixtures.dashboard",
]
