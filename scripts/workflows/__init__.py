"""The bundle's workflows beyond training: prune, evaluate, scoring, fault detection, and the pipeline that
chains them."""
