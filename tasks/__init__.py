"""gtforge's Luigi tasks, one module per stage. `luigi --module tasks BuildDataset` finds them."""

from tasks.config import gtforge  # noqa: F401  (registers the [gtforge] section)
from tasks.ingest import IngestHR  # noqa: F401
