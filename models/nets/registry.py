"""Networks by name, so checkpoints and configs can say which one to build (``{"name": ..., "kwargs": ...}``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from mrdserve.models.nets.baselines import UNetBaseline, ZeroFilled
from mrdserve.models.nets.cascade import CascadeNet
from mrdserve.models.nets.deq import DEQ
from mrdserve.models.nets.irim import IRIM
from mrdserve.models.nets.kiki import KIKINet
from mrdserve.models.nets.learnlets import Learnlets
from mrdserve.models.nets.ncpdnet import NCPDNet
from mrdserve.models.nets.pdnet import PDNet
from mrdserve.models.nets.rim import RIM
from mrdserve.models.nets.score import ScoreNet
from mrdserve.models.nets.xpdnet import XPDNet

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "xpdnet": XPDNet,
    "ncpdnet": NCPDNet,
    "pdnet": PDNet,
    "unet": UNetBaseline,
    "zero-filled": ZeroFilled,
    "rim": RIM,
    "irim": IRIM,
    "deq": DEQ,
    "cascadenet": CascadeNet,
    "kikinet": KIKINet,
    "learnlets": Learnlets,
    "score": ScoreNet,
}


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the network registered as ``name`` with keyword arguments ``kwargs``."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known networks: {', '.join(sorted(NETWORKS))}")
    try:
        return NETWORKS[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for network {name!r}: {exc}") from exc
