# %% [markdown]
# # jaxmu in a notebook: run, tune and compare unlearning methods — a built-in and your own
#
# This file is a notebook in the percent format (`# %%` cells): open it with Jupyter (jupytext),
# VS Code or Spyder, or run it as a script — `python examples/notebook.py` — which is what CI does
# (`tests/test_examples.py`, about two minutes on 2 CPU cores). It uses the embedded digits data:
# no download.

# %%
import os

import jaxmu
import jaxmu.methods as M

OUT = os.environ.get("JAXMU_EXAMPLE_OUT", "runs")
exp = jaxmu.Experiment("digits_mlp_half", seeds=3, out=OUT, progress=False,
                       overrides=["train.epochs=5", "tune.seeds=[0]", "tune.batch=4"])
exp.references()          # original and retrained stacks: trained once, then loaded from disk

# %% [markdown]
# ## A built-in method over a grid: one compiled program for the four values of α

# %%
grid = exp.unlearn("ng_plus", alpha=[0.80, 0.90, 0.95, 0.99])
print(grid.table(["forget_acc", "test_acc", "val_mia", "tow"]))

# %% [markdown]
# ## Your own method: gradient ascent on D_f with a retain-set anchor
#
# A method is an optax-style `init` / `update` pair and a `plan` (phases of passes over the
# forget / retain data); the driver runs it over the stack of seeds. Per epoch: one pass of
# gradient *ascent* on the forget set, then one pass of descent on the retain set weighted by α.

# %%
from typing import NamedTuple

from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import ce_step
from jaxmu.methods.plan import Pass, Phase


class State(NamedTuple):
    train: TrainState


def init(params, batch_stats, hp, key, ctx, data):
    return State(TrainState.create(params, batch_stats, hp))


def update(state, batch, hp, key, ctx, *, phase):
    sign = -1.0 if phase == "ascend" else hp["alpha"]
    return State(ce_step(ctx, batch.data, state.train, batch.indices, key, sign=sign)), {}


def plan(ctx):
    e, b = ctx.static["epochs"], ctx.static["batch_size"]
    return (Phase("unlearn", e, count="epochs",
                  passes=(Pass("ascend", "forget", b), Pass("anchor", "retain", b, key=(1,)))),)


GA_ANCHOR = M.MethodSpec(
    name="ga_anchor", init=init, update=update, plan=plan, doc="gradient ascent with a retain anchor",
    defaults={"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "momentum": 0.9,
              "weight_decay": 5e-4, "alpha": 1.0},
    search_space={**M.generic_space(), "alpha": M.Float(0.0, 2.0)},
    static=frozenset({"epochs", "batch_size"}), ragged=frozenset({"epochs"}),
    domains={**M.generic_domains(), "alpha": M.Interval(0.0, 10.0, why="the retain anchor's weight")})
M.register(GA_ANCHOR, replace=True)   # replace=True: re-running the cell re-registers

# %% [markdown]
# The contract suite the 18 built-ins pass: vmap over models equals a loop, the same key gives the
# same result, no retrace for new hyperparameter values, finite outputs, domains enforced.

# %%
from jaxmu.testing import check_method

check_method(M.METHODS["ga_anchor"])
print("ga_anchor passes the method contract")

# %% [markdown]
# ## Tune both the same way (NSGA-III, the study's objectives) and compare them

# %%
TRIALS = int(os.environ.get("JAXMU_EXAMPLE_TRIALS", "8"))
mine = exp.tune("ga_anchor", trials=TRIALS)
ng = exp.tune("ng_plus", trials=TRIALS)

from jaxmu.results_table import ResultTable

both = ResultTable(ng.results.rows + [r for r in mine.results.rows if r["stack"] not in ("retrain", "original")],
                   title="tuned ga_anchor vs tuned ng_plus, beside retrain and original")
print(both.table(["forget_acc", "test_acc", "val_mia", "retdev", "tow"]))

# %%
fig = both.plot(["forget_acc", "test_acc", "val_mia", "tow"])
fig.savefig(os.path.join(OUT, "ga_anchor_vs_ng_plus.png"), dpi=110)
both.to_csv(os.path.join(OUT, "ga_anchor_vs_ng_plus.csv"))
print(f"plot and table: {os.path.join(OUT, 'ga_anchor_vs_ng_plus.png')}")
