import numpy as np
import pytest

from segfusion.datasets.cityscapes import cityscapes_classes
from segfusion.resize import resize_bilinear, resize_nearest
from segfusion.types import ClassInfo, Instances, Panoptic, SemanticPrediction


def test_resize_bilinear_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for shape, size in [((3, 5, 7), (17, 30)), ((2, 8, 8), (32, 32)), ((1, 4, 9), (4, 9)), ((2, 9, 4), (5, 3))]:
        p = rng.random(shape).astype(np.float32)
        ours = resize_bilinear(p, size)
        ref = torch.nn.functional.interpolate(torch.from_numpy(p)[None], size=size, mode="bilinear", align_corners=False)[0].numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_resize_nearest_matches_torch():
    torch = pytest.importorskip("torch")
    lab = np.random.default_rng(1).integers(0, 5, (7, 9)).astype(np.uint8)
    ours = resize_nearest(lab, (20, 13))
    ref = torch.nn.functional.interpolate(torch.from_numpy(lab)[None, None].float(), size=(20, 13), mode="nearest")[0, 0].numpy()
    np.testing.assert_array_equal(ours, ref.astype(np.uint8))


def test_classinfo_roundtrip_and_errors():
    c = cityscapes_classes()
    assert c.num_classes == 19 and c.names[13] == "car" and c.ids[13] == 26
    assert c.category[11] == c.category[12] == "human"
    assert ClassInfo.from_json(c.to_json()) == c
    with pytest.raises(ValueError, match="unknown keys"):
        ClassInfo.from_dict({**c.to_dict(), "nmaes": []})
    with pytest.raises(ValueError, match="is_thing"):
        ClassInfo(names=("a", "b"), is_thing=(True,), category=("a", "b"), ids=(1, 2), colors=((0, 0, 0), (1, 1, 1)))


def test_panoptic_from_maps_crowd_and_derived_maps():
    c = cityscapes_classes()
    sem = np.array([[0, 0, 13, 13], [0, 255, 13, 11], [11, 11, 11, 11]], np.uint8)
    inst = np.array([[0, 0, 5, 5], [0, 0, 6, 0], [0, 7, 7, 0]], np.int32)
    pan = Panoptic.from_maps(sem, inst, c)
    by_class = {}
    for s in pan.segments:
        by_class.setdefault(s.class_index, []).append(s)
    assert len(by_class[0]) == 1 and not by_class[0][0].is_thing
    assert sorted(s.area for s in by_class[13]) == [1, 2]  # car instances 5 and 6
    persons = by_class[11]
    crowd = [s for s in persons if s.iscrowd]
    assert len(crowd) == 1 and crowd[0].area == 3  # person pixels with instance 0 -> one crowd segment
    np.testing.assert_array_equal(pan.semantic, sem)
    assert (pan.instance[sem == 0] == 0).all()
    assert (pan.instance[pan.segment_ids == crowd[0].id] == 0).all()
    assert len(np.unique(pan.instance[sem == 13])) == 2
    assert pan.segment(persons[0].id).bbox[2] >= 1


def test_panoptic_rejects_bad_input():
    c = cityscapes_classes()
    with pytest.raises(ValueError, match="differ in size"):
        Panoptic.from_maps(np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.int32), c)
    with pytest.raises(ValueError, match="outside"):
        Panoptic.from_maps(np.full((2, 2), 40, np.uint8), np.zeros((2, 2), np.int32), c)
    with pytest.raises(ValueError, match="no segment info"):
        Panoptic.from_segment_map(np.ones((2, 2), np.int32), {})


def test_instances_validation_and_semantic_prediction():
    with pytest.raises(ValueError, match="exactly one"):
        Instances(np.zeros((0, 4)), np.zeros(0), np.zeros(0), (4, 4))
    with pytest.raises(ValueError, match="mask_image"):
        Instances(np.zeros((1, 4)), np.ones(1), np.zeros(1), (4, 4), mask_image=np.zeros((1, 3, 4)))
    e = Instances.empty((4, 6))
    assert len(e) == 0 and e.select([]).mask_prob.shape == (0, 28, 28)
    prob = np.zeros((3, 2, 3), np.float32)
    prob[2, 1, :] = 1
    prob[1, 0, :] = 1
    sp = SemanticPrediction(prob, (8, 12))
    am = sp.argmax()
    assert am.shape == (8, 12) and am[0, 0] == 1 and am[-1, -1] == 2
