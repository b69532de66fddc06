"""Assertions shared by the gadget tests: images equal the engine's results, with the expected headers/meta."""

from __future__ import annotations

import numpy as np

from mrdserve.service.mrd.protocol import MessageId


def assert_images_match(messages, results, rtol=1e-5):
    """``messages``: what the gadget sent (images then CLOSE); ``results``: the engine's ReconResults."""
    assert [m.id for m in messages] == [MessageId.IMAGE] * len(results) + [MessageId.CLOSE]
    for number, (message, result) in enumerate(zip(messages, results, strict=False), start=1):
        image = message.value
        pixels = np.asarray(image.data, dtype=np.float32)[0, 0]
        assert pixels.shape == result.image.shape
        scale = float(np.abs(result.image).max())
        assert float(np.abs(pixels - result.image).max()) <= rtol * scale
        sample, head = result.sample, result.sample.reference_head
        assert image.image_index == number
        assert image.slice == sample.index.slice
        assert image.measurement_uid == head.measurement_uid
        np.testing.assert_allclose(image.position, head.position, rtol=1e-6)
        np.testing.assert_allclose(image.read_dir, sample.geometry.read_dir, rtol=1e-6)
        assert image.image_type == 1  # magnitude
        assert image.meta["DataRole"] == "Image"
        assert result.maker in image.meta["ImageComments"]
