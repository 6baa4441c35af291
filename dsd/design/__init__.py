"""Design: from a space file to model specs and their complexity, with no torch (fast to start).

    regimes.py     what complexity is measured at, the default band, the training protocol
    spaces.py      space files -> validated Space objects
    regnet.py      the RegNet rules (quantized linear widths, stages, group-width compatibility)
    spec.py        ModelSpec, a Network under a regime, spec <-> models.parquet row
    sampler.py     prefix-stable rejection sampling of specs under a complexity band
    complexity.py  analytic flops, params, acts (one small function per layer)
    model.py       spec -> torch module (the one module here that imports torch)
"""
