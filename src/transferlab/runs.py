"""A run directory: its config, how to start or resume it, and how to load it back.

DIR/config.json      what was asked (model, data, strategy, training and data options)
DIR/checkpoint/      last.safetensors (resume state), best.safetensors (selected weights)
DIR/history.jsonl    one line per epoch
DIR/examples.safetensors   per evaluated split: `<split>.correct` (N,) uint8, whether the selected weights
                     classify each example correctly, and `<split>.labels` (N,) int64, in the split's order
                     (what paired comparisons of runs scored on the same examples read: `run_examples`)
DIR/metrics.json     written last: its presence marks a finished run
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from transferlab.data import DataOptions, DecodedImages, load_data
from transferlab.errors import ConfigError, PeerError, UnsafeFileError
from transferlab.models import create_model
from transferlab.outputs import RUN_FOLDER, RUN_FORMAT, check_output_path, folder_state, foreign_message, \
    remove_owned
from transferlab.safe_io import atomic_write_json, load_tensors, remove_stale_temps
from transferlab.strategies import parse_strategy
from transferlab.training import distributed
from transferlab.training.batches import check_batchnorm_batch_size
from transferlab.training.config import TrainConfig
from transferlab.training.evaluate import ordered_loader
from transferlab.training.precision import use_channels_last
from transferlab.training.prefix_cache import FeatureStore
from transferlab.training.trainer import BEST, Trainer, resolve_device

logger = logging.getLogger(__name__)


@dataclass
class RunConfig:
    model: str
    data: str
    strategy: str = "full"
    weights: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    data_options: DataOptions = field(default_factory=DataOptions)
    # e.g. {"source_data": PATH} for ewc; {"target_data": PATH}: unlabelled target data (--target-data), read by
    # the domain adaptation strategies and by Deep Embedded Validation at the run's end
    strategy_options: dict = field(default_factory=dict)
    classes: list[str] | None = None  # the target classes, filled in once the data is read
    head: str = "linear"  # the new head's spec: linear, or mlp[:hidden=256,dropout=0.0] (models.heads)
    # PretrainedCfg fields that replace the model's (pretrain: the normalisation measured on its source data,
    # the input size, the source classes), so the run reads its data as its checkpoints will be read
    cfg_overrides: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "strategy": self.strategy, "weights": self.weights,
                "train": asdict(self.train), "data_options": asdict(self.data_options),
                "strategy_options": self.strategy_options, "classes": self.classes, "head": self.head,
                "cfg_overrides": self.cfg_overrides, "format": RUN_FORMAT}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(model=d["model"], data=d["data"], strategy=d["strategy"], weights=d.get("weights"),
                   train=TrainConfig(**d["train"]), data_options=DataOptions(**d["data_options"]),
                   strategy_options=d.get("strategy_options", {}), classes=d.get("classes"),
                   head=d.get("head", "linear"), cfg_overrides=d.get("cfg_overrides", {}))


@dataclass
class RunCaches:
    """What runs in one process may share: decoded images and frozen-prefix outputs. A grid passes one to all of
    its cells; both key their entries by content, so a cell can only be served what it would compute itself."""

    decoded: DecodedImages = field(default_factory=DecodedImages)
    features: FeatureStore = field(default_factory=FeatureStore)


# Options that may differ on --resume: where the run computes and in which memory layout, how many processes read
# its data, how often it checkpoints, whether it caches frozen-prefix outputs (none of these changes a result
# beyond float rounding), and what it does at a non-finite loss after it stopped at one.
# Every other difference would make the resumed run another run.
RESUME_MAY_DIFFER = ("train.device", "train.on_nonfinite", "train.workers", "train.checkpoint_every_steps",
                     "train.cache", "train.cache_memory_mb", "train.cache_dir", "train.memory_format")


def run_state(out: Path) -> str:
    """'empty' (new, or nothing of a run yet), 'unfinished' (a run without metrics), 'finished', or 'foreign'
    (files that are not a transferlab run: a config.json without the run format, anything else)."""
    state = folder_state(out, RUN_FOLDER)
    if state == "new":
        return "empty"
    if state == "foreign":
        return "foreign"
    return "finished" if (out / "metrics.json").is_file() else "unfinished"


def run_inputs(config: RunConfig) -> dict[str, object]:
    """The paths a run reads, by option: an output must not be, contain or sit inside any of them."""
    from transferlab.data import is_builtin_spec

    inputs = {"--data": None if is_builtin_spec(config.data) else config.data, "--weights": config.weights,
              "--source-data": config.strategy_options.get("source_data")}
    target = config.strategy_options.get("target_data")
    if target and not is_builtin_spec(target):
        inputs["--target-data"] = target
    path = _model_path(config.model)
    if path is not None:
        inputs["--model"] = str(path)
    return inputs


def _out_state(out: Path, resume: bool, overwrite: bool) -> str:
    """run_state of a checked output path, refusing the states the flags do not allow."""
    state = run_state(out)
    if state == "foreign":
        raise ConfigError(foreign_message(out, RUN_FOLDER))
    if state == "finished" and not overwrite:
        raise ConfigError(f"{out} holds a finished run; choose another --out or pass --overwrite")
    if state == "unfinished" and not (resume or overwrite):
        raise ConfigError(f"{out} holds an unfinished run; pass --resume to continue it or --overwrite")
    if state == "empty" and resume:
        raise ConfigError(f"--resume: {out} holds no run to continue; run without --resume to start one")
    return state


def _model_path(model: str) -> Path | None:
    """The file or folder a model name reads (a folder `pretrain` kept, also as RUN@E; a model directory), as its
    model family says, or None."""
    from transferlab.models._families import model_path

    return model_path(model)


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """The config with every path it reads made absolute, so that the run loads from any directory."""
    from transferlab.data import is_builtin_spec

    def absolute(value):
        if not value or not Path(str(value)).expanduser().exists():
            return value
        return str(Path(str(value)).expanduser().resolve())

    config.data = config.data if is_builtin_spec(config.data) else absolute(config.data)
    config.weights = absolute(config.weights)
    path = _model_path(config.model)
    if path is not None and path.exists():  # RUN@4 is recorded as the folder it names (checkpoints may be added)
        config.model = str(path.resolve())
    for key in ("source_data", "target_data"):
        value = config.strategy_options.get(key)
        if value and not is_builtin_spec(value):
            config.strategy_options = {**config.strategy_options, key: absolute(value)}
    return config


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("train", "data_options", "strategy_options"):
            out.update(_flat(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def resume_differences(saved: RunConfig, new: RunConfig, given: set[str] | None = None) -> dict[str, tuple]:
    """{key: (saved, new)} for the settings where `new` contradicts the saved run. `given` restricts the check
    to the keys the user actually passed (the CLI's options; None: all), as flat names like 'train.lr'."""
    old, now = _flat(saved.to_dict()), _flat(new.to_dict())
    keys = (set(old) | set(now)) - {"classes", "format"}
    if given is not None:
        keys &= given
    return {k: (old.get(k), now.get(k)) for k in sorted(keys)
            if old.get(k) != now.get(k) and k not in RESUME_MAY_DIFFER}


def prepare(config: RunConfig, decoded: DecodedImages | None = None):
    """Data, model (with the strategy's structural changes) and strategy for a run config."""
    strategy = parse_strategy(config.strategy)  # validate the spec before any loading
    from transferlab.models import model_cfg

    cfg = with_overrides(model_cfg(config.model, config.weights), config.cfg_overrides)  # the model: built once
    tokenizer = None
    if cfg.modality == "text":
        tokenizer = _tokenizer_for(config.model)
    data = load_data(config.data, cfg, config.data_options, tokenizer=tokenizer, decoded=decoded)
    if config.classes is None:
        config.classes = list(data.classes)
    elif list(data.classes) != list(config.classes):
        raise ConfigError(f"{config.data}: classes {data.classes} differ from the run's {config.classes}")
    return data, build_model(config, strategy), strategy


def build_model(config: RunConfig, strategy=None):
    """The run's model for its classes (config.classes), with the strategy's structural changes.

    The new head (and any module a strategy adds) starts from --seed alone, not from whatever the process drew
    before: the same run twice in one process, or a resumed run, builds the same model."""
    strategy = strategy or parse_strategy(config.strategy)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = create_model(config.model, len(config.classes), weights=config.weights, head=config.head)
        model.cfg = with_overrides(model.cfg, config.cfg_overrides)
        model.class_names = list(config.classes)
        strategy.prepare_model(model)
    return model


def with_overrides(cfg, overrides: dict):
    """The pretrained config with a run's `cfg_overrides` applied (lists as tuples, as PretrainedCfg keeps them)."""
    import dataclasses

    if not overrides:
        return cfg
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"config.json: cfg_overrides names unknown fields {', '.join(unknown)}")
    return dataclasses.replace(cfg, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})


def _tokenizer_for(model_name: str):
    from transformers import AutoTokenizer

    from transferlab.models._families import tokenizer_source

    return AutoTokenizer.from_pretrained(tokenizer_source(model_name) or model_name)


def finetune(config: RunConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
             callbacks=None, given: set[str] | None = None, caches: RunCaches | None = None) -> dict:
    """Train (or resume) a run; returns the metrics also written to DIR/metrics.json.

    With `resume`, the saved config is continued; a setting of `config` that contradicts it is refused (only
    the keys in `given`, when the caller knows which ones the user passed), except RESUME_MAY_DIFFER, which
    take the new value (a run interrupted on a GPU machine continues with --device cpu). `caches`: decoded images
    and frozen-prefix outputs shared with other runs of this process (default: the run's own)."""
    place = distributed.world()
    if place.active:  # this rank's GPU set and the process group joined, before the decision's broadcast
        distributed.init(resolve_device(config.train.device))
    if place.is_main:  # the checks, --overwrite's removals and the resume decision, once, by rank 0
        try:
            config, out = check_run_folder(config, out, resume, overwrite, given)
        except Exception as exc:  # the other ranks wait for the decision: they stop too
            distributed.broadcast((type(exc).__name__, str(exc)))
            raise
        distributed.broadcast((None, config.to_dict(), str(out)))
    else:
        decided = distributed.broadcast(None)
        if decided[0] is not None:
            raise PeerError(decided[1])
        config, out = RunConfig.from_dict(decided[1]), Path(decided[2])
    data, model, strategy = prepare(config, decoded=caches.decoded if caches else None)
    if len(data.train) < 2:
        raise ConfigError(f"{config.data}: {len(data.train)} training example(s) after subsampling; a run needs at "
                          f"least 2")
    target = load_target(config, model, data, decoded=caches.decoded if caches else None)
    # The strategy's checks against this model's depth groups (freeze:k beyond them, ...): a refusal comes before
    # config.json, so the corrected command needs no --resume. Both calls only compute names and scales.
    strategy.ever_trainable(model, config.train.epochs)
    strategy.lr_scales(model, 0)
    # --batch-size 1 where a training BatchNorm layer would see one value per channel: refused here, not as
    # torch's error at the first step after config.json
    check_batchnorm_batch_size(model, strategy, data, config.train.batch_size, config.train.epochs,
                               config.train.bn_stats)
    # a method whose layers fail in a training step on this model (peft's, probed on two real examples through a
    # copy of the model): one line here, not a traceback mid-epoch
    strategy.check_training(model, lambda: _first_examples(data, 2),
                            use_channels_last(config.train.memory_format, model))
    if place.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", config.to_dict())
    trainer = Trainer(model, strategy, data, config.train, out, callbacks=callbacks,
                      strategy_options=config.strategy_options, feature_store=caches.features if caches else None,
                      target=target)
    metrics = trainer.fit(resume=resume)
    if place.is_main:
        metrics.update(strategy.save_task_module(model, out) or {})
        if target is not None:  # the selected weights' target risk, estimated without target labels
            metrics["dev"] = _dev(model, data, target, config, trainer.device)
    metrics = {"model": config.model, "strategy": strategy.spec(), "data": config.data,
               "classes": list(data.classes), "seed": config.train.seed, **metrics,
               "skipped_inputs": data.skipped.count, "skipped_files": data.skipped.to_list(),
               "data_summary": data.summary(), "config": config.to_dict()}
    if place.is_main:
        atomic_write_json(out / "metrics.json", metrics)
    distributed.barrier()  # the run folder is complete when any rank returns
    return metrics


def load_target(config: RunConfig, model, data, decoded: DecodedImages | None = None):
    """The unlabelled target set of a run (`--target-data`, None without): the training split of any data set
    `load_data` reads or a flat folder of images (`load_unlabelled`), with the run's preprocessing (image size,
    text columns, max length; --augment), its labels ignored; --max-train caps it too (a seeded uniform subsample:
    no labels read). DataError or ConfigError (one
    line) for another modality, examples of another shape than the training data's, or an empty set."""
    from transferlab.data import DataError, load_unlabelled
    from transferlab.training.target import TargetData

    path = config.strategy_options.get("target_data")
    if not path:
        return None
    options = replace(config.data_options, classes=None, max_train=None, max_val=None, test_fraction=None)
    tokenizer = _tokenizer_for(config.model) if model.cfg.modality == "text" else None
    try:
        dataset, collate = load_unlabelled(path, model.cfg, options, tokenizer=tokenizer, decoded=decoded)
    except DataError as exc:
        raise DataError(f"--target-data: {exc}") from None
    cap = config.data_options.max_train
    if cap is not None and len(dataset) > cap:
        keep = np.sort(np.random.default_rng(config.train.seed).choice(len(dataset), cap, replace=False))
        dataset = dataset.subset([int(i) for i in keep])
    if len(dataset) == 0:
        raise DataError(f"--target-data {path}: no examples in its training split")
    mine, theirs = _example_shape(data.train), _example_shape(dataset)
    if mine is not None and theirs is not None and mine != theirs:
        raise ConfigError(f"--target-data {path}: its examples are {'x'.join(map(str, theirs))} after the run's "
                          f"preprocessing, the training data's {'x'.join(map(str, mine))}; give target data the "
                          f"model reads as it reads --data")
    logger.info("target data %s: %d unlabelled examples", path, len(dataset))
    return TargetData(dataset, collate, source=str(path))


def _example_shape(dataset) -> tuple | None:
    """The tensor shape of a dataset's first readable example (None for texts)."""
    with torch.random.fork_rng(devices=[]):  # an augmented item draws: keep the run's stream
        for i in range(min(len(dataset), 8)):
            item = dataset[i]
            if item is not None:
                return tuple(item[0].shape) if isinstance(item[0], torch.Tensor) else None
    return None


def _dev(model, data, target, config: RunConfig, device) -> dict:
    """Deep Embedded Validation of the selected weights on the source validation split (training/dev.py)."""
    from transferlab.training.dev import deep_embedded_validation

    with torch.random.fork_rng(devices=[]):  # augmented source items draw: later work in the process keeps its stream
        torch.manual_seed(config.train.seed)
        return deep_embedded_validation(model, data.train, data.val, target.dataset, data.collate, target.collate,
                                        device, batch_size=config.train.eval_batch_size, seed=config.train.seed)


def _first_examples(data, n: int) -> dict | None:
    """The first `n` training examples as one batch, off the run's random stream (None: none readable)."""
    with torch.random.fork_rng(devices=[]):  # augmentation draws
        for batch in ordered_loader(data.train, n, data.collate):
            if batch["labels"].numel():  # an unreadable image is dropped by the collate
                return batch
    return None


def check_run_folder(config: RunConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
                     given: set[str] | None = None, dry: bool = False) -> tuple[RunConfig, Path]:
    """(the config to run, the checked output folder): every check that needs no data, the resume decision
    (the saved config, continued), then --overwrite's removals and stale temporary files. `dry`: checks only,
    nothing removed (a launcher's check before it starts the processes)."""
    config = with_absolute_paths(config)
    out = check_output_path(out, "--out", run_inputs(config))  # before Path(""), which is the current folder
    if config.train.cache_dir:  # written into: never an input, never the run folder
        config.train.cache_dir = str(check_output_path(config.train.cache_dir, "--cache-dir",
                                                       {**run_inputs(config), "--out": str(out)}))
    state = _out_state(out, resume, overwrite)
    if resume and state == "unfinished":
        config = _resumed_config(out, config, given)
    resolve_device(config.train.device)  # a device that is not here: one line, before anything is written
    strategy = parse_strategy(config.strategy)
    strategy.check_epochs(config.train.epochs)
    if strategy.needs_target and not config.strategy_options.get("target_data"):
        raise ConfigError(f"{strategy.spec()} learns from unlabelled target data: pass --target-data PATH (target "
                          f"images or texts in a layout --data accepts; their labels are not read)")
    from transferlab.models import model_cfg
    from transferlab.models.heads import parse_head

    parse_head(config.head)  # a bad or absurd head (vib:dim=1e9): one line, before anything is written

    model_cfg(config.model, config.weights)  # an unknown model or a damaged pretrained folder: before --overwrite
    if dry:
        return config, out
    if overwrite and state != "empty":
        for path in remove_owned(out, RUN_FOLDER):
            logger.debug("--overwrite: removed %s", path)
    for folder in (out, out / "checkpoint"):  # temporary files of writes that a kill interrupted
        for stale in remove_stale_temps(folder):
            logger.info("removed %s, left by an interrupted write", stale)
    return config, out


def _resumed_config(out: Path, config: RunConfig, given: set[str] | None) -> RunConfig:
    saved = read_run_config(out)
    if saved is None:  # killed before its config was written: nothing to contradict
        return config
    differences = resume_differences(saved, config, given)
    if differences:
        listed = "; ".join(f"{_option(k)} {old!r} in the run, {new!r} now" for k, (old, new) in differences.items())
        raise ConfigError(f"--resume: the arguments contradict the run in {out}: {listed}; drop them to continue "
                          f"the run as it was, or start a new run in another --out")
    for key in RESUME_MAY_DIFFER:  # these take the new value when given
        section, name = key.split(".")
        if given is None or key in given:
            new_value = getattr(getattr(config, section), name)
            if new_value != getattr(getattr(saved, section), name):
                logger.info("--resume: %s %s (the run had %s)", _option(key), new_value,
                            getattr(getattr(saved, section), name))
                setattr(getattr(saved, section), name, new_value)
    return saved


def _option(key: str) -> str:
    """'train.lr' -> '--lr', 'strategy_options.source_data' -> '--source-data'."""
    return "--" + key.split(".")[-1].replace("_", "-")


def read_run_config(run_dir: str | Path) -> RunConfig | None:
    """The RunConfig in run_dir/config.json; None when there is none; ConfigError when it is not a run's."""
    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{cfg_file}: not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != RUN_FORMAT:
        raise ConfigError(f"{cfg_file} is not a transferlab run's config (no format {RUN_FORMAT!r})")
    try:
        return RunConfig.from_dict(raw)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{cfg_file}: a run config without {exc}") from None


def load_run_model(run_dir: str | Path, task: str | None = None):
    """(config, model with the selected weights, strategy) of a run, without reading its data: the classes
    are in the run's config. A merged multi-task module (`modules merge A B ...`) gives `task`'s model."""
    run_dir = Path(run_dir)
    config = _task_config(run_dir, task)
    if config is not None:
        model = build_model(config)
        _apply_task(model, run_dir, task)
        return config, model, parse_strategy(config.strategy)
    config = read_run_config(run_dir)
    if config is None:
        raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
    if not config.classes:
        raise ConfigError(f"{run_dir}/config.json names no classes")
    model = build_model(config)
    _load_selected_weights(run_dir, model)
    return config, model, parse_strategy(config.strategy)


def load_run(run_dir: str | Path, data_path: str | None = None, augment: bool | None = None,
             max_val: int | None = None, task: str | None = None):
    """(config, data, model with the selected weights, strategy) of a finished or unfinished run; `augment=False`
    reads a run trained with --augment as it is evaluated (no random crops on its train split). `data_path`:
    other data with the run's classes, read with the run's data options except its --max-val, which capped the
    run's own validation split; `max_val`: a cap for this reading (either data set)."""
    run_dir = Path(run_dir)
    multitask = _task_config(run_dir, task)
    config = multitask or read_run_config(run_dir)
    if config is None:
        raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
    if data_path and not _same_data(data_path, config.data):
        run_cap = config.data_options.max_val
        if run_cap is not None and max_val is None:
            logger.info("--data %s: all of its validation examples are used; the run's --max-val %d capped its "
                        "own data %s (pass --max-val to cap these too)", data_path, run_cap, config.data)
        config.data_options = replace(config.data_options, max_val=None)
    if data_path:
        config.data = data_path
    if max_val is not None:  # DataOptions checks it (at least 1) before any data is read
        config.data_options = replace(config.data_options, max_val=max_val)
    if augment is not None:
        config.data_options = replace(config.data_options, augment=augment)
    if not str(config.data).strip():
        raise ConfigError(f"{run_dir} records no data set (a model merged from a task module made outside a run): "
                          f"pass --data")
    data, model, strategy = prepare(config)
    if multitask is not None:
        _apply_task(model, run_dir, task)
    else:
        _load_selected_weights(run_dir, model)
    return config, data, model, strategy


def _task_config(run_dir: Path, task: str | None):
    """The run config of `task` when run_dir is a merged multi-task module, else None (--task refused)."""
    from transferlab.strategies.peft_methods.multitask_module import is_multitask, task_entry

    if is_multitask(run_dir):
        return RunConfig.from_dict(task_entry(run_dir, task)["run_config"])
    if task is not None:
        raise ConfigError(f"--task {task}: {run_dir} is not a multi-task module (transferlab modules merge A B ... "
                          f"writes one)")
    return None


def _apply_task(model, run_dir: Path, task: str) -> None:
    from transferlab.strategies.peft_methods.multitask_module import apply_task

    apply_task(model, run_dir, task)


def _same_data(given: str, recorded: str) -> bool:
    """Whether --data names the data set the run recorded (a run keeps folders and files as absolute paths)."""
    if given == recorded:
        return True
    return Path(given).expanduser().resolve() == Path(recorded).expanduser().resolve()


def _load_selected_weights(run_dir: Path, model) -> None:
    weights = run_dir / "checkpoint" / BEST
    if not weights.is_file():
        raise ConfigError(f"{run_dir} has no trained weights yet ({weights} is missing)")
    try:
        model.load_state_dict(load_tensors(weights))
    except RuntimeError as exc:  # weights of another model: one clear line
        from transferlab.training.trainer import _first_reason

        raise UnsafeFileError(f"{weights}: does not fit the run's model: {_first_reason(exc)}") from None
    model.eval()


def run_examples(run_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(correct (N,) bool, labels (N,) int64 or None) of a finished run's split from DIR/examples.safetensors;
    None when the run kept none (a run from an older version, a regression objective, no such split)."""
    path = Path(run_dir) / "examples.safetensors"
    if not path.is_file():
        return None
    tensors = load_tensors(path)
    correct = tensors.get(f"{split}.correct")
    if correct is None:
        return None
    labels = tensors.get(f"{split}.labels")
    return correct.numpy().astype(bool), None if labels is None else labels.numpy()
