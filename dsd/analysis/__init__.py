"""Analysis: run folders -> one DataFrame -> statistics -> figures and the report.

    load.py       run folders joined into the frame every analysis reads
    edf.py        error EDFs, the complexity-normalized EDF, KS comparisons
    bootstrap.py  design trends by the empirical bootstrap
    fit.py        quantized linear fits (e_fit)
    search.py     random-search efficiency
    plots.py      every figure
    report.py     the self-contained HTML page
"""
