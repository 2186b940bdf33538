"""One module per transferability metric; each registers itself with `@register_metric` (see
`transferlab.ranking.registry`)."""
