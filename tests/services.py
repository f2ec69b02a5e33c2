"""A stand-in service for the tests of the pytest plugin's generated projects: the registry-free default
image serving HTTP, started with testcontainers on ``dockertask_network`` under the alias ``web``."""

# A conftest: format(image=..., mark=...) (the mark labels the service, to find it after).
SERVICE_CONFTEST = """\
import pytest
from testcontainers.core.container import DockerContainer

@pytest.fixture(scope="session")
def web(dockertask_network):
    service = (DockerContainer("{image}").with_command("python3 -m http.server 8080")
               .with_kwargs(labels={{"dt-test-service": "{mark}"}})
               .with_network(dockertask_network).with_network_aliases("web"))
    service.start()
    yield "http://web:8080/"
    service.stop()
"""

# In a test module: get(url), the service's HTTP status once it answers.
GET = """\
import time, urllib.request

def get(url):
    for _ in range(50):
        try:
            return urllib.request.urlopen(url, timeout=2).status
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")
"""
