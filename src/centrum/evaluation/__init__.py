"""The published evaluation protocols, vectorised and chunked over queries (CPU or GPU).

- :func:`reid_metrics`: re-identification, standard per-image protocol (mAP, CMC, mINP);
- :func:`reid_centroid_metrics`: re-identification against cross-camera gallery centroids;
- :func:`product_metrics`: query / gallery product retrieval (Acc@k, mAP), per image or with centroids;
- :func:`dml_metrics`: class-disjoint metric learning (Recall@K, MAP@R, R-Precision, NMI, F1);
- :func:`k_reciprocal_distances`, :func:`alpha_query_expansion`, :func:`database_augmentation`: re-ranking
  and query expansion before scoring (:func:`postprocess_arrays` applies them to a protocol's arrays);
- :func:`evaluate_protocol` dispatches by protocol name; :func:`format_metrics_table` prints results.

All metric values are fractions in [0, 1]; the table shows percent.
"""

from centrum.evaluation.clustering import kmeans_labels, normalized_mutual_info, pairwise_f1
from centrum.evaluation.dml import DML_RECALL_KS, SOP_RECALL_KS, dml_metrics
from centrum.evaluation.postprocess import (
    KReciprocalDistances,
    alpha_query_expansion,
    database_augmentation,
    k_reciprocal_distances,
    postprocess_arrays,
)
from centrum.evaluation.products import PRODUCT_KS, item_centroids, product_metrics
from centrum.evaluation.protocols import PROTOCOLS, evaluate_protocol, format_metrics_table
from centrum.evaluation.reid import reid_centroid_metrics, reid_metrics

__all__ = [
    "DML_RECALL_KS",
    "PRODUCT_KS",
    "PROTOCOLS",
    "SOP_RECALL_KS",
    "KReciprocalDistances",
    "alpha_query_expansion",
    "database_augmentation",
    "dml_metrics",
    "evaluate_protocol",
    "format_metrics_table",
    "item_centroids",
    "k_reciprocal_distances",
    "kmeans_labels",
    "normalized_mutual_info",
    "pairwise_f1",
    "postprocess_arrays",
    "product_metrics",
    "reid_centroid_metrics",
    "reid_metrics",
]
