"""Score an exported transferlab model with onnxruntime and numpy alone (pillow for images, tokenizers for text).

    python benchmarks/onnx_consumer.py EXPORT_DIR/model.onnx IMAGE_FOLDER     # IMAGE_FOLDER/<class>/<image>
    python benchmarks/onnx_consumer.py EXPORT_DIR/model.onnx TEXTS.tsv        # columns sentence|text, label

Reads only the files `transferlab export` writes (preprocess.json, classes.json, the tokenizer files); prints one
JSON line: {"examples", "accuracy"}. It imports neither torch nor transferlab (a test proves it).
"""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_image(path, pre):
    """The run's evaluation transform: RGB, shorter side to `resize`, centre crop `size`, /255, mean/std, CHW."""
    from PIL import Image, ImageOps

    resize, size = pre["resize"], pre["size"]
    with open(path, "rb") as fp:
        img = Image.open(fp)
        if pre.get("jpeg_draft"):
            img.draft(None, (resize, resize))  # JPEG decoded at a reduced scale, as the run read it
        img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    img = img.convert("RGB")
    w, h = img.size
    new_w, new_h = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    if (new_w, new_h) != (w, h):
        method = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
        img = img.resize((new_w, new_h), method[pre["interpolation"]])
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    x = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0  # (H, W, 3)
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return x.transpose(2, 0, 1)  # (3, H, W)


def image_examples(folder, classes):
    for index, name in enumerate(classes):
        for path in sorted((Path(folder) / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield str(path), index


def text_examples(path, classes):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t" if str(path).endswith(".tsv") else ",")
        for row in rows:
            text = row.get("sentence", row.get("text"))
            yield text, classes.index(str(row["label"]))


def main(model_path, data, batch_size=32):
    folder = Path(model_path).parent
    pre = json.loads((folder / "preprocess.json").read_text(encoding="utf-8"))
    classes = json.loads((folder / "classes.json").read_text(encoding="utf-8"))
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if pre["modality"] == "image":
        examples = list(image_examples(data, classes))

        def feeds(items):
            return {"pixel_values": np.stack([load_image(p, pre) for p in items])}
    else:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / pre["tokenizer_file"]))
        tokenizer.enable_truncation(pre["max_length"])
        tokenizer.enable_padding(pad_id=pre["pad_id"], pad_token=pre["pad_token"])
        examples = list(text_examples(data, classes))

        def feeds(items):
            enc = tokenizer.encode_batch(items)
            arrays = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
                      "token_type_ids": [e.type_ids for e in enc]}
            return {n: np.asarray(arrays[n], dtype=np.int64) for n in names}
    correct = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        logits = session.run(None, feeds([x for x, _ in chunk]))[0]  # (B, C)
        correct += int((logits.argmax(1) == np.asarray([y for _, y in chunk])).sum())
    print(json.dumps({"examples": len(examples), "accuracy": correct / max(len(examples), 1)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
