"""hearthlm's exceptions: one hierarchy, messages that say what, where and why."""


class HearthlmError(Exception):
    """Base class of every error hearthlm raises on purpose."""


class ModelFormatError(HearthlmError, ValueError):
    """A model file is malformed: truncated, bad header, missing or misshapen tensor."""


class HubError(HearthlmError, ValueError):
    """A Hugging Face repo id that cannot be resolved: unknown, gated, not cached while
    offline, or without the files a model needs."""


class UnsupportedModelError(HearthlmError, ValueError):
    """The architecture, or a config value that changes the maths, is not implemented."""


class InvalidInputError(HearthlmError, ValueError):
    """An argument is out of range: token ids outside the vocabulary, bad dtype name..."""


class ContextOverflowError(InvalidInputError):
    """More tokens than the context window can hold."""


class FileWriteError(HearthlmError, OSError):
    """A file or folder cannot be written: missing directory, no permission, a directory
    in the way, a busy mount point."""


class UnsupportedISAError(HearthlmError, RuntimeError):
    """HEARTHLM_ISA asks for an instruction set this CPU or build lacks."""


class SessionBusyError(HearthlmError, RuntimeError):
    """A session is being used by another thread (give each thread its own session)."""
