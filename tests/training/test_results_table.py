"""The results table `centrum train` prints: fits 100 columns, leaves out Acc@K that K >= the gallery classes makes
meaningless, and labels centroid rows as using the gallery labels (hand-written metrics, hand-checked cells)."""

from __future__ import annotations

from centrum.training.results import TABLE_WIDTH, format_results_table, gallery_classes_of

FASHION = {  # the shape of a Fashion-MNIST run: 5 gallery classes, 400 gallery images each
    "products": {
        "Acc@1": 0.8512,
        "Acc@10": 0.97,
        "Acc@20": 0.98,
        "Acc@30": 0.99,
        "Acc@50": 0.995,
        "mAP": 0.6123,
        "num_valid_queries": 1000,
        "num_queries": 1000,
        "num_gallery_entries": 2000,
    },
    "products-centroids": {
        "Acc@1": 0.8,
        "Acc@10": 1.0,
        "Acc@20": 1.0,
        "Acc@30": 1.0,
        "Acc@50": 1.0,
        "mAP": 0.88,
        "num_valid_queries": 1000,
        "num_queries": 1000,
        "num_gallery_entries": 5,
    },
}


def test_five_gallery_classes_keep_acc_at_1_only() -> None:
    lines = format_results_table(FASHION).splitlines()
    assert lines[0] == "metrics in %"
    assert lines[1].split() == ["Acc@1", "mAP"]
    assert lines[3].split() == ["products", "85.12", "61.23"]
    assert lines[4].split() == ["products-centroids", "(gallery", "labels)", "80.00", "88.00"]
    assert "(Acc@10, Acc@20, Acc@30, Acc@50 left out: K >= the 5 gallery classes)" in lines
    assert "products-centroids: valid queries 1000, queries 1000, gallery entries 5" in lines
    assert max(map(len, lines)) <= TABLE_WIDTH
    assert gallery_classes_of(FASHION) == 5


def test_enough_gallery_classes_keep_every_column() -> None:
    lines = format_results_table(FASHION, gallery_classes=100).splitlines()
    assert lines[1].split() == ["Acc@1", "Acc@10", "Acc@20", "Acc@30", "Acc@50", "mAP"]
    assert not any("left out" in line for line in lines)
    assert max(map(len, lines)) <= TABLE_WIDTH


def test_a_wide_table_is_split_into_blocks_that_fit() -> None:
    """Mean ± std over runs for 8 columns: wider than 100, so two blocks, every column once."""
    summary = {
        protocol: {name: (value, 0.0123) if not name.startswith("num_") else (value, 0.0) for name, value in m.items()}
        for protocol, m in FASHION.items()
    }
    lines = format_results_table(summary, gallery_classes=100).splitlines()
    assert max(map(len, lines)) <= TABLE_WIDTH
    headers = [lines[i - 1] for i, line in enumerate(lines) if set(line) == {"-"}]
    assert len(headers) == 2
    assert [c for h in headers for c in h.split()] == ["Acc@1", "Acc@10", "Acc@20", "Acc@30", "Acc@50", "mAP"]
    assert "85.12 ± 1.23" in lines[3]
    assert "products: valid queries 1000, queries 1000, gallery entries 2000" in lines  # std 0: no "± 0"


def test_reid_centroids_count_their_centroids_and_curves_are_left_out() -> None:
    metrics = {
        "reid": {"mAP": 0.5, "Rank-1": 0.6, "Rank-5": 0.7, "cmc": [0.6, 0.65, 0.7], "num_queries": 12},
        "reid-centroids": {"mAP": 0.55, "Rank-1": 0.65, "Rank-5": 1.0, "num_centroids": 4, "num_gallery_entries": 9},
    }
    lines = format_results_table(metrics).splitlines()
    assert lines[1].split() == ["mAP", "Rank-1"]  # Rank-5 >= the 4 classes; the CMC curve is not a column
    assert lines[4].startswith("reid-centroids (gallery labels)")
