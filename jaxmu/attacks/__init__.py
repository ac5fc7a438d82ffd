"""Attacks and privacy metrics: a JAX half (per-example statistics of stacked models) and a
NumPy half (host-side statistics), docs/architecture.md#layers, docs/protocol.md §6.2, §8, §9.

Modules:
  population_mia  Deep Unlearn's loss-based population MIA (§6.2), exact reference replay;
                  one model with scikit-learn, or a whole stack vectorized.
  logistic        batched one-feature logistic regression: scikit-learn's lbfgs fit replayed,
                  and the exact optimum.
  neurips_score   NeurIPS 2023 challenge ε and forgetting score (§9), exact reference replay.
  lira            φ (JAX), per-example Gaussian fits and LiRA scores (§8.2, §8.3).
  crossfit        hold-out folds over models: no in-sample scoring (§8.3 item 8).
  ulira           Hayes-style and Deep-Unlearn-style U-LiRA (§8.3 items 5, 9).
  ulira_study     the study's own U-LiRA variant on 0/1 correctness (§8.1).
  klom            KLOM: KL divergence of margins to oracle retrains (Georgiev et al. 2024).
  roc             ROC, AUC, balanced accuracy, TPR at FPR, bootstrap intervals.
"""

from jaxmu.attacks.crossfit import (
    CrossFitScores,
    cross_fitted_scores,
    holdout_folds,
    leave_one_out_folds,
)
from jaxmu.attacks.klom import klom, klom_summary
from jaxmu.attacks.lira import (
    GaussianFit,
    choose_fixed_variance,
    fit_gaussians,
    gaussian_logpdf,
    lira_offline_score,
    lira_online_score,
    logit_scaled_confidence,
)
from jaxmu.attacks.neurips_score import (
    ForgetScore,
    bucket_points,
    final_score,
    forget_score,
    logit_scaled_confidence_reference,
    neurips_forget_score,
    per_example_epsilon,
)
from jaxmu.attacks.population_mia import (
    model_mias,
    model_mias_stacked,
    population_mia,
    population_mia_stacked,
)
from jaxmu.attacks.rmia import offline_marginal, rmia_scores, stack_rmia_auc, true_class_probability
from jaxmu.attacks.roc import (
    attack_summary,
    auc,
    balanced_accuracy,
    bootstrap_ci,
    roc_curve,
    tpr_at_fpr,
)
from jaxmu.attacks.ulira import (
    FORGOTTEN,
    NEVER_SEEN,
    RETAINED,
    ULiraResult,
    ulira_deepunlearn,
    ulira_hayes,
)
from jaxmu.attacks.ulira_study import StudyULiRA, ulira_study

__all__ = [
    "FORGOTTEN",
    "NEVER_SEEN",
    "RETAINED",
    "CrossFitScores",
    "ForgetScore",
    "StudyULiRA",
    "GaussianFit",
    "ULiraResult",
    "attack_summary",
    "auc",
    "balanced_accuracy",
    "bootstrap_ci",
    "bucket_points",
    "choose_fixed_variance",
    "cross_fitted_scores",
    "final_score",
    "fit_gaussians",
    "forget_score",
    "klom",
    "klom_summary",
    "offline_marginal",
    "rmia_scores",
    "stack_rmia_auc",
    "true_class_probability",
    "gaussian_logpdf",
    "holdout_folds",
    "leave_one_out_folds",
    "lira_offline_score",
    "lira_online_score",
    "logit_scaled_confidence",
    "logit_scaled_confidence_reference",
    "model_mias",
    "model_mias_stacked",
    "neurips_forget_score",
    "per_example_epsilon",
    "population_mia",
    "population_mia_stacked",
    "roc_curve",
    "tpr_at_fpr",
    "ulira_deepunlearn",
    "ulira_hayes",
    "ulira_study",
]
