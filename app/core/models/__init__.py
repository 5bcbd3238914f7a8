"""Models: the catalog, the recommender, the Hub, downloads and the library on disk.

The door: the rest of Camelid imports model facts and jobs from here.
"""

from app.core.models import downloads, first_run, hub, library
from app.core.models.catalog import (
    CATALOG_QUANTS,
    Catalog,
    CatalogModel,
    load_catalog,
    with_hub_sizes,
)
from app.core.models.downloads import (
    DownloadPlan,
    DownloadProgress,
    DownloadQueue,
    FitJudgement,
    QueuedDownload,
    destination_folder,
    judge_remote_fit,
    plan_download,
)
from app.core.models.first_run import (
    CONTEXT_CHOICES,
    STARTER_MISSING,
    ContextChoice,
    should_show_wizard,
)
from app.core.models.hub import QuantFile, RepoFiles, RepoSummary, endpoint
from app.core.models.library import LibraryModel, find_model, list_models
from app.core.models.recommend import (
    USE_CASES,
    Pick,
    catalog_freshness,
    context_words,
    recommend,
    released_words,
)

__all__ = [
    "CATALOG_QUANTS", "CONTEXT_CHOICES", "STARTER_MISSING", "USE_CASES", "Catalog", "CatalogModel",
    "ContextChoice", "DownloadPlan", "DownloadProgress", "DownloadQueue", "FitJudgement", "LibraryModel",
    "Pick", "QuantFile", "QueuedDownload", "RepoFiles", "RepoSummary", "catalog_freshness", "context_words",
    "destination_folder", "downloads", "endpoint", "find_model", "first_run", "hub", "judge_remote_fit",
    "library", "list_models", "load_catalog", "plan_download", "recommend", "released_words",
    "should_show_wizard",
    "with_hub_sizes",
]
