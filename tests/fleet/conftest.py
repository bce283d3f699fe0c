"""Fixtures the fleet tests share; a module that needs another ring defines its own ``pilot``, which wins."""

import pytest

from fleet.services import enrollment, rings


@pytest.fixture
def pilot(make_group, make_package):
    """A ring that serves a package for linux/x86_64, older than the reports' 1.407.417.0 (so they are up to date)."""
    group = make_group("pilot", 10)
    rings.approve_package(group, make_package(definition="1.407.400.0"))
    return group


@pytest.fixture
def endpoint(pilot):
    """machine-1 enrolled in ``pilot``."""
    _, secret = enrollment.create_enrollment_secret(pilot, "lab")
    return enrollment.enroll(secret, "machine-1", "web-1", "linux", "x86_64")[0]
