"""Schemathesis against the service's own OpenAPI document, over real HTTP: no 5xx, answers as documented."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.servers import ready_server

# The document the service publishes (building an app loads no model); cases run against a live server.
schema = schemathesis.openapi.from_dict(create_app(Settings(auth_disabled=True)).openapi())


@pytest.fixture(scope="module")
def base_url(classifier: ImageClassifier) -> Iterator[str]:
    app = create_app(Settings(auth_disabled=True), classifier)
    with ready_server(app) as url:
        yield url


@schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case: schemathesis.Case, base_url: str) -> None:
    # Every check but one: "schema-valid data is accepted" cannot hold for uploads, because bytes that
    # fit `format: binary` need not be an image, and those must get 415. No 5xx, documented statuses,
    # content types, headers and bodies are all still checked.
    case.call_and_validate(base_url=base_url, excluded_checks=[positive_data_acceptance])
