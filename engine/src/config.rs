//! Configuration: embedded defaults, TOML file, command-line overrides.
