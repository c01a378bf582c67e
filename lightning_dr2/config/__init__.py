"""Configuration: typed schemas (dataclasses), one YAML per recipe in experiments/, `key=value` overrides.

- `loader`: YAML + overrides into a schema, errors naming the key, value checks (`Checks`); no domain imports.
- `run`: the header every training run shares (run id, resume, checkpoints, W&B, Trainer, evaluator).
- `sets`: benchmark sets and DR2 (N, tau) settings.
- `ddpm`, `enhancer`, `pipeline`: each job's schema with its `check` beside it (train; train-enhancer;
  restore / eval / dr2-cache).
- `recipes`: `load_config(name, overrides)`, the recipe name picking the schema.

Import from the submodules; this package imports nothing, so a lower layer can use the loader alone.
"""
