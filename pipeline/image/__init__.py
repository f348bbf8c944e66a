"""Image operations: ingest, degradation, patches, tiles, fusion, conversions, the sample
corpora, and the PNG plots stages draw."""
