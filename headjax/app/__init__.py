"""The application on top of the library: wiring a run from a config (`experiment`), the guided
and data-selection runs (`guide`, `select`), the dry run on a target mesh (`dry_run`), the
scripts' error handling (`cli`), the paper's reproduction (`reproduce/`) and the benchmarks
(`bench/`). Nothing in the library layers imports this package (docs/architecture.md)."""
