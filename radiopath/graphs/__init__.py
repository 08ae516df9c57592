"""Patient graphs: hybrid clustering of patches, edges, and the graph file format."""

from radiopath.graphs.io import graph_path, load_graph, load_patient, save_graph

__all__ = ["graph_path", "load_graph", "load_patient", "save_graph"]
