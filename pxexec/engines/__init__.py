"""Engine-specific glue, one module per engine; each imports its engine lazily."""
