"""Random network inputs in the Cartesian layout (k-space, mask, sensitivities) shared by the network tests."""

import torch
from torch import nn

from mrdserve.models.data.coils import coil_sensitivities_2d
from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.physics.fft import fft2c
from mrdserve.models.physics.masks import EquispacedFractionMask
from mrdserve.models.physics.prepare_cartesian import CartesianInputs, prepare_cartesian


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


def prepared_example(shape: tuple[int, int] = (32, 32), n_coils: int = 4,
                     seed: int = 0) -> tuple[CartesianInputs, torch.Tensor]:
    """A 4x phantom acquisition, prepared, and its target magnitude in network units."""
    image = complex_phantom_2d(shape, seed=seed)
    maps = coil_sensitivities_2d(n_coils, shape, seed=seed)
    mask = EquispacedFractionMask([0.125], [4])(shape[0], seed=0).kspace_mask()
    prepared = prepare_cartesian(fft2c(maps * image), mask)
    return prepared, image.abs().unsqueeze(0) / prepared.scale.reshape(-1, 1, 1)


def fit_losses(model: nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor, steps: int,
               lr: float) -> list[float]:
    """Adam on the MSE between ``model(*inputs)`` and ``target``; the loss of every step."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(*inputs), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def single_coil_example() -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(kspace, mask) of a 32x32 single-coil phantom at R=4 as the preparation makes them, and the target image."""
    image = complex_phantom_2d((32, 32), seed=0)
    mask = EquispacedFractionMask([0.125], [4])(32, seed=0).kspace_mask()
    prepared = prepare_cartesian(fft2c(image).unsqueeze(0), mask)
    return prepared.to_network_inputs(with_smaps=False), image.abs().unsqueeze(0) / prepared.scale.reshape(-1, 1, 1)
