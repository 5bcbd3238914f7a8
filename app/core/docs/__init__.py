"""Documents for local retrieval: files turned into text units with page numbers and headings."""

from app.core.docs.extract import (
    PDFIUM_LOCK,
    SUPPORTED_SUFFIXES,
    DocumentError,
    Extracted,
    Limits,
    Unit,
    extract,
    kind_of,
)

__all__ = ["PDFIUM_LOCK", "SUPPORTED_SUFFIXES", "DocumentError", "Extracted", "Limits", "Unit",
           "extract", "kind_of"]
