"""Block layouts: the top-level parameter groups that block-wise methods select (CF-k, EU-k).

A ``BlockLayout`` names a model's stem (never trained by CF-k/EU-k), its ordered blocks and its
classifier, as top-level keys of the model's ``params`` tree; ``never`` lists groups that belong
to no block and stay frozen. The table of the built-in architectures and how methods use a
layout are in ``jaxmu.methods.layouts``; a researcher's model gives its own to
``jaxmu.models.register(..., layout=BlockLayout(...))``.

    >>> BlockLayout(stem=("conv1", "bn1"), blocks=(("conv2", "bn2"),), classifier="head")
"""

from __future__ import annotations

from typing import NamedTuple


class BlockLayout(NamedTuple):
    """Top-level parameter groups of an architecture (see the module docstring)."""

    stem: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]
    classifier: str
    never: tuple[str, ...] = ()

    def groups(self) -> set[str]:
        """Every top-level group the layout names."""
        return set(self.stem) | {g for b in self.blocks for g in b} | {self.classifier} | set(self.never)


BUILTIN_LAYOUTS: dict[str, BlockLayout] = {
    "resnet18": BlockLayout(("conv1", "bn1"), (("layer1",), ("layer2",), ("layer3",), ("layer4",)), "fc"),
    "tinyvit_11m": BlockLayout(("patch_embed", "layers_0"), (("layers_1",), ("layers_2",), ("layers_3",)),
                               "head", ("norm_head",)),
    "cnn": BlockLayout(("conv1", "bn1"), (("conv2", "bn2"),), "head"),
    "mlp": BlockLayout(("fc1",), (("fc2",),), "head"),
}
