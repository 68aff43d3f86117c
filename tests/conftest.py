pytest_plugins = ["fixtures.pytest_plugin", "tests.db_plugin"]
