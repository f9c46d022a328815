"""Command-line entry points, one module per stage kind; each is a thin wrapper over the library."""
