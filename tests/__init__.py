import pytest

# The helper modules assert too: have pytest explain their failures as it does a test's.
# Registered here, before any of them is imported.
pytest.register_assert_rewrite("tests.processes", "tests.web", "tests.mirror.helpers", "tests.deploy.units")
