"""gtforge's library: plain functions on numpy and torch, no Luigi."""
