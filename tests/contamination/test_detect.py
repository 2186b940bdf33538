"""Image features in one pass (corrupt files skipped), matching by every method, and the calibration report."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_IMAGE_MODEL
from tests.contamination.cifar import cifar_images
from transferlab.contamination import image_matching as im
from transferlab.contamination.detect import (
    DEFAULT_THRESHOLDS,
    IMAGE_METHODS,
    calibrate_images,
    match_images,
)
from transferlab.contamination.image_features import (
    Embedder,
    features_from_arrays,
    image_features,
)

NON_EMBEDDING = tuple(m for m in IMAGE_METHODS if m != "embedding")


@pytest.fixture(scope="module")
def sources() -> list[np.ndarray]:
    return cifar_images(range(2))  # 20 images


@pytest.fixture(scope="module")
def strangers() -> list[np.ndarray]:
    return cifar_images([100])  # 10 other photographs


@pytest.fixture(scope="module")
def tiny_embedder() -> Embedder:
    from transferlab.models import create_model

    torch.manual_seed(0)
    return Embedder(create_model(TINY_IMAGE_MODEL, 2), size=32)


# ---- image_features ----------------------------------------------------------------------------------------
def test_image_features_skips_and_counts_corrupt_files_and_keeps_rows_aligned(tmp_path, sources):
    paths, ids = [], []
    for i, img in enumerate(sources[:4]):
        p = tmp_path / f"good{i}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
        ids.append(f"good{i}")
        if i == 1:  # two unreadable files in between the good ones
            noise = tmp_path / "noise.png"
            noise.write_bytes(np.random.default_rng(0).bytes(500))
            big = np.asarray(Image.fromarray(img).resize((128, 128)))
            full = tmp_path / "full.jpg"
            Image.fromarray(big).save(full, quality=90)
            truncated = tmp_path / "truncated.jpg"
            truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
            paths += [str(noise), str(truncated)]
            ids += ["noise", "truncated"]
    feats = image_features(paths, ids, batch=2)
    assert feats.ids == ["good0", "good1", "good2", "good3"]
    assert feats.paths == [str(tmp_path / f"good{i}.png") for i in range(4)]
    assert feats.skipped.count == 2
    assert {item["path"] for item in feats.skipped.items} == {str(tmp_path / "noise.png"),
                                                              str(tmp_path / "truncated.jpg")}
    # every row is the features of its own file
    assert feats.keys == [im.pixel_hash(img) for img in sources[:4]]
    assert feats.grey.shape == (4, 32, 32) and feats.grey.dtype == torch.float16
    ref_grey = np.stack([im.to_grey32(img) for img in sources[:4]])
    assert np.abs(feats.grey.float().numpy() - ref_grey).max() < 0.2  # float16 rounding of 0..255
    assert feats.phash.tolist() == [im.phash(img) for img in sources[:4]]
    assert feats.dhash.tolist() == [im.dhash(img) for img in sources[:4]]
    assert feats.embedding is None and len(feats) == 4


def test_image_features_of_only_unreadable_files_is_empty_with_all_counted(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    feats = image_features([str(bad)], ["bad"])
    assert len(feats) == 0 and feats.grey.shape == (0, 32, 32) and feats.skipped.count == 1


def test_features_from_arrays_match_the_file_features(tmp_path, sources):
    paths = []
    for i, img in enumerate(sources[:3]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    a = features_from_arrays(sources[:3], ["a", "b", "c"])
    f = image_features(paths, ["a", "b", "c"])
    assert a.ids == ["a", "b", "c"] and a.paths == ["", "", ""]
    assert a.keys == f.keys and torch.equal(a.grey, f.grey)
    assert np.array_equal(a.phash, f.phash) and np.array_equal(a.dhash, f.dhash)
    with pytest.raises(ValueError, match="expected an H x W x 3 uint8 image"):
        features_from_arrays([sources[0].astype(np.float32)], ["x"])
    with pytest.raises(ValueError, match="expected an H x W x 3 uint8 image"):
        features_from_arrays([sources[0][:, :, 0]], ["grey"])


def test_subset_picks_the_same_rows_of_every_field(sources, tiny_embedder):
    feats = features_from_arrays(sources[:5], list("abcde"), embedder=tiny_embedder)
    sub = feats.subset([3, 0, 3])
    assert sub.ids == ["d", "a", "d"] and sub.keys == [feats.keys[i] for i in (3, 0, 3)]
    assert torch.equal(sub.grey, feats.grey[[3, 0, 3]])
    assert sub.phash.tolist() == feats.phash[[3, 0, 3]].tolist()
    assert sub.dhash.tolist() == feats.dhash[[3, 0, 3]].tolist()
    assert torch.equal(sub.embedding, feats.embedding[[3, 0, 3]])
    assert features_from_arrays(sources[:2], ["a", "b"]).subset([1]).embedding is None


def test_embedder_gives_unit_rows_equal_for_equal_images(sources, tiny_embedder):
    feats = features_from_arrays([sources[0], sources[1], sources[0]], ["a", "b", "c"], embedder=tiny_embedder)
    emb = feats.embedding
    assert emb.shape[0] == 3 and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(emb[0], emb[2], atol=1e-6) and not torch.allclose(emb[0], emb[1], atol=1e-3)
    # a larger image is resized to the embedding's side first
    big = np.asarray(Image.fromarray(sources[0]).resize((48, 48)))
    assert tiny_embedder.prepare(big).shape == (32, 32, 3)
    assert tiny_embedder([big]).shape == (1, emb.shape[1])


@pytest.mark.parametrize("size", [8, 2048])
def test_embedder_refuses_sizes_out_of_range(size, tiny_embedder):
    with pytest.raises(ValueError, match="embedding size must be in 16..1024"):
        Embedder(tiny_embedder.model, size=size)


# ---- match_images ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted(sources, strangers):
    """A target of exact copies (rows 0-3), JPEG re-encodes (4-7), 3-pixel shifts (8-11) and strangers (12-21);
    `own[t]` is target t's source row (-1: a stranger)."""
    exact_of, jpeg_of, shift_of = [2, 5, 11, 17], [0, 7, 13, 19], [1, 8, 12, 15]
    shifts = [(3, 0), (0, -3), (3, 3), (-2, 3)]
    target = ([sources[s].copy() for s in exact_of] + [im._jpeg(sources[s], 50) for s in jpeg_of]
              + [im._shift(sources[s], *d) for s, d in zip(shift_of, shifts)] + list(strangers))
    own = np.array(exact_of + jpeg_of + shift_of + [-1] * len(strangers))
    src = features_from_arrays(sources, [f"s{i}" for i in range(len(sources))])
    tgt = features_from_arrays(target, [f"t{i}" for i in range(len(target))])
    return tgt, src, own


def test_match_images_finds_each_kind_of_copy_with_its_source(planted):
    tgt, src, own = planted
    found = match_images(tgt, src, NON_EMBEDDING)
    assert list(found) == list(NON_EMBEDDING)
    exact, jpeg, shifted, stranger = slice(0, 4), slice(4, 8), slice(8, 12), slice(12, None)
    assert found["exact"].dirty().tolist() == [True] * 4 + [False] * 18
    assert found["exact"].source[exact].tolist() == own[exact].tolist()
    assert (found["exact"].source[4:] == -1).all()
    for method in ("phash", "dhash"):
        r = found[method]
        assert r.dirty()[jpeg].all() and r.source[jpeg].tolist() == own[jpeg].tolist()
        assert (r.score[exact] == 0).all() and r.source[exact].tolist() == own[exact].tolist()
    a = found["aligned"]
    assert a.dirty()[: 12].all() and a.source[: 12].tolist() == own[: 12].tolist()
    assert (a.score[shifted] > 0.95).all()
    # the strangers are clean under every method at the default thresholds
    for method, r in found.items():
        assert not r.dirty()[stranger].any(), method
    assert (found["aligned"].score[stranger] < DEFAULT_THRESHOLDS["aligned"] - 0.1).all()
    assert (found["phash"].score[stranger] > DEFAULT_THRESHOLDS["phash"] + 4).all()


def test_shifted_copies_are_missed_by_the_hashes_and_found_by_aligned(planted):
    """The reason the aligned method exists: a 3-pixel shift moves a hash far from its original."""
    tgt, src, own = planted
    found = match_images(tgt.subset(range(8, 12)), src, ("phash", "aligned"))
    assert not found["phash"].dirty().all()
    assert found["aligned"].dirty().all() and found["aligned"].source.tolist() == own[8:12].tolist()


def test_match_images_with_embeddings(sources, strangers, tiny_embedder):
    tgt_imgs = [sources[3], sources[9], strangers[0]]
    src = features_from_arrays(sources, [f"s{i}" for i in range(20)], embedder=tiny_embedder)
    tgt = features_from_arrays(tgt_imgs, ["a", "b", "c"], embedder=tiny_embedder)
    found = match_images(tgt, src)
    assert list(found) == list(IMAGE_METHODS)
    emb = found["embedding"]
    assert emb.source[:2].tolist() == [3, 9] and np.allclose(emb.score[:2], 1.0, atol=1e-5)
    assert found["aligned"].source[:2].tolist() == [3, 9]


def test_exact_ties_go_to_the_lowest_source_row(sources):
    src = features_from_arrays([sources[0], sources[1], sources[1], sources[2]], list("abcd"))
    tgt = features_from_arrays([sources[1]], ["t"])
    found = match_images(tgt, src, ("exact", "phash", "aligned"))
    assert found["exact"].source.tolist() == [1] and found["phash"].source.tolist() == [1]
    assert found["aligned"].source.tolist() == [1]


def test_match_images_bad_input(planted, sources):
    tgt, src, _ = planted
    with pytest.raises(ValueError, match="the source holds no images"):
        match_images(tgt, src.subset([]), ("exact",))
    with pytest.raises(ValueError, match=r"unknown image method\(s\) \['ngram'\]"):
        match_images(tgt, src, ("exact", "ngram"))
    with pytest.raises(ValueError, match="needs embeddings of both sets"):
        match_images(tgt, src, ("embedding",))
    empty = match_images(tgt.subset([]), src, ("exact", "aligned"))
    assert list(empty) == ["exact", "aligned"] and all(len(r.source) == 0 for r in empty.values())


# ---- calibrate_images --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibration():
    images = cifar_images(range(10, 14))  # 40 images
    feats = features_from_arrays(images, [str(i) for i in range(40)])
    report = calibrate_images(feats, lambda row: images[row], None, methods=NON_EMBEDDING,
                              sweep={"aligned": [0.3, DEFAULT_THRESHOLDS["aligned"]],
                                    "phash": [DEFAULT_THRESHOLDS["phash"], 20]})
    return report, feats, images


def test_calibrate_images_structure_and_counts(calibration):
    report, _, _ = calibration
    assert report["n_negatives"] == 13 and report["n_sources"] == 27 and report["n_copied"] == 27
    assert report["n_copies"] == 27 * len(im.COPY_KINDS) and report["kinds"] == list(im.COPY_KINDS)
    assert list(report["methods"]) == list(NON_EMBEDDING)
    entries = [*report["methods"].values(), report["any"]]
    entries += [s for m in report["methods"].values() for s in m.get("sweep", [])]
    for e in entries:
        assert set(e) >= {"recall", "recall_by_kind", "false_positive_rate", "precision", "tp", "fp"}
        assert list(e["recall_by_kind"]) == list(im.COPY_KINDS)
        assert e["recall"] == pytest.approx(e["tp"] / report["n_copies"])
        assert e["false_positive_rate"] == pytest.approx(e["fp"] / report["n_negatives"])
        if e["tp"] + e["fp"]:
            assert e["precision"] == pytest.approx(e["tp"] / (e["tp"] + e["fp"]))
        else:
            assert e["precision"] is None
        # every kind has n_copied copies: overall recall is the mean of the kinds'
        assert e["recall"] == pytest.approx(np.mean(list(e["recall_by_kind"].values())))
    methods = report["methods"]
    assert methods["exact"]["threshold"] is None and methods["exact"]["match_if"] == "pixels equal"
    assert methods["aligned"]["threshold"] == DEFAULT_THRESHOLDS["aligned"]
    assert methods["phash"]["match_if"] == f"distance <= {DEFAULT_THRESHOLDS['phash']}"
    # "any" finds at least what each method finds
    for m in methods.values():
        assert report["any"]["tp"] >= m["tp"] and report["any"]["fp"] >= m["fp"]


def test_calibrate_images_measures_the_claimed_recall(calibration):
    report, _, _ = calibration
    m = report["methods"]
    assert m["aligned"]["recall_by_kind"]["shift"] >= 0.9 and m["aligned"]["recall"] >= 0.9
    assert m["phash"]["recall_by_kind"]["jpeg"] >= 0.9 and m["phash"]["false_positive_rate"] == 0.0
    assert m["phash"]["recall_by_kind"]["shift"] < 0.5  # geometric copies defeat the hash
    assert m["exact"]["tp"] == 0  # near-copies are never pixel-equal


def test_calibrate_images_sweep_agrees_with_the_entry_and_loosening_adds_matches(calibration):
    report, _, _ = calibration
    for method in ("aligned", "phash"):
        entry = report["methods"][method]
        at = DEFAULT_THRESHOLDS[method]
        same = next(s for s in entry["sweep"] if s["threshold"] == at)
        assert {k: same[k] for k in ("tp", "fp", "recall")} == {k: entry[k] for k in ("tp", "fp", "recall")}
    loose = report["methods"]["aligned"]["sweep"][0]  # score >= 0.3: strangers match too
    assert loose["threshold"] == 0.3 and loose["fp"] > 0
    assert loose["tp"] >= report["methods"]["aligned"]["tp"]


def test_calibrate_images_is_deterministic_and_needs_three_sources(calibration):
    report, feats, images = calibration
    again = calibrate_images(feats, lambda row: images[row], None, methods=NON_EMBEDDING,
                             sweep={"aligned": [0.3, DEFAULT_THRESHOLDS["aligned"]],
                                    "phash": [DEFAULT_THRESHOLDS["phash"], 20]})
    assert again == report
    with pytest.raises(ValueError, match="at least 3 source images"):
        calibrate_images(feats.subset([0, 1]), lambda row: images[row], None, methods=("phash",))
