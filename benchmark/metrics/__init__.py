"""Quality metrics computed by the project itself (and checked against scikit-learn)."""
