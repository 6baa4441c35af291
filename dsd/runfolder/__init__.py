"""The run folder: the only interface between design, training and analysis, and the one owner of its
paths and file formats.

    RUN/run.yaml               resolved space, regime (with its training protocol), seed, n, dsd version
    RUN/models.parquet         one row per sampled model (MODEL_SCHEMA; dsd.design.spec makes the rows),
                               or per copy of another run's model (source_run, source_model_id; copies.py)
    RUN/results/ID.parquet     one row per finished model (RESULT_SCHEMA), written atomically by its trainer
    RUN/results.parquet        the per-model rows gathered into one file by `dsd compact` (results.py)
    RUN/claims/ID              a model being trained, and by whom (claims.py)
    RUN/checkpoints/ID.pt      the training state of an unfinished model after its last epoch
    RUN/weights/ID.pt          final weights, with `dsd train --save-weights`
    RUN/fits.parquet           quantized linear fits (FITS_SCHEMA), written by `dsd fit-linear`
    RUN/timings.parquet        measured inference and training-step times (TIMING_SCHEMA), by `dsd time`
    RUN/import.parquet         an imported model's source job and the source's own counts (IMPORT_SCHEMA)

files.py holds the names, schemas, reads and atomic writes; results.py the results and their compaction;
claims.py who trains what; status.py the counts `dsd status` shows; copies.py runs of copies of chosen
models (`dsd reseed`). Nothing here imports torch, so `dsd sample` and `dsd status` start fast.
"""
from dsd.runfolder.claims import HEARTBEAT_S, claim, claim_path, live_claims, refresh, release
from dsd.runfolder.copies import CopyRun, beside, best_models, copy_models, done_models, promote, reseed, source_settings
from dsd.runfolder.files import (
    CHECKPOINTS_DIR, CLAIMS_DIR, FITS_FILE, FITS_SCHEMA, MODEL_SCHEMA, MODELS_FILE, RESULT_SCHEMA, RESULTS_DIR,
    RUN_FILE, RUNS_ROOT, SETTING_COLUMNS, STATUSES, WEIGHTS_DIR, check_run_folder, checkpoint_path,
    describe_run, find_runs, is_run, meta_differences, mixed_settings, read_meta, read_models, read_regime,
    read_table, read_timings, sampled_settings, remove_orphans, require_run, setting_value, source_folder,
    trained_settings, weights_path, write_atomic, write_fits, write_parquet, write_run,
    TIMING_SCHEMA, TIMINGS_FILE, write_timings, IMPORT_FILE, IMPORT_SCHEMA,
)
from dsd.runfolder.results import (
    COMPACTED_FILE, RETRAINABLE, compact, read_results, result_of, result_path, result_stamp, result_stamps,
    write_result, write_results,
)
from dsd.runfolder.status import run_status

__all__ = [
    "CHECKPOINTS_DIR", "CLAIMS_DIR", "FITS_FILE", "FITS_SCHEMA", "HEARTBEAT_S", "MODEL_SCHEMA", "MODELS_FILE",
    "RESULT_SCHEMA", "RESULTS_DIR", "RUN_FILE", "RUNS_ROOT", "SETTING_COLUMNS", "STATUSES", "WEIGHTS_DIR", "CopyRun",
    "RETRAINABLE", "check_run_folder", "checkpoint_path", "claim", "claim_path", "copy_models", "describe_run",
    "done_models", "find_runs", "is_run", "live_claims", "meta_differences", "mixed_settings", "read_meta",
    "read_models", "read_regime", "read_results", "read_table", "refresh", "release", "remove_orphans",
    "require_run", "reseed", "beside", "best_models", "promote", "result_path", "run_status", "setting_value", "source_folder",
    "source_settings", "trained_settings", "weights_path", "write_atomic", "write_fits", "write_parquet",
    "write_result", "write_results", "write_run", "COMPACTED_FILE", "compact", "result_of", "result_stamp",
    "result_stamps", "sampled_settings", "TIMING_SCHEMA", "TIMINGS_FILE", "read_timings", "write_timings", "IMPORT_FILE",
    "IMPORT_SCHEMA",
]
