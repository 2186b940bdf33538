"""Property: any file contents given to the text reader give a DataBundle or a DataError, nothing else."""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferlab.data import DataBundle, DataError, DataOptions, load_data
from transferlab.models._config import PretrainedCfg

TEXT_CFG = PretrainedCfg(name="test-text", modality="text", max_length=16)  # a constant: hypothesis reruns the body

SUFFIXES = st.sampled_from([".tsv", ".csv", ".jsonl"])
# Characters that stress the readers: delimiters, quotes, line breaks, NUL, BOM, invalid surrogates are
# impossible in str, so bad bytes come from the binary strategy instead.
CELL = st.text(alphabet=st.sampled_from(list('ab1 0\t,"\n\r\\{}[]:\x00\ufeff\u2028é')), max_size=12)
LABEL = st.sampled_from(["0", "1", "pos", "neg", "", " 1"]) | CELL
ROW = st.tuples(CELL, LABEL).map(list) | st.lists(CELL, max_size=3)  # mostly well-formed, some not
OPTIONS = st.builds(DataOptions, no_header=st.booleans(), val_fraction=st.sampled_from([0.2, 0.5]),
                    max_train=st.none() | st.integers(1, 5))


def _from_rows(rows, suffix, header):
    if suffix == ".jsonl":
        return "\n".join(json.dumps(dict(zip(["text", "label"], r)) if header else r) for r in rows).encode()
    sep = "\t" if suffix == ".tsv" else ","
    lines = (["sentence" + sep + "label"] if header else []) + [sep.join(r) for r in rows]
    return "\n".join(lines).encode()


CONTENTS = st.one_of(
    st.binary(max_size=600),
    st.builds(_from_rows, st.lists(ROW, max_size=12), SUFFIXES, st.booleans()),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=CONTENTS, suffix=SUFFIXES, options=OPTIONS)
def test_text_reader_gives_a_bundle_or_a_data_error(tokenizer, contents, suffix, options):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(contents)
        try:
            bundle = load_data(str(path), TEXT_CFG, options, tokenizer=tokenizer)
        except DataError as exc:
            message = str(exc)
            assert "\n" not in message and (str(path) in message or "--max-train" in message)
            return
    assert isinstance(bundle, DataBundle) and len(bundle.classes) >= 2
    assert len(bundle.train) >= 1 and all(0 <= t < len(bundle.classes) for t in bundle.train.targets)
    batch = bundle.collate([bundle.train[i] for i in range(min(4, len(bundle.train)))])
    assert batch["labels"].shape[0] == batch["input_ids"].shape[0]
