"""The bundle's Python package, grouped by role as MONAI's own tree (lower layers never import upper ones):

- ``utils``: atomic writes, flags;
- ``core``: the pure numerics over plain arrays (DAD and moving distance, selection and strategies, stop
  rules, Dice, fault-detection metrics);
- ``scores``: the baseline per-case scores (EL2N, EL2Nx, VoG, GraNd, loss, label quality, forgetting);
- ``data``: data lists, checks, combining sources, the per-case record, the embedded synthetic set, subsets;
- ``handlers``: the Ignite glue (trackers, the stop rule, score handlers, resume, tracking);
- ``report``: the audit report (figures and Markdown);
- ``workflows``: prune, evaluate, scoring, the pipeline;
- ``experiments``: tools that measure the method (benchmark, reference runs, overhead, planted faults);
  not part of the product, and not exported to the Model Zoo.
"""
