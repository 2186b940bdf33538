"""Writing the graph in each format, and running what was written (for the verification)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "safetensors")
FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "safetensors": "model.safetensors"}
INT8_FILE = "model.int8.onnx"
DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18  # torch.onnx's dynamo exporter writes opset 18 and later


def opset_range() -> tuple[int, int]:
    """(lowest, highest) opset the exporters here can write: the TorchScript-based one from 9, either up to
    torch.onnx's maximum (the dynamo exporter's; the TorchScript one stops at 20)."""
    from torch.onnx import _constants

    return 9, int(_constants.ONNX_MAX_OPSET)


def check_opset(opset: int) -> None:
    low, high = opset_range()
    if not low <= opset <= high:
        raise ConfigError(f"--opset {opset}: the ONNX exporters of torch {torch.__version__} write opsets {low} to "
                          f"{high}")


def _torchscript_max_opset() -> int:
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 17))


def export_onnx(graph, inputs: tuple, path: Path, opset: int, text: bool) -> str:
    """Write `graph` to `path` with dynamic batch (and sequence, for text) axes; returns the exporter used:
    'dynamo' (torch.export), else 'torchscript' when the dynamo exporter fails or cannot write the opset."""
    import onnx

    names = list(graph.input_names)
    exporter = None
    if opset >= DYNAMO_MIN_OPSET:
        try:
            dim = torch.export.Dim.DYNAMIC
            shapes = {n: ({0: dim, 1: dim} if text else {0: dim}) for n in names}
            torch.onnx.export(graph, inputs, str(path), dynamo=True, input_names=names, output_names=["logits"],
                              dynamic_shapes=shapes, opset_version=opset, external_data=False, verbose=False)
            exporter = "dynamo"
        except Exception as exc:  # any failure of torch.export or its translation: the older exporter
            logger.warning("dynamo ONNX exporter failed (%s: %s); falling back to the TorchScript-based exporter",
                           type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            path.unlink(missing_ok=True)
    if exporter is None:
        if opset > _torchscript_max_opset():
            raise ConfigError(f"--opset {opset}: the dynamo exporter failed and the TorchScript-based exporter "
                              f"writes opsets up to {_torchscript_max_opset()}")
        axes = {n: ({0: "batch", 1: "sequence"} if text else {0: "batch"}) for n in names}
        axes["logits"] = {0: "batch"}
        torch.onnx.export(graph, inputs, str(path), dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset)
        exporter = "torchscript"
    logger.info("ONNX written with the %s exporter (opset %d)", exporter, opset)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for value in model.graph.input:  # the batch axis (and the sequence axis) must be symbolic
        dims = value.type.tensor_type.shape.dim
        wanted = (0, 1) if text else (0,)
        if any(not dims[i].dim_param for i in wanted):
            raise ConfigError(f"the exported graph's input {value.name} has a fixed batch or sequence size "
                              f"({[d.dim_value or d.dim_param for d in dims]})")
    return exporter


def export_torchscript(graph, inputs: tuple, path: Path) -> str:
    with torch.no_grad():
        traced = torch.jit.trace(graph, inputs, check_trace=False, strict=False)
    traced = torch.jit.freeze(traced.eval())
    traced.save(str(path))
    return "torch.jit.trace"


def export_safetensors(model, path: Path, config, merged: list[str], kept: list[str]) -> str:
    from transferlab.safe_io import save_tensors

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_tensors(path, state, metadata={"format": "transferlab-weights-1", "model": str(config.model),
                                        "head": str(config.head), "merged": ",".join(merged),
                                        "in_graph": ",".join(kept)})
    return "state_dict"


class Runner:
    """Runs a written model on a batch of graph inputs (numpy arrays by name) -> logits (B, C) float32."""

    def __init__(self, fmt: str, path: Path, config=None, kept: list[str] | None = None, threads: int | None = None):
        self.fmt = fmt
        if fmt == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.names = [i.name for i in self.session.get_inputs()]
        elif fmt == "torchscript":
            self.module = torch.jit.load(str(path)).eval()
        else:  # safetensors: the weights back into a freshly built model of the structure they fit
            self.module = _model_from_safetensors(path, config, kept)

    def __call__(self, feeds: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
        if self.fmt == "onnx":
            return self.session.run(None, {n: feeds[n] for n in self.names})[0]
        with torch.no_grad():
            return self.module(*[torch.from_numpy(feeds[n]) for n in names]).float().numpy()


def _model_from_safetensors(path: Path, config, kept: list[str]):
    import dataclasses

    from transferlab.export._prepare import graph_module
    from transferlab.runs import build_model
    from transferlab.safe_io import load_tensors

    # merged methods leave the base architecture: build it with `full`; a method kept in the graph needs its own
    structure = "+".join(kept) if kept else "full"
    model = build_model(dataclasses.replace(config, strategy=structure))
    model.load_state_dict(load_tensors(path))
    return graph_module(model.eval())


def quantize(fp32: Path, out: Path, text: bool, calibration=None) -> str:
    """int8: dynamic quantisation (weights int8, activations quantised at run time) for text; static QDQ
    quantisation calibrated on `calibration` (an iterable of {"pixel_values": array}) for images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name(out.stem + ".pre.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        source = prepared
    except Exception as exc:  # pre-processing is an optimisation; quantise the model as exported
        logger.info("quant_pre_process skipped (%s)", exc)
        source = fp32
    try:
        if text:
            quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8)
            return "dynamic (weights int8 per tensor, activations at run time)"

        class Reader(CalibrationDataReader):
            def __init__(self, batches):
                self.batches = iter(batches)

            def get_next(self):
                return next(self.batches, None)

        quantize_static(str(source), str(out), Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return "static QDQ (weights int8 per channel, activations uint8, MinMax calibration)"
    finally:
        prepared.unlink(missing_ok=True)
