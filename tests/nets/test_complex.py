import torch

from mrdserve.models.nets.complex import (
    channels_to_complex,
    complex_to_channels,
    complex_to_real,
    magnitude,
    real_to_complex,
)


def test_round_trips_and_magnitude():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.complex64)
    assert torch.equal(real_to_complex(complex_to_real(x)), x)
    assert torch.equal(complex_to_real(x), torch.view_as_real(x))
    channels = complex_to_channels(x)
    assert channels.shape == (2, 6, 4, 5) and not channels.is_complex()
    assert torch.equal(channels[:, :3], x.real) and torch.equal(channels[:, 3:], x.imag)
    assert torch.equal(channels_to_complex(channels), x)
    assert torch.allclose(magnitude(x), x.abs(), atol=1e-6)


def test_magnitude_has_finite_gradients_where_the_image_is_zero():
    """A SENSE image is exactly 0 outside the sensitivities: sqrt's derivative there must not make NaN."""
    image = torch.zeros(1, 1, 2, 2, dtype=torch.complex64, requires_grad=True)
    with torch.no_grad():
        image[0, 0, 0, 0] = 3 + 4j
    magnitude(image).sum().backward()
    assert torch.isfinite(torch.view_as_real(image.grad)).all()
    assert magnitude(image.detach())[0, 0, 0, 0].item() == 5.0
    assert torch.equal(magnitude(image.detach()), image.detach().abs())
