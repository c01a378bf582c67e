"""The jobs behind the CLI commands: each builds what it needs, runs it and returns a result (cli.py prints).

train_ddpm, train_enhancer (+ training_run: what training jobs share), restore, dr2_cache, evaluate (+
predict_engine: the planned, resumable, multi-GPU predict pass restore, dr2-cache and eval share), compare,
bench, quickstart.
"""
