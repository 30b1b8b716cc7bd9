"""The network's own shape bias (Geirhos et al. 2019) against published answers: the 16-way
decision of ImageNet probabilities, and the scorer of texture-vs-shape's decision tables
rebuilt from the published counts (the raw-data files themselves carry no licence)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import ASSETS, tiny_config

from visual_ablation.analyses import imagenet16, shape_bias
from visual_ablation.data.stimuli import categories_of


def published_table(shape: int, texture: int, subject: str = "resnet50") -> pd.DataFrame:
    """A decisions table in texture-vs-shape's raw-data format with the published counts
    of one network: the 1,280 cue-conflict trials (80 without a conflict, their decisions
    right), `shape` and `texture` decisions among the 1,200 others, the rest neither."""
    categories = imagenet16.CATEGORIES
    rows = []
    for i in range(1280):
        s = categories[i // 80]
        t = s if i % 80 < 5 else categories[(i // 80 + 1 + i % 15) % 16]
        rows.append((s, t))
    conflict = [k for k, (s, t) in enumerate(rows) if s != t]
    assert len(conflict) == 1200
    decision = [s for s, _ in rows]  # no-conflict and shape decisions: the shape
    for j, k in enumerate(conflict):
        s, t = rows[k]
        if j >= shape:
            third = next(c for c in categories if c not in (s, t))
            decision[k] = t if j < shape + texture else third
    return pd.DataFrame(
        {
            "subj": subject,
            "session": 1,
            "trial": range(1, 1281),
            "object_response": decision,
            "category": [s for s, _ in rows],
            "imagename": [
                f"{k + 1:04d}_s5n_dnn_0_{s}_00_{s}{1 + k % 10}-{t}{1 + k % 7}.png"
                for k, (s, t) in enumerate(rows)
            ],
        }
    )


@pytest.mark.parametrize(
    ("network", "shape", "texture", "expected"),
    [
        ("resnet50", 162, 572, "0.2207"),
        ("vgg16", 84, 828, "0.0921"),
        ("alexnet", 182, 537, "0.2531"),
    ],
)
def test_the_scorer_prints_the_published_shape_bias(
    tmp_path, capsys, network, shape, texture, expected
):
    path = tmp_path / f"{network}.csv"
    published_table(shape, texture, network).to_csv(path, index=False)
    shape_bias.main([str(path)])
    printed = capsys.readouterr().out
    assert f"shape bias {expected}" in printed
    assert (
        f"1200 conflict trials ({shape} shape, {texture} texture decisions; 80 without" in printed
    )
    scored = shape_bias.score_decisions(pd.read_csv(path))
    assert scored["shape_match"] == pytest.approx(shape / 1200)
    assert scored["texture_match"] == pytest.approx(texture / 1200)


def test_stimulus_names_give_shape_and_texture():
    assert categories_of("airplane1-bicycle2.png") == ("airplane", "bicycle")
    assert categories_of("0001_s5n_dnn_0_airplane_00_airplane1-bicycle2.png") == (
        "airplane",
        "bicycle",
    )
    assert categories_of("cat/cat10-cat3.png") == ("cat", "cat")
    with pytest.raises(ValueError, match="not a cue-conflict stimulus"):
        categories_of("n01440764_10026.JPEG")


def test_a_table_without_the_raw_data_columns_is_refused_by_name():
    with pytest.raises(ValueError, match="missing: imagename"):
        shape_bias.score_decisions(pd.DataFrame({"subj": ["a"], "object_response": ["cat"]}))


def test_the_16_way_decision_is_the_highest_mean_probability_over_a_categorys_classes():
    """Known answer: knife's one class at 0.3 outweighs dog's 116 classes sharing 0.7
    (mean 0.006): the mean, not the sum, decides. 207 classes in 16 categories."""
    assert sum(len(c) for c in imagenet16.IMAGENET_CLASSES.values()) == 207
    assert len({i for c in imagenet16.IMAGENET_CLASSES.values() for i in c}) == 207
    p = np.zeros((2, 1000))
    p[0, 499] = 0.3
    p[0, list(imagenet16.IMAGENET_CLASSES["dog"])] = 0.7 / 116
    p[1, 0] = 1.0  # tench: no category's class; every mean is 0, the first category wins
    chosen = [imagenet16.CATEGORIES[i] for i in imagenet16.decisions(p)]
    assert chosen == ["knife", "airplane"]
    means = imagenet16.category_probabilities(p)
    assert means[0, imagenet16.CATEGORIES.index("dog")] == pytest.approx(0.7 / 116)
    with pytest.raises(ValueError, match="1000 columns"):
        imagenet16.decisions(np.ones((1, 16)) / 16)


SUBSET = ASSETS / "texture-vs-shape"


def test_a_networks_own_decisions_are_its_imagenet_heads_16_way_answers(tmp_path):
    """The bundled EfficientNet-Lite0's decisions on the committed stimuli equal its
    forward pass mapped by hand; the rows count the 16 conflict images; a backbone without
    an ImageNet-1k head gets no row and says why."""
    import torch
    import zarr

    from visual_ablation.data import preparation
    from visual_ablation.features.extractor import LayerExtractor
    from visual_ablation.plan.config import resolve

    config = tiny_config(
        results_dir=str(tmp_path),
        datasets={"geirhos": {"source": "geirhos", "path": str(SUBSET), "conflict_only": False}},
        representations=["original"],
        backbones={
            "effnet": {"model": "efficientnet_lite0", "weights": "pretrained", "layers": ["head"]},
            "pixels": {"model": "pixels", "image_size": 8},
        },
    )
    exp = resolve(config)
    data_spec = exp.data_spec("geirhos")
    preparation.prepare(data_spec, exp.data_store("geirhos"), progress=False)
    spec = exp.feature_spec("geirhos", "effnet", "original")
    decided = shape_bias.network_decisions(exp.data_store("geirhos"), data_spec, spec, "cpu")
    images = zarr.open_group(exp.data_store("geirhos"), mode="r")["images"][:]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    logits = LayerExtractor(spec["backbone"]).forward_bare(x)
    by_hand = [
        int(
            np.argmax(
                [
                    torch.softmax(row, 0)[list(imagenet16.IMAGENET_CLASSES[c])].mean()
                    for c in imagenet16.CATEGORIES
                ]
            )
        )
        for row in logits
    ]
    assert decided["decision"].tolist() == by_hand
    path = tmp_path / "effnet.npz"
    np.savez(path, **decided)
    none = shape_bias.network_decisions(
        exp.data_store("geirhos"),
        data_spec,
        exp.feature_spec("geirhos", "pixels", "original"),
        "cpu",
    )
    assert "not ImageNet-1k's 1000 classes" in str(none["reason"])
    np.savez(tmp_path / "pixels.npz", **none)
    rows = shape_bias.decision_rows([str(path), str(tmp_path / "pixels.npz")], "original")
    assert len(rows) == 1
    row = rows[0]
    assert (row["backbone"], row["layer"], row["probe"], row["n_test_images"]) == (
        "effnet",
        "decision",
        "network",
        16,
    )
    conflict = decided["shape"] != decided["texture"]
    assert row["shape_fraction"] == pytest.approx(
        (decided["decision"] == decided["shape"])[conflict].mean()
    )
