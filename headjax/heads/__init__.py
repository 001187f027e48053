"""Head activation scores and pattern analyses, each a pure function on arrays."""

from headjax.heads.combination import (
    METHODS,
    Fit,
    HeldOutFit,
    Movement,
    NullTestedFit,
    fit_combination,
    held_out_fit,
    movement_toward,
    null_tested_fit,
    predict,
    r_squared,
    shuffled_fit_null,
)
from headjax.heads.param_change import (
    HeadChange,
    change_concentration,
    head_param_change,
    head_parameter_mask,
    module_change,
    pattern_to_param_ratio,
    random_relative_perturbation,
    relative_param_change,
    relative_pattern_change,
)
from headjax.heads.patterns import (
    NORMALIZATIONS,
    ConfidenceInterval,
    PatternResult,
    activation_pattern,
    bootstrap_ci,
    normalize_pattern,
)
from headjax.heads.scores import (
    LOSS_KINDS,
    gate_gradients,
    head_scores,
    per_sample_head_scores,
    sample_weights,
)
from headjax.heads.selection import (
    SELECTIONS,
    SIMILARITIES,
    fraction_count,
    pattern_similarity,
    select_examples,
)
from headjax.heads.specificity import (
    THRESHOLD_RULES,
    OverlapNull,
    Trajectory,
    ablation_effects,
    activated_heads,
    coefficient_of_variation,
    gini,
    jaccard,
    label_permutation_null,
    mse,
    p_value,
    pattern_change,
    pearson,
    random_head_sets,
    random_set_jaccard_null,
    spearman,
    task_overlap,
    top_k_share,
    trajectory,
)

__all__ = [
    "LOSS_KINDS", "METHODS", "NORMALIZATIONS", "THRESHOLD_RULES", "ConfidenceInterval", "Fit",
    "HeadChange", "HeldOutFit", "Movement", "NullTestedFit", "OverlapNull", "PatternResult",
    "Trajectory", "ablation_effects", "activated_heads", "activation_pattern", "bootstrap_ci",
    "change_concentration", "coefficient_of_variation", "fit_combination", "gate_gradients",
    "gini", "head_param_change", "head_parameter_mask", "head_scores", "held_out_fit", "jaccard",
    "label_permutation_null", "module_change", "movement_toward", "mse", "normalize_pattern",
    "null_tested_fit", "p_value", "pattern_change", "pattern_to_param_ratio", "pearson",
    "per_sample_head_scores", "predict", "r_squared", "random_head_sets",
    "random_relative_perturbation", "random_set_jaccard_null", "relative_param_change",
    "relative_pattern_change",
    "sample_weights", "shuffled_fit_null", "spearman", "task_overlap", "top_k_share", "trajectory",
    "SELECTIONS", "SIMILARITIES", "fraction_count", "pattern_similarity", "select_examples",
]
