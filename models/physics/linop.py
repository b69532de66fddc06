"""Linear operators that compose and adjoint, so reconstruction code reads like the maths (``A.H @ W @ A``).

A ``LinearOperator`` maps tensors of ``domain_shape`` to tensors of ``range_shape``. Subclasses define
``forward`` and ``adjoint``; ``normal`` is ``adjoint(forward(x))`` unless a subclass has a faster form of the
same map; ``op.H`` is the adjoint as an operator; ``A @ B`` composes two operators and ``A @ x`` applies A to a
tensor. A shape is a tuple whose entries are fixed sizes (int) or named free sizes (str, e.g. ``"B"``); a
leading ``"..."`` stands for any number of leading dimensions. ``Weighting`` is the diagonal operator on the
trailing (sample) axis that density compensation uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

Shape = tuple[int | str, ...]
ANY_LEADING = "..."


def format_shape(shape: Shape) -> str:
    """``("B", 4, 16)`` -> ``"[B, 4, 16]"``."""
    return "[" + ", ".join(str(size) for size in shape) + "]"


def _split_leading(shape: Shape) -> tuple[bool, Shape]:
    if shape and shape[0] == ANY_LEADING:
        return True, shape[1:]
    return False, shape


def shape_matches(actual: tuple[int, ...], expected: Shape) -> bool:
    """True when a concrete ``actual`` shape fits ``expected`` (free sizes match anything)."""
    any_leading, tail = _split_leading(expected)
    if len(actual) != len(tail) and not (any_leading and len(actual) >= len(tail)):
        return False
    trailing = actual[len(actual) - len(tail):]
    return all(isinstance(want, str) or got == want for got, want in zip(trailing, tail, strict=True))


def shapes_compatible(first: Shape, second: Shape) -> bool:
    """True when some concrete shape fits both ``first`` and ``second``."""
    first_leading, first_tail = _split_leading(first)
    second_leading, second_tail = _split_leading(second)
    if len(first_tail) != len(second_tail):
        shorter_is_open = (first_leading and len(first_tail) < len(second_tail)) or \
                          (second_leading and len(second_tail) < len(first_tail))
        if not shorter_is_open:
            return False
    n = min(len(first_tail), len(second_tail))
    pairs = zip(first_tail[len(first_tail) - n:], second_tail[len(second_tail) - n:], strict=True)
    return all(isinstance(a, str) or isinstance(b, str) or a == b for a, b in pairs)


def check_complex(name: str, x: object) -> None:
    """TypeError naming ``name`` unless ``x`` is a complex tensor."""
    if not isinstance(x, torch.Tensor) or not torch.is_complex(x):
        raise TypeError(f"{name} must be a complex tensor, got {getattr(x, 'dtype', type(x))}")


def check_shape(name: str, x: torch.Tensor, expected: Shape) -> None:
    """ValueError naming ``name`` and the expected shape unless ``x`` fits ``expected``."""
    if not shape_matches(tuple(x.shape), expected):
        raise ValueError(f"{name} must be {format_shape(expected)}, got {tuple(x.shape)}")


class LinearOperator(ABC):
    """A linear map with its adjoint: ``forward``, ``adjoint``, ``normal``, ``.H`` and composition by ``@``."""

    @property
    @abstractmethod
    def domain_shape(self) -> Shape:
        """Shape of the tensors ``forward`` takes."""

    @property
    @abstractmethod
    def range_shape(self) -> Shape:
        """Shape of the tensors ``forward`` returns (and ``adjoint`` takes)."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A x."""

    @abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^H y."""

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x (subclasses may override it with a faster form of the same map)."""
        return self.adjoint(self.forward(x))

    @property
    def H(self) -> LinearOperator:
        """The adjoint A^H as an operator."""
        return AdjointOperator(self)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def __matmul__(self, other: LinearOperator | torch.Tensor) -> LinearOperator | torch.Tensor:
        """``A @ B`` composes (B first); ``A @ x`` applies A to the tensor x."""
        if isinstance(other, LinearOperator):
            return ComposedOperator(self, other)
        if isinstance(other, torch.Tensor):
            return self.forward(other)
        return NotImplemented

    def check_domain(self, x: torch.Tensor, name: str = "x") -> None:
        """ValueError naming the expected shape unless ``x`` lies in the domain."""
        check_shape(name, x, self.domain_shape)

    def check_range(self, y: torch.Tensor, name: str = "y") -> None:
        """ValueError naming the expected shape unless ``y`` lies in the range."""
        check_shape(name, y, self.range_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({format_shape(self.domain_shape)} -> {format_shape(self.range_shape)})"


class AdjointOperator(LinearOperator):
    """A^H of an operator A: forward is A's adjoint and adjoint is A's forward; ``.H`` gives A back."""

    def __init__(self, operator: LinearOperator) -> None:
        self.operator = operator

    @property
    def domain_shape(self) -> Shape:
        return self.operator.range_shape

    @property
    def range_shape(self) -> Shape:
        return self.operator.domain_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.forward(y)

    @property
    def H(self) -> LinearOperator:
        return self.operator

    def __repr__(self) -> str:
        return f"{self.operator!r}.H"


class ComposedOperator(LinearOperator):
    """``outer @ inner``: x -> outer(inner(x)); the adjoint runs the adjoints in reverse order."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        if not shapes_compatible(outer.domain_shape, inner.range_shape):
            raise ValueError(f"cannot compose {outer!r} @ {inner!r}: the outer operator takes "
                             f"{format_shape(outer.domain_shape)} but the inner one gives "
                             f"{format_shape(inner.range_shape)}")
        self.outer = outer
        self.inner = inner

    @property
    def domain_shape(self) -> Shape:
        return self.inner.domain_shape

    @property
    def range_shape(self) -> Shape:
        return self.outer.range_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))

    def __repr__(self) -> str:
        return f"({self.outer!r} @ {self.inner!r})"


class Identity(LinearOperator):
    """I on tensors of ``shape`` (returns its input unchanged)."""

    def __init__(self, shape: Shape = (ANY_LEADING,)) -> None:
        self.shape = shape

    @property
    def domain_shape(self) -> Shape:
        return self.shape

    @property
    def range_shape(self) -> Shape:
        return self.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x)
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self.check_range(y)
        return y


class Weighting(LinearOperator):
    """Diagonal operator W = diag(weights) on the trailing axis (e.g. density compensation on the samples).

    Real weights are cast to the data's real dtype, so complex64 data stay complex64; the adjoint multiplies by
    the conjugate weights (the same weights when they are real).
    """

    def __init__(self, weights: torch.Tensor, name: str = "weights") -> None:
        if weights.dim() != 1:
            raise ValueError(f"{name} must be one-dimensional (one weight per sample), got {tuple(weights.shape)}")
        self.weights = weights
        self.name = name

    @property
    def n_samples(self) -> int:
        return int(self.weights.shape[0])

    @property
    def domain_shape(self) -> Shape:
        return (ANY_LEADING, self.n_samples)

    @property
    def range_shape(self) -> Shape:
        return self.domain_shape

    def _multiply(self, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        dtype = y.dtype if weights.is_complex() else y.real.dtype
        return y * weights.to(device=y.device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x, "data")
        return self._multiply(x, self.weights)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self.check_range(y, "data")
        return self._multiply(y, self.weights.conj() if self.weights.is_complex() else self.weights)

    def __repr__(self) -> str:
        return f"Weighting({self.name}, {self.n_samples} samples)"
