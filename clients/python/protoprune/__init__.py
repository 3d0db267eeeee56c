"""Python client of protoprune, the label-free data pruning service (standard library only).

Example::

    import protoprune
    client = protoprune.Client()  # PROTOPRUNE_URL, PROTOPRUNE_API_KEY
    hardest = protoprune.Subset(client, "photos", order="hardest", fraction=0.3)
"""

from ._version import __version__
from .client import (
    Client,
    Dataset,
    DuplicateGroup,
    ExportOptions,
    ExportRow,
    ExportStream,
    IngestReport,
    ItemFailure,
    Job,
    ManifestIds,
    SelectionOptions,
    SelectionPage,
    SelectionStream,
    Stream,
    path_id,
)
from .errors import ProtopruneError
from .subset import Subset

__all__ = [
    "Client",
    "Dataset",
    "DuplicateGroup",
    "ExportOptions",
    "ExportRow",
    "ExportStream",
    "IngestReport",
    "ItemFailure",
    "Job",
    "ManifestIds",
    "ProtopruneError",
    "SelectionOptions",
    "SelectionPage",
    "SelectionStream",
    "Stream",
    "Subset",
    "__version__",
    "path_id",
]
