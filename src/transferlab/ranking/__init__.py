"""Rank pre-trained models (or one model's layers) for a target data set before any fine-tuning: transferability
metrics (LogME, LEEP, NCE, H-score, kNN, linear; one file each in `metrics/`, registered with `@register_metric`)
on one forward pass per candidate over a stratified subsample of the target's training split.

    from transferlab.ranking import RankOptions, parse_candidates, rank_models, write_ranking

    result = rank_models(parse_candidates("efficientnet_lite0,resnet18"), "path/to/images", RankOptions())
    write_ranking(result, "out/")          # ranking.json, ranking.md, ranking.html
"""
from transferlab.ranking.rank import Candidate, RankingResult, RankOptions, parse_candidates, rank_models
from transferlab.ranking.registry import (Metric, MetricInput, MetricOptions, Score, Skipped, get_metric,
                                          list_metrics, register_metric, unregister_metric)
from transferlab.ranking.report import RANKING_FOLDER, write_ranking

__all__ = ["Candidate", "RankingResult", "RankOptions", "parse_candidates", "rank_models", "Metric", "MetricInput",
           "MetricOptions", "Score", "Skipped", "get_metric", "list_metrics", "register_metric", "unregister_metric",
           "RANKING_FOLDER", "write_ranking"]
