import pytest

from hearthlm.cpu import physical_cores


@pytest.fixture(scope="session")
def threads():
    return physical_cores()
