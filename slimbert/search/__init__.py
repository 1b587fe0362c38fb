"""The search behind `slimbert optimize`: candidates from the existing stages, chosen on dev.

config (what to search), space (candidates as recipe stages, per-target registry),
candidates (the shared candidates folder), strategy (cheap-first search, time budget),
select (Pareto front, choice, confirmation on test), report, stage (`type: optimize`),
api (`slimbert.optimize(...)`).
"""
