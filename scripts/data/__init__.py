"""Data: Decathlon data lists, up-front checks, combining sources, the per-case dynamics record, the
embedded synthetic data set, transforms, and the exported subset."""
