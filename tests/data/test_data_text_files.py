"""Text files: formats, quoting, bad rows and encodings, column choice, and the errors."""
import json
import logging

import pytest
import torch

from transferlab.data import DataError, DataOptions, load_data


def _write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def _all_rows(bundle):
    return [bundle.train[i] for i in range(len(bundle.train))] + [bundle.val[i] for i in range(len(bundle.val))]


def test_folder_with_tsv_splits(tmp_path, text_cfg, tokenizer):
    _write(tmp_path / "train.tsv", "sentence\tlabel\ngood film\t1\nbad film\t0\nfine\t1\nawful\t0\n")
    _write(tmp_path / "dev.tsv", "sentence\tlabel\nnice\t1\n")
    _write(tmp_path / "test.tsv", "sentence\tlabel\nmeh\t0\nwow\t1\n")
    bundle = load_data(str(tmp_path), text_cfg, DataOptions(), tokenizer=tokenizer)
    assert bundle.summary() == {"kind": "text", "classes": ["0", "1"], "train": 4, "val": 1, "test": 2, "skipped": 0}
    assert bundle.train[0] == ("good film", 1) and bundle.test.targets == [0, 1]


def test_csv_quotes_commas_tabs_and_newlines(tmp_path, text_cfg, tokenizer):
    path = _write(tmp_path / "reviews.csv",
                  'text,label\n"a, b and ""c""",pos\n"line one\nline two",neg\n"tab\there",pos\nplain,neg\n')
    bundle = load_data(str(path), text_cfg, DataOptions(val_fraction=0.5), tokenizer=tokenizer)
    assert bundle.classes == ["neg", "pos"]
    assert sorted(_all_rows(bundle)) == sorted([('a, b and "c"', 1), ("line one\nline two", 0),
                                                ("tab\there", 1), ("plain", 0)])


def test_tsv_with_a_tab_inside_a_quoted_field(tmp_path, text_cfg, tokenizer):
    path = _write(tmp_path / "d.tsv", 'sentence\tlabel\n"has\ta tab"\t1\nno tab\t0\nthird\t0\nfourth\t1\n')
    bundle = load_data(str(path), text_cfg, DataOptions(val_fraction=0.5), tokenizer=tokenizer)
    assert ("has\ta tab", 1) in _all_rows(bundle)


def test_jsonl_with_integer_string_and_float_labels(tmp_path, text_cfg, tokenizer):
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": "1"}, {"text": "c", "label": 1.0},
            {"text": "d", "label": 2}, {"text": "e", "label": 0}, {"text": "f", "label": 1}]
    _write(tmp_path / "train.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\nnot json\n[1, 2]\n"
           '{"text": "g", "label": true}\n')
    bundle = load_data(str(tmp_path), text_cfg, DataOptions(val_fraction=0.3), tokenizer=tokenizer)
    assert bundle.classes == ["0", "1", "2"]
    assert len(bundle.train) + len(bundle.val) == 6
    reasons = {item["path"].rsplit(":", 1)[1]: item["reason"] for item in bundle.skipped.to_list()}
    assert set(reasons) == {"8", "9", "10"}  # line 7 is blank: skipped silently
    assert "invalid JSON" in reasons["8"] and "JSON object" in reasons["9"] and "boolean" in reasons["10"]


def test_empty_lines_and_bad_rows_are_skipped_by_line(tmp_path, text_cfg, tokenizer):
    path = _write(tmp_path / "train.tsv",
                  "sentence\tlabel\n\nok one\t1\n\t0\n   \t1\nno label\t\nonly one field\nok two\t0\n"
                  "too\tmany\t1\nok three\t1\nok four\t0\n\n")
    bundle = load_data(str(path), text_cfg, DataOptions(val_fraction=0.5), tokenizer=tokenizer)
    assert len(bundle.train) + len(bundle.val) == 4
    reasons = {item["path"]: item["reason"] for item in bundle.skipped.to_list()}
    assert reasons == {f"{path}:4": "empty text", f"{path}:5": "empty text", f"{path}:6": "missing label",
                       f"{path}:7": "expected 2 fields, found 1", f"{path}:9": "expected 2 fields, found 3"}


def test_unclosed_quote_is_reported_with_its_span(tmp_path, text_cfg, tokenizer):
    path = _write(tmp_path / "train.csv", 'text,label\nfine,1\nalso fine,0\nok,1\nok too,0\n"oops,1\nlost,0\nlost too,1\n')
    bundle = load_data(str(path), text_cfg, DataOptions(val_fraction=0.5), tokenizer=tokenizer)
    (item,) = bundle.skipped.to_list()
    assert item["path"] == f"{path}:6" and "spans lines 6-8: an unclosed quote" in item["reason"]


def test_bad_utf8_bytes_are_replaced_and_counted(tmp_path, text_cfg, tokenizer, caplog):
    raw = "\ufeffsentence\tlabel\n".encode() + b"caf\xe9 au lait\t1\nna\xefve\t0\nok\t1\nfine\t0\n"
    path = _write(tmp_path / "latin1.tsv", raw)  # BOM + Latin-1 bytes
    with caplog.at_level(logging.WARNING, logger="transferlab.data"):
        bundle = load_data(str(path), text_cfg, DataOptions(val_fraction=0.5), tokenizer=tokenizer)
    assert "caf\ufffd au lait" in [text for text, _ in _all_rows(bundle)]
    assert any("2 byte sequence(s) are not valid UTF-8" in r.getMessage() for r in caplog.records)


def test_string_labels_and_numeric_order(tmp_path, text_cfg, tokenizer):
    words = _write(tmp_path / "w.csv", "text,label\na,spam\nb,ham\nc,eggs\nd,spam\ne,ham\nf,eggs\n")
    assert load_data(str(words), text_cfg, DataOptions(), tokenizer=tokenizer).classes == ["eggs", "ham", "spam"]
    numbers = _write(tmp_path / "n.csv", "text,label\n" + "".join(f"t{i},{i % 11}\n" for i in range(44)))
    bundle = load_data(str(numbers), text_cfg, DataOptions(), tokenizer=tokenizer)
    assert bundle.classes == [str(i) for i in range(11)]  # "10" after "9"
    assert all(bundle.classes[t] == str(int(x[1:]) % 11) for x, t in _all_rows(bundle))


def test_no_header_with_column_indices(tmp_path, text_cfg, tokenizer):
    path = _write(tmp_path / "raw.tsv", "1\tgreat\n0\tdull\n1\tsuperb\n0\tboring\n")
    opts = DataOptions(no_header=True, text_column="1", label_column="0", val_fraction=0.5)
    bundle = load_data(str(path), text_cfg, opts, tokenizer=tokenizer)
    assert sorted(_all_rows(bundle)) == [("boring", 0), ("dull", 0), ("great", 1), ("superb", 1)]
    default = _write(tmp_path / "raw2.csv", "great,1\ndull,0\nsuperb,1\nboring,0\n")  # defaults: text 0, label 1
    assert len(load_data(str(default), text_cfg, DataOptions(no_header=True), tokenizer=tokenizer).train) == 2
    with pytest.raises(DataError, match="column index 5 is out of range"):
        load_data(str(path), text_cfg, DataOptions(no_header=True, text_column="5"), tokenizer=tokenizer)


def test_named_columns(tmp_path, text_cfg, tokenizer):
    path = _write(tmp_path / "r.csv", "id,review,stars\n1,good,5\n2,bad,1\n3,great,5\n4,poor,1\n")
    opts = DataOptions(text_column="review", label_column="stars")
    assert load_data(str(path), text_cfg, opts, tokenizer=tokenizer).classes == ["1", "5"]


def test_collate_pads_dynamically(tmp_path, text_cfg, tokenizer):
    path = _write(tmp_path / "t.tsv", "sentence\tlabel\nshort\t0\n" + "a much longer sentence " * 3 + "\t1\n"
                  "x\t0\ny\t1\n")
    bundle = load_data(str(path), text_cfg, DataOptions(val_fraction=0.5, max_length=8), tokenizer=tokenizer)
    batch = bundle.collate([("short", 0), ("a much longer sentence " * 3, 1)])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape == (2, 8)  # truncated to max_length
    assert batch["attention_mask"].sum(1).tolist() == [3, 8]  # [CLS] short [SEP], then padding
    small = bundle.collate([("short", 0), ("x", 1)])
    assert small["input_ids"].shape == (2, 3) and small["labels"].tolist() == [0, 1]
    empty = bundle.collate([None])
    assert empty["labels"].shape == (0,) and empty["labels"].dtype == torch.long


# --- errors --------------------------------------------------------------------------------------

def _raises(path, cfg, tokenizer, match, **options):
    with pytest.raises(DataError, match=match) as info:
        load_data(str(path), cfg, DataOptions(**options), tokenizer=tokenizer)
    assert "\n" not in str(info.value)


def test_missing_columns_list_what_was_found(tmp_path, text_cfg, tokenizer):
    path = _write(tmp_path / "x.csv", "review,stars\ngood,5\n")
    _raises(path, text_cfg, tokenizer, "no text column .*columns found: 'review', 'stars'")
    _raises(path, text_cfg, tokenizer, "no label column 'label'; columns found: 'review', 'stars'", text_column="review")
    jsonl = _write(tmp_path / "x.jsonl", '{"body": "hi", "y": 1}\n')
    _raises(jsonl, text_cfg, tokenizer, "columns found: 'body', 'y'")


def test_val_label_unseen_in_training(tmp_path, text_cfg, tokenizer):
    _write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    _write(tmp_path / "val.csv", "text,label\nc,pos\nd,neutral\ne,mixed\n")
    _raises(tmp_path, text_cfg, tokenizer, r"val.csv has label\(s\) that training lacks: 'mixed', 'neutral'")


def test_one_class_only(tmp_path, text_cfg, tokenizer):
    _raises(_write(tmp_path / "one.tsv", "sentence\tlabel\na\t1\nb\t1\n"), text_cfg, tokenizer, "one class only")


@pytest.mark.parametrize("name, content, match", [
    ("notes.txt", "hello", "unknown file format .txt"),
    ("empty.tsv", "", "holds no rows"),
    ("header_only.csv", "text,label\n", "no usable rows"),
    ("all_bad.tsv", "sentence\tlabel\n\t1\nx\t\n", "all 2 row"),
])
def test_unusable_files(tmp_path, text_cfg, tokenizer, name, content, match):
    _raises(_write(tmp_path / name, content), text_cfg, tokenizer, match)


def test_too_few_examples_for_a_validation_split(tmp_path, text_cfg, tokenizer):
    _raises(_write(tmp_path / "two.tsv", "sentence\tlabel\na\t0\nb\t1\n"), text_cfg, tokenizer,
            "too few examples to hold out a validation split")


def test_no_tokenizer_and_wrong_model_kind(tmp_path, text_cfg, image_cfg, tokenizer):
    path = _write(tmp_path / "d.tsv", "sentence\tlabel\na\t0\nb\t1\n")
    _raises(path, text_cfg, None, "no tokenizer")
    _raises(path, image_cfg, tokenizer, "holds text data")


def test_two_formats_of_one_split_are_ambiguous(tmp_path, text_cfg, tokenizer):
    _write(tmp_path / "train.tsv", "sentence\tlabel\na\t0\n")
    _write(tmp_path / "train.csv", "text,label\na,0\n")
    _raises(tmp_path, text_cfg, tokenizer, "keep one file per split")
