import pytest

from mrdserve.models.nets.ncpdnet import NCPDNet
from mrdserve.models.nets.registry import NETWORKS, build_network


def test_build_by_name_with_kwargs():
    net = build_network("ncpdnet", n_iter=2, n_primal=2)
    assert isinstance(net, NCPDNet) and len(list(net.parameters())) > 0
    assert {"xpdnet", "ncpdnet", "pdnet", "unet", "zero-filled"} <= set(NETWORKS)


def test_unknown_name_and_bad_kwargs_are_named():
    with pytest.raises(ValueError, match="unknown network 'nope'"):
        build_network("nope")
    with pytest.raises(ValueError, match="bad arguments for network 'ncpdnet'"):
        build_network("ncpdnet", n_layers=3)
