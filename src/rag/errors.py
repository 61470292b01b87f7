"""The library's own exceptions. Each message says what is wrong and how to fix it.

The CLI turns a :class:`RagError` into one line on stderr and exit code 2; the app into ``st.error``.
"""

from __future__ import annotations


class RagError(Exception):
    """Base class: a problem the user can fix (bad input, missing index, missing model)."""


class BadQuestion(RagError, ValueError):
    """The question is empty or unusable."""


class BadSetting(RagError, ValueError):
    """A setting has a value outside what is allowed."""


class CorpusEmpty(RagError):
    """The corpus folder has no readable documents."""


class ModelUnavailable(RagError):
    """The embedding model cannot be loaded offline."""


class OnnxUnsupported(ModelUnavailable):
    """The model cannot run on the ONNX backend (its layout, or onnxruntime/tokenizers are missing)."""


class ReaderUnavailable(ModelUnavailable):
    """The reader's files (rag/models/reader) are missing, corrupt or cannot run."""


class UnreadableFile(RagError):
    """A corpus file cannot be read as text (unsupported type, no text layer, over the size limit);
    the loader records it as skipped with this message as the reason."""


class LLMUnavailable(RagError):
    """The configured chat model cannot be used (extra not installed, no model file, no server)."""


class UploadRefused(RagError):
    """An uploaded file was not added to the corpus."""


class BadUploadName(UploadRefused):
    """The file name is unusable or its type is not supported."""


class UploadTooLarge(UploadRefused):
    """The file is empty or over the size limit."""


class UploadExists(UploadRefused):
    """A file with that name is already in the corpus and replacing it was not allowed."""


class UploadUnreadable(UploadRefused):
    """The content does not match the extension, or has no extractable text."""


class RemoteUnavailable(RagError):
    """The rag server (`rag serve`) could not answer: unreachable, refused the key, busy, or failed."""


class EngineUnavailable(RagError):
    """The search engine of ``store = "postgres"`` is unreachable, restarting, or not set up."""


class EngineStale(RagError):
    """The engine holds another version of the index than the index folder: run `rag index`."""


class IndexError_(RagError):
    """Base for index problems (named with a trailing underscore to not shadow the builtin)."""


class IndexMissing(IndexError_):
    """No index at the given path."""


class IndexStale(IndexError_):
    """The corpus or the settings changed since the index was built."""


class IndexCorrupt(IndexError_):
    """An index file is missing, truncated or edited."""


class IndexMismatch(IndexError_):
    """The index was built with another model, dimension or format version."""


class IndexLocked(IndexError_):
    """Another process is building this index."""


class IndexRefused(IndexError_):
    """`rag index` will not (or cannot) write this index folder: it is not an index, it overlaps the
    corpus, it is a file, it is read-only, or its parent folder is not writable. Nothing was touched."""
