"""Each dataset reader on a tiny fixture in the exact published layout (file names and annotation files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from centrum.data import DATASETS, build_dataset, read_idx
from dataset_layouts import (
    INSHOP_ROWS,
    fashion_mnist_arrays,
    make_c2s,
    make_cars,
    make_cub,
    make_deepfashion_inshop,
    make_dukemtmc,
    make_fashion_mnist,
    make_market,
    make_omniglot,
    make_sop,
    make_street2shop,
    write_idx,
    write_image,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"


# -- Market-1501 / DukeMTMC-reID -------------------------------------------------------------------------------
def test_market1501_counts_ids_cameras(tmp_path: Path) -> None:
    data = build_dataset("market1501", make_market(tmp_path))
    assert data.protocol == "reid" and data.name == "market1501"
    assert len(data.train) == 3 and data.num_train_classes == 2
    assert data.train.labels.tolist() == [0, 0, 1]
    assert data.train_class_ids.tolist() == [2, 7]
    assert data.train.cameras.tolist() == [1, 2, 3]
    assert data.query.labels.tolist() == [3, 4] and data.query.cameras.tolist() == [1, 6]
    # sorted names: "-1_..." is junk and dropped, "0000_..." is a distractor and stays as id 0
    assert sorted(data.gallery.labels.tolist()) == [0, 3, 3, 4]
    assert len(data.gallery) == 4
    assert not any("-1_" in Path(p).name for p in data.gallery.paths)
    assert data.gallery.labels.dtype == np.int64 and data.gallery.cameras.dtype == np.int64
    assert data.query is not data.gallery
    assert data.train.load(0).mode == "RGB"


def test_market1501_missing_folder_names_it(tmp_path: Path) -> None:
    make_market(tmp_path)
    for path in (tmp_path / "bounding_box_test").iterdir():
        path.unlink()
    (tmp_path / "bounding_box_test").rmdir()
    with pytest.raises(FileNotFoundError, match=r"no folder 'bounding_box_test'.*0002_c1s1_000451_03\.jpg"):
        build_dataset("market1501", tmp_path)


def test_market1501_parent_folder_gets_a_hint(tmp_path: Path) -> None:
    make_market(tmp_path / "Market-1501-v15.09.15")
    with pytest.raises(FileNotFoundError, match=r"did you mean root=.*Market-1501-v15.09.15"):
        build_dataset("market1501", tmp_path)


def test_market1501_bad_file_name_is_named(tmp_path: Path) -> None:
    make_market(tmp_path)
    write_image(tmp_path / "query" / "person3.jpg")
    with pytest.raises(ValueError, match=r"person3\.jpg"):
        build_dataset("market1501", tmp_path)


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere"):
        build_dataset("market1501", tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"pass root="):
        build_dataset("market1501")


def test_dukemtmc(tmp_path: Path) -> None:
    data = build_dataset("dukemtmc", make_dukemtmc(tmp_path))
    assert data.train.labels.tolist() == [0, 0, 1] and data.train.cameras.tolist() == [2, 5, 8]
    assert data.query.labels.tolist() == [9] and data.query.cameras.tolist() == [1]
    assert data.gallery.labels.tolist() == [9, 10] and data.gallery.cameras.tolist() == [2, 7]
    write_image(tmp_path / "query" / "0002_c1s1_000451_03.jpg")  # a Market name is a wrong layout here
    with pytest.raises(ValueError, match=r"0002_c1s1_000451_03.jpg.*0005_c2_f0046985.jpg"):
        build_dataset("dukemtmc", tmp_path)


# -- DeepFashion ------------------------------------------------------------------------------------------------
def test_deepfashion_inshop(tmp_path: Path) -> None:
    data = build_dataset("deepfashion-inshop", make_deepfashion_inshop(tmp_path))
    assert data.protocol == "products"
    assert len(data.train) == 2 and data.num_train_classes == 1 and data.train_class_ids.tolist() == [2]
    assert data.query.labels.tolist() == [80] and data.gallery.labels.tolist() == [80, 81]
    assert data.query.cameras.tolist() == [0] and data.gallery.cameras.tolist() == [1, 1]
    assert data.gallery.paths[1].endswith("Img/img/MEN/Denim/id_00000081/01_1_front.jpg")
    (tmp_path / "Img" / INSHOP_ROWS[0][0]).unlink()
    with pytest.raises(FileNotFoundError, match=r"02_1_front.jpg"):
        build_dataset("deepfashion-inshop", tmp_path)


def test_deepfashion_inshop_missing_partition(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"list_eval_partition.txt.*image_name item_id evaluation_status"):
        build_dataset("deepfashion-inshop", tmp_path)


def test_deepfashion_c2s_ctl_gallery_includes_val_shop_images(tmp_path: Path) -> None:
    make_c2s(tmp_path)
    data = build_dataset("deepfashion-c2s", tmp_path)
    # train: 2 consumer photos + 1 shop photo (listed twice) of item 1
    assert len(data.train) == 3 and data.train.cameras.tolist() == [0, 1, 0]
    assert data.query.labels.tolist() == [9, 9, 12] and set(data.query.cameras.tolist()) == {0}
    assert sorted(data.gallery.labels.tolist()) == [5, 9, 9, 12]  # val's shop photo of item 5 included
    assert set(data.gallery.cameras.tolist()) == {1}
    strict = build_dataset("deepfashion-c2s", tmp_path, gallery_includes_val=False)
    assert sorted(strict.gallery.labels.tolist()) == [9, 9, 12]


def test_deepfashion_c2s_crop_boxes(tmp_path: Path) -> None:
    make_c2s(tmp_path)
    data = build_dataset("deepfashion-c2s", tmp_path, crop_boxes=True)
    assert data.query.boxes is not None and data.query.boxes[0].tolist() == [1, 2, 3, 6]
    assert data.query.load(0).size == (2, 4)  # 4 x 8 image cropped to x 1..3, y 2..6


def test_deepfashion_c2s_bad_status(tmp_path: Path) -> None:
    make_c2s(tmp_path)
    path = tmp_path / "Eval" / "list_eval_partition.txt"
    path.write_text(path.read_text().replace(" val\n", " validation\n"))
    with pytest.raises(ValueError, match=r"'validation' is not train, val or test"):
        build_dataset("deepfashion-c2s", tmp_path)


# -- Street2Shop -------------------------------------------------------------------------------------------------
def test_street2shop(tmp_path: Path) -> None:
    make_street2shop(tmp_path)
    with pytest.warns(UserWarning, match=r"1 JSON entries refer to photos that are not in"):
        data = build_dataset("street2shop", tmp_path)
    assert data.protocol == "products"
    assert data.query.labels.tolist() == [200, 300]  # one query per box, photo 2 twice
    assert data.query.paths[0] == data.query.paths[1]
    assert data.query.load(0).size == (2, 4)  # cropped to its box
    assert sorted(data.gallery.labels.tolist()) == [100, 100, 200, 300, 400]
    # train: street boxes of products 100 and 400, plus their shop photos
    assert sorted(data.train_class_ids[data.train.labels].tolist()) == [100, 100, 100, 400, 400]
    assert data.train.cameras.tolist().count(1) == 3
    with pytest.warns(UserWarning):
        one = build_dataset("street2shop", tmp_path, categories="dresses", crop_street=False)
    assert sorted(one.gallery.labels.tolist()) == [100, 100, 200, 300]
    assert one.query.load(0).size == (4, 8)


def test_street2shop_missing_category_file(tmp_path: Path) -> None:
    make_street2shop(tmp_path)
    (tmp_path / "meta" / "json" / "test_pairs_hats.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_pairs_hats.json.*retrieval_<category>.json"):
        build_dataset("street2shop", tmp_path)


# -- CUB / CARS / SOP --------------------------------------------------------------------------------------------
def test_cub200_class_split(tmp_path: Path) -> None:
    data = build_dataset("cub200", make_cub(tmp_path))
    assert data.protocol == "dml" and data.query is data.gallery and data.query_is_gallery
    assert data.num_train_classes == 3 and data.train_class_ids.tolist() == [1, 2, 100]
    assert data.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.query.labels.tolist() == [101, 101, 150, 150, 200, 200]
    assert data.class_names[150] == "150.Bird_150"
    cropped = build_dataset("cub200", tmp_path, crop_boxes=True)
    assert cropped.train.load(0).size == (2, 4)  # x, y, width, height = 1, 2, 2, 4
    (tmp_path / "image_class_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"'image_class_labels.txt'"):
        build_dataset("cub200", tmp_path)


def test_cars196_from_mat_file(tmp_path: Path) -> None:
    pytest.importorskip("scipy.io")
    data = build_dataset("cars196", make_cars(tmp_path))
    assert data.protocol == "dml" and data.query is data.gallery
    assert data.train_class_ids.tolist() == [1, 98] and data.train.labels.tolist() == [0, 0, 1]
    assert data.query.labels.tolist() == [99, 99, 196]
    assert data.class_names[196] == "Car 196"
    assert Path(data.train.paths[0]).name == "000001.jpg"
    assert build_dataset("cars196", tmp_path, crop_boxes=True).train.load(0).size == (3, 4)
    (tmp_path / "cars_annos.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"'cars_annos.mat'"):
        build_dataset("cars196", tmp_path)


def test_sop_published_split(tmp_path: Path) -> None:
    data = build_dataset("sop", make_sop(tmp_path))
    assert data.train.labels.tolist() == [0, 0, 1] and data.train_class_ids.tolist() == [1, 2]
    assert data.query is data.gallery and data.query.labels.tolist() == [11319, 11319]
    assert data.train.cameras.tolist() == [1, 1, 2]  # super-class
    assert data.query.load(1).size == (4, 8)
    (tmp_path / "Ebay_test.txt").write_text("id class path\n")
    with pytest.raises(ValueError, match=r"Ebay_test.txt must start with the header"):
        build_dataset("sop", tmp_path)


# -- Omniglot ------------------------------------------------------------------------------------------------------
def test_omniglot_fixture_zips_deduplicated(tmp_path: Path) -> None:
    data = build_dataset("omniglot", make_omniglot(tmp_path))
    assert data.protocol == "dml" and data.query is data.gallery
    assert len(data.train) + len(data.query) == 6 * 3  # 6 distinct characters x 3 drawers, Greek read once
    assert data.train_class_ids.tolist() == [108, 109, 394]
    assert sorted(set(data.query.labels.tolist())) == [395, 900, 901]
    assert sorted(set(data.query.cameras.tolist())) == [1, 2, 3]
    assert data.class_names[900] == "Tagalog/character01"
    image = data.query.load(0)
    assert image.mode == "RGB" and image.size == (6, 6)
    reid = build_dataset("omniglot", tmp_path, protocol="reid", query_drawers=(1,), train_classes=2)
    assert reid.protocol == "reid" and reid.num_train_classes == 2
    assert set(reid.query.cameras.tolist()) == {1} and set(reid.gallery.cameras.tolist()) == {2, 3}
    assert len(reid.query) == 4 and len(reid.gallery) == 8


def test_omniglot_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"holds no drawings.*XXXX_YY.png"):
        build_dataset("omniglot", tmp_path)


@pytest.mark.skipif(not SHARED_OMNIGLOT.is_dir(), reason=f"the shared Omniglot copy {SHARED_OMNIGLOT} is absent")
def test_omniglot_shared_copy() -> None:
    data = build_dataset("omniglot", SHARED_OMNIGLOT)
    # two zips of 5 alphabets each, sharing Greek (24 characters) and Latin (26): 136 + 156 - 50 = 242 characters
    n_classes = data.num_train_classes + data.query.num_classes
    assert n_classes == 242
    assert len(data.train) + len(data.query) == 242 * 20
    assert np.bincount(data.query.cameras).tolist()[1:] == [data.query.num_classes] * 20  # each drawer once
    assert not set(data.train_class_ids.tolist()) & set(data.query.labels.tolist())
    image = data.train.load(0)
    assert image.size == (105, 105) and image.mode == "RGB"


# -- Fashion-MNIST ---------------------------------------------------------------------------------------------------
def test_fashion_mnist_class_disjoint(tmp_path: Path) -> None:
    arrays = fashion_mnist_arrays()
    data = build_dataset("fashion-mnist", make_fashion_mnist(tmp_path))
    assert data.protocol == "products" and data.num_train_classes == 5
    assert len(data.train) == 20 and sorted(set(data.train.labels.tolist())) == [0, 1, 2, 3, 4]
    assert len(data.query) == 10 and sorted(set(data.query.labels.tolist())) == [5, 6, 7, 8, 9]
    assert len(data.gallery) == 20 and sorted(set(data.gallery.labels.tolist())) == [5, 6, 7, 8, 9]
    assert data.query.paths[0] == "fashion-mnist/t10k/00005"
    assert data.gallery.paths[0] == "fashion-mnist/train/00005"
    image = data.query.load(0)
    assert image.mode == "RGB" and image.size == (28, 28)
    assert np.array_equal(np.asarray(image)[..., 0], arrays["t10k"][0][5])
    assert data.class_names[9] == "Ankle boot"
    small = build_dataset("fashion-mnist", tmp_path, train_classes=3, max_train_per_class=1, max_gallery_per_class=2)
    assert small.num_train_classes == 3 and len(small.train) == 3 and len(small.gallery) == 14
    again = build_dataset("fashion-mnist", tmp_path, train_classes=3, max_train_per_class=1, max_gallery_per_class=2)
    assert again.gallery.paths == small.gallery.paths  # deterministic subsample


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz.*apt-get install dataset-fashion-mnist"):
        build_dataset("fashion-mnist", tmp_path)
    import centrum.data.fashion as fashion

    monkeypatch.setattr(fashion, "FASHION_MNIST_ROOT", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"install it with `apt-get install dataset-fashion-mnist`"):
        build_dataset("fashion-mnist")


def test_read_idx_round_trip_and_bad_magic(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "b").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match=r"not an IDX file"):
        read_idx(tmp_path / "b")


# -- users' own data ---------------------------------------------------------------------------------------------
def test_csv_with_splits_and_cameras(tmp_path: Path) -> None:
    rows = [("a/1.jpg", 7, 1, "train"), ("a/2.jpg", 7, 2, "train"), ("b/1.jpg", 9, 1, "train"),
            ("c/1.jpg", 3, 1, "query"), ("c/2.jpg", 3, 2, "gallery"), ("d/1.jpg", 4, 2, "gallery")]  # fmt: skip
    for row in rows:
        write_image(tmp_path / row[0])
    (tmp_path / "data.csv").write_text(
        "path,label,camera,split\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows)
    )
    data = build_dataset("csv", tmp_path / "data.csv")
    assert data.protocol == "reid" and data.train_class_ids.tolist() == [7, 9]
    assert data.query.labels.tolist() == [3] and data.gallery.labels.tolist() == [3, 4]
    assert data.gallery.cameras.tolist() == [2, 2]
    assert data.gallery.paths[0] == str(tmp_path / "c/2.jpg")


def test_csv_without_header_split_or_camera_is_class_disjoint(tmp_path: Path) -> None:
    names = ["cat", "cat", "dog", "dog", "eel", "eel", "fox", "fox"]
    for k in range(len(names)):
        write_image(tmp_path / f"{k}.png")
    (tmp_path / "mine.csv").write_text("".join(f"{k}.png,{n}\n" for k, n in enumerate(names)))
    data = build_dataset("csv", tmp_path)  # a folder with one CSV
    assert data.protocol == "dml" and data.query is data.gallery
    assert data.class_names == {0: "cat", 1: "dog", 2: "eel", 3: "fox"}
    assert data.num_train_classes == 2 and data.query.labels.tolist() == [2, 2, 3, 3]


def test_csv_errors_name_row_or_file(tmp_path: Path) -> None:
    write_image(tmp_path / "x.jpg")
    (tmp_path / "d.csv").write_text("x.jpg,1,train\nmissing.jpg,2,query\n")
    with pytest.raises(FileNotFoundError, match=r"missing.jpg"):
        build_dataset("csv", tmp_path / "d.csv")
    (tmp_path / "d.csv").write_text("x.jpg,1,training\n")
    with pytest.raises(ValueError, match=r"row 1: split 'training'"):
        build_dataset("csv", tmp_path / "d.csv")


def test_folder_per_class(tmp_path: Path) -> None:
    for class_name, n in (("ant", 2), ("bee", 1), ("cow", 3), ("doe", 2)):
        for k in range(n):
            write_image(tmp_path / "plain" / class_name / f"{k}.jpg")
    data = build_dataset("folder", tmp_path / "plain", train_classes=3)
    assert data.protocol == "dml" and data.num_train_classes == 3
    assert len(data.train) == 6 and data.query.labels.tolist() == [3, 3]
    assert data.class_names[3] == "doe"
    for split, class_name in (
        ("train", "ant"),
        ("train", "bee"),
        ("query", "cow"),
        ("gallery", "cow"),
        ("gallery", "doe"),
    ):
        write_image(tmp_path / "split" / split / class_name / "0.jpg")
    split = build_dataset("folder", tmp_path / "split")
    assert split.protocol == "products" and split.num_train_classes == 2
    assert split.query.labels.tolist() == [2] and split.gallery.labels.tolist() == [2, 3]
    assert split.query.cameras.tolist() == [0] and split.gallery.cameras.tolist() == [1, 1]
    with pytest.raises(FileNotFoundError, match=r"no class folder with images"):
        build_dataset("folder", tmp_path / "split" / "train" / "ant")


def test_registry_names_and_unknown_dataset() -> None:
    assert set(DATASETS) == {"market1501", "dukemtmc", "deepfashion-inshop", "deepfashion-c2s", "street2shop",
                             "cub200", "cars196", "sop", "omniglot", "fashion-mnist", "csv", "folder"}  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'"):
        build_dataset("imagenet", "/tmp")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['max_per_klass'\] for dataset 'market1501'"):
        build_dataset("market", "/tmp", max_per_klass=3)


def test_max_per_class_is_deterministic(tmp_path: Path) -> None:
    make_market(tmp_path)
    data = build_dataset("market1501", tmp_path, max_per_class=1)
    assert np.bincount(data.train.labels).tolist() == [1, 1]
    assert np.unique(data.gallery.labels, return_counts=True)[1].max() == 1
    assert build_dataset("market1501", tmp_path, max_per_class=1).gallery.paths == data.gallery.paths


@pytest.mark.parametrize(
    ("name", "make", "default_classes"),
    [
        ("market1501", make_market, 2),
        ("dukemtmc", make_dukemtmc, 2),
        ("deepfashion-inshop", make_deepfashion_inshop, 1),
        ("deepfashion-c2s", make_c2s, 1),
        ("street2shop", make_street2shop, 2),
        ("cub200", make_cub, 3),
        ("cars196", make_cars, 2),
        ("sop", make_sop, 2),
        ("omniglot", make_omniglot, 3),
    ],
)
@pytest.mark.filterwarnings("ignore:street2shop.*not in:UserWarning")
def test_fixture_extra_train_classes(name: str, make, default_classes: int, tmp_path: Path) -> None:
    """The shared fixtures' ``extra_train_classes`` adds training classes of 2+ distinct images each and keeps
    the default images in their splits."""
    default = build_dataset(name, make(tmp_path / "default"))
    data = build_dataset(name, make(tmp_path / "extra", extra_train_classes=4))
    assert default.num_train_classes == default_classes and data.num_train_classes == default_classes + 4
    assert set(default.train_class_ids.tolist()) < set(data.train_class_ids.tolist())
    added = np.flatnonzero(~np.isin(data.train_class_ids[data.train.labels], default.train_class_ids))
    counts = np.unique(data.train.labels[added], return_counts=True)[1]
    assert len(counts) == 4 and counts.min() >= 2
    assert len({data.train.load(i).tobytes() for i in added}) == len(added)  # every extra image differs
    for split in ("query", "gallery"):
        before, after = getattr(default, split), getattr(data, split)
        moved = {p.replace(str(tmp_path / "default"), str(tmp_path / "extra")) for p in before.paths}
        assert moved <= set(after.paths) and len(after) > 0
