"""dsd: design space design (RegNet / NDS methodology) as a library and a CLI.

The package follows the pipeline: design (spaces -> specs -> complexity | torch modules) -> runfolder
(the files between the stages) -> training -> analysis (statistics, figures, report); cli/ is the
command line. The public API (dsd.api) is importable from here: dsd.sample_run, dsd.train_runs,
dsd.load_runs, dsd.edf_table, dsd.trends, dsd.fit_runs, dsd.search_efficiency, dsd.write_report, ...
It is imported on first use, so that `import dsd` alone stays light (worker processes rely on it).
"""
import importlib

from dsd.version import __version__  # noqa: F401


def __getattr__(name: str):
    if not name.startswith("_"):
        api = importlib.import_module("dsd.api")
        if name in api.__all__:
            return getattr(api, name)
    raise AttributeError(f"module 'dsd' has no attribute {name!r}")
