"""What a run tells its reader: the loggers (`loggers`, the logger-neutral `run_record`), the callbacks that observe
and draw (`callbacks`, `run_stats`, `progress`, `profiling`), `predict`'s CSV (`predictions`), the report to an
Optuna trial (`optuna_trial`) and the docs' recipe table (`recipes`). Nothing here changes what a run learns."""
