"""Reusers: scikit-learn-style estimators that put learnwares to work on a user's data.

======================  ==========================================  =============
method                  what it does                                 user labels
======================  ==========================================  =============
``single``              one learnware applied directly               no
``average``             mean / mean probability / vote, weighted     no
``with-user``           learnwares + the user's model, CV weights    yes
``job-selector``        routes each row to its learnware (eq. 8)     no
``feature-augment``     learnware outputs as extra features          yes
======================  ==========================================  =============
"""

from __future__ import annotations

from .base import REUSE_PARAMS, Learnware, Reuser, check_learnwares
from .feature_augment import FeatureAugmentReuser
from .job_selector import JobSelectorReuser
from .simple import AverageReuser, SingleReuser
from .with_user import WithUserReuser

REUSERS: dict[str, type[Reuser]] = {
    "single": SingleReuser,
    "average": AverageReuser,
    "with-user": WithUserReuser,
    "job-selector": JobSelectorReuser,
    "feature-augment": FeatureAugmentReuser,
}
METHODS = tuple(REUSERS)


def check_reuser_options(method: str, **options) -> dict:
    """The keyword arguments of method ``method``'s reuser from lw reuse's ``options`` (some
    of :data:`REUSE_PARAMS`): those the method declares in ``reuse_params``, ``weights`` only
    when not ``None``.

    Raises :class:`~lwcli.errors.UsageError` for an unknown method or option, or ``weights``
    given to a method that takes none."""
    from ...errors import UsageError

    if method not in REUSERS:
        raise UsageError(f"unknown reuse method {method!r}: expected one of {', '.join(METHODS)}",
                         "pick a method from lw reuse --help")
    unknown = sorted(set(options) - set(REUSE_PARAMS))
    if unknown:
        raise UsageError(f"unknown reuse options {unknown}", f"use some of {list(REUSE_PARAMS)}")
    takes = REUSERS[method].reuse_params
    if options.get("weights") is not None and "weights" not in takes:
        takers = [m for m, c in REUSERS.items() if "weights" in c.reuse_params]
        raise UsageError(f"--weights is for {' and '.join(takers)}, not {method}",
                         "drop --weights")
    params = {n: v for n, v in options.items() if n in takes and v is not None}
    if "weights" in params:
        params["weights"] = list(params["weights"])
    return params


def make_reuser(method: str, learnwares, **options) -> Reuser:
    """A reuser by method name (one of :data:`METHODS`), given the options it declares;
    ``options`` and errors as :func:`check_reuser_options`."""
    return REUSERS[method](learnwares=list(learnwares),
                           **check_reuser_options(method, **options))


__all__ = ["Learnware", "Reuser", "check_learnwares", "check_reuser_options", "make_reuser",
           "METHODS", "REUSERS", "REUSE_PARAMS",
           "SingleReuser", "AverageReuser", "WithUserReuser", "JobSelectorReuser",
           "FeatureAugmentReuser"]
