"""Training: the models of run folders, trained by a regime's protocol on local workers or Ray.

    settings.py     TrainSettings: the protocol's defaults with the user's overrides, checked once
    devices.py      --device parsing, slots per device, per-process set-up
    data.py         data sets as uint8 batches on the device
    loop.py         one model's training loop and evaluation
    checkpoints.py  per-epoch state, saved and resumed exactly
    jobs.py         planning the models to train, claiming them, training one, recording failures
    local_backend.py  the local backend: one spawned worker process per slot
    worker.py       inside a worker process: leave when the parent dies, then train job after job
    ray_backend.py  the Ray backend
    progress.py     the progress display
    sweep.py        train_runs: every step above, in order
"""
