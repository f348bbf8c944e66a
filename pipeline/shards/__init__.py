"""The shard format: writing, verifying and reading shard sets; datasets and export."""
