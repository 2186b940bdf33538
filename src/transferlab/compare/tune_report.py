"""The report's section for `--tune`: the default and the tuned comparison side by side, whether the best strategy
changed (under the project's noise rule), what tuning cost, and each strategy's chosen setting."""
from __future__ import annotations

from transferlab import stats
from transferlab.compare.grid import SCRATCH
from transferlab.compare.report import Bullets, Section, Table, Text, _band, _metric_name, register_section


def _accuracy(results, name: str) -> tuple[str, dict | None]:
    """'0.912 ± 0.010 [0.880, 0.938]': the mean over seeds, its spread, and a 95% binomial (Wilson) interval of
    the pooled correct count over the split's examples."""
    s = results.summaries.get(name) if results else None
    metric = results.metric if results else None
    if s is None or s.mean.get(metric) is None:
        return "-", None
    n = s.n.get(metric) or 0
    mean, std = s.mean[metric], s.std[metric]
    text = f"{mean:.3f}" + (f" ± {std:.3f}" if std else "")
    data = {"mean": mean, "std": std, "n": n, "runs": s.runs}
    if n:
        total = n * s.runs
        low, high = stats._wilson(round(mean * total), total, 1.959964)
        text += f" [{low:.3f}, {high:.3f}]"
        data["interval"] = [low, high]
    return text, data


def _best(results) -> str | None:
    if results is None:
        return None
    ranked = sorted((s for k, s in results.summaries.items() if k != SCRATCH and s.mean.get(results.metric) is not None),
                    key=lambda s: s.mean[results.metric], reverse=True)
    return ranked[0].strategy if ranked else None


def _difference(default, tuned, name: str) -> stats.Comparison | None:
    """tuned - default for one strategy: paired on the test examples when both kept them (the same split)."""
    a, b = tuned.examples(name), default.examples(name)
    if a and b and len(a[0][0]) == len(b[0][0]):
        return stats.paired_runs(a[0], b[0])
    va = [r.values[tuned.metric] for r in tuned.finished_runs(name) if r.values.get(tuned.metric) is not None]
    vb = [r.values[default.metric] for r in default.finished_runs(name) if r.values.get(default.metric) is not None]
    if not va or not vb:
        return None
    na, nb = tuned.summaries[name].n.get(tuned.metric), default.summaries[name].n.get(default.metric)
    return stats.unpaired_accuracies(va, na, vb, nb)


def _setting(best: dict | None) -> str:
    if not best:
        return "no trial finished"
    parts = [f"`{best['strategy']}`" if best.get("strategy") and not best["strategy"].startswith("full:backbone_lr=1")
             else f"bn_stats {best['bn_stats']}", f"lr {best['lr']:.3g}", f"weight decay {best['weight_decay']:.3g}"]
    return ", ".join(parts) + f" (trial {best['trial']}, val {best['val_accuracy']:.3f})"


@register_section("tuning", order=12)
def tuning_section(ctx) -> Section | None:
    r = ctx.results
    summary = getattr(r, "tuning", None)
    if not summary:
        return None
    tuned = r.tuned
    entries = summary["entries"]
    names = [n for n in r.strategies]
    mname = _metric_name(r)
    rows, data = [], {"rule": stats.RULE, "strategies": {}}
    diffs = {}
    for name in names:
        entry = entries.get(name, {})
        d_text, d_data = _accuracy(r, name)
        t_text, t_data = _accuracy(tuned, name)
        diff = _difference(r, tuned, name) if tuned and d_data and t_data else None
        diffs[name] = diff
        cost = (f"{entry.get('counted', 0)} ({entry.get('complete', 0)} finished, {entry.get('pruned', 0)} pruned, "
                f"{entry.get('failed', 0)} failed)" if entry else "-")
        rows.append([name, d_text, t_text, _band(diff.to_dict()) + ("" if diff.significant else " within noise")
                     if diff else "-", cost, f"{entry.get('seconds', 0.0):.0f}" if entry else "-",
                     _setting(entry.get("best"))])
        data["strategies"][name] = {"default": d_data, "tuned": t_data,
                                    "tuned_minus_default": diff.to_dict() if diff else None,
                                    "trials": entry.get("counted"), "complete": entry.get("complete"),
                                    "pruned": entry.get("pruned"), "failed": entry.get("failed"),
                                    "interrupted": entry.get("interrupted"), "seconds": entry.get("seconds"),
                                    "chosen": entry.get("best")}
    who = "Every strategy, and the from-scratch baseline," if SCRATCH in entries else "Every strategy"
    text = (f"{who} got the same budget: {summary['trials']} Optuna trial(s) "
            f"({summary['sampler']}; pruning: {summary['pruner']}), each an ordinary run of seed {summary['seed']} "
            "selected on validation accuracy. The learning rate is searched from a tenth to ten times the grid's "
            "(log-uniform), the weight decay from 1e-5 to 0.1, and each strategy's own parameters over the space it "
            "declares (`search_space`). The best trial's setting was then run over the grid's seeds and is "
            f"reported on {mname}, like the defaults (columns: mean ± std over seeds [95% interval of the pooled "
            "accuracy]). Tuned minus default: the estimate and its 95% interval under the noise rule (paired on the "
            "same examples). Tuning time: the trials' wall time.")
    blocks = [Text(text), Table(["strategy", f"default: {mname}", f"tuned: {mname}", "tuned - default",
                                 "trials", "tuning time (s)", "chosen setting"], rows)]
    items = []
    best_default, best_tuned = _best(r), _best(tuned)
    data["best_default"], data["best_tuned"] = best_default, best_tuned
    if best_default and best_tuned:
        if best_default == best_tuned:
            items.append(f"The best strategy is **{best_default}** both at defaults and tuned.")
            data["best_changed"] = False
        else:
            data["best_changed"] = True
            change = tuned.compare(best_tuned, best_default)
            data["change_test"] = change.to_dict() if change else None
            data["change_beyond_noise"] = bool(change and change.significant)
            verdict = ("beyond noise" if change and change.significant else "within noise: the change of rank is "
                       "not measured to be real")
            items.append(f"The best strategy changed: **{best_default}** at defaults, **{best_tuned}** tuned. Tuned, "
                         f"{best_tuned} minus {best_default}: "
                         f"{_band(change.to_dict()) if change else '-'}, {verdict}.")
    for name in names:
        diff = diffs.get(name)
        if diff and diff.significant:
            items.append(f"Tuning changed {name} beyond noise: {_band(diff.to_dict())}.")
    if tuned is not None and SCRATCH in tuned.summaries:
        helped = [s.strategy for s in tuned.transfer if s.vs_scratch and s.vs_scratch["significant"]
                  and not s.transfer_hurt]
        hurt = [s.strategy for s in tuned.transfer if s.transfer_hurt]
        data["tuned_transfer_helped"], data["tuned_transfer_hurt"] = helped, hurt
        items.append("Against the tuned baseline, transfer helped beyond noise for "
                     + (", ".join(helped) or "no strategy") + (f"; it hurt for {', '.join(hurt)}" if hurt else "")
                     + ".")
    total = sum(e.get("seconds") or 0.0 for e in entries.values())
    items.append(f"Tuning cost {sum(e.get('counted', 0) for e in entries.values())} trial runs, {total:.0f} s in all; "
                 f"the studies are in tuning/<strategy>.db, the trials' runs in tuning/<strategy>/trial<N>/, the "
                 "tuned runs in tuned/runs/.")
    blocks.append(Bullets(items))
    return Section("Default and tuned hyperparameters", blocks, data=data)
