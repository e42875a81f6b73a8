"""Pure numerical logic over plain arrays: DAD and the moving distance, selection, strategies, stop rules,
Dice, fault-detection metrics. Nothing here imports Ignite or reads files."""
