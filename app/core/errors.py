"""Errors a user can meet. Each says what happened and what to do about it.

Front doors (CLI, GUI) show `str(error)`: the sentence and the fix, never a
traceback. Code raises the most specific subclass it can.
"""

from __future__ import annotations


class CamelidError(Exception):
    """Base for every error Camelid shows to a person."""

    #: A short machine-readable name, used in `--json` output.
    code = "error"

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} {self.fix}" if self.fix else self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "fix": self.fix}


class HardwareFileError(CamelidError):
    """A --hardware JSON file or preset could not be used."""

    code = "hardware_file"


class ModelFileError(CamelidError):
    """A model file is missing, unreadable, not a GGUF, or damaged."""

    code = "model_file"


class RemoteError(CamelidError):
    """The Hub (or a mirror) answered with an error or not at all."""

    code = "remote"


class NotFoundError(RemoteError):
    code = "not_found"


class GatedRepoError(RemoteError):
    """A gated or private repository needs a token or an accepted license."""

    code = "gated"


class DiskSpaceError(CamelidError):
    code = "disk_space"


class ChecksumError(CamelidError):
    code = "checksum"


class ModelLoadError(CamelidError):
    """llama.cpp could not load a model."""

    code = "model_load"


class UsageError(CamelidError):
    """A command was given arguments that cannot work together."""

    code = "usage"


class WontFitError(CamelidError):
    """The fit engine says a model cannot run on this machine at all."""

    code = "no_fit"


class DownloadCancelled(CamelidError):
    """A download was stopped on request; its partial file is kept for resuming."""

    code = "cancelled"


class ChatStoreError(CamelidError):
    """The conversation database could not be opened, read or written."""

    code = "chat_store"


class ConversationNotFoundError(ChatStoreError):
    code = "conversation_not_found"


class GenerationError(CamelidError):
    """llama.cpp failed while writing a reply (the model stays loaded)."""

    code = "generation"


class ContextOverflowError(GenerationError):
    """What must stay in the prompt (the system prompt) does not fit the context window."""

    code = "context_overflow"


class PromptTooLongError(UsageError):
    """A prompt that must not be trimmed (an API request) is longer than the loaded context."""

    code = "prompt_too_long"


class ChatTemplateError(GenerationError):
    """The model's chat template could not format the conversation."""

    code = "chat_template"


class CatalogError(CamelidError):
    """The curated model catalog is unreadable, or has no such model or quant."""

    code = "catalog"


class NotGGUFError(ModelFileError):
    """A file that was expected to be a GGUF model is something else."""

    code = "not_gguf"


class TruncatedGGUFError(ModelFileError):
    """A GGUF file ends before its header does (an interrupted download, a cut copy)."""

    code = "truncated_gguf"


class RangeNotSupportedError(RemoteError):
    """A server answered a byte-range request with the whole file; reading it was stopped."""

    code = "range_not_supported"
