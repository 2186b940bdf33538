"""Running an exported model with ONNX Runtime from the files beside it (preprocess.json, classes.json, the
tokenizer files): what `transferlab predict --model DIR/model.onnx` uses. Imports neither torch nor the rest of
transferlab's model code, so it does what a consumer outside transferlab does (benchmarks/onnx_consumer.py is
the same steps as one stand-alone script)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def preprocess_image(path: str, pre: dict) -> np.ndarray:
    """An image file -> (3, size, size) float32, as the run's evaluation transform makes it: decoded to RGB (JPEG
    at the reduced scale PIL's draft mode gives while the shorter side stays >= the resize size, EXIF rotation
    applied), shorter side resized to `resize` with `interpolation`, centre crop of `size`, scaled to [0, 1],
    normalised with `mean` and `std`, channels first."""
    from PIL import Image, ImageOps

    resize, size = int(pre["resize"]), int(pre["size"])
    with open(path, "rb") as fp:
        img = Image.open(fp)
        if pre.get("jpeg_draft", True):
            img.draft(None, (resize, resize))
        img.load()
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block: the image as stored
        pass
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB")
    w, h = img.size
    if w <= h:  # torchvision's Resize(int): the shorter side becomes `resize`, the longer scales (truncated)
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    if (new_w, new_h) != (w, h):
        methods = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
        img = img.resize((new_w, new_h), methods[pre["interpolation"]])
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / 255.0  # (H, W, 3), RGB
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return x.transpose(2, 0, 1).copy()  # (3, H, W)


class OnnxPredictor:
    """An exported model folder: `logits(inputs)` for image paths or texts, `classes`."""

    def __init__(self, model_path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(model_path)
        folder = self.path.parent
        self.pre = json.loads((folder / "preprocess.json").read_text(encoding="utf-8"))
        self.classes = json.loads((folder / "classes.json").read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = None
        if self.pre["modality"] == "text":
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(folder / self.pre["tokenizer_file"]))
            self.tokenizer.enable_truncation(int(self.pre["max_length"]))
            self.tokenizer.enable_padding(pad_id=int(self.pre["pad_id"]), pad_token=self.pre["pad_token"])

    def encode(self, items: list[str]) -> dict[str, np.ndarray]:
        if self.tokenizer is None:
            return {"pixel_values": np.stack([preprocess_image(item, self.pre) for item in items])}
        encoded = self.tokenizer.encode_batch(items)
        arrays = {"input_ids": [e.ids for e in encoded], "attention_mask": [e.attention_mask for e in encoded],
                  "token_type_ids": [e.type_ids for e in encoded]}
        return {name: np.asarray(arrays[name], dtype=np.int64) for name in self.input_names}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: feeds[k] for k in self.input_names})[0]

    def logits(self, items: list[str]) -> np.ndarray:
        return self.run(self.encode(items))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)
