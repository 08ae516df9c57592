"""Patient graphs: hybrid clustering of patches, edges, and the graph file format."""

from radiopath.graphs.io import build_params, load_graph, load_patient, save_graph

__all__ = ["build_params", "load_graph", "load_patient", "save_graph"]
