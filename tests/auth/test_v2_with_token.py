"""The v2 infer route with auth on, through the real tritonclient: a valid token passes, others do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.auth.conftest import AUDIENCE, FakeProvider
from tests.servers import ready_server


def test_tritonclient_with_a_bearer_token(
    provider: FakeProvider, classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    app = create_app(Settings(oauth2_issuer=provider.issuer, oauth2_audience=AUDIENCE), classifier)
    with ready_server(app) as base_url:
        client = triton.InferenceServerClient(url=base_url.removeprefix("http://"))
        images = triton.InferInput("image", [1], "BYTES")
        images.set_data_from_numpy(np.array([sample_files["Dog"].read_bytes()], dtype=np.object_))
        result = client.infer(
            "cats-dogs-other", [images], headers={"Authorization": f"Bearer {provider.token()}"}
        )
        assert [x.decode() for x in result.as_numpy("label")] == ["Dog"]
        for token, status in ((provider.token(scope="other"), "403"), ("garbage", "401")):
            with pytest.raises(InferenceServerException) as refused:
                client.infer("cats-dogs-other", [images], headers={"Authorization": f"Bearer {token}"})
            assert refused.value.status() == status
        client.close()
