"""Mirrors pyannote.audio.pipelines.clustering (its `Clustering` enum as `CLUSTERING`), in NumPy/SciPy.

No neural network here. Modules follow pyannote's own:

- `vbx`: `pyannote.audio.utils.vbx` (`l2_norm`, `vbx_setup`, `VBx`, `cluster_vbx`);
- `plda`: `pyannote.audio.core.plda.PLDA`;
- `linkage`: scipy's centroid `linkage` as pyannote calls it, with one distance matrix;
- `assignment`: `BaseClustering` (`set_num_clusters`, `filter_embeddings`,
  `constrained_argmax`, `assign_embeddings`, `__call__`);
- `vbx_clustering`: `VBxClustering` and its typed hyper-parameters `VBxParameters`;
- `agglomerative`: `AgglomerativeClustering` and `AgglomerativeParameters`.
"""

from mlx_diar.clustering.agglomerative import AgglomerativeClustering, AgglomerativeParameters
from mlx_diar.clustering.assignment import (
    BaseClustering,
    assign_embeddings,
    constrained_argmax,
    filter_embeddings,
    set_num_clusters,
)
from mlx_diar.clustering.plda import PLDA
from mlx_diar.clustering.vbx import cluster_vbx, l2_norm, vbx, vbx_setup
from mlx_diar.clustering.vbx_clustering import VBxClustering, VBxParameters, ahc_init
from mlx_diar.runtime.parameters import Parameters

# the clustering methods a pipeline config may name, with their hyper-parameters
CLUSTERING: dict[str, tuple[type[BaseClustering], type[Parameters]]] = {
    "VBxClustering": (VBxClustering, VBxParameters),
    "AgglomerativeClustering": (AgglomerativeClustering, AgglomerativeParameters),
}

__all__ = [
    "CLUSTERING",
    "PLDA",
    "AgglomerativeClustering",
    "AgglomerativeParameters",
    "BaseClustering",
    "VBxClustering",
    "VBxParameters",
    "ahc_init",
    "assign_embeddings",
    "cluster_vbx",
    "constrained_argmax",
    "filter_embeddings",
    "l2_norm",
    "set_num_clusters",
    "vbx",
    "vbx_setup",
]
