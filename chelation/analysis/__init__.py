"""Analysis of a study's logged runs: `runs` loads them from MLflow, `stats` pairs and tests
them (pure functions), `report` writes the markdown, `figures` draws. Everything public is also
here, so `from chelation import analysis as ca` reaches it.

Conventions of the frames passed around:

- runs (from `load_runs`): one row per finished job run; short columns `run_id`, `mode`,
  `teacher`, `student`, `dataset`, `protocol`, `seed`, `schedule`, `projection`,
  `group_hash`, `config_hash`, `config_label`, `weight` (float `weight.value`), and every
  tag, param and latest metric as `tags.*`, `params.*`, `metrics.*`. A run's latest metric is
  the one at its highest step, i.e. its final cycle.
- per-query (from `load_per_query`): `run_id`, `cycle`, `query_id` (str), `ndcg_at_10`
  plus the run's `group_hash`, `config_label`, `mode`, `teacher`, `student`, `dataset`,
  `protocol` and `seed`.

A configuration is a `group_hash` (the config without the seed); its seeds are its replicates.
Differences are paired on query ids (and on seeds when both arms ran the same seeds, since a seed
decides the query split), so per-query difficulty cancels out. MLflow and matplotlib are imported
only inside the functions that need them.
"""

from chelation.analysis.figures import (
    plot_forest,
    plot_ndcg_per_cycle,
    plot_ndcg_vs_index_weight,
    plot_ndcg_vs_weight,
    save_figure,
    teacher_margins,
)
from chelation.analysis.nested import (
    FrameSelectionScores,
    NestedSelection,
    SelectionScores,
    nested_selection,
    study_answer,
    summarise_nested,
)
from chelation.analysis.report import (
    frozen_models_markdown,
    frozen_models_table,
    results_markdown,
)
from chelation.analysis.runs import (
    MODE_ORDER,
    PER_QUERY_ARTIFACT,
    disambiguated_labels,
    label_legend,
    load_per_query,
    load_runs,
    load_selection,
    metric_history,
    per_query_table,
    run_summary,
    studies_on_the_same_queries,
)
from chelation.analysis.stats import (
    TABLE_COLUMNS,
    compare_to_reference,
    holm_adjust,
    mean_ci,
    min_detectable_effect,
    paired_comparison,
    seed_spread,
    select_on_validation,
)

__all__ = [
    "MODE_ORDER", "PER_QUERY_ARTIFACT", "TABLE_COLUMNS", "FrameSelectionScores",
    "NestedSelection", "SelectionScores", "compare_to_reference", "disambiguated_labels",
    "frozen_models_markdown", "frozen_models_table", "holm_adjust", "label_legend",
    "load_per_query", "load_runs", "load_selection", "mean_ci", "metric_history",
    "min_detectable_effect", "nested_selection", "paired_comparison", "per_query_table",
    "plot_forest", "plot_ndcg_per_cycle", "plot_ndcg_vs_index_weight", "plot_ndcg_vs_weight",
    "results_markdown", "run_summary", "save_figure", "seed_spread", "select_on_validation",
    "studies_on_the_same_queries", "study_answer", "summarise_nested", "teacher_margins",
]
