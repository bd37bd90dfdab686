pytest_plugins = ["fixtures.redis"]
