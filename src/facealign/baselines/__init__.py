"""Non-learned-here baselines run through the same evaluation harness."""
