pytest_plugins = ["fixtures.redis", "fixtures.controlplane"]
