"""Image operations: ingest, degradation, patches, tiles, fusion, conversions, sample corpora."""
