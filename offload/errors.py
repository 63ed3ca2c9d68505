"""Errors the CLI turns into one clear message and a distinct exit code (never a traceback)."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """Exit codes of every `offload` subcommand; documented in the README."""

    OK = 0
    FAILED = 1          # the operation ran and failed (e.g. a check found problems)
    USAGE = 2           # bad input: unknown interface, malformed argument
    PRIVILEGE = 3       # not root / missing CAP_NET_ADMIN or CAP_BPF
    ENVIRONMENT = 4     # the kernel or host lacks something needed (bpffs, netns support, ...)
    COMPILE = 5         # the C does not compile
    VERIFIER = 6        # the verifier rejected the program
    LOAD = 7            # the kernel refused to load it (e.g. offload to a device that cannot)
    NO_MODE = 8         # no acceptable mode could be attached (floor not met, mode unsupported)
    REFUSED = 9         # refused for safety: not our program, or the operator's own link
    NOT_ATTACHED = 10   # nothing of ours on that interface
    INTERNAL = 70       # a bug: unexpected exception


def excerpt(value: str, limit: int = 40) -> str:
    """A user's value quoted for a message: at most its first `limit` characters (then '…'), with
    control characters and undecodable bytes escaped as repr escapes them. A value may be a secret
    pasted by mistake, or megabytes long: a message names it, never repeats it whole."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


class OffloadError(Exception):
    """An error with a message for the operator: what failed, on which device, and what to do."""

    exit_code: Exit = Exit.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def within(self, context: str) -> OffloadError:
        """The same error (kind, exit code, hint) said of `context`: the device, option or file it
        came from, which the code that raised it did not know."""
        return type(self)(f"{context}: {self.message}", hint=self.hint)


class UsageError(OffloadError):
    exit_code = Exit.USAGE


class PrivilegeError(OffloadError):
    exit_code = Exit.PRIVILEGE


class EnvironmentProblem(OffloadError):
    exit_code = Exit.ENVIRONMENT


class CompileError(OffloadError):
    exit_code = Exit.COMPILE


class VerifierError(OffloadError):
    exit_code = Exit.VERIFIER


class LoadError(OffloadError):
    """The kernel refused to load (not the verifier): e.g. offload to a device that cannot."""

    exit_code = Exit.LOAD


class NoModeError(OffloadError):
    exit_code = Exit.NO_MODE


class RefusedError(OffloadError):
    exit_code = Exit.REFUSED


class NotAttachedError(OffloadError):
    exit_code = Exit.NOT_ATTACHED
