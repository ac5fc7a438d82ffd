"""SRL — successive random relabelling (``docs/methods.md`` §4.3).

Reference: ``munl/unlearning/successive_random_labels.py`` -> ``salun.py: RandomRelabel`` with no
mask (the "RL" baseline of Fan et al., SalUn, arXiv 2310.12508, ``Unlearn-Saliency/.../RL.py``);
relabelling in ``munl/datasets/common.py: RandomRelabelDataset``.

Update rule, for E epochs over the shuffled concatenation (relabelled D_f, then D_r), batch B,
train mode:

    theta <- SGD(lr, mu, wd).step(theta, grad CE(f_theta(x), y~)),
    y~ = r(x) for forget examples (a uniformly drawn label), y for retain examples.

No schedule: the reference configures a cosine scheduler but never steps it.

Quirk flag (``docs/methods.md`` §5 #9), see ``jaxmu.methods.relabel``:
  ``relabel="sequence"`` (faithful): one label sequence drawn once; in each epoch the k-th forget
  example reached by that epoch's permutation gets its k-th label. ``"independent"`` (clean):
  fresh draw per (epoch, example). Both may draw the true label (probability 1/C).

Defaults: E 5, B 256, lr 0.1, mu 0.9, wd 5e-4. Search: G. Every architecture (train mode).
Known discrepancy: the reference's access-ordered generator is emulated structurally, not
bit-for-bit (§2.3); with DataLoader workers the reference's access order could differ.

Structure: state, init, update and the phase are ``jaxmu.methods.relabel``'s (shared with SalUn):
one phase on ``fold_in(key, 1)`` whose epoch-start hook draws the epoch's labels (the label
sequence comes from ``key`` itself), then a shuffled pass over the combined stream.
"""

from __future__ import annotations

from jaxmu.methods import relabel
from jaxmu.methods._base import MethodSpec, OneOf, StaticContext, generic_domains, generic_space
from jaxmu.methods.plan import Plan


def plan(ctx: StaticContext) -> Plan:
    """E epochs of relabelled SGD over the combined stream (``relabel.relabel_phase``)."""
    return (relabel.relabel_phase(ctx),)


SPEC = MethodSpec(
    name="random_relabel", init=relabel.init, update=relabel.update, plan=plan,
    defaults={"epochs": 5, "batch_size": 256, "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
              "relabel": "sequence"},
    search_space=generic_space(),
    static=frozenset({"epochs", "batch_size", "relabel"}),
    ragged=frozenset({"epochs"}),
    domains={**generic_domains(), "relabel": OneOf(relabel.RELABEL_MODES, "how D_f is relabelled")},
    doc="SGD on randomly relabelled D_f mixed with D_r (no schedule)",
)
