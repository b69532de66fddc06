"""Named spatial dimensions: ISMRMRD headers give (x, y, z), images and k-space are stored (z,) y, x."""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class SpatialDimension(NamedTuple, Generic[T]):
    """A size or field of view along the header's x (readout), y (phase) and z (partition/slice) axes."""

    x: T
    y: T
    z: T

    def image_shape(self, three_d: bool) -> tuple[T, ...]:
        """In array order: ``(y, x)`` for 2D, ``(z, y, x)`` for 3D data."""
        return (self.z, self.y, self.x) if three_d else (self.y, self.x)
