"""data/readers layer."""
