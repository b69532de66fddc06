"""Random network inputs in the Cartesian layout (k-space, mask, sensitivities) shared by the network tests."""

import torch


def random_inputs(batch: int, n_coils: int, shape: tuple[int, int], seed: int = 0,
                  normalise_maps: bool = False) -> tuple[torch.Tensor, ...]:
    """k-space ``[B, C, ky, kx, 2]`` masked by random lines, the mask ``[B, 1, ky, kx]`` and random maps;
    ``normalise_maps`` scales the maps to unit root-sum-of-squares so that ||A|| <= 1."""
    g = torch.Generator().manual_seed(seed)
    kspace = torch.randn(batch, n_coils, *shape, 2, generator=g)
    smaps = torch.randn(batch, n_coils, *shape, 2, generator=g)
    if normalise_maps:
        smaps = smaps / smaps.square().sum(dim=(1, 4), keepdim=True).sqrt()
    lines = torch.rand(batch, 1, shape[0], 1, generator=g) < 0.4
    mask = lines.expand(batch, 1, *shape).float()
    return kspace * mask[..., None], mask, smaps
