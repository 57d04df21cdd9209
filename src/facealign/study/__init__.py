"""The study: the experiment grid (`experiments`), its report (`report`) and the checks its conclusions rest on
(`checks`)."""
