"""The pictures a reader looks at: training curves, search results and ranked lists, t-SNE maps.

Each test inspects the Matplotlib figure (panels, titles, axis labels, texts) and the saved file's size.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from centrum.reports import (
    embedding_map_figure,
    plot_ranked_lists,
    plot_search_results,
    plot_training_curves,
    ranked_page_figure,
    training_curves_figure,
)
from centrum.reports.curves import is_counter, learning_rate_points
from centrum.reports.ranked import (
    Match,
    QueryRow,
    display_name,
    distance_decimals,
    format_distance,
    page_paths,
    shorten,
)

# the columns a Symm run and a CTL run log (Lightning's CSV logger), counters included
SYMM_COLUMNS = [
    "epoch", "step", "eval/dml/F1", "eval/dml/MAP@R", "eval/dml/NMI", "eval/dml/R-Precision", "eval/dml/Recall@1",
    "eval/dml/Recall@2", "eval/dml/Recall@4", "eval/dml/Recall@8", "eval/dml/num_queries",
    "eval/dml/num_queries_with_match", "train/loss_epoch", "train/loss_step", "train/lr",
    "train/num_candidates_epoch", "train/num_chosen_negatives_epoch", "train/num_synthetic_negatives_epoch",
    "train/num_synthetic_points_epoch", "train/synthetic_ratio_epoch", "train/synthetic_ratio_step",
]  # fmt: skip


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def symm_run(path: Path, epochs: int = 8, milestone: int = 6) -> Path:
    """A metrics.csv as a run logs it: the lr after the scheduler's step (x0.1 from 0-based epoch ``milestone``),
    counters that change every epoch, evaluation every epoch."""
    rows = []
    for e in range(epochs):
        next_rate = 1e-3 * (0.1 if e + 1 >= milestone else 1.0)  # the rate of epoch e + 1, logged at epoch e
        rows.append({"epoch": e, "step": 10 * e + 5, "train/loss_step": 0.5})
        row = {"epoch": e, "step": 10 * e + 9, "train/loss_epoch": 1 / (e + 1), "train/lr": next_rate}
        row.update({c: 100 + 7 * e for c in SYMM_COLUMNS if "num_" in c})
        row["train/synthetic_ratio_epoch"] = 0.1 * e
        row.update({c: 0.1 + 0.01 * e for c in SYMM_COLUMNS if c.startswith("eval/") and "num_" not in c})
        rows.append(row)
    return write_csv(path, SYMM_COLUMNS, rows)


def visible_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def test_counters_are_recognised() -> None:
    for column in ("eval/dml/num_queries", "train/num_candidates_epoch", "train/triplet/num_negatives_epoch",
                   "eval/products/num_gallery"):  # fmt: skip
        assert is_counter(column), column
    for column in ("train/loss_epoch", "eval/dml/Recall@1", "train/synthetic_ratio_epoch", "eval/reid/mINP"):
        assert not is_counter(column), column


def test_curves_draw_losses_metrics_and_lr_but_no_counter(tmp_path: Path) -> None:
    fig = training_curves_figure(symm_run(tmp_path / "metrics.csv"), title="a Symm run")
    axes = visible_axes(fig)
    titles = [ax.get_title() for ax in axes]
    # 21 columns, 8 of them counters: five panels, the eight Recall/score curves grouped in two
    assert titles == [
        "training loss",
        "share of synthetic negatives",
        "learning rate",
        "dml: top-k hits (test)",
        "dml: scores (test)",
    ]
    assert fig._suptitle.get_text() == "a Symm run"
    every_label = [line.get_label() for ax in axes for line in ax.get_lines()]
    assert not [label for label in every_label if "num" in label]
    assert [line.get_label() for line in axes[3].get_lines()] == ["Recall@1", "Recall@2", "Recall@4", "Recall@8"]
    assert next(line.get_label() for line in axes[4].get_lines()) == "MAP@R"  # mAP-like first
    for ax in axes:
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
        assert ax.get_xlim() == (0.5, 8.5)  # one epoch range for every panel
    # metrics in percent, as the results table prints them
    np.testing.assert_allclose(axes[3].get_lines()[0].get_ydata(), [10 + e for e in range(8)])
    assert len(fig.axes) <= 6  # a 2 x 3 grid at most
    plt.close(fig)


def test_learning_rate_is_drawn_at_the_epoch_that_used_it(tmp_path: Path) -> None:
    """The epoch lines print the rate an epoch trained with (x0.1 from epoch 7 with milestone 6); train/lr is
    logged after the scheduler's step. Before the fix the drop appeared at epoch 6 on the picture."""
    metrics = symm_run(tmp_path / "metrics.csv", epochs=8, milestone=6)
    rows = list(csv.DictReader(metrics.open()))
    points = dict(learning_rate_points(rows))
    assert points == {2: 1e-3, 3: 1e-3, 4: 1e-3, 5: 1e-3, 6: 1e-3, 7: 1e-4, 8: 1e-4}  # epoch 1: not logged
    fig = training_curves_figure(metrics)
    (lr_axes,) = [ax for ax in fig.axes if ax.get_title() == "learning rate"]
    xs, ys = lr_axes.get_lines()[0].get_data()
    assert list(xs) == [2, 3, 4, 5, 6, 7, 8] and ys[4] == pytest.approx(1e-3) and ys[5] == pytest.approx(1e-4)
    assert lr_axes.get_yscale() == "linear"  # 10x only
    assert [t.get_text() for t in lr_axes.texts] == ["epoch 1: rate not logged"]
    plt.close(fig)


def test_a_rate_logged_for_the_epoch_itself_is_not_moved(tmp_path: Path) -> None:
    rows = [{"epoch": e, "step": e, "train/loss_epoch": 1.0, "train/lr_epoch": r} for e, r in enumerate([1, 2, 3])]
    metrics = write_csv(tmp_path / "m.csv", ["epoch", "step", "train/loss_epoch", "train/lr_epoch"], rows)
    assert learning_rate_points(list(csv.DictReader(metrics.open()))) == [(1, 1.0), (2, 2.0), (3, 3.0)]
    titles = [ax.get_title() for ax in visible_axes(training_curves_figure(metrics))]
    assert titles == ["training loss", "learning rate"]  # not a "training lr" loss term
    plt.close("all")


def test_ctl_loss_terms_share_one_panel_with_a_log_scale(tmp_path: Path) -> None:
    columns = ["epoch", "step", "train/loss_epoch", "train/cross_entropy_epoch", "train/center_epoch",
               "train/triplet_epoch", "train/triplet/num_negatives_epoch", "eval/products/mAP",
               "eval/products/Acc@1", "eval/products/Acc@10", "eval/products-centroids/mAP"]  # fmt: skip
    rows = [
        {
            "epoch": e,
            "step": e,
            "train/loss_epoch": 5 - e,
            "train/cross_entropy_epoch": 1.5 - 0.1 * e,
            "train/center_epoch": 400 - 10 * e,
            "train/triplet_epoch": 0.3,
            "train/triplet/num_negatives_epoch": 60,
            "eval/products/mAP": 0.2,
            "eval/products/Acc@1": 0.3,
            "eval/products/Acc@10": 0.6,
            "eval/products-centroids/mAP": 0.4,
        }
        for e in range(3)
    ]
    fig = training_curves_figure(write_csv(tmp_path / "m.csv", columns, rows))
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "training loss", "loss terms", "products: top-k hits (test)", "products mAP (test)",
        "products-centroids mAP (test)",
    ]  # fmt: skip
    assert [line.get_label() for line in axes[1].get_lines()] == ["cross-entropy", "center", "triplet"]
    assert axes[1].get_yscale() == "log" and axes[1].get_legend() is not None
    assert axes[0].get_legend() is None  # one curve: its title names it
    plt.close(fig)


def test_curves_png_is_bounded_and_atomic(tmp_path: Path) -> None:
    path = plot_training_curves(symm_run(tmp_path / "metrics.csv"), tmp_path / "out" / "curves.png")
    width, height = Image.open(path).size
    assert 800 <= width <= 1500 and 400 <= height <= 900
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["curves.png"]  # no temporary file left


def search_inputs(tmp_path: Path, queries: int, k: int):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    paths = []
    for i in range(queries + k):
        p = tmp_path / "photos" / f"class{i % 3}" / f"a_rather_long_photo_name_number_{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), colours[i % 3]).save(p)
        paths.append(str(p))
    query_paths = paths[:queries]
    labels = np.array([i % 3 for i in range(queries)])
    matches = [[(paths[queries + j], j % 3, 0.0004 * (j + 1)) for j in range(k)] for _ in range(queries)]
    return query_paths, labels, matches, {0: "sandal", 1: "shirt", 2: "bag"}


def test_thirty_queries_make_readable_pages_with_file_names(tmp_path: Path) -> None:
    query_paths, labels, matches, names = search_inputs(tmp_path, 30, 3)
    pages = plot_search_results(query_paths, labels, matches, names, tmp_path / "ranked.png")
    # before: one 990 x 5610 strip without file names
    assert [p.name for p in pages] == ["ranked.png", "ranked-2.png", "ranked-3.png", "ranked-4.png"]
    sizes = [Image.open(page).size for page in pages]
    assert all(w <= 800 and h <= 1700 for w, h in sizes), sizes
    assert sizes[3][1] < sizes[0][1]  # the last page holds the 6 queries left


def test_a_full_page_is_bounded() -> None:
    image = Image.new("RGB", (32, 32))
    rows = [QueryRow(lambda: image, "q.png", "a", [Match(lambda: image, "a", 0.1, True)] * 30)] * 8
    fig = ranked_page_figure(rows, title="t", max_matches=10)
    width, height = fig.get_size_inches() * 110  # the dpi pages are saved at
    assert len(fig.axes) == 8 * 11 and width <= 1800 and height <= 1700
    plt.close(fig)


def test_search_page_labels_queries_distances_and_title(tmp_path: Path) -> None:
    query_paths, labels, matches, names = search_inputs(tmp_path, 3, 4)
    labels[2] = -1  # a query without a class: its matches are not judged
    rows = [
        QueryRow(lambda p=p: Image.open(p), display_name(p), None if lab == -1 else names[lab],
                 [Match(lambda m=m: Image.open(m[0]), names[m[1]], m[2], None if lab == -1 else m[1] == lab)
                  for m in ms])
        for p, lab, ms in zip(query_paths, labels, matches, strict=True)
    ]  # fmt: skip
    fig = ranked_page_figure(rows, title="search: top-4 matches of 3 queries")
    assert len(fig.axes) == 3 * 5
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "class0/a_ra…ber_0000.png\nclass sandal"
    assert titles[10] == "class2/a_ra…ber_0002.png"  # no class, no class line
    assert titles[1] == "1. sandal\nd = 0.000400"  # not 0.00
    assert titles[4] == "4. sandal\nd = 0.001600"  # one format for the page
    assert fig.axes[1].title.get_color() == "#1a7f37" and fig.axes[2].title.get_color() == "#cf222e"
    assert fig.axes[11].title.get_color() == "#57606a"
    assert fig._suptitle.get_text().startswith("search: top-4 matches of 3 queries\nframe: green")
    plt.close(fig)


def test_search_picture_caps_the_matches_and_says_so(tmp_path: Path) -> None:
    query_paths, labels, matches, names = search_inputs(tmp_path, 2, 30)
    figures = []
    real_close = plt.close
    plt.close = lambda fig=None: figures.append(fig)
    try:
        (page,) = plot_search_results(query_paths, labels, matches, names, tmp_path / "r.png", max_matches=10)
    finally:
        plt.close = real_close
    assert "(top 10 of 30 shown)" in figures[-1]._suptitle.get_text()
    assert len(figures[-1].axes) == 2 * 11
    real_close("all")
    assert Image.open(page).size[0] < 2000


def test_search_picture_as_one_multipage_pdf(tmp_path: Path) -> None:
    query_paths, labels, matches, names = search_inputs(tmp_path, 10, 2)
    (pdf,) = plot_search_results(query_paths, labels, matches, names, tmp_path / "r.pdf", rows_per_page=4)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") >= 3
    assert page_paths(tmp_path / "r.png", 3)[2].name == "r-3.png"


def test_search_picture_refuses_mismatched_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 query paths, 1 query labels and 2 match lists"):
        plot_search_results(["a", "b"], [0], [[], []], {}, tmp_path / "r.png")
    with pytest.raises(ValueError, match="no query to draw"):
        plot_search_results([], [], [], {}, tmp_path / "r.png")


def test_unreadable_match_is_a_placeholder(tmp_path: Path) -> None:
    query_paths, labels, _, names = search_inputs(tmp_path, 1, 1)
    (page,) = plot_search_results(query_paths, labels, [[(str(tmp_path / "gone.png"), 0, 0.5)]], names,
                                  tmp_path / "r.png")  # fmt: skip
    assert Image.open(page).size[0] > 0


def test_shortened_names_keep_both_ends() -> None:
    assert shorten("short.png") == "short.png"
    long = "a_very_long_file_name_from_a_camera_0001.jpg"
    cut = shorten(long, 20)
    assert len(cut) == 20 and cut.startswith("a_very_lo") and cut.endswith("0001.jpg") and "…" in cut
    assert display_name("/data/photos/sandal/0012.png") == "sandal/0012.png"
    assert distance_decimals([0.51, 0.533, 0.7]) == 3 and distance_decimals([0.0004, 0.2]) == 6
    assert distance_decimals([5.2, 12.0]) == 2 and distance_decimals([0.0, 0.0]) == 2 and distance_decimals([]) == 2
    assert format_distance(0.51, 3) == "0.510" and format_distance(0.000812, 6) == "0.000812"


def test_ranked_lists_label_rows_with_query_names(tmp_path: Path) -> None:
    gallery = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(5)]
    figures = []
    real_close = plt.close
    plt.close = lambda fig=None: figures.append(fig)
    try:
        path = plot_ranked_lists(
            gallery.__getitem__, gallery.__getitem__, [0, 1], np.array([[1, 2, 3], [0, 4, 2]]), np.array([0, 1]),
            np.array([0, 0, 1, 1, 1]), tmp_path / "r.png", distances=np.full((2, 3), 0.25), title="demo",
            class_names={0: "sandal", 1: "bag"}, query_names=["q/first.png", "q/second.png"],
        )  # fmt: skip
    finally:
        plt.close = real_close
    fig = figures[-1]
    assert [fig.axes[0].get_title(), fig.axes[4].get_title()] == [
        "q/first.png\nclass sandal",
        "q/second.png\nclass bag",
    ]
    assert fig.axes[1].get_title() == "1. sandal\nd = 0.250"
    real_close("all")
    width, height = Image.open(path).size
    assert width > height > 0


def test_embedding_map_has_a_key_beside_the_points() -> None:
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 0.1, (20, 8)), rng.normal(3, 0.1, (20, 8))])
    fig = embedding_map_figure(points, np.repeat([0, 1], 20), title="unseen classes", class_names={0: "a", 1: "b"})
    (ax,) = fig.axes
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    assert ax.get_title() == "unseen classes"
    plt.close(fig)
    many = embedding_map_figure(rng.normal(size=(60, 4)), np.arange(60) % 30)
    assert many.axes[0].get_legend() is None and "30 classes; colours repeat" in many.axes[0].get_title()
    plt.close(many)


def test_centroid_panels_follow_their_protocol_and_saturated_hits_are_named(tmp_path: Path) -> None:
    """Five class centroids: Acc@10 and above are 100 % by construction; a 1.6-point mAP change stays small."""
    columns = ["epoch", "step", "train/loss_epoch", "eval/products-centroids/Acc@1", "eval/products-centroids/Acc@10",
               "eval/products-centroids/Acc@50", "eval/products-centroids/mAP", "eval/products/Acc@1",
               "eval/products/mAP"]  # fmt: skip
    rows = [
        {"epoch": 3, "step": 1, "train/loss_epoch": 1.0, "eval/products-centroids/Acc@1": 0.758,
         "eval/products-centroids/Acc@10": 1.0, "eval/products-centroids/Acc@50": 1.0,
         "eval/products-centroids/mAP": 0.856, "eval/products/Acc@1": 0.907, "eval/products/mAP": 0.509},
        {"epoch": 7, "step": 2, "train/loss_epoch": 0.9, "eval/products-centroids/Acc@1": 0.742,
         "eval/products-centroids/Acc@10": 1.0, "eval/products-centroids/Acc@50": 1.0,
         "eval/products-centroids/mAP": 0.840, "eval/products/Acc@1": 0.899, "eval/products/mAP": 0.493},
    ]  # fmt: skip
    fig = training_curves_figure(write_csv(tmp_path / "m.csv", columns, rows))
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "training loss",
        "products Acc@1 (test)",
        "products mAP (test)",
        "products-centroids Acc@1 (test)",
        "products-centroids mAP (test)",
    ]
    assert [t.get_text() for t in axes[3].texts] == ["Acc@10, Acc@50: 100 % throughout (not drawn)"]
    low, high = axes[4].get_ylim()
    assert high - low >= 10 and low <= 84.0 and high >= 85.6
    assert axes[1].get_ylim()[1] <= 100.5  # never far above 100 %
    plt.close(fig)
